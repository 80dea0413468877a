"""A remote file, downloaded the careful way: streamed, resumable, retried, verified.

Bytes land in <downloads>/<filename>.part; a transient error (timeout, dropped connection, HTTP 5xx,
429, 408) is retried with back-off and the next attempt, in this run or the next, resumes with an
HTTP Range request; the file is renamed into place only once its size and sha256 match. A failure
that cannot pass (no DNS, other 4xx, a checksum mismatch) ends at once, and keeps nothing it cannot use.
"""

from __future__ import annotations

import http.client
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import StageError
from pipeline.common.formats import sha256_file
from pipeline.common.progress import Progress

CHUNK = 1 << 20  # bytes per read: 1 MiB


@dataclass(frozen=True)
class Remote:
    url: str
    size: int  # bytes
    sha256: str
    filename: str  # name in the downloads cache


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
                    raise StageError(f"could not download {remote.url}: {_reason(e)}. {local_hint(remote)}") from e
                if attempt > retries:
                    kept = f"; the {part.stat().st_size:,} bytes received are kept in {part}" if part.exists() else ""
                    raise StageError(
                        f"could not download {remote.url} in {attempt} attempts, last error: {_reason(e)}{kept}. "
                        f"Rerun to resume. {local_hint(remote)}"
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
            f"again; if it fails again the file on the server has changed. {local_hint(remote)}"
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
        with (
            open(part, "ab" if have else "wb") as f,
            Progress(remote.size, remote.filename, unit="B", initial=have) as bar,
        ):
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


def local_hint(remote: Remote) -> str:
    return (
        f"To use a copy you already have, point data.source at it: "
        f"`dvc exp run -S data.source=/path/to/{remote.filename}`, or edit data.source in params.yaml; "
        f"data.source=synthetic makes a small offline stand-in for a smoke run."
    )
