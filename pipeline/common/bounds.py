"""The bounds every input is held to, in one place: params (pipeline.params.sections), archives
(split) and model files (pipeline.models.modelfile) alike, so that a model file from a stranger
cannot claim what params.yaml could not set."""

from __future__ import annotations

from pipeline.common.errors import ParamError

# Upper bounds, each with its reason: a value past one is a typo, not an experiment.
LIMITS = {
    "image_size": (1024, "the photos are about 500 px (the 9k set 200 px); 1,024 px already makes 3 MB per image"),
    "batch_size": (8192, "far past what any of these networks trains well with, or a GPU holds at 224 px"),
    "epochs": (10_000, "each epoch sees every training photo"),
    "processes": (1024, "one process per GPU or a share of the CPU cores"),
    "threads": (4096, "one thread per core"),
    # data.source synthetic:N; 9 KB a photo, generated at about 1,000 a second a core
    "synthetic_photos": (100_000, "four times the Kaggle set's 25,000: 0.9 GB of generated JPEGs"),
}

POLICIES = ("crop", "squash")  # how a photo becomes a square: data.resize, and a model file's meta.resize
MAX_CLASSES = 1000  # ImageNet's count; every class needs photos in three splits and a column in every table
MAX_CLASS_NAME = 100  # characters: a class name is a folder name, printed in every table and figure
SYNTHETIC = "synthetic"  # data.source: generated photos; "synthetic:N": N of them, half of each class
SYNTHETIC_PHOTOS = 600  # plain `synthetic`: 300 a class, a smoke run's worth


def classes_problem(classes: list | tuple) -> str | None:
    """Why these classes cannot go through every later stage (tables, CSVs, figures, the HTML
    report, a model file), or None: 2 to MAX_CLASSES distinct names, each printable text of 1 to
    MAX_CLASS_NAME characters."""
    if not isinstance(classes, (list, tuple)) or not 2 <= len(classes) <= MAX_CLASSES:
        count = len(classes) if isinstance(classes, (list, tuple)) else type(classes).__name__
        return f"{count} classes: a classifier needs 2 to {MAX_CLASSES:,}"
    for name in classes:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_CLASS_NAME or not name.isprintable():
            return f"the class name {name!r:.120} is not printable text of 1 to {MAX_CLASS_NAME} characters"
    if len(set(classes)) != len(classes):
        return "a class name is given twice"
    return None


def synthetic_photos(source: str) -> int | None:
    """How many photos data.source `synthetic` (600) or `synthetic:N` (N) generates; None for any other source.

    N is even (half of each class), at least 2 and at most LIMITS["synthetic_photos"]: a full-scale
    speed run needs no photos (`synthetic:25000`, the Kaggle set's size)."""
    if source == SYNTHETIC:
        return SYNTHETIC_PHOTOS
    head, colon, count = source.partition(":")
    if head != SYNTHETIC or not colon:
        return None
    most, why = LIMITS["synthetic_photos"]
    allowed = f"synthetic:N takes an even number of photos N (half of each class) from 2 to {most:,} ({why})"
    if not (count.isascii() and count.isdigit()) or len(count) > 7:
        raise ParamError("data.source", source, allowed)
    photos = int(count)
    if not 2 <= photos <= most or photos % 2:
        raise ParamError("data.source", source, allowed)
    return photos
