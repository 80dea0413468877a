"""The bounds every input is held to, in one place: params (pipeline.params.sections), archives
(split) and model files (pipeline.models.modelfile) alike, so that a model file from a stranger
cannot claim what params.yaml could not set."""

from __future__ import annotations

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
