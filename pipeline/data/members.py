"""The photos of a source: every member of the archive (or folder) that decodes, with its class
from the layout (images.labelling), and every one that cannot be used with its reason. Read by the
split stage and by the label audit, which must see the same photos."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline.common.bounds import classes_problem
from pipeline.common.errors import StageError
from pipeline.data.images import Archive, RejectError, decode, labelling
from pipeline.data.workers import map_archive

VALIDATE_SIDE = 32  # px: JPEGs decode at their smallest DCT scale; every byte is still read and checked


def check_member(archive: Archive, name: str) -> str | None:
    """None if the member decodes to an RGB image, else the reason it cannot be used."""
    try:
        decode(archive.read(name), min_side=VALIDATE_SIDE)
        return None
    except RejectError as e:
        return e.reason


def scan(archive: Path, workers: int) -> tuple[tuple[str, ...], list[tuple[str, int]], list[tuple[str, str]]]:
    """(the classes, usable members with their label, rejected members with their reason), sorted by name."""
    with Archive(archive) as opened:
        listed = opened.names()
    repeated = {name for name, n in Counter(listed).items() if n > 1}  # one pass: a count per name would be quadratic
    names = sorted(set(listed) - repeated)  # a name given twice is ambiguous: which one is the photo?
    classes, found = labelling(names)
    if len(classes) > 1 and (
        problem := classes_problem(classes)
    ):  # before a photo is decoded (fewer: refuse_classes says it better)
        raise StageError(f"{archive}: {problem} (the classes are the folders that hold the photos)")
    labels = dict(zip(names, found))
    unprintable = {
        name for name in names if not name.isprintable()
    }  # a \r or \n would end a CSV row of the index early
    rejects = [(name, "name repeated in the archive") for name in sorted(repeated)]
    rejects += [(name, "control characters in its name") for name in sorted(unprintable)]
    rejects += [(name, "no class in its path") for name in names if labels[name] is None and name not in unprintable]
    candidates = [name for name in names if labels[name] is not None and name not in unprintable]
    reasons = map_archive(archive, check_member, candidates, workers=workers, desc="validate")
    rejects += [(name, reason) for name, reason in zip(candidates, reasons) if reason]
    usable = [(name, labels[name]) for name, reason in zip(candidates, reasons) if not reason]
    return classes, usable, sorted(rejects)
