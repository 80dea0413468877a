"""Stage `split`: find the classes, validate every image of the archive once, then a deterministic
split, stratified by class.

Classes and labels come from the layout only: Dogs-vs-Cats' (`train/cat.1.jpg`, `PetImages/Cat/1.jpg`)
or any class-folder archive (`<class>/1.jpg` at any depth), see images.labelling. An archive whose
photos sit under `train/` and `test/` folders (Fashion-MNIST's, as the download stage writes it)
keeps its own test split, validation drawn from its train part. Every member that cannot be used is
listed with its reason in rejects.csv.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline.common import atomic, cli
from pipeline.common.errors import ParamError, StageError
from pipeline.common.formats import csv_text
from pipeline.data import verdicts
from pipeline.data.images import DOGS_VS_CATS
from pipeline.data.layout import SPLITS, index_file, index_text
from pipeline.data.members import scan
from pipeline.data.verdicts import Verdict
from pipeline.params import sections
from pipeline.params.sections import DataParams

PARTS = ("train", "test")  # folder names by which an archive carries its own test split


def archive_part(name: str, classes: tuple[str, ...]) -> str | None:
    """ "train" or "test" when a folder above the photo (above its class folder) is so named, any case."""
    folders = name.split("/")[:-1]
    if classes != DOGS_VS_CATS:
        folders = folders[:-1]  # the class folder itself: a class may be called "test"
    return next((f.lower() for f in reversed(folders) if f.lower() in PARTS), None)


def own_parts(members: list[tuple[str, int]], classes: tuple[str, ...]) -> dict[str, str] | None:
    """Each member's part ("train" or "test") when the archive carries its own split: every usable
    photo under a train/ or a test/ folder, both present. Else None: the split is drawn."""
    parts = {name: archive_part(name, classes) for name, _ in members}
    if None in parts.values() or set(parts.values()) != set(PARTS):
        return None
    return parts


def refuse_classes(counts: dict[str, int], need: int, where: str = "") -> None:
    """One class is no classification; each class needs `need` images at least (one per split)."""
    if not any(counts.values()):
        raise StageError(
            f"no photo in the archive has a class{where}: put each class's photos in a folder named after it "
            "(<class>/1.jpg), or use Dogs-vs-Cats' names (train/cat.1.jpg)"
        )
    if len(counts) < 2:
        raise StageError(
            f"the archive has a single class, {next(iter(counts))!r}{where}: a classifier needs two at least"
        )
    few = {c: n for c, n in counts.items() if n < need}
    if few:
        listed = ", ".join(f"{c!r} has {n}" for c, n in few.items())
        raise StageError(
            f"too few usable images{where}: {listed}; each class needs {need} at least (one for each split)"
        )


def subsample(by_class: dict[int, list], keep: dict[int, int], seed: int) -> dict[int, list]:
    """A seeded choice of keep[c] members of each class c, in name order."""
    rng = np.random.default_rng(seed)
    return {c: [v[i] for i in sorted(rng.permutation(len(v))[: keep[c]])] for c, v in by_class.items()}


def assign(
    members: list[tuple[str, int]],
    p: DataParams,
    classes: tuple[str, ...],
    parts: dict[str, str] | None = None,
    judged: dict[str, Verdict] | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """Cap each class at `max_per_class` (a seeded choice), then split stratified by class: test drawn
    with test_fraction, or, with `parts` (the archive's own split), its test part whole and validation
    a val_fraction of its train part. A capped own split keeps its train:test proportion per class.
    Then the verdicts (`judged`) apply to the training and validation photos; the test photos keep
    their given labels (data/verdicts.py): the same test photos with and without verdicts."""
    by_class: dict[int, list] = {c: [] for c in range(len(classes))}
    for member in members:  # one pass, whatever the number of classes
        by_class[member[1]].append(member)
    if parts is None:
        refuse_classes(_cap_fits(_counts(by_class, classes), p), 3)
        if p.max_per_class is not None:
            by_class = subsample(by_class, {c: p.max_per_class for c in by_class}, p.seed)
        chosen = sorted(m for v in by_class.values() for m in v)
        rest, test = _draw(chosen, p.test_fraction, p.seed, "test_fraction")
        train, val = _draw(rest, p.val_fraction / (1 - p.test_fraction), p.seed, "val_fraction")
    else:
        own_train, own_test = (
            {c: [m for m in v if parts[m[0]] == part] for c, v in by_class.items()} for part in PARTS
        )
        refuse_classes(_cap_fits(_counts(own_train, classes), p, " in its train/ folder"), 2, " in the train/ folder")
        refuse_classes(_counts(own_test, classes), 1, " in the test/ folder")
        if p.max_per_class is not None:  # each class keeps the same share of its test photos as of its train photos
            keep = {c: min(p.max_per_class, len(v)) for c, v in own_train.items()}
            share = {c: keep[c] / len(v) for c, v in own_train.items()}
            own_test = subsample(own_test, {c: max(1, round(share[c] * len(v))) for c, v in own_test.items()}, p.seed)
            own_train = subsample(own_train, keep, p.seed)
        test = [m for v in own_test.values() for m in v]
        train, val = _draw(sorted(m for v in own_train.values() for m in v), p.val_fraction, p.seed, "val_fraction")
    if judged:
        train, val = verdicts.apply(train, judged, classes), verdicts.apply(val, judged, classes)
        for kept, use in ((train, "training"), (val, "validation")):
            counts = Counter(label for _, label in kept)
            refuse_classes({cls: counts[c] for c, cls in enumerate(classes)}, 1, f" for {use} once the verdicts apply")
    if p.train_photos is not None:
        train = fewer(train, p.train_photos, len(classes), p.seed)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def fewer(train: list[tuple[str, int]], count: int, classes: int, seed: int) -> list[tuple[str, int]]:
    """`count` of the training photos, drawn after the split so that the validation and test photos
    never change: as even across the classes as their numbers allow (the rest from the classes that
    have more), and nested: each class's photos in one seeded order, of which the first are taken,
    so 40 photos are among the 400, and those among the 4,000 (a learning curve adds photos, it does
    not swap them)."""
    if count > len(train):
        raise ParamError(
            "data.train_photos",
            count,
            f"the split leaves {len(train):,} training photos: ask for at most as many (or null for all)",
        )
    if count < classes:
        raise ParamError(
            "data.train_photos", count, f"every one of the {classes} classes needs a training photo at least"
        )
    by_class = [sorted(m for m in train if m[1] == c) for c in range(classes)]
    rng = np.random.default_rng(seed)
    ordered = [[v[i] for i in rng.permutation(len(v))] for v in by_class]
    share, left = [0] * classes, count
    while left:  # a photo to each class that still has some, in turn: even shares, the smaller classes whole
        for c in range(classes):
            if left and share[c] < len(ordered[c]):
                share[c] += 1
                left -= 1
    return [m for c in range(classes) for m in ordered[c][: share[c]]]


def _counts(by_class: dict[int, list], classes: tuple[str, ...]) -> dict[str, int]:
    return {classes[c]: len(v) for c, v in by_class.items()}


def _cap_fits(counts: dict[str, int], p: DataParams, where: str = "") -> dict[str, int]:
    """`counts` (usable images per class), once data.max_per_class is known to be at most each of them."""
    if p.max_per_class is not None and counts and p.max_per_class > min(counts.values()):
        listed = ", ".join(f"{n} {c}" for c, n in counts.items())
        raise ParamError("data.max_per_class", p.max_per_class, f"the archive has only {listed} usable images{where}")
    return counts


def _draw(members: list[tuple[str, int]], fraction: float, seed: int, key: str) -> tuple[list, list]:
    """(the rest, a stratified `fraction` of `members`)."""
    try:
        return train_test_split(
            members, test_size=fraction, stratify=[label for _, label in members], random_state=seed
        )
    except ValueError as e:  # too few images for the fractions: every split needs each class
        raise StageError(f"cannot split {len(members)} images with data.{key} = {fraction:g}: {e}") from None


def split(archive: Path, out: Path, p: DataParams, *, workers: int) -> dict:
    """Write out/{train,val,test}.csv (member,label), out/rejects.csv, out/verdicts.csv (each photo
    the verdicts change: its split, given class and verdict) and out/summary.json (with the test
    photos' labels after the verdicts, for evaluate)."""
    judged = verdicts.read(Path(p.verdicts))  # before the archive is scanned: a bad file fails in a moment
    classes, usable, rejects = scan(archive, workers)
    verdicts.check(judged, classes, p.verdicts)
    parts = own_parts(usable, classes)
    splits = assign(usable, p, classes, parts, judged)
    for name in SPLITS:
        atomic.write_text(index_file(out, name), index_text(splits[name], classes))
    atomic.write_text(out / "rejects.csv", csv_text(["member", "reason"], rejects, for_people=True))
    drawn = (
        assign(usable, dataclasses.replace(p, train_photos=None), classes, parts) if judged else splits
    )  # as given: what the verdicts change
    changed = {name: verdicts.changes([m for m in drawn[name] if m[0] in judged], judged, classes) for name in SPLITS}
    rows = [(member, name, was, verdict) for name in SPLITS for member, was, verdict in changed[name]]
    atomic.write_text(out / "verdicts.csv", csv_text(["member", "split", "given", "verdict"], rows, for_people=True))
    judged_test = [m for m in splits["test"] if m[0] in judged]
    test_after = {
        m: c for (m, was), c in zip(judged_test, verdicts.labels_after(judged_test, judged, classes)) if c != was
    }
    usable_names = {m for m, _ in usable}
    summary = {
        "images": {
            name: {cls: sum(1 for _, c in splits[name] if c == i) for i, cls in enumerate(classes)} for name in SPLITS
        },
        "usable": len(usable),
        "rejected": len(rejects),
        "rejects": dict(sorted(Counter(reason for _, reason in rejects).items())),
        "classes": list(classes),
        "test": "the archive's own test/ folder" if parts else "drawn at data.test_fraction",
        "verdicts": {
            "file": p.verdicts,
            "sha256": verdicts.fingerprint(Path(p.verdicts)),
            "given": len(judged),
            "in_source": sum(m in usable_names for m in judged),
            "changed": {
                name: {a: sum(v.startswith(a) for *_, v in changed[name]) for a in ("exclude", "relabel")}
                for name in SPLITS
            },
            # each test photo a verdict changes: the class it has after them, or null (excluded)
            "test_labels": {m: (classes[c] if c != verdicts.EXCLUDED else None) for m, c in test_after.items()},
        },
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
    classes = summary["classes"]
    named = ", ".join(classes) if len(classes) <= 12 else ", ".join(classes[:12]) + ", ..."
    print(
        f"split: {len(classes)} classes ({named}); {counts} (test {summary['test']}); rejected {summary['rejected']} "
        f"{summary['rejects'] or ''}"
    )


if __name__ == "__main__":
    cli.run(main)
