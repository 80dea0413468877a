"""Stage `report`: one leaderboard of every evaluated model, as Markdown and JSON, a chart of test
accuracy against training time, and reports/index.html: all of it and each model's pictures on one
page that works offline.

Sorted by test accuracy; each accuracy carries its 95% interval. Every model is scored on the same
test photos, so two models are compared photo by photo (evaluation/results.pairwise): each row says
whether it beats the next one down by more than chance (McNemar's exact test on the photos only one
of the two gets right, with the paired interval of the difference), and the page shows every pair.
Overlapping intervals are not that test: two models can overlap and still differ significantly.
"""

from __future__ import annotations

import csv
from html import escape
from pathlib import Path

from pipeline.common import atomic, cli, formats
from pipeline.common.progress import duration, plural
from pipeline.data.images import DOGS_VS_CATS
from pipeline.evaluation import page, pictures, results
from pipeline.training.curves import CURVES, epochs_file

TITLE = "Classic CNNs on Dogs vs. Cats"
TOP5 = "top5_accuracy"  # evaluate's top-5 accuracy, there from six classes up
VERDICTS = "test_verdicts"  # evaluate's metrics once data.verdicts apply, there when they change some test photo


def leaderboard(found: list[dict], pairs: dict | None = None) -> list[dict]:
    """One row per model, best first (results.ranked: test accuracy, then lower log loss, then name),
    each with its paired comparison against the next one down (`versus_next`; None for the last, or
    when the two were scored on other photos). `pairs`: results.pairwise(found), if already at hand."""
    rows = []
    ordered = results.ranked(found)
    pairs = pairs or results.pairwise(ordered)
    for rank, r in enumerate(ordered, 1):
        t = r["test"]
        below = ordered[rank]["model"] if rank < len(ordered) else None
        rows.append(
            {
                "rank": rank,
                "model": r["model"],
                "accuracy": t["accuracy"],
                "accuracy_ci95": t["accuracy_ci95"],
                "test_images": len(r["labels"]),
                **(
                    {
                        "verdicts": {
                            k: r[VERDICTS][k]
                            for k in (
                                "accuracy",
                                "accuracy_ci95",
                                "excluded",
                                "relabelled",
                                "errors_as_given",
                                "errors_explained",
                            )
                        }
                    }
                    if r.get(VERDICTS)
                    else {}
                ),
                **({TOP5: t[TOP5]} if TOP5 in t else {}),
                "f1_macro": t["f1_macro"],
                "roc_auc": t["roc_auc"],
                "log_loss": t["log_loss"],
                "parameters": r["parameters"],
                "trainable_parameters": r["trainable_parameters"],
                "train_seconds": r["train"]["seconds"],
                "train_images_per_second": r["train"]["images_per_second"],
                "inference_images_per_second": r["inference_images_per_second"],
                "epochs": r["train"]["epochs"],
                "kept_epoch": r["train"]["kept_epoch"],
                "device": r["device"],
                "versus_next": {"model": below, **pairs[r["model"]][below]} if below in pairs[r["model"]] else None,
            }
        )
    return rows


COLUMNS = (
    "#",
    "model",
    "test accuracy (95% CI)",
    "F1",
    "ROC AUC",
    "log loss",
    "parameters",
    "train time",
    "train img/s",
    "infer img/s",
    "than the next one down (paired)",
)


WITH_VERDICTS = ("with the verdicts (95% CI)", "errors they explain")


def columns(rows: list[dict]) -> tuple[str, ...]:
    """The leaderboard's columns: COLUMNS, with after the accuracy the top-5 accuracy when there is
    one and the accuracy once data.verdicts apply when they change some test photo."""
    extra = (("top-5",) if TOP5 in rows[0] else ()) + (WITH_VERDICTS if any("verdicts" in r for r in rows) else ())
    return COLUMNS[:3] + extra + COLUMNS[3:]


def cells(r: dict) -> list[str]:
    """One leaderboard row as text, the same in the Markdown and the HTML table."""
    low, high = r["accuracy_ci95"]
    extra = [f"{r[TOP5]:.3f}"] if TOP5 in r else []  # the columns after the accuracy, as columns() lists them
    if v := r.get("verdicts"):
        extra += [
            f"{v['accuracy']:.3f} ({v['accuracy_ci95'][0]:.3f}–{v['accuracy_ci95'][1]:.3f})",
            f"{v['errors_explained']} of {v['errors_as_given']}",
        ]
    return [
        str(r["rank"]),
        r["model"],
        f"{r['accuracy']:.3f} ({low:.3f}–{high:.3f})",
        *extra,
        f"{r['f1_macro']:.3f}",
        _num(r["roc_auc"]),
        f"{r['log_loss']:.3f}",
        _params(r),
        duration(r["train_seconds"]),
        f"{r['train_images_per_second']:,.0f}",
        f"{r['inference_images_per_second']:,.0f}",
        versus(r["versus_next"]),
    ]


def versus(v: dict | None) -> str:
    """`better: +0.040 (+0.021 to +0.059), p 0.0001` or `within noise: +0.004 (...), p 0.61`; – for none."""
    if v is None:
        return "–"
    low, high = v["difference_ci95"]
    verdict = "better" if v["significant"] else "within noise"
    return f"{verdict}: {v['difference']:+.3f} ({low:+.3f} to {high:+.3f}), p {_p(v['p_value'])}"


def _p(p: float) -> str:
    return f"{p:.2g}"  # 0.023, 1, 1.9e-06


def classes_of(found: list[dict]) -> tuple[str, ...]:
    """The classes the models were evaluated on."""
    return tuple(found[0]["classes"])


def title(classes: tuple[str, ...]) -> str:
    if classes == DOGS_VS_CATS:
        return TITLE
    named = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
    return f"Classic CNNs on {len(classes)} classes ({named})"


def summary(found: list[dict]) -> str:
    devices = ", ".join(sorted({r["device"] for r in found}))
    classes = classes_of(found)
    of = "" if classes == DOGS_VS_CATS else f" of {len(classes)} classes"
    grey = ", grey" if found[0]["channels"] == 1 else ""
    said = f"{found[0]['test']['images']} test images{of} at {found[0]['image_size']} px{grey}, trained on {devices}."
    if v := found[0].get(VERDICTS):
        said += (
            f" With the verdicts of {(found[0].get('verdicts') or {}).get('file', 'data.verdicts')}: "
            f"{plural(v['excluded'], 'test photo')} excluded, {v['relabelled']} relabelled; each model's accuracy on "
            "the rest, and how many of its errors on the labels as given they explain."
        )
    return f"{said} {note}" if (note := noise_note(found)) else said


WIDE = 0.05  # an accuracy interval's half-width from which the page says in words what it means


def noise_note(found: list[dict]) -> str | None:
    """What the intervals mean, in words, when the test split is small: None when every accuracy is
    known to within WIDE (about 300 test photos and more)."""
    half = max((r["test"]["accuracy_ci95"][1] - r["test"]["accuracy_ci95"][0]) / 2 for r in found)
    if half < WIDE:
        return None
    n, points = found[0]["test"]["images"], round(100 * half)
    return (
        f"Only {n:,} test photos: each accuracy is known to about ±{points} points, so gaps of up to "
        f"{2 * points} points between two models can be the photos drawn, not the models; only a `better` in the "
        f"last column is a difference. More test photos narrow it (data.test_fraction, or more photos)."
    )


PAIRED = (
    "Intervals are 95% (Wilson). The last column compares each model with the next one down on the same test photos: "
    f"McNemar's exact test of the photos only one of the two gets right (significant below p {results.ALPHA}, not "
    "corrected for the number of pairs) and the paired 95% interval of the difference."
)


def markdown(rows: list[dict], intro: str) -> str:
    names = columns(rows)
    align = "|---:|---|" + "---|" + "---:|" * (len(names) - 4) + "---|"
    head = "| " + " | ".join(names) + " |\n" + align + "\n"
    return (
        f"# Leaderboard\n\n{intro} {PAIRED}\n\n"
        + head
        + "\n".join("| " + " | ".join(cells(r)) + " |" for r in rows)
        + "\n"
    )


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _params(row: dict) -> str:
    total, trainable = row["parameters"], row["trainable_parameters"]
    text = f"{total / 1e6:.1f} M"
    return text if trainable == total else f"{text} ({trainable / 1e6:.1f} M trained)"


def read_curves(live: Path) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """Every model's per-epoch curves from the train stage's epochs table: model → column
    (`train_loss`, ..., `lr`) → (epochs counted from 1, values)."""
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for row in formats.read_json(epochs_file(live)):
        model = curves.setdefault(row["model"], {})
        for column in (c for c in CURVES if c in row):  # a run resumed from an older version lacks the newer columns
            epochs, values = model.setdefault(column, ([], []))
            epochs.append(row["epoch"])
            values.append(row[column])
    return curves


def read_roc(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """evaluate's plots/roc.csv: model → (false positive rates, true positive rates)."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            fpr, tpr = curves.setdefault(row["model"], ([], []))
            fpr.append(float(row["fpr"]))
            tpr.append(float(row["tpr"]))
    return curves


def _facts(r: dict) -> list[tuple[str, str]]:
    t, tr = r["test"], r["train"]
    per_class = ", ".join(
        f"{c} {t['precision'][c]:.3f} / {t['recall'][c]:.3f} / {t['f1'][c]:.3f}" for c in t["precision"]
    )
    averages = [
        (
            f"{average} precision / recall / F1",
            f"{t[average]['precision']:.3f} / {t[average]['recall']:.3f} / {t[average]['f1']:.3f}",
        )
        for average in ("macro", "weighted")
        if average in t
    ]
    return [
        ("test accuracy (95% CI)", f"{t['accuracy']:.3f} ({t['accuracy_ci95'][0]:.3f}–{t['accuracy_ci95'][1]:.3f})"),
        *([("top-5 accuracy", f"{t[TOP5]:.3f}")] if TOP5 in t else []),
        ("balanced accuracy", _num(t["balanced_accuracy"])),
        ("precision / recall / F1", per_class),
        *averages,
        ("ROC AUC, log loss", f"{_num(t['roc_auc'])}, {t['log_loss']:.3f}"),
        (
            "validation accuracy",
            f"{r['val']['accuracy']:.3f} at epoch {tr['kept_epoch']} of {tr['epochs']} (the weights kept)",
        ),
        ("training", f"{duration(tr['seconds'])}, {tr['images_per_second']:,.0f} img/s on {r['device']}"),
        ("inference", f"{r['inference_images_per_second']:,.0f} img/s"),
        ("parameters", _params(r)),
    ]


def _html_row(r: dict) -> str:
    tds = [f"<td>{escape(v)}</td>" for v in cells(r)]
    tds[1] = f'<td><a href="#{escape(r["model"])}">{escape(r["model"])}</a></td>'  # to its section below
    return "<tr>" + "".join(tds) + "</tr>"


def matrix_table(names: list[str], pairs: dict[str, dict[str, dict]]) -> str:
    """Every pair: the row's model minus the column's, in accuracy, and McNemar's p; bold where
    significant. Best first along both axes, so the upper right holds each model against those below."""
    head = "<th></th>" + "".join(f"<th>{escape(n)}</th>" for n in names)
    body = []
    for a in names:
        tds = []
        for b in names:
            v = pairs[a].get(b)
            text = "–" if v is None else f"{v['difference']:+.3f}, p {_p(v['p_value'])}"
            tds.append(f"<td><b>{escape(text)}</b></td>" if v and v["significant"] else f"<td>{escape(text)}</td>")
        body.append(f"<tr><th>{escape(a)}</th>{''.join(tds)}</tr>")
    caption = (
        "Every pair on the same test photos: the row's accuracy minus the column's, and McNemar's exact p; "
        f"bold: significant (p < {results.ALPHA}, not corrected for the number of pairs)"
    )
    rows = "".join(body)
    return (
        f'<table id="pairwise"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def html_page(
    rows: list[dict], found: list[dict], pairs: dict, *, charts: list[tuple[bytes, str]], curves: dict, images: Path
) -> str:
    """reports/index.html: the leaderboard and the charts of every model, then each model's figures,
    curves and pictures; one self-contained file (inline CSS, images as data URIs, no script), so
    it opens offline."""
    by_name = {r["model"]: r for r in found}
    head = "".join(f"<th>{escape(c)}</th>" for c in columns(rows))
    body = "\n".join(_html_row(r) for r in rows)
    heading = title(classes_of(found))
    parts = [
        f"<h1>{escape(heading)}</h1><p>{escape(summary(found))} {escape(PAIRED)}</p>",
        f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>',
        matrix_table([r["model"] for r in rows], pairs),
        *(page.img(png, alt) for png, alt in charts),
    ]
    for r in rows:
        name = r["model"]
        facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in _facts(by_name[name]))
        drawn = pictures.png_bytes(pictures.curves_figure(curves[name], title=f"{name}: training curves"))
        parts += [
            f'<section id="{escape(name)}"><h2>{r["rank"]}. {escape(name)}</h2><dl>{facts}</dl>',
            page.img(drawn, f"{name}: training curves"),
            page.img((images / "confusion" / f"{name}.png").read_bytes(), f"{name}: confusion matrix"),
            page.img(
                (images / "most_wrong" / f"{name}.png").read_bytes(), f"{name}: most confidently wrong test images"
            ),
            page.img((images / "gradcam" / f"{name}.png").read_bytes(), f"{name}: where it looks (Grad-CAM)"),
            "</section>",
        ]
    return page.document(heading, parts)


def report(found: list[dict], out: Path, *, live: Path, plots: Path) -> list[dict]:
    """Leaderboard (Markdown, JSON), the charts and the HTML page, into `out`. `live` is the train
    stage's DVCLive folder, `plots` evaluate's folder (roc.csv, images/)."""
    pairs = results.pairwise(found)  # every two models, photo by photo: once, for the three tables
    rows = leaderboard(found, pairs)
    atomic.write_text(out / "leaderboard.md", markdown(rows, summary(found)))
    every = [
        {"a": r["model"], "b": s["model"], **pairs[r["model"]][s["model"]]}
        for i, r in enumerate(rows)
        for s in rows[i + 1 :]
        if s["model"] in pairs[r["model"]]
    ]
    atomic.write_json(out / "leaderboard.json", {"best": rows[0]["model"], "models": rows, "pairs": every})
    curves, roc = read_curves(live), read_roc(plots / "roc.csv")
    order = [r["model"] for r in rows]  # legends list the models best first
    val = {name: curves[name]["val_accuracy"] for name in order}
    charts = [
        (
            pictures.save_png(pictures.accuracy_vs_time_figure(rows), out / "accuracy_vs_time.png"),
            "test accuracy against training time",
        ),
        (
            pictures.png_bytes(
                pictures.models_figure(
                    val,
                    title="Validation accuracy per epoch",
                    xlabel="epoch",
                    ylabel="validation accuracy",
                    epochs=True,
                )
            ),
            "validation accuracy per epoch, every model",
        ),
        (
            pictures.png_bytes(pictures.roc_figure({name: roc[name] for name in order}, classes_of(found))),
            "ROC curves of every model on the test split",
        ),
    ]
    atomic.write_text(
        out / "index.html", html_page(rows, found, pairs, charts=charts, curves=curves, images=plots / "images")
    )
    return rows


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--results", type=Path, required=True, help="the evaluate stage's results of each model")
    parser.add_argument("--live", type=Path, required=True, help="the train stage's DVCLive folder")
    parser.add_argument("--plots", type=Path, required=True, help="the evaluate stage's plots (roc.csv, images/)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = results.read_all(args.results)
    rows = report(found, args.out, live=args.live, plots=args.plots)
    print(f"report: {plural(len(rows), 'model')}, best {rows[0]['model']} at {rows[0]['accuracy']:.3f}")
    if note := noise_note(found):
        print(f"report: {note}")


if __name__ == "__main__":
    cli.run(main)
