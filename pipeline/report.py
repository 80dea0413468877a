"""Stage `report`: one leaderboard of every evaluated model, as Markdown and as JSON.

Sorted by test accuracy; each accuracy carries its 95% interval, so two models whose intervals
overlap are seen to be within noise of each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import io, params


def leaderboard(results: list[dict]) -> list[dict]:
    """One row per model, best test accuracy first (ties: lower log loss first, then name)."""
    rows = []
    for r in results:
        t = r["test"]
        rows.append(
            {
                "model": r["model"],
                "accuracy": t["accuracy"],
                "accuracy_ci95": t["accuracy_ci95"],
                "f1_macro": t["f1_macro"],
                "roc_auc": t["roc_auc"],
                "log_loss": t["log_loss"],
                "parameters": r["parameters"],
                "trainable_parameters": r["trainable_parameters"],
                "train_seconds": r["train"]["seconds"],
                "train_images_per_second": r["train"]["images_per_second"],
                "inference_images_per_second": r["inference_images_per_second"],
                "epochs": r["train"]["epochs"],
                "best_epoch": r["train"]["best_epoch"],
                "device": r["device"],
            }
        )
    rows.sort(key=lambda row: (-row["accuracy"], row["log_loss"], row["model"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def markdown(rows: list[dict], *, test_images: int, image_size: int) -> str:
    head = (
        "| # | model | test accuracy (95% CI) | F1 | ROC AUC | log loss | parameters | train time | train img/s | infer img/s |\n"
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['rank']} | {r['model']} | {r['accuracy']:.3f} ({r['accuracy_ci95'][0]:.3f}–{r['accuracy_ci95'][1]:.3f}) "
        f"| {r['f1_macro']:.3f} | {_num(r['roc_auc'])} | {r['log_loss']:.3f} | {_params(r)} "
        f"| {_duration(r['train_seconds'])} | {r['train_images_per_second']:,.0f} | {r['inference_images_per_second']:,.0f} |"
        for r in rows
    ]
    devices = sorted({r["device"] for r in rows})
    return (
        f"# Leaderboard\n\n{test_images} test images at {image_size} px, trained on {', '.join(devices)}.\n\n"
        + head + "\n".join(lines) + "\n"
    )


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _params(row: dict) -> str:
    total, trainable = row["parameters"], row["trainable_parameters"]
    text = f"{total / 1e6:.1f} M"
    return text if trainable == total else f"{text} ({trainable / 1e6:.1f} M trained)"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{seconds} s" if not minutes else f"{minutes} min {seconds:02d} s"


def report(results: list[dict], out: Path) -> list[dict]:
    rows = leaderboard(results)
    test_images = results[0]["test"]["images"]
    io.write_text(out / "leaderboard.md", markdown(rows, test_images=test_images, image_size=results[0]["image_size"]))
    io.write_json(out / "leaderboard.json", {"best": rows[0]["model"], "models": rows})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    results = [io.read_json(args.metrics / f"{name}.json") for name in p.model_names]
    rows = report(results, args.out)
    print(f"report: {len(rows)} models, best {rows[0]['model']} at {rows[0]['accuracy']:.3f}")


if __name__ == "__main__":
    io.run(main)
