"""The download stage against a local HTTP server (ranges, failures, cut connections), a fake kaggle package, local
paths."""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import download
from pipeline.common.errors import StageError
from pipeline.data import fetch as fetching
from pipeline.data import sources, synthetic
from pipeline.data.fetch import Remote, fetch
from tests.fileserver import serving

PAYLOAD = random.Random(0).randbytes(300_000)  # bytes the server serves as /file.zip
UNREACHABLE = "http://nonexistent.invalid/x.zip"  # .invalid never resolves (RFC 6761)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with serving({"file.zip": PAYLOAD}) as s:
        yield s


def remote(url: str) -> Remote:
    return Remote(url=url, size=len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest(), filename="file.zip")


def files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*")]


# ---------------------------------------------------------------- microsoft: HTTP


def test_full_download_is_verified_cached_and_linked(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "MICROSOFT", remote(server.url("file.zip")))
    out, downloads = tmp_path / "raw", tmp_path / "downloads"
    archive = download.download("microsoft", out, downloads)
    assert archive == out / "images.zip" and archive.read_bytes() == PAYLOAD
    assert sorted(p.name for p in downloads.iterdir()) == ["file.zip"]  # no .part left
    assert (downloads / "file.zip").read_bytes() == PAYLOAD
    assert json.loads((out / "source.json").read_text()) == {
        "source": "microsoft",
        "archive": "images.zip",
        "origin": server.url("file.zip"),
        "bytes": len(PAYLOAD),
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
    }
    assert server.ranges == [None]


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    server.wrong = True
    with pytest.raises(StageError, match="checksum"):
        fetch(remote(server.url("file.zip")), tmp_path, backoff=0)
    assert not (tmp_path / "file.zip.part").exists() and not (tmp_path / "file.zip").exists()


def test_interrupted_transfer_resumes_next_run_with_a_range(server, tmp_path):
    server.cut_after = 100_000
    with pytest.raises(StageError, match="Rerun to resume"):
        fetch(remote(server.url("file.zip")), tmp_path, retries=0)
    assert (tmp_path / "file.zip.part").read_bytes() == PAYLOAD[:100_000]
    path = fetch(remote(server.url("file.zip")), tmp_path)
    assert server.ranges == [None, "bytes=100000-"]
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "file.zip.part").exists()


def test_dropped_connection_is_retried_from_what_arrived(server, tmp_path):
    server.cut_after = 123_456
    assert fetch(remote(server.url("file.zip")), tmp_path, backoff=0).read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=123456-"]


def test_server_ignoring_the_range_starts_over(server, tmp_path):
    server.honour_range = False
    (tmp_path / "file.zip.part").write_bytes(PAYLOAD[:5000])
    assert fetch(remote(server.url("file.zip")), tmp_path).read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=5000-"]


def test_complete_part_answered_416_is_verified(server, tmp_path):
    (tmp_path / "file.zip.part").write_bytes(PAYLOAD)
    assert fetch(remote(server.url("file.zip")), tmp_path).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_server_errors_are_retried_within_the_budget(server, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(fetching.time, "sleep", waits.append)
    server.fail_first = 2
    assert fetch(remote(server.url("file.zip")), tmp_path, retries=4, backoff=0.5).read_bytes() == PAYLOAD
    assert len(server.ranges) == 3 and waits == [0.5, 1.0]  # exponential back-off, in seconds


def test_retries_exhausted(server, tmp_path):
    server.fail_first = 100
    with pytest.raises(StageError, match=r"in 3 attempts.*500"):
        fetch(remote(server.url("file.zip")), tmp_path, retries=2, backoff=0)
    assert len(server.ranges) == 3 and files_under(tmp_path) == []


def test_not_found_is_not_retried(server, tmp_path):
    with pytest.raises(StageError, match="404"):
        fetch(remote(server.url("missing.zip")), tmp_path, retries=4, backoff=0)
    assert len(server.ranges) == 1 and files_under(tmp_path) == []


def test_offline_fails_fast_and_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "MICROSOFT", remote(UNREACHABLE))
    out, downloads = tmp_path / "raw", tmp_path / "downloads"
    waits = []
    monkeypatch.setattr("time.sleep", waits.append)
    with pytest.raises(StageError) as error:
        download.download("microsoft", out, downloads)
    assert waits == []  # a name that does not resolve is not transient: no retry, no back-off
    message = str(error.value)
    assert UNREACHABLE in message and "data.source" in message and "synthetic" in message
    assert files_under(out, downloads) == []


def test_verified_cache_is_used_without_network(tmp_path):
    (tmp_path / "file.zip").write_bytes(PAYLOAD)
    assert fetch(remote(UNREACHABLE), tmp_path) == tmp_path / "file.zip"


def test_damaged_cache_is_fetched_again(server, tmp_path):
    (tmp_path / "file.zip").write_bytes(PAYLOAD[:-1] + b"x")
    assert fetch(remote(server.url("file.zip")), tmp_path).read_bytes() == PAYLOAD
    assert server.ranges == [None]


# ---------------------------------------------------------------- local paths


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


TRAIN_ZIP = zip_bytes({"train/cat.0.jpg": b"meow", "train/dog.0.jpg": b"woof"})
COMPETITION_ZIP = zip_bytes({"sampleSubmission.csv": b"id,label\n", "test1.zip": b"", "train.zip": TRAIN_ZIP})


def test_local_zip_is_linked_in_place(tmp_path):
    (tmp_path / "photos.zip").write_bytes(TRAIN_ZIP)
    archive = download.download("photos.zip", tmp_path / "raw", tmp_path / "downloads", base_dir=tmp_path)
    assert archive.is_symlink() and archive.readlink() == tmp_path / "photos.zip"
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["origin"] == str(tmp_path / "photos.zip")


def test_competition_zip_gives_its_train_zip(tmp_path):
    (tmp_path / "dogs-vs-cats.zip").write_bytes(COMPETITION_ZIP)
    archive = download.download(str(tmp_path / "dogs-vs-cats.zip"), tmp_path / "raw", tmp_path / "downloads")
    assert not archive.is_symlink() and archive.read_bytes() == TRAIN_ZIP


def test_folder_becomes_a_reproducible_stored_zip(tmp_path):
    folder = tmp_path / "PetImages"
    photos = {}
    for i, name in enumerate(("Dog/1.jpg", "Cat/10.jpg", "Cat/2.jpg")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        out = io.BytesIO()
        Image.new("RGB", (20, 20), (i * 80, 100, 50)).save(out, "JPEG")
        photos[name] = out.getvalue()
        (folder / name).write_bytes(photos[name])
    first = download.download(str(folder), tmp_path / "a", tmp_path / "downloads").read_bytes()
    time.sleep(0.01)
    (folder / "Cat/2.jpg").touch()  # a newer modification time must not change the bytes
    second = download.download(str(folder), tmp_path / "b", tmp_path / "downloads").read_bytes()
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as z:
        assert z.namelist() == ["Cat/10.jpg", "Cat/2.jpg", "Dog/1.jpg"]
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert z.read("Dog/1.jpg") == photos["Dog/1.jpg"]


def test_missing_path_lists_the_accepted_values(tmp_path):
    with pytest.raises(StageError) as error:
        download.download("microsfot", tmp_path / "raw", tmp_path / "downloads", base_dir=tmp_path)
    message = str(error.value)
    assert "taken as a path" in message and str(tmp_path / "microsfot") in message and "not found" in message
    assert all(word in message for word in ("microsoft", "kaggle", "synthetic", ".zip", "folder"))
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_in_the_kaggle_layout(tmp_path):
    synthetic.make_archive(tmp_path / "a.zip")
    synthetic.make_archive(tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    synthetic.make_archive(tmp_path / "c.zip", per_class=3, size=32, seed=1)
    with zipfile.ZipFile(tmp_path / "c.zip") as z:
        assert z.namelist() == [f"train/{c}.{i}.jpg" for c in ("cat", "dog") for i in range(3)]
        assert Image.open(z.open("train/dog.2.jpg")).size == (32, 32)


def test_synthetic_colour_alone_helps_but_does_not_solve_it(tmp_path):
    synthetic.make_archive(tmp_path / "s.zip", per_class=100, size=64)
    with zipfile.ZipFile(tmp_path / "s.zip") as z:
        names = z.namelist()
        pixels = [np.asarray(Image.open(z.open(n)), dtype=np.float32) for n in names]
    warmth = np.array([p[..., 0].mean() - p[..., 2].mean() for p in pixels])  # red minus blue
    is_cat = np.array(["/cat." in n for n in names])
    best = max(((warmth >= t) == is_cat).mean() for t in warmth)  # the best single threshold
    assert 0.6 < best < 0.95


def test_synthetic_source(tmp_path):
    archive = download.download("synthetic", tmp_path / "raw", tmp_path / "downloads")
    assert zipfile.ZipFile(archive).namelist()[-1] == "train/dog.299.jpg"
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["source"] == "synthetic"


def test_synthetic_n_generates_n_photos_whose_first_are_the_plain_sources_whatever_the_processes(tmp_path, monkeypatch):
    """`synthetic:N` is the speed run's full-scale stand-in (`synthetic:25000`): N photos, half of each
    class, made by every core; photo i is the same bytes as in the 600 of plain `synthetic`."""
    monkeypatch.setattr(download.cli, "cpu_count", lambda: 2)  # the pool path even on a 1-core runner
    count = 2 * synthetic.PARALLEL_FROM
    archive = download.download(f"synthetic:{count}", tmp_path / "raw", tmp_path / "downloads")
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["source"] == f"synthetic:{count}"
    synthetic.make_archive(tmp_path / "plain.zip")
    with zipfile.ZipFile(archive) as big, zipfile.ZipFile(tmp_path / "plain.zip") as plain:
        names = big.namelist()
        assert (
            len(names) == count
            and names[count // 2] == "train/dog.0.jpg"
            and names[-1] == f"train/dog.{count // 2 - 1}.jpg"
        )
        assert all(big.read(n) == plain.read(n) for n in plain.namelist())
        assert big.read(names[-1]) == synthetic._photo((1, count // 2 - 1), size=128, seed=0)  # made in a worker


def test_synthetic_n_is_counted_and_needs_no_network(tmp_path):
    assert sources.photos_at_most("synthetic:25000", None) == 25_000
    assert sources.photos_at_most("synthetic:25000", 1000) == 2_000
    assert sources.photos_at_most("synthetic", None) == 600
    assert sources.source_problem("synthetic:25000", tmp_path) is None


# ---------------------------------------------------------------- kaggle, through a fake package


class FakeApi:
    def __init__(self, error: Exception | None = None):
        self.error, self.calls = error, []

    def authenticate(self):
        pass

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.calls.append((competition, Path(path).parent))
        if self.error:
            raise self.error
        (Path(path) / f"{competition}.zip").write_bytes(COMPETITION_ZIP)


def fake_kaggle(monkeypatch, api: FakeApi) -> None:
    monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(api=api))


def test_kaggle_success(tmp_path, monkeypatch):
    api = FakeApi()
    fake_kaggle(monkeypatch, api)
    downloads = tmp_path / "downloads"
    archive = download.download("kaggle", tmp_path / "raw", downloads)
    assert archive.read_bytes() == TRAIN_ZIP
    assert api.calls == [("dogs-vs-cats", downloads)]  # its temp folder was inside downloads...
    assert list(downloads.iterdir()) == []  # ...and is gone


def test_kaggle_package_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # makes `import kaggle` fail as if not installed
    with pytest.raises(StageError, match="pip install kaggle"):
        download.download("kaggle", tmp_path / "raw", tmp_path / "downloads")


@pytest.mark.parametrize("failure", ["raise OSError('Could not find kaggle.json')", "raise SystemExit(1)"])
def test_kaggle_credentials_missing(tmp_path, monkeypatch, failure):
    package = tmp_path / "site" / "kaggle"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(failure + "\n")  # versions that authenticate on import
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "kaggle", raising=False)
    with pytest.raises(StageError) as error:
        download.download("kaggle", tmp_path / "raw", tmp_path / "downloads")
    message = str(error.value)
    assert "kaggle.json" in message and "KAGGLE_USERNAME" in message and "https://www.kaggle.com/settings" in message


class ApiException(Exception):  # kaggle < 1.7
    status = 403


class HTTPError(Exception):  # requests', as kaggle >= 1.7 raises it
    response = types.SimpleNamespace(status_code=403)


@pytest.mark.parametrize("error", [ApiException("Forbidden"), HTTPError("403 Client Error: Forbidden")])
def test_kaggle_rules_not_accepted(tmp_path, monkeypatch, error):
    fake_kaggle(monkeypatch, FakeApi(error))
    with pytest.raises(StageError, match="https://www.kaggle.com/competitions/dogs-vs-cats/rules"):
        download.download("kaggle", tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw").exists() and list((tmp_path / "downloads").iterdir()) == []
