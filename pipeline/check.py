"""Stage `check`: validate all of params.yaml, and fetch any pretrained weights, before any work: a
typo or a missing file fails in seconds, not after the download and preprocessing.

Every later stage validates its own sections again; this stage only moves the failure to the front.
Its marker file never changes, so rerunning it (any param changed) reruns nothing downstream.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import io, models, params

MARKER = "params.yaml is valid\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="marker file written when params are valid")
    args = parser.parse_args()
    p = params.load()
    models.preflight(p.models, p.data.image_size)  # pretrained weights present (or fetched), shapes fit
    io.write_text(args.out, MARKER)
    print(f"check: params.yaml is valid; training {', '.join(p.model_names)} at {p.data.image_size} px")


if __name__ == "__main__":
    io.run(main)
