"""Where the photos come from (params `data.source`), and how each source becomes one archive:

    microsoft      the public mirror of the Kaggle Dogs-vs-Cats images (825 MB): resumable, verified by sha256
    kaggle         the competition's own train.zip, through the `kaggle` package and your API token
    fashion-mnist  the course's 28×28 grey clothes, 10 classes: the four IDX files from torchvision's
                   mirror (verified, resumable), or `fashion-mnist:<folder or zip>` holding them
    synthetic      generated shapes (data/synthetic.py) for offline smoke runs: 600 photos, or
                   `synthetic:N` for N (`synthetic:25000`: the Kaggle set's size, for a speed run)
    <path>         a .zip (used in place) or a folder of images (zipped once, uncompressed), in
                   Dogs-vs-Cats' layouts or one folder per class (data.images.labelling)

`source_problem` says in milliseconds, without downloading, why a source cannot be used: the
check stage asks it first.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import stat
import sys
import tempfile
import urllib.parse
import zipfile
from pathlib import Path

from pipeline.common import atomic, files
from pipeline.common.bounds import synthetic_photos
from pipeline.common.errors import StageError
from pipeline.common.formats import zip_entry
from pipeline.common.progress import track
from pipeline.data import fashion_mnist, images
from pipeline.data.fetch import CHUNK, Remote, fetch, local_hint
from pipeline.data.images import IMAGE_SUFFIXES

COMPETITION = "dogs-vs-cats"
FASHION_MNIST = "fashion-mnist"  # and "fashion-mnist:<folder or zip>" for files already at hand
ACCEPTED = "microsoft, kaggle, fashion-mnist, synthetic[:N], or a path to a .zip or a folder of images"


MICROSOFT = Remote(
    url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip",
    size=824_887_076,
    sha256="b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9",
    filename="kagglecatsanddogs_5340.zip",
)


def source_problem(source: str, downloads: Path, *, base_dir: Path | None = None) -> str | None:
    """Why `source` cannot be fetched, found in milliseconds without downloading; None if it looks fine.

    The `check` stage asks this first, so an offline machine hears about it before any other work.
    """
    if source == "microsoft":
        cached = downloads / MICROSOFT.filename
        if cached.is_file() and cached.stat().st_size == MICROSOFT.size:
            return None
        host = urllib.parse.urlsplit(MICROSOFT.url).hostname
        try:
            socket.getaddrinfo(host, 443)
        except OSError as e:
            return (
                f"data.source = 'microsoft': cannot reach {host} ({e}) to download {MICROSOFT.url}. "
                f"{local_hint(MICROSOFT)}"
            )
    elif source == "kaggle":
        if importlib.util.find_spec("kaggle") is None:
            return "data.source = 'kaggle' needs the kaggle package: pip install kaggle (or pip install -e '.[kaggle]')"
    elif source == FASHION_MNIST:
        folder = downloads / FASHION_MNIST
        if all(
            (folder / r.filename).is_file() and (folder / r.filename).stat().st_size == r.size
            for r in fashion_mnist.REMOTES
        ):
            return None
        host = urllib.parse.urlsplit(fashion_mnist.MIRROR).hostname
        try:
            socket.getaddrinfo(host, 80)
        except OSError as e:
            return (
                f"data.source = 'fashion-mnist': cannot reach {host} ({e}) to download the four IDX files. "
                f"If you have them, set data.source to fashion-mnist:/path/to/their/folder (or a zip of them)"
            )
    elif source.startswith(FASHION_MNIST + ":"):
        path = local_path(source.partition(":")[2], base_dir)
        if not path.exists():
            return (
                f"data.source = {source!r}: {path} was not found; name the folder or zip that holds the four IDX files"
            )
    elif synthetic_photos(source) is None:
        path = local_path(source, base_dir)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return f"data.source = {source!r} was taken as a path, but {path} was not found. Use {ACCEPTED}"
        except (OSError, ValueError) as e:  # a name too long, a loop of links, no permission
            return f"data.source = {source[:200]!r}{'…' if len(source) > 200 else ''}: {files.said(e)}"
        if not (
            stat.S_ISDIR(mode) or stat.S_ISREG(mode)
        ):  # never opened: /dev/zero would be read for ever, a FIFO block
            return (
                f"data.source = {source!r}: {path} is {files.kind(mode)}, not a .zip archive or a folder. Use "
                f"{ACCEPTED}"
            )
    return None


def local_path(source: str, base_dir: Path | None) -> Path:
    """A path in data.source, relative to the project (or `base_dir`), as an absolute path."""
    return Path(os.path.abspath((base_dir or Path.cwd()) / Path(source).expanduser()))


def from_fashion_mnist(downloads: Path) -> Path:
    """Fetch (or reuse, verified) Fashion-MNIST's four official files into downloads/fashion-mnist; that folder."""
    folder = downloads / FASHION_MNIST
    for remote in fashion_mnist.REMOTES:
        fetch(remote, folder)
    return folder


# ---------------------------------------------------------------- kaggle: the competition's train.zip


def from_kaggle(archive: Path, downloads: Path, *, competition: str = COMPETITION) -> None:
    """Download the competition's files with the `kaggle` package; keep the train.zip inside as `archive`."""
    api = _kaggle_api()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix="kaggle-") as tmp:
        try:
            api.competition_download_files(competition, path=tmp, quiet=False)
        except Exception as e:  # kaggle raises its own ApiException (<1.7) or requests' HTTPError
            status = getattr(e, "status", None) or getattr(getattr(e, "response", None), "status_code", None)
            if status == 403:
                raise StageError(
                    f"Kaggle refused the {competition} files (HTTP 403): accept the competition's rules "
                    f"first, at https://www.kaggle.com/competitions/{competition}/rules, then rerun"
                ) from e
            raise StageError(f"downloading the Kaggle competition {competition} failed: {e}") from e
        bundle = Path(tmp) / f"{competition}.zip"
        if not bundle.is_file():
            found = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise StageError(f"the kaggle package wrote {found} instead of {bundle.name}: is it a recent version?")
        _extract(bundle, "train.zip", archive)


def _kaggle_api():
    try:
        import kaggle  # some versions authenticate on import: they raise OSError, or print and exit

        api = kaggle.api
        api.authenticate()
    except ModuleNotFoundError as e:
        if e.name != "kaggle":
            raise
        raise StageError(
            "data.source=kaggle needs the kaggle package: pip install kaggle (or pip install -e '.[kaggle]'). "
            "data.source=microsoft has the same photos without a Kaggle account."
        ) from None
    except (OSError, ValueError, SystemExit) as e:
        detail = "it found no credentials" if isinstance(e, SystemExit) else str(e)
        raise StageError(
            f"the kaggle package could not authenticate ({detail}). Create a token at "
            "https://www.kaggle.com/settings → API → Create New Token and save the kaggle.json it gives you "
            "as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY"
        ) from None
    return api


# ---------------------------------------------------------------- a local .zip or folder


def from_local(source: str, path: Path, archive: Path) -> None:
    """Make `archive` from a local path: a competition zip's train.zip, any other zip linked, a folder zipped."""
    if not path.exists():
        raise StageError(f"data.source = {source!r} was taken as a path, but {path} was not found. Use {ACCEPTED}")
    if path.is_dir():
        zip_folder(path, archive)
    elif not path.is_file():
        raise StageError(
            f"data.source = {source!r}: {path} is {files.kind(path.stat().st_mode)}, not a .zip archive or a folder. "
            f"Use {ACCEPTED}"
        )
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        inner = [n for n in names if n.rsplit("/", 1)[-1] == "train.zip"]
        if inner and not any(n.lower().endswith(IMAGE_SUFFIXES) for n in names):
            _extract(path, inner[0], archive)  # the Kaggle competition download: images are one level down
        else:
            with atomic.atomic_path(archive) as tmp:
                tmp.symlink_to(path)  # used in place: DVC caches the content anyway
    else:
        raise StageError(f"data.source = {source!r}: {path} is neither a .zip archive nor a folder. Use {ACCEPTED}")


def zip_folder(folder: Path, archive: Path) -> None:
    """The photos under `folder`, names relative to it and sorted, stored uncompressed: same files,
    same bytes. Only photos go in (a file whose header is one of images.PHOTO_FORMATS', whatever its
    name), and nothing hidden (a file or folder whose name starts with a dot: .ssh, .git, .kaggle):
    the archive is cached by DVC and sent by every `dvc push`, so a key or a kaggle.json beside the
    photos must not travel with them. A symbolic link that leads out of the folder is skipped too.
    Each kind of skip is counted on stderr. A folder with no photo at all (a virtualenv, a home
    folder) is refused before anything is written."""
    root = folder.resolve()
    found: list[tuple[str, Path]] = []
    skipped: dict[str, list[str]] = {
        "symbolic link(s) leading out of it": [],
        "hidden file(s) or folder(s)": [],
        "file(s) that are not photos": [],
        f"file(s) larger than a photo may be ({images.MAX_FILE_BYTES >> 20} MiB)": [],
    }
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        for hidden in sorted(d for d in dirnames if d.startswith(".")):
            skipped["hidden file(s) or folder(s)"].append((here / hidden).relative_to(folder).as_posix() + "/")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # never walked into
        for filename in sorted(filenames):
            path = here / filename
            name = path.relative_to(folder).as_posix()
            if filename.startswith("."):
                skipped["hidden file(s) or folder(s)"].append(name)
            elif path.is_symlink() and not path.resolve().is_relative_to(root):
                skipped["symbolic link(s) leading out of it"].append(f"{name} → {os.readlink(path)}")
            elif not path.is_file():
                continue  # a socket, a fifo, a dangling link: nothing to take
            elif path.stat().st_size > images.MAX_FILE_BYTES:  # a 1.5-GB file behind a JPEG header: never zipped whole
                skipped[f"file(s) larger than a photo may be ({images.MAX_FILE_BYTES >> 20} MiB)"].append(name)
            elif images.is_photo(path):
                found.append((name, path))
            else:
                skipped["file(s) that are not photos"].append(name)
    for what, names in skipped.items():
        if names:
            shown = "; ".join(sorted(names)[:5]) + (f"; and {len(names) - 5} more" if len(names) > 5 else "")
            print(f"download: skipped {len(names):,} {what} in {folder}: {shown}", file=sys.stderr)
    if not found:
        raise StageError(
            f"the folder {folder} (data.source) holds no photo ({', '.join(images.PHOTO_FORMATS)}; "
            f"{sum(map(len, skipped.values())):,} other files or folders skipped): point data.source at the photos' "
            "folder"
        )
    found.sort()
    with atomic.atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w") as z:
        for name, path in track(found, total=len(found), desc=f"zipping {folder.name}", unit="file"):
            z.writestr(
                zip_entry(name), files.read_bytes(path, "photo", images.MAX_FILE_BYTES)
            )  # bounded, should it grow meanwhile


def _extract(bundle: Path, member: str, archive: Path) -> None:
    with (
        zipfile.ZipFile(bundle) as z,
        z.open(member) as src,
        atomic.atomic_path(archive) as tmp,
        open(tmp, "wb") as dst,
    ):
        shutil.copyfileobj(src, dst, CHUNK)
    if not zipfile.is_zipfile(archive):
        archive.unlink()
        raise StageError(
            f"{bundle}: its {member} is not a zip archive (a broken or partial download?); download it again"
        )


def link_or_copy(src: Path, dst: Path) -> None:
    with atomic.atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)  # no second 825 MB on disk
        except OSError:
            shutil.copyfile(src, tmp)  # another file system, or one without hard links


KAGGLE_PHOTOS = 25_000  # labelled photos in the competition's train.zip (and the Microsoft mirror, about)
FASHION_MNIST_IMAGES = 70_000  # 60,000 train and 10,000 test


def photos_at_most(source: str, max_per_class: int | None) -> int:
    """How many photos a run can preprocess, from data.source and data.max_per_class, without reading
    a photo: a local zip's or folder's file count, the competition's 25,000, Fashion-MNIST's 70,000,
    the synthetic set's; with max_per_class, at most that many per class (twice for Fashion-MNIST,
    whose own test split comes on top of the capped train part)."""
    if source in ("microsoft", "kaggle"):
        count, classes = KAGGLE_PHOTOS, 2
    elif source.startswith(FASHION_MNIST):
        count, classes = FASHION_MNIST_IMAGES, 2 * len(fashion_mnist.CLASSES)
    elif (generated := synthetic_photos(source)) is not None:
        count, classes = generated, 2
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            names = [f.relative_to(path).as_posix() for f in path.rglob("*") if f.is_file()]
        elif path.is_file() and zipfile.is_zipfile(path):  # a regular file: never a device or a FIFO
            with zipfile.ZipFile(path) as z:
                names = [info.filename for info in z.infolist() if not info.is_dir()]
        else:
            return 0  # not found or not a zip: source_problem says so
        count, classes = len(names), len(images.labelling(names)[0])
    return min(count, classes * max_per_class) if max_per_class else count
