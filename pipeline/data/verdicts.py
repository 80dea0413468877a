"""A person's verdicts on photos whose label is in doubt (python -m pipeline.audit lists the
suspects): a YAML file, one photo per line, that the split stage applies before anything trains.

    train/cat.1234.jpg: exclude       # neither a cat nor a dog: out of every split
    train/dog.77.jpg: relabel cat     # a cat, filed under dog: trained and validated as a cat
    train/cat.98.jpg: keep            # looked at: the label stands (the same as no line)

The key is the photo's name in the source (its archive member, or its path in a folder source), the
value `keep`, `exclude` or `relabel <class>`. A photo the source does not hold is not an error (one
file serves the 1,000-photo sample and the 25,000 alike); a class the source does not have, a photo
given twice or any other value is, naming the file and the photo.

Applied after the photos are assigned to train, validation and test by their given labels, so that
the test photos are the same photos with and without verdicts: the training and validation photos
take the verdicts (excluded ones dropped, relabelled ones moved), the test split keeps every photo
with its given label and records beside it the label the verdicts give it (see preprocess and
evaluate: the test metrics as given and with the verdicts applied, side by side).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.common import files, schema
from pipeline.common.errors import ParamError
from pipeline.data.layout import EXCLUDED

KEY = "data.verdicts"
MAX_BYTES = 8 << 20  # ~100,000 verdicts: more than any person reviews


@dataclass(frozen=True)
class Verdict:
    action: str  # keep | exclude | relabel
    label: str | None = None  # the class, for relabel

    def __str__(self) -> str:
        return f"relabel {self.label}" if self.action == "relabel" else self.action


def parse(text: str, where: str) -> dict[str, Verdict]:
    """{photo: its verdict} from a verdict file's text; `where` names the file in errors."""
    found = schema.loads(text, KEY, where) if text.strip() else {}
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise ParamError(KEY, where, "must map each photo to its verdict (train/cat.1.jpg: exclude), one per line")
    out = {}
    for photo, value in found.items():
        if not isinstance(photo, str) or not photo:
            raise ParamError(KEY, where, f"{photo!r} is not a photo's name in the source")
        words = value.split() if isinstance(value, str) else []
        if words in (["keep"], ["exclude"]):
            out[photo] = Verdict(words[0])
        elif len(words) >= 2 and words[0] == "relabel":
            out[photo] = Verdict("relabel", value.split(None, 1)[1].strip())
        else:
            raise ParamError(KEY, where, f"{photo}: {value!r} is not a verdict: use keep, exclude or relabel <class>")
    return out


def read(path: Path) -> dict[str, Verdict]:
    """The verdicts of the file at `path` (a regular file of at most MAX_BYTES)."""
    data = files.read_bytes(path, "the verdict file (data.verdicts)", MAX_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamError(KEY, str(path), "is not UTF-8 text") from None
    return parse(text, str(path))


def fingerprint(path: Path) -> str:
    return hashlib.sha256(files.read_bytes(path, "the verdict file (data.verdicts)", MAX_BYTES)).hexdigest()


def check(verdicts: dict[str, Verdict], classes: tuple[str, ...], where: str) -> None:
    """Every relabel names one of the source's classes (the photo need not be in this source)."""
    for name, v in verdicts.items():
        if v.action == "relabel" and v.label not in classes:
            known = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
            raise ParamError(KEY, where, f"{name}: relabel {v.label}, and the source's classes are {known}")


def labels_after(members: list[tuple[str, int]], verdicts: dict[str, Verdict], classes: tuple[str, ...]) -> list[int]:
    """Each member's label once the (checked) verdicts apply: its own, the relabelled class's, or EXCLUDED."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for name, label in members:
        v = verdicts.get(name)
        if v is None or v.action == "keep":
            out.append(label)
        elif v.action == "exclude":
            out.append(EXCLUDED)
        else:
            out.append(index[v.label])
    return out


def apply(
    members: list[tuple[str, int]], verdicts: dict[str, Verdict], classes: tuple[str, ...]
) -> list[tuple[str, int]]:
    """`members` (name, label) as the verdicts have them: excluded ones dropped, relabelled ones moved."""
    after = labels_after(members, verdicts, classes)
    return [(name, label) for (name, _), label in zip(members, after) if label != EXCLUDED]


def changes(
    members: list[tuple[str, int]], verdicts: dict[str, Verdict], classes: tuple[str, ...]
) -> list[tuple[str, str, str]]:
    """(photo, given class, verdict) for each member a verdict changes (keep changes nothing)."""
    after = labels_after(members, verdicts, classes)
    return [(name, classes[label], str(verdicts[name])) for (name, label), new in zip(members, after) if new != label]
