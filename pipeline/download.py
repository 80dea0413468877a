"""The `download` stage: the Dogs-vs-Cats photos as one archive, data/raw/images.zip, and where it came from.

One zip rather than 25,000 loose files: DVC tracks it as a single file (a fast `dvc status`) and later
stages read images straight out of it. `data.source` picks where it comes from:

    microsoft   the public mirror of the Kaggle images (825 MB): resumable, verified by sha256
    kaggle      the competition's own train.zip, through the `kaggle` package and your API token
    synthetic   generated shapes (pipeline/synthetic.py) for offline smoke runs
    <path>      a .zip (used in place) or a folder of images (zipped once, uncompressed)

Downloads are kept, verified, in data/.downloads: DVC deletes data/raw before a rerun, not that.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline import io, params, synthetic
from pipeline.io import StageError, sha256_file

ARCHIVE = "images.zip"
CHUNK = 1 << 20  # bytes per read: 1 MiB
COMPETITION = "dogs-vs-cats"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ACCEPTED = "microsoft, kaggle, synthetic, or a path to a .zip or a folder of images"


@dataclass(frozen=True)
class Remote:
    url: str
    size: int  # bytes
    sha256: str
    filename: str  # name in the downloads cache


MICROSOFT = Remote(
    url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip",
    size=824_887_076,
    sha256="b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9",
    filename="kagglecatsanddogs_5340.zip",
)


def fetch_archive(source: str, out: Path, downloads: Path, *, base_dir: Path | None = None) -> Path:
    """Write out/images.zip from `source`, and out/source.json saying what it is; return the archive's path."""
    archive = out / ARCHIVE
    if source == "microsoft":
        _link_or_copy(fetch(MICROSOFT, downloads), archive)
        origin = MICROSOFT.url
    elif source == "kaggle":
        fetch_kaggle(archive, downloads)
        origin = f"https://www.kaggle.com/competitions/{COMPETITION}"
    elif source == "synthetic":
        synthetic.make_archive(archive)
        origin = "pipeline/synthetic.py"
    else:
        path = Path(os.path.abspath((base_dir or Path.cwd()) / Path(source).expanduser()))
        from_local(source, path, archive)
        origin = str(path)
    info = {"source": source, "archive": ARCHIVE, "origin": origin, "bytes": archive.stat().st_size}
    io.write_json(out / "source.json", {**info, "sha256": sha256_file(archive)})
    return archive


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
            return f"data.source = 'microsoft': cannot reach {host} ({e}) to download {MICROSOFT.url}. {_local_hint(MICROSOFT)}"
    elif source == "kaggle":
        if importlib.util.find_spec("kaggle") is None:
            return "data.source = 'kaggle' needs the kaggle package: pip install kaggle (or pip install -e '.[kaggle]')"
    elif source != "synthetic":
        path = Path(os.path.abspath((base_dir or Path.cwd()) / Path(source).expanduser()))
        if not path.exists():
            return f"data.source = {source!r} was taken as a path, but {path} was not found. Use {ACCEPTED}"
    return None


# ---------------------------------------------------------------- microsoft: plain HTTPS


def fetch(remote: Remote, downloads: Path, *, retries: int = 4, backoff: float = 1.0, timeout: float = 30) -> Path:
    """Download `remote` into downloads/<filename>, verified, and return that path; a verified copy is reused.

    Bytes land in <filename>.part; after a transient error (timeout, dropped connection, HTTP 5xx, 429,
    408) the next attempt, in this call or the next run, resumes from it with an HTTP Range request.
    `backoff`: seconds before the first retry, doubled for each next one; `timeout`: seconds of silence.
    """
    final = downloads / remote.filename
    if final.is_file():
        if _mismatch(final, remote) is None:
            return final
        final.unlink()  # stale or damaged: fetch it again
    part = final.with_name(final.name + ".part")
    try:
        for attempt in range(1, retries + 2):
            try:
                _transfer(remote, part, timeout)
                break
            except (OSError, http.client.HTTPException) as e:  # urllib's errors and timeouts are OSErrors
                if not _transient(e):
                    raise StageError(f"could not download {remote.url}: {_reason(e)}. {_local_hint(remote)}") from e
                if attempt > retries:
                    kept = f"; the {part.stat().st_size:,} bytes received are kept in {part}" if part.exists() else ""
                    raise StageError(
                        f"could not download {remote.url} in {attempt} attempts, last error: {_reason(e)}{kept}. "
                        f"Rerun to resume. {_local_hint(remote)}"
                    ) from e
                time.sleep(backoff * 2 ** (attempt - 1))
    finally:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()  # nothing arrived: leave nothing behind
    problem = _mismatch(part, remote)
    if problem:
        part.unlink()
        raise StageError(
            f"the download of {remote.url} failed verification ({problem}) and was deleted. Rerun to try "
            f"again; if it fails again the file on the server has changed. {_local_hint(remote)}"
        )
    os.replace(part, final)
    return final


def _transfer(remote: Remote, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return  # nothing left past `have`: the part is complete, or verification will say it is not
        raise
    with response:
        if response.status != 206:
            have = 0  # the server ignored the range and sends the whole file: start over
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=remote.size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=remote.filename
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    received = part.stat().st_size
    if received < remote.size:  # http.client returns a short body silently when the connection drops
        raise ConnectionResetError(f"connection closed after {received:,} of {remote.size:,} bytes")


def _transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in (408, 429) or error.code >= 500
    if isinstance(error, urllib.error.URLError):
        error = error.reason  # a socket.gaierror (no DNS: permanent), a timeout, a refused connection...
    return isinstance(error, (TimeoutError, ConnectionError, ssl.SSLEOFError, http.client.IncompleteRead))


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason
    return str(error) or type(error).__name__


def _mismatch(path: Path, remote: Remote) -> str | None:
    size = path.stat().st_size
    if size != remote.size:
        return f"{size:,} bytes, expected {remote.size:,}"
    digest = sha256_file(path)
    if digest != remote.sha256:
        return f"sha256 checksum {digest}, expected {remote.sha256}"
    return None


def _local_hint(remote: Remote) -> str:
    return (
        f"To use a copy you already have, point data.source at it: "
        f"`dvc exp run -S data.source=/path/to/{remote.filename}`, or edit data.source in params.yaml; "
        f"data.source=synthetic makes a small offline stand-in for a smoke run."
    )


# ---------------------------------------------------------------- kaggle: the competition's train.zip


def fetch_kaggle(archive: Path, downloads: Path, *, competition: str = COMPETITION) -> None:
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
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        inner = [n for n in names if n.rsplit("/", 1)[-1] == "train.zip"]
        if inner and not any(n.lower().endswith(IMAGE_SUFFIXES) for n in names):
            _extract(path, inner[0], archive)  # the Kaggle competition download: images are one level down
        else:
            with io.atomic_path(archive) as tmp:
                tmp.symlink_to(path)  # used in place: DVC caches the content anyway
    else:
        raise StageError(f"data.source = {source!r}: {path} is neither a .zip archive nor a folder. Use {ACCEPTED}")


def zip_folder(folder: Path, archive: Path) -> None:
    """Every file under `folder`, names relative to it and sorted, stored uncompressed: same files, same bytes."""
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())
    if not files:
        raise StageError(f"the folder {folder} (data.source) has no files in it")
    with io.atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w") as z:
        for name, path in tqdm(files, desc=f"zipping {folder.name}", unit="file"):
            z.writestr(synthetic.entry(name), path.read_bytes())


def _extract(bundle: Path, member: str, archive: Path) -> None:
    with zipfile.ZipFile(bundle) as z, z.open(member) as src, io.atomic_path(archive) as tmp, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def _link_or_copy(src: Path, dst: Path) -> None:
    with io.atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)  # no second 825 MB on disk
        except OSError:
            shutil.copyfile(src, tmp)  # another file system, or one without hard links


def main() -> None:
    parser = argparse.ArgumentParser(description="Fetch the Dogs-vs-Cats photos as one archive (data.source).")
    parser.add_argument("--out", type=Path, required=True, help="folder for images.zip and source.json")
    parser.add_argument("--downloads", type=Path, required=True, help="verified download cache, kept between runs")
    args = parser.parse_args()
    fetch_archive(params.load_data().source, args.out, args.downloads)


if __name__ == "__main__":
    io.run(main)
