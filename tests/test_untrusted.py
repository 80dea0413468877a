"""Hostile input, second round: each attack of the second review reproduced at a small scale (limits
patched down where the real ones would take gigabytes). Each ends in a reject with its reason or one
line naming what is wrong, before the expensive part: never a program run, a hang, unbounded memory,
a secret copied, a traceback, or a file left behind."""

from __future__ import annotations

import gzip
import io
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline import download, split
from pipeline.common.errors import StageError
from pipeline.data import fashion_mnist, images, members
from pipeline.data.images import Archive, RejectError
from tests.helpers import REPO, jpeg, tampered

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"


# ---------------------------------------------------------------- 1. a "photo" that runs a program


@pytest.fixture
def fake_ghostscript(tmp_path) -> tuple[dict, Path]:
    """An environment whose PATH starts with a `gs` that records each call in a witness file."""
    bin_dir, witness = tmp_path / "bin", tmp_path / "gs-was-called"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f'#!/bin/sh\necho "$@" >> {witness}\nexit 1\n')
    gs.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    return env, witness


@pytest.mark.slow  # a fresh interpreter
def test_the_fake_ghostscript_is_what_pillow_alone_would_run(fake_ghostscript, tmp_path):
    env, witness = fake_ghostscript  # the control: without the allow-list the attack works
    (tmp_path / "eps.jpg").write_bytes(EPS)
    code = "from PIL import Image\ntry:\n    Image.open('eps.jpg').load()\nexcept Exception:\n    pass"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, timeout=60, check=True)
    assert witness.exists()


@pytest.mark.slow  # fresh interpreters
def test_postscript_named_jpg_never_reaches_ghostscript_in_predict_or_split(fake_ghostscript, tmp_path):
    env, witness = fake_ghostscript
    (tmp_path / "eps.jpg").write_bytes(EPS)
    with zipfile.ZipFile(tmp_path / "train.zip", "w") as z:
        z.writestr("train/cat.1.jpg", EPS)
        for i in range(2, 5):
            z.writestr(f"train/cat.{i}.jpg", jpeg())
            z.writestr(f"train/dog.{i}.jpg", jpeg(colour=(10, 20, 200)))
    code = (
        "import sys\nfrom pipeline import split\nfrom pipeline.data import images\ntry:\n    "
        "images.decode(open('eps.jpg','rb').read())\nexcept images.RejectError as e:\n    print('predict:', "
        "e.reason)\nclasses, usable, rejects = split.scan('train.zip', workers=2)\nprint('split:', rejects)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, timeout=120, capture_output=True, text=True, check=True
    ).stdout
    assert "predict: not a photo format" in out
    assert "split: [('train/cat.1.jpg', 'not a photo format')]" in out
    assert not witness.exists()


def test_only_the_photo_formats_are_decoded():
    for format in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        out = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format)
        assert images.decode(out.getvalue()).size == (8, 8)
    for format in ("PPM", "TGA", "PCX", "ICO"):  # images Pillow reads, but not photo formats
        out = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format)
        with pytest.raises(RejectError, match="not a photo format"):
            images.decode(out.getvalue())
    with pytest.raises(RejectError, match="not an image"):
        images.decode(b"just some text, nothing any decoder claims")


def test_the_benchmarks_course_loop_opens_photo_formats_only():
    text = (REPO / "benchmarks" / "bench.py").read_text()
    assert "Image.open(" in text and text.count("Image.open(") == text.count("formats=PHOTO_FORMATS")


# ---------------------------------------------------------------- 3. linear time, bounded memory


class Listing(list):
    """A list that counts the passes over it and the searches in it."""

    passes = searches = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__()

    def count(self, value):
        self.searches += 1
        return super().count(value)

    def index(self, *args):
        self.searches += 1
        return super().index(*args)

    def __contains__(self, value):
        self.searches += 1
        return super().__contains__(value)


def test_one_repeated_name_among_many_is_found_in_linear_time(tmp_path, monkeypatch):
    listed = Listing(sorted([f"train/cat.{i}.png" for i in range(40_000)] + ["train/cat.7.png"]))
    monkeypatch.setattr(Archive, "__init__", lambda self, path: setattr(self, "_zip", None))
    monkeypatch.setattr(Archive, "names", lambda self: listed)
    monkeypatch.setattr(members, "map_archive", lambda archive, fn, names, **kw: [None] * len(names))
    classes, usable, rejects = members.scan(tmp_path / "x.zip", workers=1)
    # a bound on work, not time: a few passes over the 40,001 names, and no search of the list per
    # name (list.count or `in` for each: 1.6 billion comparisons, the quadratic count of before)
    assert listed.passes <= 3 and listed.searches == 0
    assert rejects == [("train/cat.7.png", "name repeated in the archive")] and len(usable) == 39_999


def test_a_gzip_bomb_as_an_idx_file_stops_at_the_bound(monkeypatch):
    monkeypatch.setattr(fashion_mnist, "MAX_IDX_BYTES", 1 << 20)
    bomb = gzip.compress(struct.pack(">IIII", 0x803, 100_000, 28, 28) + bytes(8 << 20))  # 8 MiB of zeros, 8 kB gzip'd
    assert len(bomb) < 100_000
    with pytest.raises(StageError, match=r"train-images-idx3-ubyte: inflates to more than 1 MiB"):
        fashion_mnist.read_images(bomb, "train-images-idx3-ubyte")


def test_declared_idx_sizes_are_checked_against_what_is_there_without_allocating_them():
    huge = struct.pack(">IIII", 0x803, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(100)  # 2⁹⁶ bytes declared
    with pytest.raises(StageError, match="truncated"):
        fashion_mnist.read_images(huge, "x")


def test_a_huge_file_under_an_idx_name_is_refused_from_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "MAX_IDX_BYTES", 1000)
    for name in fashion_mnist.FILES.values():
        (tmp_path / name).write_bytes(b"x" * 10)
    with open(tmp_path / "train-images-idx3-ubyte", "wb") as f:
        f.truncate(5000)  # sparse: big on paper
    with pytest.raises(StageError, match="5,000 bytes, more than any Fashion-MNIST file"):
        fashion_mnist.find(tmp_path)


# ---------------------------------------------------------------- 4. a folder source takes photos only


def test_a_folder_source_takes_photos_only_and_never_a_key_or_a_token(tmp_path, capsys):
    folder = tmp_path / "photos"
    for name in ("cat/1.jpg", "dog/2.jpg", "dog/3.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg())
    (folder / ".ssh").mkdir()
    (folder / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n")
    (folder / "kaggle.json").write_text('{"username": "me", "key": "0123456789abcdef"}')
    (folder / "cat" / ".hidden.jpg").write_bytes(jpeg())  # a photo, but hidden
    (folder / "dog" / "id_rsa.jpg").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")  # a key named as a photo
    archive = download.download(str(folder), tmp_path / "raw", tmp_path / "downloads")
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["cat/1.jpg", "dog/2.jpg", "dog/3.png"]
        assert not any(b"PRIVATE KEY" in z.read(n) or b"0123456789abcdef" in z.read(n) for n in z.namelist())
    err = capsys.readouterr().err
    assert "skipped 2 hidden file(s) or folder(s)" in err and ".ssh/" in err and "cat/.hidden.jpg" in err
    assert "skipped 2 file(s) that are not photos" in err and "kaggle.json" in err and "dog/id_rsa.jpg" in err
    assert "id_rsa\n" not in err.replace(".ssh/", "")  # what is inside a hidden folder is never even listed


def test_a_folder_given_to_predict_lists_no_hidden_file(tmp_path):
    folder = tmp_path / "holiday"
    for name in ("a.jpg", "day 2/b.jpg", ".DS_Store", ".git/objects/ab/cdef", "day 2/.thumb.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg())
    with Archive(folder) as archive:
        assert archive.names() == ["a.jpg", "day 2/b.jpg"]  # no reject row for a .git of thousands of objects


# ---------------------------------------------------------------- 5. an encrypted member


def test_an_encrypted_member_is_a_reject_with_its_reason(tmp_path):
    path = tmp_path / "train.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("train/cat.1.jpg", jpeg())
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the general-purpose flag, bit 0: encrypted
        at = data.index(signature) + offset
        data[at] |= 1
    path.write_bytes(bytes(data))
    with Archive(path) as archive, pytest.raises(RejectError, match="encrypted"):
        archive.read("train/cat.1.jpg")


# ---------------------------------------------------------------- figures for any class names, any number of classes


def test_the_confusion_figure_for_300_classes_stays_small_and_shows_the_most_confused():
    import numpy as np

    from pipeline.evaluation import pictures

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(300), 5)
    predicted = labels.copy()
    predicted[labels == 7] = 8  # class 7 always taken for 8, and a few other mistakes
    noisy = rng.choice(len(labels), 30, replace=False)
    predicted[noisy] = rng.integers(0, 300, 30)
    classes = tuple(f"class{i:03d}" for i in range(300))
    fig = pictures.confusion_figure(labels, predicted, classes, title="nin")
    # 300 classes took minutes and over 6 GB before: 2 × 300² cells of text; a bound on what is drawn
    shown = pictures.MAX_CONFUSION_CLASSES
    assert sum(len(ax.texts) for ax in fig.axes) <= 2 * shown * shown
    png = pictures.png_bytes(fig)
    width, height = Image.open(io.BytesIO(png)).size
    assert width <= 2 * (0.5 * pictures.MAX_CONFUSION_CLASSES + 1.5) * pictures.DPI and height <= width
    assert "class007" in str([t.get_text() for ax in fig.axes for t in ax.get_yticklabels()])
    assert "the 20 classes of 300 most involved in mistakes" in fig.get_suptitle()


def test_a_class_named_like_math_text_is_drawn_as_text():
    import numpy as np

    from pipeline.evaluation import pictures

    classes = ("price_$1_$2", "a $\\frac{x}{", "dog")
    labels, predicted = np.array([0, 1, 2, 0]), np.array([0, 2, 2, 1])
    png = pictures.png_bytes(pictures.confusion_figure(labels, predicted, classes, title="nin"))
    assert png.startswith(b"\x89PNG")


# ---------------------------------------------------------------- 2. model files are untrusted input


def _set(field: str, value):
    def change(content):
        part, _, key = field.rpartition(".")
        (content[part] if part else content)[key] = value

    return change


def _other_weights(content):
    from pipeline import models

    content["state_dict"] = models.build("resnet18").state_dict()


def _reshaped(content):
    import torch

    key = next(k for k, v in content["state_dict"].items() if v.ndim == 4)
    content["state_dict"][key] = torch.zeros(3, 3, 3, 3)


@pytest.mark.parametrize(
    "change, field",
    [
        (_set("meta.image_size", 100_000), "meta.image_size = 100000: must be a whole number of pixels from 67"),
        (_set("meta.image_size", 8), "meta.image_size = 8"),
        (_set("meta.image_size", "72"), "meta.image_size = '72'"),
        (_set("meta.resize", "zoom"), "meta.resize = 'zoom': must be one of crop, squash"),
        (_set("meta.channels", 5), "meta.channels = 5: must be 3 (RGB) or 1 (grey)"),
        (_set("meta.classes", []), "meta.classes = []: 0 classes"),
        (_set("meta.classes", ["cat"] * 2), "a class name is given twice"),
        (_set("meta.classes", [f"c{i}" for i in range(1001)]), "1001 classes: a classifier needs 2 to 1,000"),
        (_set("meta", None), "meta = None"),
        (_set("name", "skynet"), "name = 'skynet': not an architecture"),
        (_set("options", {"dropout": 7}), "options.dropout = 7"),
        (_set("options", {"widths": "x"}), "options.widths = 'x': unknown key"),
        (_other_weights, "state_dict = '"),
        (_reshaped, "must have nin's shape"),
        (_set("state_dict", {"a": 1}), "state_dict = 'dict': must map parameter names to tensors"),
    ],
    ids=[
        "size-huge",
        "size-small",
        "size-text",
        "resize",
        "channels",
        "no-classes",
        "repeated-class",
        "1001-classes",
        "no-meta",
        "name",
        "option-value",
        "option-key",
        "other-architecture",
        "wrong-shape",
        "not-tensors",
    ],
)
def test_every_field_of_a_model_file_is_checked_before_any_allocation(nin_file, tmp_path, change, field):
    from pipeline.models import modelfile

    path = tampered(nin_file, tmp_path / "evil.pt", change)
    with pytest.raises(StageError) as error:
        modelfile.load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and field in message and "\n" not in message


@pytest.mark.slow  # a fresh interpreter
def test_predict_with_a_model_file_claiming_100000_px_is_one_line_in_seconds(nin_file, tmp_path):
    path = tampered(nin_file, tmp_path / "big.pt", _set("meta.image_size", 100_000))
    (tmp_path / "a.jpg").write_bytes(jpeg())
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.predict", "--model", str(path), str(tmp_path / "a.jpg")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert "meta.image_size = 100000" in run.stderr


def test_a_photo_given_directly_has_the_same_size_cap_as_inside_a_folder(tmp_path, monkeypatch):
    from pipeline import predict

    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    with open(tmp_path / "huge.jpg", "wb") as f:
        f.truncate(5000)  # sparse: 8 GB in the attack, read whole before
    assert predict.decode_photo(predict.Photo(str(tmp_path / "huge.jpg"), tmp_path / "huge.jpg"), 32, "crop") == (
        None,
        "too large",
    )


# ---------------------------------------------------------------- 6. fail before the expensive part


@pytest.mark.parametrize(
    "content, message",
    [
        (b"just text", "is not a state-dict file"),
        ("list", "holds a list, not a state dict"),
        ("other", r"is not a state dict of efficientnet_lite0: Error\(s\) in loading state_dict"),
    ],
    ids=["text", "list", "another-network"],
)
def test_a_weights_file_that_is_not_the_networks_state_dict_stops_check(tmp_path, content, message):
    import torch

    from pipeline import models
    from pipeline.params import recipes

    path = tmp_path / "weights.pt"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    elif content == "other":
        torch.save(models.build("nin").state_dict(), path)
    else:
        path.write_bytes(content)
    p = recipes.load(
        overrides={"model": "efficientnet_lite0", "models": {"efficientnet_lite0": {"weights": str(path)}}}
    )
    with pytest.raises(StageError, match=message) as error:
        models.preflight(p.models, 64)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------- 8. predict --explain, and predict's outputs


@pytest.fixture
def tricky_photos(tmp_path) -> Path:
    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    for i, name in enumerate(
        ("a b.jpg", "a_b.jpg", "a,b.jpg", "a/b.jpg", "A_B.jpg", "x" * 240 + ".jpg", "=cmd|' -C calc'!A0.jpg", "-2.jpg")
    ):
        (folder / name).write_bytes(jpeg(colour=(i * 30, 100, 200 - i * 20)))
    return folder


def run_predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


@pytest.mark.slow  # a fresh interpreter
def test_explain_writes_one_picture_per_photo_with_readable_safe_names_and_the_csv_says_which(
    nin_file, tricky_photos, tmp_path
):
    import csv

    done = run_predict("--model", nin_file, "--explain", tmp_path / "why", "--out", tmp_path / "out.csv", tricky_photos)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    pictures = sorted(p.name for p in (tmp_path / "why").iterdir())
    assert len(rows) == 8 and len(pictures) == 8  # 5 rows but 2 pictures before
    assert sorted(r["explanation"] for r in rows) == pictures
    assert len({p.casefold() for p in pictures}) == 8  # distinct on a file system that ignores case too
    assert all(len(p.encode()) <= 255 for p in pictures)  # a 240-character name is shortened, not ENAMETOOLONG
    by_file = {r["file"].partition("/in/")[2]: r["explanation"] for r in rows}
    for name in ("a b.jpg", "a_b.jpg", "a,b.jpg", "a/b.jpg"):  # readable: the name as far as it is safe, then its hash
        assert re.fullmatch(r".*_in_a_b\.jpg-[0-9a-f]{8}\.png", by_file[name])
    assert predict_names(["a_b.jpg", "A_B.jpg", "a b.jpg"]) == [
        "a_b.jpg.png",
        "A_B.jpg-" + sha8("A_B.jpg") + ".png",
        "a_b.jpg-" + sha8("a b.jpg") + ".png",
    ]


def sha8(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


def predict_names(names: list[str]) -> list[str]:
    from pipeline import predict

    found = [predict.Photo(n, Path(n)) for n in names]
    return [predict.explanation_names(found)[n] for n in names]


@pytest.mark.slow  # a fresh interpreter
def test_predicts_csv_neutralises_cells_a_spreadsheet_would_run(nin_file, tricky_photos, tmp_path):
    import csv

    from pipeline.common.formats import csv_text

    assert (
        csv_text(["a", "b", "c"], [["=1+1", "-0.5", "@x"], ["+A1", "\tx", "ok"]], for_people=True)
        == "a,b,c\n'=1+1,-0.5,'@x\n'+A1,\\x09x,ok\n"
    )  # a tab: written as \x09, then nothing left to run
    (tricky_photos.parent / "f").mkdir()
    for name in ("=cmd|' -C calc'!A0.jpg", "+1.jpg", "@SUM(A1).jpg", "-2+3.jpg"):
        (tricky_photos.parent / "f" / name).write_bytes(jpeg())
    done = run_predict(
        "--model", nin_file, "--out", tmp_path / "out.csv", *sorted((tricky_photos.parent / "f").iterdir())
    )
    assert done.returncode == 0, done.stderr
    cells = [row[0] for row in csv.reader(open(tmp_path / "out.csv"))][1:]
    assert cells and all(not c.startswith(("=", "+", "-", "@")) for c in cells)


def test_rejects_csv_neutralises_member_names(tmp_path):
    from pipeline.params.sections import load_data

    with zipfile.ZipFile(tmp_path / "t.zip", "w") as z:
        for i in range(6):
            z.writestr(f"train/cat.{i}.jpg", jpeg())
            z.writestr(f"train/dog.{i}.jpg", jpeg(colour=(0, 0, 250)))
        z.writestr("=HYPERLINK(1).jpg", b"not a photo")
    import dataclasses

    split.split(
        tmp_path / "t.zip",
        tmp_path / "s",
        dataclasses.replace(load_data(REPO / "params.yaml"), val_fraction=0.2, test_fraction=0.2, max_per_class=None),
        workers=1,
    )
    text = (tmp_path / "s" / "rejects.csv").read_text()
    assert "\n'=HYPERLINK(1).jpg,no class in its path\n" in text


@pytest.mark.slow  # a fresh interpreter each
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--out", "{tmp}"], "is a folder: give a file name"),
        (["--out", "{tmp}/file.txt/out.csv"], "file.txt is a file, not a folder"),
        (["--explain", "{tmp}/file.txt"], "is a file: give a folder"),
        (["--batch-size", "0"], "--batch-size 0: must be a positive whole number"),
    ],
    ids=["out-is-a-dir", "out-nowhere", "explain-is-a-file", "batch-size"],
)
def test_a_bad_output_path_is_refused_before_any_prediction(nin_file, tmp_path, flags, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "a.jpg").write_bytes(jpeg())
    done = run_predict("--model", nin_file, *[f.format(tmp=tmp_path) for f in flags], tmp_path / "a.jpg")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert "predict:" not in done.stderr  # the summary line: no photo was classified


def test_a_picture_that_cannot_be_written_costs_its_picture_not_the_csv(nin_file, tmp_path, monkeypatch):
    from pipeline import predict
    from pipeline.common import atomic
    from pipeline.models import modelfile
    from pipeline.runtime.device import Compute

    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "in" / name).write_bytes(jpeg())
    real = atomic.write_bytes

    def full_disk(path, data):
        if "in_b.jpg" in path.name:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", full_disk)
    model, meta = modelfile.load(nin_file)
    import torch

    found = predict.photos([tmp_path / "in"])
    out = predict.predict(model, meta, found, compute=Compute(torch.device("cpu")), explain=tmp_path / "why")
    assert [p.label != "" for p in out] == [True, True]
    assert out[1].explanation == "picture not written (No space left on device)" and out[0].explanation.endswith(".png")


# ---------------------------------------------------------------- 7. a disk that fills


@pytest.fixture
def split_photos(tmp_path) -> tuple[Path, Path]:
    import dataclasses

    from pipeline.params.sections import load_data

    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(40):
            z.writestr(f"train/cat.{i}.jpg", jpeg(colour=(200, i, 40)))
            z.writestr(f"train/dog.{i}.jpg", jpeg(colour=(10, i, 200)))
    data = dataclasses.replace(load_data(REPO / "params.yaml"), val_fraction=0.2, test_fraction=0.2, max_per_class=None)
    split.split(archive, tmp_path / "split", data, workers=1)
    return archive, tmp_path / "split"


def run_stage(fn, capsys) -> tuple[int, str]:
    from pipeline.common import cli

    with pytest.raises(SystemExit) as exit:
        cli.run(fn)
    return exit.value.code, capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_when_the_arrays_are_reserved_is_one_line_saying_how_much(
    split_photos, tmp_path, monkeypatch, capsys, workers
):
    import errno
    import os

    from pipeline import preprocess

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    archive, split_dir = split_photos
    out = tmp_path / "processed"
    code, err = run_stage(
        lambda: preprocess.preprocess(
            archive, split_dir, out, image_size=32, resize="crop", channels=3, workers=workers
        ),
        capsys,
    )
    assert code == 2 and err.count("\n") == 1
    assert "error: the disk is full: preprocess needs 0.00 GiB for the train array" in err and "GiB are free" in err
    assert list(out.iterdir()) == []  # no .tmp array, no partial output


@pytest.mark.parametrize("workers", [1, 2])
def test_a_disk_that_fills_while_decoding_is_one_line_and_leaves_nothing(
    split_photos, tmp_path, monkeypatch, capsys, workers
):
    import errno

    from pipeline import preprocess

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "data/processed/.train_images.npy.tmp")

    monkeypatch.setattr(preprocess, "load", full)  # in every worker too: they are forked
    archive, split_dir = split_photos
    out = tmp_path / "processed"
    code, err = run_stage(
        lambda: preprocess.preprocess(
            archive, split_dir, out, image_size=32, resize="crop", channels=3, workers=workers
        ),
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "out-of-memory" not in err
    assert err.startswith(
        "error: the disk is full (No space left on device) writing data/processed/.train_images.npy.tmp"
    )
    assert list(out.iterdir()) == []


def test_a_full_disk_while_saving_a_model_is_the_same_line_and_no_partial_file(tmp_path, monkeypatch, capsys):
    import shutil

    import torch

    from pipeline import models
    from pipeline.models import modelfile

    def failing_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0; PytorchStreamWriter failed writing "
            "file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    meta = {"image_size": 72, "resize": "crop", "channels": 3, "classes": ["cat", "dog"]}
    code, err = run_stage(
        lambda: modelfile.save(tmp_path / "nin.pt", models.build("nin"), name="nin", options={}, meta=meta), capsys
    )
    assert (
        code == 2
        and err.startswith("error: the disk is full (No space left on device) writing ")
        and str(tmp_path / "nin.pt") in err
    )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 6. two `dvc exp run` in one workspace


def test_params_changed_while_training_stop_the_stage_before_it_saves_a_model(tmp_path, monkeypatch):
    import shutil

    from pipeline import train
    from pipeline.params import recipes
    from tests.helpers import toy_split, write_processed

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    data = write_processed(tmp_path / "processed", {"train": toy_split(32), "val": toy_split(16, seed=1)})
    p = recipes.load(
        params, {"model": "resnet18", "train": {"epochs": 1, "batch_size": 16}, "runtime": {"device": "cpu"}}
    )
    real_fit = train.fit

    def second_exp_run_writes_its_seed(*args, **kwargs):
        out = real_fit(*args, **kwargs)
        params.write_text(
            params.read_text().replace("  seed: 0\n", "  seed: 1\n", 1)
        )  # what `dvc exp run -S train.seed=1` does
        return out

    monkeypatch.setattr(train, "fit", second_exp_run_writes_its_seed)
    with pytest.raises(
        StageError, match=r"train: params\.yaml changed while this stage ran \(.*seed: 0 → 1\): another `dvc exp run`"
    ):
        train.train_all(p, data, tmp_path / "models", tmp_path / "dvclive", tmp_path / "resume")
    assert not (tmp_path / "models" / "resnet18.pt").exists()


def test_evaluate_refuses_a_model_trained_with_other_params():
    from pipeline.evaluate import trained_with_other

    assert trained_with_other({"seed": 0, "crop_scale": (1.0, 1.0)}, {"seed": 0, "crop_scale": [1.0, 1.0]}) == ""
    assert (
        trained_with_other({"seed": 0, "lr": 0.1}, {"seed": 1, "lr": 0.1}) == "train.seed = 0, and params.yaml says 1"
    )


# ---------------------------------------------------------------- command-line values


@pytest.mark.slow  # a fresh interpreter each
@pytest.mark.parametrize(
    "command, message",
    [
        ("benchmarks.bench --archive {zip} --image-size 100000", "data.image_size = 100000: must be at most 1,024"),
        ("benchmarks.bench --archive {zip} --steps 0", "--steps 0: must be at least 1"),
        ("benchmarks.bench --archive {photo}", "is neither a zip nor a folder of photos"),
        ("pipeline.export --model {model} --out {tmp}", "is a folder: give a file name"),
        ("pipeline.compare HEAD other", "metrics.json at 'HEAD'"),
        ("pipeline.seeds run x --poll 0", "--poll 0: a number of seconds from above 0 to 3600"),
    ],
    ids=["bench-size", "bench-steps", "bench-archive", "export-out", "compare-rev", "seeds-poll"],
)
def test_a_bad_command_line_value_is_one_line_not_a_traceback(nin_file, tmp_path, command, message):
    (tmp_path / "a.jpg").write_bytes(jpeg())
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as z:
        z.writestr("train/cat.1.jpg", jpeg())
    args = command.format(zip=tmp_path / "t.zip", photo=tmp_path / "a.jpg", model=nin_file, tmp=tmp_path).split()
    cwd = tmp_path if args[0] == "pipeline.compare" else REPO  # no metrics.json at HEAD of a repository without one
    if args[0] == "pipeline.compare":
        subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
        subprocess.run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
            cwd=tmp_path,
            check=True,
        )
    done = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent)},
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-500:]


def test_a_params_file_over_the_cap_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    from pipeline.common import schema
    from pipeline.common.errors import ParamError

    monkeypatch.setattr(schema, "MAX_PARAMS_BYTES", 1000)
    path = tmp_path / "params.yaml"
    path.write_text("models:\n" + "".join(f"  k{i}: {i}\n" for i in range(500)))  # 3 million keys in the attack
    with pytest.raises(ParamError, match=r"is 5,\d{3} bytes, more than a params file needs \(1,000 bytes at most\)"):
        schema.read(path)


@pytest.mark.slow  # a fresh interpreter
def test_an_encrypted_member_is_one_row_of_predicts_csv_and_the_others_are_classified(nin_file, tmp_path):
    import csv

    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.jpg", jpeg())
        z.writestr("b.jpg", jpeg(colour=(0, 0, 200)))
    data = bytearray(path.read_bytes())
    first_local, first_central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[first_local + 6] |= 1  # a.jpg, as `zip -P` marks it
    data[first_central + 8] |= 1
    path.write_bytes(bytes(data))
    done = run_predict("--model", nin_file, "--out", tmp_path / "out.csv", path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert [(r["file"].rpartition(":")[2], r["error"]) for r in rows] == [("a.jpg", "encrypted"), ("b.jpg", "")]
    assert rows[1]["label"] in ("cat", "dog")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train": {"seed": -1}}, "train.seed = -1: must be a whole number from 0 to 4,294,967,295"),
        ({"train": {"seed": 2**70}}, "train.seed = 1180591620717411303424"),
        ({"data": {"seed": 2**32}}, "data.seed = 4294967296"),
        (
            {"models": {"resnet50": {"head": [10**9]}}},
            "models.resnet50.head = [1000000000]: at most 8 hidden layers of at most 16,384 units",
        ),
    ],
    ids=["negative-seed", "huge-seed", "huge-split-seed", "huge-head"],
)
def test_values_that_crashed_later_are_param_errors(overrides, message):
    from pipeline.common.errors import ParamError
    from pipeline.params import recipes

    with pytest.raises(ParamError) as error:
        recipes.load(REPO / "params.yaml", overrides)
    assert message in str(error.value)
