"""Fashion-MNIST's IDX files: read, found, fetched from a local server, written as class-folder PNGs.

The IDX files here are written by hand with struct, not by anything in pipeline.data.fashion_mnist, so a reader and
a writer that share one mistake cannot pass together.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.common.errors import StageError
from pipeline.data import fashion_mnist
from pipeline.data.fetch import Remote
from pipeline.data.sources import from_fashion_mnist
from pipeline.download import download
from tests.fileserver import serving

RNG = np.random.default_rng(0)
TRAIN_IMAGES = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)  # (N, rows, cols)
TRAIN_LABELS = np.array([0, 9, 3, 0, 5, 9, 1], dtype=np.uint8)
TEST_IMAGES = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
TEST_LABELS = np.array([2, 8, 2], dtype=np.uint8)


def images_file(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", 0x803, n, rows, cols) + images.tobytes()


def labels_file(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.tobytes()


def found(train_labels: np.ndarray = TRAIN_LABELS, test_images: np.ndarray = TEST_IMAGES) -> dict[str, bytes]:
    return {
        "train-images": gzip.compress(images_file(TRAIN_IMAGES), mtime=0),
        "train-labels": labels_file(train_labels),
        "t10k-images": images_file(test_images),
        "t10k-labels": gzip.compress(labels_file(TEST_LABELS), mtime=0),
    }


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("pack", [lambda b: b, lambda b: gzip.compress(b, mtime=0)], ids=["raw", "gzip"])
def test_read_gives_back_the_arrays(pack):
    images = fashion_mnist.read_images(pack(images_file(TRAIN_IMAGES)), "x")
    labels = fashion_mnist.read_labels(pack(labels_file(TRAIN_LABELS)), "y")
    assert images.dtype == np.uint8 and images.shape == (7, 28, 28) and np.array_equal(images, TRAIN_IMAGES)
    assert labels.dtype == np.uint8 and labels.shape == (7,) and np.array_equal(labels, TRAIN_LABELS)
    images[0, 0, 0] = 1  # writable: the caller owns it


def test_non_square_images_keep_rows_and_cols():
    images = RNG.integers(0, 256, (2, 3, 5), dtype=np.uint8)
    assert np.array_equal(fashion_mnist.read_images(images_file(images), "x"), images)


@pytest.mark.parametrize(
    "data, read, message",
    [
        (
            struct.pack(">IIII", 0x804, 1, 1, 1) + b"x",
            fashion_mnist.read_images,
            r"t.idx: not an IDX image file \(magic 0x0+804",
        ),
        (b"PK\x03\x04" + bytes(40), fashion_mnist.read_images, r"not an IDX image file \(magic 0x504b0304"),
        (b"\0\0", fashion_mnist.read_labels, r"not an IDX label file \(2 bytes"),
        (
            labels_file(TRAIN_LABELS),
            fashion_mnist.read_images,
            r"not an IDX image file \(magic 0x00000801, an IDX label file",
        ),
        (
            images_file(TRAIN_IMAGES),
            fashion_mnist.read_labels,
            r"not an IDX label file \(magic 0x00000803, an IDX image file",
        ),
        (images_file(TRAIN_IMAGES)[:-1], fashion_mnist.read_images, r"t.idx: truncated: 5,503 bytes, expected 5,504"),
        (images_file(TRAIN_IMAGES)[:10], fashion_mnist.read_images, r"truncated: 10 bytes, expected a 16-byte header"),
        (labels_file(TRAIN_LABELS) + b"\x00", fashion_mnist.read_labels, r"trailing data: 16 bytes, expected 15"),
        (b"\x1f\x8b" + bytes(30), fashion_mnist.read_images, r"t.idx: not gzip data"),
        (
            gzip.compress(images_file(TRAIN_IMAGES))[:-100],
            fashion_mnist.read_images,
            r"cut-off gzip stream",
        ),  # a cut-off download
    ],
    ids=["magic", "zip", "short", "labels-as-images", "images-as-labels", "truncated", "header", "trailing", "gzip"]
    + ["cut-gzip"],
)
def test_read_errors_name_the_file_and_the_problem(data, read, message):
    with pytest.raises(StageError, match=message):
        read(data, "t.idx")


# ---------------------------------------------------------------- finding


FOUR = {"train-images": b"ti", "train-labels": b"tl", "t10k-images": b"vi", "t10k-labels": b"vl"}


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_find_in_a_nested_folder_with_and_without_gz(tmp_path):
    write(tmp_path / "a" / "train-images-idx3-ubyte.gz", b"ti")
    write(tmp_path / "a" / "b" / "train-labels-idx1-ubyte", b"tl")
    write(tmp_path / "t10k-images-idx3-ubyte", b"vi")
    write(tmp_path / "c" / "t10k-labels-idx1-ubyte.gz", b"vl")
    write(tmp_path / "c" / "._t10k-labels-idx1-ubyte.gz", b"mac junk")  # not the name: ignored
    write(tmp_path / "c" / "t10k-labels-idx1-ubyte.gz.part", b"a partial download")
    assert fashion_mnist.find(tmp_path) == FOUR


def test_find_in_a_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "f.zip", "w") as z:
        z.writestr("fashion/", b"")
        z.writestr("fashion/train-images-idx3-ubyte.gz", b"ti")
        z.writestr("fashion/train-labels-idx1-ubyte.gz", b"tl")
        z.writestr("t10k-images-idx3-ubyte", b"vi")
        z.writestr("deep/er/t10k-labels-idx1-ubyte", b"vl")
        z.writestr("__MACOSX/fashion/._train-images-idx3-ubyte.gz", b"junk")
    assert fashion_mnist.find(tmp_path / "f.zip") == FOUR


def test_torchvision_raw_folder_a_file_beside_its_gz_takes_the_gz(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    for key, stem in fashion_mnist.FILES.items():
        write(raw / stem, b"extracted")
        write(raw / f"{stem}.gz", key.encode())
    assert fashion_mnist.find(tmp_path) == {key: key.encode() for key in fashion_mnist.FILES}


def test_two_copies_of_one_file_is_an_error(tmp_path):
    for folder in ("FashionMNIST", "MNIST"):
        for stem in fashion_mnist.FILES.values():
            write(tmp_path / folder / "raw" / f"{stem}.gz", b"x")
    with pytest.raises(StageError, match=r"2 copies of train-images-idx3-ubyte in .*FashionMNIST.*MNIST"):
        fashion_mnist.find(tmp_path)


def test_missing_files_are_listed_together_with_where_it_looked(tmp_path):
    write(tmp_path / "train-images-idx3-ubyte.gz", b"ti")
    write(tmp_path / "t10k-labels-idx1-ubyte", b"vl")
    with pytest.raises(StageError) as error:
        fashion_mnist.find(tmp_path)
    message = str(error.value)
    assert "missing train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] in" in message
    assert str(tmp_path) in message and "recursively" in message
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with pytest.raises(StageError, match=r"missing train-images.*t10k-labels-idx1-ubyte\[\.gz\] in the zip .*empty"):
        fashion_mnist.find(tmp_path / "empty.zip")


def test_find_needs_a_folder_or_a_zip(tmp_path):
    with pytest.raises(StageError, match="not found"):
        fashion_mnist.find(tmp_path / "nowhere")
    write(tmp_path / "notes.txt", b"hello")
    with pytest.raises(StageError, match="neither a folder nor a .zip"):
        fashion_mnist.find(tmp_path / "notes.txt")


# ---------------------------------------------------------------- the archive


def test_archive_members_are_class_folders_in_idx_order(tmp_path):
    summary = fashion_mnist.write_archive(found(), tmp_path / "f.zip")
    assert summary == {"train": 7, "test": 3, "size": [28, 28]}
    with zipfile.ZipFile(tmp_path / "f.zip") as z:
        assert z.namelist() == [
            "train/t-shirt-top/00000.png",
            "train/t-shirt-top/00003.png",
            "train/trouser/00006.png",
            "train/dress/00002.png",
            "train/sandal/00004.png",
            "train/ankle-boot/00001.png",
            "train/ankle-boot/00005.png",
            "test/pullover/00000.png",
            "test/pullover/00002.png",
            "test/bag/00001.png",
        ]
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        image = Image.open(io.BytesIO(z.read("train/ankle-boot/00005.png")))
        assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)
        assert np.array_equal(np.asarray(image), TRAIN_IMAGES[5])
        assert np.array_equal(np.asarray(Image.open(z.open("test/bag/00001.png"))), TEST_IMAGES[1])


def test_archive_is_deterministic(tmp_path):
    fashion_mnist.write_archive(found(), tmp_path / "a.zip")
    fashion_mnist.write_archive(found(), tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


BAD_LABELS = np.array([0, 1, 10, 2, 3, 10, 4], np.uint8)  # 10 is one past the last class


@pytest.mark.parametrize(
    "files, message",
    [
        (found(train_labels=TRAIN_LABELS[:-1]), r"7 images in train-images-idx3-ubyte but 6 labels in train-labels"),
        (found(train_labels=BAD_LABELS), r"train-labels-idx1-ubyte: label 10 at index 2 \(2 such\)"),
        (found(test_images=np.zeros((3, 32, 28), np.uint8)), r"train images are \[28, 28\] pixels but test"),
    ],
    ids=["count", "label", "size"],
)
def test_archive_cross_checks_leave_nothing_behind(tmp_path, files, message):
    with pytest.raises(StageError, match=message):
        fashion_mnist.write_archive(files, tmp_path / "f.zip")
    assert list(tmp_path.iterdir()) == []


def test_archive_reports_a_broken_file_by_name(tmp_path):
    files = found() | {"t10k-images": images_file(TEST_IMAGES)[:-5]}
    with pytest.raises(StageError, match=r"t10k-images-idx3-ubyte: truncated"):
        fashion_mnist.write_archive(files, tmp_path / "f.zip")


# ---------------------------------------------------------------- the remotes


def test_classes_are_the_official_ten_as_folder_names():
    assert (
        len(fashion_mnist.CLASSES) == 10
        and fashion_mnist.CLASSES[0] == "t-shirt-top"
        and fashion_mnist.CLASSES[9] == "ankle-boot"
    )
    assert all(re.fullmatch(r"[a-z][a-z-]*", name) for name in fashion_mnist.CLASSES)


def test_remotes_are_the_official_files():
    # Sizes as tensorflow/datasets' url_checksums/fashion_mnist.txt lists them for the mirror's files.
    sizes = {
        "train-images-idx3-ubyte.gz": 26421880,
        "train-labels-idx1-ubyte.gz": 29515,
        "t10k-images-idx3-ubyte.gz": 4422102,
        "t10k-labels-idx1-ubyte.gz": 5148,
    }
    assert {r.filename: r.size for r in fashion_mnist.REMOTES} == sizes
    for remote in fashion_mnist.REMOTES:
        assert remote.url == fashion_mnist.MIRROR + remote.filename and remote.url.startswith("http://fashion-mnist.")
        assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
    assert len({r.sha256 for r in fashion_mnist.REMOTES}) == 4


# ---------------------------------------------------------------- fetching, from a local server


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server(monkeypatch):
    """Fashion-MNIST's four files (generated, gzip'd), served locally; idx.REMOTES points at them."""
    raw = (images_file(TRAIN_IMAGES), labels_file(TRAIN_LABELS), images_file(TEST_IMAGES), labels_file(TEST_LABELS))
    with serving(
        {f"{stem}.gz": gzip.compress(data, mtime=0) for stem, data in zip(fashion_mnist.FILES.values(), raw)}
    ) as s:
        monkeypatch.setattr(fashion_mnist, "REMOTES", remotes(s))  # the official files' place, sizes and digests, here
        yield s


def remotes(server) -> tuple[Remote, ...]:
    return tuple(
        Remote(url=server.url(name), size=len(data), sha256=hashlib.sha256(data).hexdigest(), filename=name)
        for name, data in server.files.items()
    )


def test_fetching_fashion_mnist_downloads_verifies_and_reuses(server, tmp_path):
    folder = from_fashion_mnist(tmp_path / "downloads")
    assert folder == tmp_path / "downloads" / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(server.files)  # no .part left
    assert all((folder / name).read_bytes() == data for name, data in server.files.items())
    assert fashion_mnist.write_archive(fashion_mnist.find(folder), tmp_path / "f.zip") == {
        "train": 7,
        "test": 3,
        "size": [28, 28],
    }
    from_fashion_mnist(tmp_path / "downloads")
    assert len(server.requests) == 4  # the second time, all four came from the verified cache


def test_the_download_stage_s_fashion_mnist_source_fetches_checks_and_writes_the_archive(server, tmp_path):
    archive = download("fashion-mnist", tmp_path / "raw", tmp_path / "downloads")
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    assert len(names) == 10 and sum(n.startswith("test/") for n in names) == 3
    assert f"train/{fashion_mnist.CLASSES[TRAIN_LABELS[1]]}/00001.png" in names
    source = json.loads((tmp_path / "raw" / "source.json").read_text())
    assert source["source"] == "fashion-mnist" and source["origin"] == fashion_mnist.MIRROR
    assert sorted(p.name for p in (tmp_path / "downloads" / "fashion-mnist").iterdir()) == sorted(server.files)


def test_fetching_fashion_mnist_rejects_a_changed_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(
        fashion_mnist, "REMOTES", tuple(Remote(r.url, r.size, "0" * 64, r.filename) for r in remotes(server))
    )
    with pytest.raises(StageError, match="checksum"):
        from_fashion_mnist(tmp_path)
    assert list((tmp_path / "fashion-mnist").iterdir()) == []
