"""Stage `split`: validate every image of the archive once, then a deterministic stratified split.

Labels come from the layout only (`train/cat.1.jpg`, `PetImages/Cat/1.jpg`, `cat/1.jpg`). Every
member that cannot be used is listed with its reason in rejects.csv; its count is a DVC metric.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline import atomic, cli, sections
from pipeline.errors import ParamError, StageError
from pipeline.files import CLASSES, SPLITS, csv_text, index_file, index_text
from pipeline.images import Archive, RejectError, decode, label_of
from pipeline.sections import DataParams
from pipeline.workers import map_archive

VALIDATE_SIDE = 32  # px: JPEGs decode at their smallest DCT scale; every byte is still read and checked


def check_member(archive: Archive, name: str) -> str | None:
    """None if the member decodes to an RGB image, else the reason it cannot be used."""
    try:
        decode(archive.read(name), min_side=VALIDATE_SIDE)
        return None
    except RejectError as e:
        return e.reason


def scan(archive: Path, workers: int) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """(usable members with their label, rejected members with their reason), sorted by name."""
    with Archive(archive) as opened:
        listed = opened.names()
    repeated = {name for name in listed if listed.count(name) > 1} if len(set(listed)) < len(listed) else set()
    names = sorted(set(listed) - repeated)  # a name given twice is ambiguous: which one is the photo?
    labels = {name: label_of(name) for name in names}
    rejects = [(name, "name repeated in the archive") for name in sorted(repeated)]
    rejects += [(name, "no class in its path") for name in names if labels[name] is None]
    candidates = [name for name in names if labels[name] is not None]
    reasons = map_archive(archive, check_member, candidates, workers=workers, desc="validate")
    rejects += [(name, reason) for name, reason in zip(candidates, reasons) if reason]
    usable = [(name, labels[name]) for name, reason in zip(candidates, reasons) if not reason]
    return usable, sorted(rejects)


def assign(members: list[tuple[str, int]], p: DataParams) -> dict[str, list[tuple[str, int]]]:
    """Cap each class at `max_per_class` (a seeded choice), then split stratified by class."""
    by_class = {c: [m for m in members if m[1] == c] for c in range(len(CLASSES))}
    if p.max_per_class is not None:
        smallest = min(len(v) for v in by_class.values())
        if p.max_per_class > smallest:
            counts = ", ".join(f"{len(v)} {CLASSES[c]}s" for c, v in by_class.items())
            raise ParamError("data.max_per_class", p.max_per_class, f"the archive has only {counts} usable images")
        rng = np.random.default_rng(p.seed)
        by_class = {c: [v[i] for i in sorted(rng.permutation(len(v))[: p.max_per_class])] for c, v in by_class.items()}
    chosen = sorted(m for v in by_class.values() for m in v)
    labels = [label for _, label in chosen]
    for c, v in by_class.items():
        if len(v) < 3:
            raise StageError(f"only {len(v)} usable {CLASSES[c]} images: train, val and test need one each at least")
    try:
        rest, test = train_test_split(chosen, test_size=p.test_fraction, stratify=labels, random_state=p.seed)
        rest_labels = [label for _, label in rest]
        train, val = train_test_split(
            rest, test_size=p.val_fraction / (1 - p.test_fraction), stratify=rest_labels, random_state=p.seed
        )
    except ValueError as e:  # too few images for the fractions: every split needs each class
        raise StageError(f"cannot split {len(chosen)} images with these fractions: {e}") from None
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def split(archive: Path, out: Path, p: DataParams, *, workers: int) -> dict:
    """Write out/{train,val,test}.csv (member,label), out/rejects.csv and out/summary.json."""
    usable, rejects = scan(archive, workers)
    splits = assign(usable, p)
    for name in SPLITS:
        atomic.write_text(index_file(out, name), index_text(splits[name]))
    atomic.write_text(out / "rejects.csv", csv_text(["member", "reason"], rejects))
    summary = {
        "images": {name: {cls: sum(1 for _, c in splits[name] if CLASSES[c] == cls) for cls in CLASSES} for name in SPLITS},
        "usable": len(usable),
        "rejected": len(rejects),
        "rejects": dict(sorted(Counter(reason for _, reason in rejects).items())),
    }
    atomic.write_json(out / "summary.json", summary)
    return summary


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    summary = split(args.archive, args.out, sections.load_data(), workers=cli.cpu_count())
    counts = ", ".join(f"{name} {sum(summary['images'][name].values())}" for name in SPLITS)
    print(f"split: {counts}; rejected {summary['rejected']} {summary['rejects'] or ''}")


if __name__ == "__main__":
    cli.run(main)
