"""Small file formats every stage writes the same way: CSV text, JSON, a file's sha256, reproducible zip members."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: a fixed stamp, so equal content gives equal bytes


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula (OWASP, CSV injection)


def csv_text(header: list[str], rows, *, for_people: bool = False) -> str:
    """CSV with a header row. `for_people`: a file people open in a spreadsheet (predict's output,
    the rejects list), where a cell such as `=cmd|' /C calc'!A0` from a photo's name would run as a
    formula: such cells are written with a leading `'` (OWASP's rule), numbers (-0.5) left as they
    are. The pipeline's own files (index files, plot data) are read back verbatim and left alone."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(([neutralised(cell) for cell in row] for row in rows) if for_people else rows)
    return buffer.getvalue()


def neutralised(cell: Any) -> Any:
    """`cell`, with a leading `'` when it is text a spreadsheet would take for a formula."""
    if not isinstance(cell, str) or not cell.startswith(FORMULA_START):
        return cell
    try:
        float(cell)
        return cell  # a negative number is data, not a formula
    except ValueError:
        return "'" + cell


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def zip_entry(name: str) -> zipfile.ZipInfo:
    """A stored (uncompressed) zip member with fixed metadata: JPEGs do not compress, and bytes stay reproducible."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, whatever the platform that writes it
    info.external_attr = 0o644 << 16  # rw-r--r--
    return info
