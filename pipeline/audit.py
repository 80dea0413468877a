"""Which photos' labels to doubt: the label audit, for a person to review.

    python -m pipeline.audit [--archive data/raw/images.zip] [--out reports/audit] [--folds 5] [--top 100]

1. every usable photo of the source with its given label, read as the split stage reads them
   (data/members.py: the same photos, the same rejects);
2. each photo's features from a pretrained network, frozen (EfficientNet-Lite0 at its native 224 px,
   its ImageNet weights: the `pretrained` extra), computed once;
3. out-of-fold probabilities: K-fold stratified cross-validation of a logistic regression on those
   features (scikit-learn), so that every photo is judged by a model that never saw its label;
4. confident learning (cleanlab's find_label_issues): the photos whose given label is likely wrong,
   most suspicious first (the lowest probability of their own label); and the outliers, photos
   unlike any other of the source (cleanlab's OutOfDistribution on the features: drawings, text,
   neither class), which no label fits.

It writes, under --out: index.html (the suspects as thumbnails, most suspicious first, with the
given label, the suggested one and the scores: one file that opens offline), suspects.csv (the
same, for a spreadsheet), verdicts-todo.yaml (a verdict file with a `keep` line for each suspect:
change the ones you disagree with to `exclude` or `relabel <class>`, save it under verdicts/ and
name it in params.yaml, data.verdicts) and audit.json (the counts, the cross-validated accuracy and
the time of each step).

A command, not a stage: its output is a question to a person, and only the person's answers (the
verdict file, which the split stage reads and DVC tracks) change a result; it needs the pretrained
extra, which the pipeline does not; and a `dvc repro` should not spend minutes on it for every new
source. Run it after `dvc repro download` (or name any archive or folder of photos).
"""

from __future__ import annotations

import io
import json
import time
from functools import partial
from html import escape
from pathlib import Path

import numpy as np
import torch

from pipeline.common import atomic, cli
from pipeline.common.errors import StageError
from pipeline.common.formats import csv_text
from pipeline.common.progress import Progress, duration
from pipeline.data.images import Archive, decode, load
from pipeline.data.members import scan
from pipeline.data.workers import map_archive
from pipeline.evaluation import page
from pipeline.models import registry
from pipeline.params import recipes
from pipeline.runtime.device import Compute, resolve
from pipeline.runtime.tensors import Split
from pipeline.training.precompute import extract

MODEL = "efficientnet_lite0"
GROUP = 512  # photos decoded and run through the network at a time: memory stays ~100 MB at 224 px
THUMB = 160  # px: the review page's thumbnails (JPEG, ~8 KB each)
MAX_TOP = 2000  # suspects on the page: thumbnails cost ~8 KB each


def decoded(archive: Archive, name: str, *, size: int) -> np.ndarray:
    return load(archive.read(name), size, "crop")  # (3, size, size) uint8, as preprocess makes them


def features(
    archive: Path,
    names: list[str],
    model: torch.nn.Module,
    size: int,
    compute: Compute,
    *,
    workers: int,
    batch_size: int = 64,
) -> np.ndarray:
    """(N, F) float32: the frozen backbone's pooled features of each photo, decoded GROUP at a time."""
    out = []
    with Progress(len(names), "audit features") as bar:
        for start in range(0, len(names), GROUP):
            chunk = names[start : start + GROUP]
            images = np.stack(
                map_archive(archive, partial(decoded, size=size), chunk, workers=workers, desc="decode", progress=False)
            )
            split = Split(torch.from_numpy(images), torch.zeros(len(chunk), dtype=torch.long), compute.device)
            out.append(extract(model, split, batch_size, compute, mirrored=False).images[:, 0].cpu().numpy())
            bar.update(len(chunk))
    return np.concatenate(out).astype(np.float32)


def out_of_fold(x: np.ndarray, labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(N, K) probabilities, each photo's from a logistic regression fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fewest = int(np.bincount(labels).min())
    if fewest < folds:
        raise StageError(
            f"--folds {folds}: the smallest class has {fewest} photos; each fold needs one of every class (use --folds "
            f"{max(2, fewest)} or fewer)"
        )
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.05, max_iter=2000)
    )  # C: strong L2, 1,280 features from a few thousand photos
    return cross_val_predict(
        probe, x, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba"
    )


def suspects(
    labels: np.ndarray, proba: np.ndarray, x: np.ndarray, top: int
) -> tuple[list[int], np.ndarray, list[int], np.ndarray]:
    """(label issues most suspicious first, every photo's label quality, the `top` outliers most
    unusual first, every photo's outlier score): cleanlab's confident learning on the out-of-fold
    probabilities (self-confidence: the probability of the given label) and its out-of-distribution
    score on the features (low: unlike its nearest neighbours)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores

    issues = find_label_issues(labels, proba, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = get_label_quality_scores(labels, proba, method="self_confidence")
    unusual = OutOfDistribution().fit_score(features=x)
    shown = set(issues[:top].tolist())  # a photo already among the label issues is not shown twice
    outliers = [int(i) for i in np.argsort(unusual, kind="stable")[:top] if int(i) not in shown]
    return [int(i) for i in issues], quality, outliers, unusual


def thumbnail(archive: Archive, name: str) -> bytes:
    """The photo as a small JPEG, its whole frame (not the training crop: a person judges the photo)."""
    img = decode(archive.read(name), min_side=THUMB)
    img.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


CARD_CSS = (
    ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:14px}"
    ".card{border:1px solid #ddd;padding:6px;font-size:13px;overflow-wrap:anywhere}.card img{margin:0 auto 4px}"
)


def card(rank: int, name: str, thumb: bytes, facts: list[str]) -> str:
    lines = "".join(f"<div>{escape(f)}</div>" for f in facts)
    return (
        f'<div class="card" id="s{rank}">{page.img(thumb, name, "image/jpeg")}<b>{rank}. '
        f"{escape(name)}</b>{lines}</div>"
    )


def review_page(rows: list[dict], thumbs: dict[str, bytes], summary: dict) -> str:
    """index.html: the label issues, then the outliers, each a thumbnail with its facts."""
    title = "Label audit: the photos worth a second look"
    said = (
        f"{summary['photos']:,} photos of {len(summary['classes'])} classes; features from {summary['model']} at "
        f"{summary['image_size']} px, out-of-fold probabilities from {summary['folds']}-fold cross-validation of a "
        f"logistic regression (accuracy {summary['cv_accuracy']:.3f}); cleanlab finds {summary['label_issues']:,} "
        "likely label issues. Write your verdicts into verdicts-todo.yaml (keep, exclude or relabel <class>), then "
        "name the file in params.yaml, data.verdicts."
    )
    parts = [f"<style>{CARD_CSS}</style><h1>{escape(title)}</h1><p>{escape(said)}</p>"]
    for kind, heading in (
        ("label issue", "Likely label issues, most suspicious first"),
        ("outlier", "Outliers: unlike the other photos"),
    ):
        chosen = [r for r in rows if r["kind"] == kind]
        cards = "".join(
            card(
                r["rank"],
                r["member"],
                thumbs[r["member"]],
                [
                    f"given {r['given']}, suggested {r['suggested']}",
                    f"P(given) {r['p_given']:.3f}, outlier score {r['outlier_score']:.3f}",
                ],
            )
            for r in chosen
        )
        parts.append(
            f'<h2 id="{kind.replace(" ", "-")}s">{escape(heading)} ({len(chosen)})</h2><div class="cards">{cards}</div>'
        )
    return page.document(title, parts)


def todo_text(rows: list[dict]) -> str:
    """A verdict file with a `keep` line for each suspect (JSON-quoted names: valid YAML whatever the name)."""
    lines = [
        "# The label audit's suspects (python -m pipeline.audit), most suspicious first: change `keep` to `exclude`",
        "# (no class fits the photo) or `relabel <class>` where you agree, save this file under verdicts/ and name",
        "# it in params.yaml (data.verdicts). A line left at `keep` changes nothing.",
    ]
    for r in rows:
        lines += [
            f"# {r['rank']}. {r['kind']}: given {r['given']}, suggested {r['suggested']}, P(given) {r['p_given']:.3f}",
            f"{json.dumps(r['member'], ensure_ascii=False)}: keep",
        ]
    return "\n".join(lines) + "\n"


def audit(
    archive: Path,
    out: Path,
    *,
    compute: Compute,
    model_name: str = MODEL,
    image_size: int | None = None,
    folds: int = 5,
    top: int = 100,
    workers: int = 1,
) -> dict:
    """The whole audit of the photos in `archive`; writes index.html, suspects.csv, verdicts-todo.yaml
    and audit.json under `out` and returns the summary (audit.json's content)."""
    if (known := registry.pretrained(model_name)) is None:
        raise StageError(
            f"--model {model_name}: the audit needs a pretrained network's features; use one of "
            f"{', '.join(n for n in registry.registered() if registry.pretrained(n))}"
        )
    if not 1 <= top <= MAX_TOP:
        raise StageError(f"--top {top}: from 1 to {MAX_TOP} (each suspect is a thumbnail on the page)")
    if not 2 <= folds <= 20:
        raise StageError(f"--folds {folds}: from 2 to 20")
    size = image_size or known.native_size
    seconds = {}
    start = time.perf_counter()
    classes, usable, rejects = scan(archive, workers)
    if len(classes) < 2:
        raise StageError(f"{archive}: {len(classes)} class: the audit compares the labels of two at least")
    names, labels = [n for n, _ in usable], np.array([c for _, c in usable], dtype=np.int64)
    seconds["scan"] = time.perf_counter() - start
    registry.ensure_weights(model_name, {})
    model = registry.build(model_name, len(classes), 3, freeze="backbone", head=[]).to(
        compute.device, memory_format=compute.format
    )
    start = time.perf_counter()
    x = features(archive, names, model, size, compute, workers=workers)
    seconds["features"] = time.perf_counter() - start
    start = time.perf_counter()
    proba = out_of_fold(x, labels, folds)
    seconds["cross_validation"] = time.perf_counter() - start
    start = time.perf_counter()
    issues, quality, outliers, unusual = suspects(labels, proba, x, top)
    seconds["cleanlab"] = time.perf_counter() - start
    shown = [(i, "label issue") for i in issues[:top]] + [(i, "outlier") for i in outliers]
    rows = [
        {
            "rank": rank,
            "member": names[i],
            "kind": kind,
            "given": classes[labels[i]],
            "suggested": classes[int(proba[i].argmax())],
            "p_given": float(proba[i, labels[i]]),
            "label_quality": float(quality[i]),
            "outlier_score": float(unusual[i]),
        }
        for rank, (i, kind) in enumerate(shown, 1)
    ]
    start = time.perf_counter()
    with Archive(archive) as opened:
        thumbs = {r["member"]: thumbnail(opened, r["member"]) for r in rows}
    seconds["page"] = time.perf_counter() - start
    summary = {
        "archive": str(archive),
        "photos": len(names),
        "rejected": len(rejects),
        "classes": list(classes),
        "model": model_name,
        "image_size": size,
        "folds": folds,
        "cv_accuracy": float((proba.argmax(1) == labels).mean()),
        "label_issues": len(issues),
        "shown": {"label issue": min(top, len(issues)), "outlier": len(outliers)},
        "seconds": seconds,
        "device": compute.describe(),
    }
    atomic.write_text(
        out / "suspects.csv",
        csv_text(list(rows[0]) if rows else ["rank"], [tuple(r.values()) for r in rows], for_people=True),
    )
    atomic.write_text(out / "verdicts-todo.yaml", todo_text(rows))
    atomic.write_text(out / "index.html", review_page(rows, thumbs, summary))
    atomic.write_json(out / "audit.json", summary)
    return summary


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__.split("\n\n")[0])
    raw = cli.pipeline_paths().get("raw", "data/raw")
    parser.add_argument(
        "--archive",
        type=Path,
        default=Path(raw) / "images.zip",
        help=f"the photos: a .zip or a folder (default {raw}/images.zip, after dvc repro download)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/audit"),
        help="folder for index.html, suspects.csv, verdicts-todo.yaml, audit.json (default reports/audit)",
    )
    parser.add_argument(
        "--model", default=MODEL, help=f"the pretrained network whose features judge the photos (default {MODEL})"
    )
    parser.add_argument("--image-size", type=int, default=None, help="px (default: the network's native size)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument(
        "--top", type=int, default=100, help="label issues on the page, and as many outliers at most (default 100)"
    )
    args = parser.parse_args()
    if not args.archive.exists():
        raise StageError(
            f"{args.archive} does not exist: run `dvc repro download` first, or name the photos with --archive"
        )
    if args.image_size is not None and not 32 <= args.image_size <= 1024:
        raise StageError(f"--image-size {args.image_size}: from 32 to 1024 px")
    compute = resolve(recipes.load().runtime)
    summary = audit(
        args.archive,
        args.out,
        compute=compute,
        model_name=args.model,
        image_size=args.image_size,
        folds=args.folds,
        top=args.top,
        workers=cli.cpu_count(),
    )
    took = sum(summary["seconds"].values())
    print(
        f"audit: {summary['photos']:,} photos, cross-validated accuracy {summary['cv_accuracy']:.3f}; "
        f"{summary['label_issues']:,} likely label issues, {summary['shown']['outlier']} outliers shown; "
        f"{duration(took)} on {summary['device']}; review {args.out / 'index.html'}"
    )


if __name__ == "__main__":
    cli.run(main)
