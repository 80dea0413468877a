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


def csv_text(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


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
