"""Small file formats every stage writes the same way: CSV text, JSON, a file's sha256, reproducible zip members."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from pipeline.common import files
from pipeline.common.errors import StageError

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: a fixed stamp, so equal content gives equal bytes


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula (OWASP, CSV injection)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters: never part of a name worth keeping as is


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
    """`cell` as a spreadsheet shows it harmlessly: its control characters written as `\\xNN` (a `\\r`
    would otherwise end the row, and a spreadsheet start a new one at a formula after it), and a
    leading `'` when it reads as a formula, after any spaces (some spreadsheets skip them)."""
    if not isinstance(cell, str):
        return cell
    cell = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", cell)
    if not cell.lstrip(" ").startswith(FORMULA_START):
        return cell
    try:
        float(cell)
        return cell  # a negative number is data, not a formula
    except ValueError:
        return "'" + cell


MAX_JSON_BYTES = 256 << 20  # a results file holds a row per test photo: ~100 bytes each, 25,000 photos in 3 MB


def read_json(path: Path | str, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file the pipeline wrote; one that is not a regular file, too large, or not JSON (a
    merge left conflict markers in it, an editor cut it short) is a StageError saying so."""
    return parse_json(files.read_bytes(path, "the file", limit), str(path))


def parse_json(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        markers = (
            " (it holds merge-conflict markers: resolve them, or restore it with dvc checkout / git checkout)"
            if "<<<<<<<" in (data if isinstance(data, str) else data.decode("utf-8", "replace"))
            else ""
        )
        raise StageError(f"{where} is not JSON: {' '.join(str(e).split())[:200]}{markers}") from None


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
