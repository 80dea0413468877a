"""Hostile input, third round: each attack replayed at a small scale (limits patched down where the
real ones take gigabytes). Class 1, a model lost through a shared inode, is test_links (real DVC).
Each ends in one line that says what happened, never a hang, a traceback, an exhausted memory or a
device replaced by a regular file."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import compare, split
from pipeline.common import atomic, cli, files, formats, schema
from pipeline.common.errors import ParamError, StageError
from pipeline.data import images, sources
from pipeline.evaluation import predicting, results
from pipeline.models import modelfile, weightsfile
from pipeline.params import presets, recipes
from pipeline.training import resume
from tests.helpers import REPO, jpeg, tampered


@contextlib.contextmanager
def within(seconds: int):
    """Fail, rather than hang the suite, if the block blocks (a FIFO opened for reading)."""

    def timeout(*_):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def command(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- 2: only regular files, bounded


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    """A folder of photos as predict and Classifier take it: one photo, a link to /dev/zero (read
    for ever), a FIFO (blocks until a writer comes: never)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg())
    (folder / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.jpg")
    return folder


def test_a_link_to_dev_zero_and_a_fifo_among_photos_are_rejected_without_a_read(hostile_folder):
    found = predicting.photos([hostile_folder])
    reasons = {}
    with within(20):
        for photo in found:
            try:
                photo.read()
                reasons[photo.member] = ""
            except images.RejectError as e:
                reasons[photo.member] = e.reason
        for direct in ("zero.jpg", "pipe.jpg"):  # each named on its own, not in a folder
            with pytest.raises(StageError, match="not a regular file"):
                predicting.photos([hostile_folder / direct])
    assert reasons == {"a.jpg": "", "pipe.jpg": "not a regular file", "zero.jpg": "not a regular file"}


@pytest.mark.slow  # a fresh interpreter
def test_predict_classifies_the_photo_and_reports_the_device_and_the_fifo_as_rows(nin_file, hostile_folder, tmp_path):
    out = tmp_path / "predictions.csv"
    done = command("pipeline.predict", "--model", str(nin_file), str(hostile_folder), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = out.read_text().splitlines()
    assert any(r.endswith("not a regular file") and "zero.jpg" in r for r in rows)
    assert any(r.endswith("not a regular file") and "pipe.jpg" in r for r in rows)


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_device_or_a_fifo_as_data_source_is_one_line_and_never_read(special, tmp_path):
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "photos.zip"
        os.mkfifo(path)
    with within(20):
        problem = sources.source_problem(str(path), tmp_path)
        assert (
            problem
            and "not a .zip archive or a folder" in problem
            and ("character device" in problem or "FIFO" in problem)
        )
        with pytest.raises(StageError, match="not a .zip archive or a folder"):
            sources.from_local(str(path), path, tmp_path / "images.zip")
        with pytest.raises(StageError, match="not a regular file"):
            images.Archive(path)  # what the bench's --archive and every stage open
        from pipeline import check

        assert check.photos_at_most(recipes.load(overrides={"data": {"source": str(path)}}).data) == 0


def test_a_model_file_whose_tensors_unpack_past_the_bound_is_refused_before_they_are_read(tmp_path):
    path = tmp_path / "small.pt"
    torch.save({"x": torch.zeros(10)}, path)
    bomb = tmp_path / "bomb.pt"  # the same file, with a member of 4 MB of zeros deflated to a few kB
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("small/data/99", b"\0" * (4 << 20), compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 64 << 10
    with pytest.raises(StageError, match=r"unpacks to 4,194,\d+ bytes, more than the 1,048,576"):
        weightsfile.load(bomb, "model file", limit=1 << 20)
    assert weightsfile.load(path, "model file", limit=1 << 20)["x"].shape == (10,)


def test_a_model_file_whose_pickle_names_a_million_classes_is_refused_before_it_is_unpickled(
    nin_file, tmp_path, monkeypatch
):
    # 17 MB of pickle: torch's weights-only unpickler took 4.4 s and hundreds of MB to read it back
    # (Zen 3), before the count of classes could be refused; a 2-GB one would take minutes
    path = tampered(
        nin_file, tmp_path / "million.pt", lambda c: c["meta"].update(classes=[f"c{i}" for i in range(10**6)])
    )
    read = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: read.append(a))
    with pytest.raises(StageError) as refused:
        modelfile.load(path)
    assert read == []  # refused from the zip's directory: nothing unpickled
    pickled = weightsfile.sizes(path)[1]
    assert pickled > 16 << 20 and str(refused.value) == (
        f"model file {path} holds {pickled:,} bytes of pickled records besides its tensors, "
        "more than the 4,194,304 a model file needs"
    )
    assert weightsfile.sizes(nin_file)[1] < 64 << 10  # a real one: kilobytes


def test_a_folder_source_never_zips_a_file_larger_than_a_photo_may_be(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 4096)
    folder = tmp_path / "photos"
    (folder / "cat").mkdir(parents=True)
    (folder / "dog").mkdir()
    (folder / "cat" / "1.jpg").write_bytes(jpeg())
    (folder / "dog" / "1.jpg").write_bytes(jpeg())
    (folder / "dog" / "huge.jpg").write_bytes(jpeg() + b"\0" * 8192)  # a JPEG header, then far more
    sources.zip_folder(folder, tmp_path / "images.zip")
    with zipfile.ZipFile(tmp_path / "images.zip") as z:
        assert z.namelist() == ["cat/1.jpg", "dog/1.jpg"]
    assert "skipped 1 file(s) larger than a photo may be" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seeds", "1000000000"], "--seeds 1000000000: from 1 to 100"),
        (["--first", "-1"], "--first -1: a seed from 0"),
    ],
)
def test_seeds_counts_are_checked_before_anything_is_built(flags, message, tmp_path):
    done = command("pipeline.seeds", "run", "x", *flags, "--no-start")
    assert message in one_line(done)


@pytest.mark.slow  # a fresh interpreter
def test_lr_find_refuses_an_infinite_end():
    assert "need 0 < start < end <= 1e6, finite numbers" in one_line(
        command("pipeline.lr_find", "--model", "nin", "--end", "inf")
    )


def test_an_image_in_memory_larger_than_a_photo_may_be_is_refused_before_it_is_resized(monkeypatch):
    from pipeline.classifier import Classifier

    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    classifier = Classifier(None, {"classes": ["cat", "dog"], "image_size": 32, "resize": "crop", "channels": 3}, None)
    for big in (Image.new("RGB", (200, 100)), np.zeros((100, 200, 3), np.uint8)):
        with pytest.raises(StageError, match="200×100 px is larger than a photo may be"):
            classifier._array(big)
    assert classifier._array(Image.new("La", (40, 40))).shape == (
        3,
        32,
        32,
    )  # premultiplied grey + alpha: converted, not a ValueError


def test_classifier_arguments_are_checked_like_params(nin_file):
    from pipeline.classifier import Classifier

    for kwargs, message in (
        ({"precision": "banana"}, "runtime.precision = 'banana'"),
        ({"device": None}, "runtime.device = None: must be a string"),
    ):
        with pytest.raises(ParamError, match=message):
            Classifier.load(nin_file, **kwargs)


# ---------------------------------------------------------------- 3: outputs never replace what is not a regular file


@pytest.mark.parametrize("target", ["/dev/null", "fifo", "link"])
def test_an_output_at_a_device_a_fifo_or_a_link_is_refused_and_left_as_it_is(target, tmp_path):
    path = Path(target)
    if target == "fifo":
        path = tmp_path / "out.csv"
        os.mkfifo(path)
    elif target == "link":
        path = tmp_path / "out.csv"
        (tmp_path / "real.csv").write_text("mine\n")
        path.symlink_to(tmp_path / "real.csv")
    before = os.lstat(path)
    with pytest.raises(StageError, match="written by rename"):
        cli.writable_file(path, "--out")  # every command's --out, before any work
    with pytest.raises(StageError, match="written by rename"):
        atomic.write_text(path, "x")  # and every write, whatever its route
    after = os.lstat(path)
    assert (stat.S_IFMT(after.st_mode), after.st_ino, after.st_rdev) == (
        stat.S_IFMT(before.st_mode),
        before.st_ino,
        before.st_rdev,
    )
    if target == "link":
        assert (tmp_path / "real.csv").read_text() == "mine\n"


@pytest.mark.slow  # a fresh interpreter
def test_predict_out_dev_null_is_one_line_and_dev_null_stays_a_device(nin_file, tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg())
    done = command("pipeline.predict", "--model", str(nin_file), str(tmp_path / "a.jpg"), "--out", "/dev/null")
    assert "/dev/null is a character device" in one_line(done)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# ---------------------------------------------------------------- 4: CSV cells and names; -S values


def test_a_carriage_return_in_a_member_name_is_a_reject_and_the_rejects_csv_stays_one_row_a_member(tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(4):
            z.writestr(f"train/cat.{i}.jpg", jpeg())
            z.writestr(f"train/dog.{i}.jpg", jpeg())
        z.writestr("train/cat.x\r=1+1.jpg", jpeg())
        z.writestr("train/dog.\n@SUM(A1).jpg", jpeg())
    classes, usable, rejects = split.scan(archive, workers=1)
    assert sorted(r for _, r in rejects) == ["control characters in its name"] * 2 and len(usable) == 8
    text = formats.csv_text(["member", "reason"], rejects, for_people=True)
    assert text.splitlines() == [
        "member,reason",
        "train/cat.x\\x0d=1+1.jpg,control characters in its name",
        "train/dog.\\x0a@SUM(A1).jpg,control characters in its name",
    ]


@pytest.mark.parametrize(
    "cell, shown",
    [
        ("=1+1", "'=1+1"),
        (" =1+1", "' =1+1"),
        ("\r=1+1", "\\x0d=1+1"),
        ("\t@x", "\\x09@x"),
        ("-0.5", "-0.5"),
        ("chat", "chat"),
    ],
)
def test_a_formula_is_neutralised_whatever_precedes_it(cell, shown):
    assert formats.neutralised(cell) == shown


def test_an_alias_bomb_in_a_set_value_is_refused_at_once():
    bomb = (
        "["
        + ",".join(
            ["&a [x,x,x,x,x,x,x,x,x]"]
            + [f"&{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]" for p, c in zip("abcdefgh", "bcdefghi")]
        )
        + "]"
    )
    with within(5), pytest.raises(ParamError, match="aliases"):
        presets.user_overrides(["-S", f"train.lr={bomb}"])


# ---------------------------------------------------------------- 5: one line for every input


def test_a_401_digit_learning_rate_is_a_param_error_again_not_an_overflow():  # round 2's fix, regressed, replayed
    with pytest.raises(ParamError, match="train.lr = a whole number of about 401 digits: must be a finite number"):
        recipes.load(overrides={"train": {"lr": 10**400}})


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochs: " + "9" * 5000 + "\n", "holds a number Python will not read"),
        ("? [a, b]\n: 1\n", "a key must be a name, not a list"),
        ("train: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
    ids=["5000-digits", "complex-key", "deep-nesting"],
)
def test_a_params_file_that_breaks_the_yaml_reader_is_one_param_error(text, message, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamError, match=message) as error:
        schema.read(path)
    assert len(str(error.value)) < 1000


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data": {"source": "photos\0.zip"}}, "data.source = 'photos\\\\x00.zip': must not contain a NUL character"),
        ({"runtime": {"device": "cuda:١"}}, "runtime.device = 'cuda:١': use auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_nul_in_a_path_and_non_ascii_digits_in_a_device_are_param_errors(overrides, message):
    with pytest.raises(ParamError, match=message):
        recipes.load(overrides=overrides)


def test_a_source_path_over_255_characters_is_one_line(tmp_path):
    problem = sources.source_problem(str(tmp_path / ("x" * 300) / "train.zip"), tmp_path)
    assert problem and "name is longer than the file system allows" in problem and len(problem) < 800


def _nan(content):
    next(v for v in content["state_dict"].values() if v.is_floating_point()).view(-1)[0] = float("nan")


def _inf(content):
    next(v for v in content["state_dict"].values() if v.is_floating_point()).view(-1)[0] = float("-inf")


def _dtype(dtype):
    def change(content):
        content["state_dict"] = {
            k: v.to(dtype) if v.is_floating_point() else v for k, v in content["state_dict"].items()
        }

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_nan, "holds NaN or infinite values"),
        (_inf, "holds NaN or infinite values"),
        (_dtype(torch.float64), "is float64, not float32"),
        (_dtype(torch.int8), "is int8, not float32"),
        (_dtype(torch.complex64), "is complex64, not float32"),
    ],
    ids=["nan", "inf", "float64", "int8", "complex"],
)
def test_weights_not_finite_or_of_another_dtype_are_refused(nin_file, tmp_path, change, message):
    path = tampered(nin_file, tmp_path / "evil.pt", change)
    with pytest.raises(StageError, match=message) as error:
        modelfile.load(path)
    assert "\n" not in str(error.value)


def test_an_empty_model_file_is_one_line(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(StageError, match="is not a model file this code can read"):
        modelfile.load(tmp_path / "empty.pt")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENAMETOOLONG])
def test_what_the_file_system_refuses_is_one_line(code, capsys):
    def stage():
        raise OSError(code, os.strerror(code), "data/split/train.csv")

    with pytest.raises(SystemExit) as exit:
        cli.run(stage)
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and err.startswith("error: data/split/train.csv: ") and "\n" not in err


@pytest.mark.slow  # a fresh interpreter
def test_export_out_under_proc_is_one_line(nin_file):
    done = command("pipeline.export", "--model", str(nin_file), "--out", "/proc/self/attack.pt2")
    one_line(done)


def test_merge_conflict_markers_in_metrics_json_are_named(tmp_path):
    (tmp_path / "metrics.json").write_text(
        '{\n<<<<<<< HEAD\n  "best": "nin"\n=======\n  "best": "vgg11"\n>>>>>>> exp\n}\n'
    )
    with pytest.raises(StageError, match="holds merge-conflict markers"):
        modelfile.find(None, {"models": str(tmp_path / "models"), "metrics": str(tmp_path / "metrics.json")})


@pytest.mark.parametrize(
    "text, message", [("not json", "is not JSON"), ('{"test": {}}', "is not a results file of this pipeline")]
)
def test_compare_on_a_file_that_is_not_a_results_file_is_one_line(text, message, tmp_path):
    (tmp_path / "nin.json").write_text(text)
    with pytest.raises(StageError, match=message):
        compare.read_result(results.WORKSPACE, str(tmp_path / "nin.json"))


@pytest.mark.parametrize("recorded", ["../../models/nin.pt", "/etc/passwd", None, {"file": 3}])
def test_a_resume_state_whose_weights_point_elsewhere_is_not_resumed(recorded, tmp_path, capsys):
    state = {
        "key": "k",
        "format": resume.FORMAT,
        "history": [],
        "weights": recorded if recorded is None or isinstance(recorded, dict) else {"file": recorded, "sha256": "0"},
    }
    if recorded is None:
        state["weights"] = "nin.weights.pt"
    torch.save(state, tmp_path / "nin.pt")
    assert resume.load(tmp_path / "nin.pt", "k") is None
    assert "this model trains from the start" in capsys.readouterr().err
    assert resume.epochs_done(tmp_path / "nin.pt", "k") == 0


def test_a_resume_state_with_an_oversized_pickle_is_set_aside_unread(tmp_path, monkeypatch, capsys):
    # the million-classes attack on the other file train reads: a history of a million epochs
    history = [{"epoch": e} for e in range(10**6)]
    torch.save({"key": "k", "format": resume.FORMAT, "history": history}, tmp_path / "nin.pt")
    assert weightsfile.sizes(tmp_path / "nin.pt")[1] > weightsfile.MAX_PICKLE_BYTES
    read = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: read.append(a))
    assert resume.epochs_done(tmp_path / "nin.pt", "k") == 0  # the estimate before training: not resumed
    assert resume.load(tmp_path / "nin.pt", "k") is None and read == []  # training: refused, nothing unpickled
    assert "bytes of pickled records besides its tensors" in capsys.readouterr().err
    assert (tmp_path / "nin.pt.corrupt").exists()


def test_a_fifo_in_place_of_a_resume_state_is_set_aside(tmp_path, capsys):
    os.mkfifo(tmp_path / "nin.pt")
    with within(20):
        assert resume.epochs_done(tmp_path / "nin.pt", "k") == 0
        assert resume.load(tmp_path / "nin.pt", "k") is None
    assert "FIFO" in capsys.readouterr().err and (tmp_path / "nin.pt.corrupt").exists()


def test_files_regular_says_what_a_path_is(tmp_path):
    os.mkfifo(tmp_path / "p")
    for path, said in ((tmp_path / "p", "a FIFO"), (Path("/dev/zero"), "a character device"), (tmp_path, "a folder")):
        with pytest.raises(files.NotRegular, match=said):
            files.regular(path, "photo")
