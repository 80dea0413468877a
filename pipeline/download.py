"""The `download` stage: the photos as one archive, data/raw/images.zip, and where it came from.

One zip rather than 25,000 loose files: DVC tracks it as a single file (a fast `dvc status`) and later
stages read images straight out of it. `data.source` picks where it comes from (pipeline.data.sources): the
Microsoft mirror of the Kaggle photos, the competition's own zip, Fashion-MNIST (written as
train/<class>/*.png and test/<class>/*.png: its official split, kept by the split stage), a
generated stand-in, or a zip or folder of your own.

Downloads are kept, verified, in data/.downloads: DVC deletes data/raw before a rerun, not that.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.common import atomic, cli
from pipeline.common.bounds import synthetic_photos
from pipeline.common.errors import StageError
from pipeline.common.formats import sha256_file
from pipeline.data import fashion_mnist, synthetic
from pipeline.data.fetch import fetch
from pipeline.data.sources import (
    COMPETITION,
    FASHION_MNIST,
    MICROSOFT,
    from_fashion_mnist,
    from_kaggle,
    from_local,
    link_or_copy,
    local_path,
)
from pipeline.params import sections

ARCHIVE = "images.zip"


def download(source: str, out: Path, downloads: Path, *, base_dir: Path | None = None) -> Path:
    """Write out/images.zip from `source`, and out/source.json saying what it is; return the archive's
    path. Both are made in a temporary folder that becomes `out` at the end: stopped at any point
    (Ctrl-C while a folder is zipped or hashed), the stage leaves no `out` rather than half of one."""
    with atomic.atomic_path(out) as folder:
        folder.mkdir()
        archive = folder / ARCHIVE
        if source == "microsoft":
            link_or_copy(fetch(MICROSOFT, downloads), archive)
            origin = MICROSOFT.url
        elif source == "kaggle":
            from_kaggle(archive, downloads)
            origin = f"https://www.kaggle.com/competitions/{COMPETITION}"
        elif source == FASHION_MNIST:
            fashion_mnist.write_archive(fashion_mnist.find(from_fashion_mnist(downloads)), archive)
            origin = fashion_mnist.MIRROR
        elif source.startswith(FASHION_MNIST + ":"):
            path = local_path(source.partition(":")[2], base_dir)
            if not path.exists():
                raise StageError(
                    f"data.source = {source!r}: {path} was not found; name the folder or zip that holds the four IDX "
                    "files"
                )
            fashion_mnist.write_archive(fashion_mnist.find(path), archive)
            origin = str(path)
        elif (photos := synthetic_photos(source)) is not None:
            synthetic.make_archive(archive, per_class=photos // 2, workers=cli.cpu_count())
            origin = "pipeline/data/synthetic.py"
        else:
            path = local_path(source, base_dir)
            from_local(source, path, archive)
            origin = str(path)
        info = {"source": source, "archive": ARCHIVE, "origin": origin, "bytes": archive.stat().st_size}
        digest = MICROSOFT.sha256 if source == "microsoft" else sha256_file(archive)  # the former just verified
        atomic.write_json(folder / "source.json", {**info, "sha256": digest})
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)  # a previous run's: the new one replaces it whole
    return out / ARCHIVE


def main() -> None:
    parser = cli.parser(__spec__.name, "Fetch the photos of data.source as one archive.")
    parser.add_argument("--out", type=Path, required=True, help="folder for images.zip and source.json")
    parser.add_argument("--downloads", type=Path, required=True, help="verified download cache, kept between runs")
    args = parser.parse_args()
    download(sections.load_data().source, args.out, args.downloads)


if __name__ == "__main__":
    cli.run(main)
