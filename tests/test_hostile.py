"""Hostile and broken input, each attack reproduced at a small scale: it ends in one line that says
what happened (a reject with its reason, or a one-line error), never in a hang, a traceback, an
exhausted memory or disk, or a file left behind."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from pipeline import check, download, split
from pipeline.common import files, schema
from pipeline.common.errors import ParamError, StageError
from pipeline.data import workers
from pipeline.data.images import MAX_FILE_BYTES, Archive, RejectError
from pipeline.params import recipes
from tests.helpers import REPO, jpeg


def claim_size(archive: Path, member: str, claimed: int) -> None:
    """Rewrite the uncompressed size a zip declares for `member` (local header and central
    directory), as a zip bomb does, without writing the bytes it claims."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, claimed)  # local file header: uncompressed size
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) != -1:  # every central directory entry: find ours by name
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_length].decode() == member:
            struct.pack_into("<I", data, start + 24, claimed)
        start += 4
    archive.write_bytes(bytes(data))


# ---------------------------------------------------------------- 1, 4: archives


def test_a_member_that_claims_3_gib_is_rejected_before_a_byte_is_read(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train/cat.1.jpg", jpeg())
        z.writestr("train/cat.bomb.jpg", b"\0" * 1000)
    claim_size(path, "train/cat.bomb.jpg", 3 << 30)
    with Archive(path) as archive:
        assert archive.read("train/cat.1.jpg")[:2] == b"\xff\xd8"
        with pytest.raises(RejectError) as e:
            archive.read("train/cat.bomb.jpg")
    assert e.value.reason == "too large"
    _, usable, rejects = split.scan(path, workers=1)
    assert usable == [("train/cat.1.jpg", 0)] and rejects == [("train/cat.bomb.jpg", "too large")]


def test_a_member_really_over_the_limit_is_too_large_and_a_folder_file_too(tmp_path):
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train/dog.1.jpg", b"\0" * (MAX_FILE_BYTES + 1))  # 64 MiB of zeros: a 65 kB zip
    with Archive(path) as archive, pytest.raises(RejectError, match="too large"):
        archive.read("train/dog.1.jpg")
    folder = tmp_path / "photos"
    folder.mkdir()
    with open(folder / "huge.jpg", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(RejectError, match="too large"):
        Archive(folder).read("huge.jpg")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_corrupt_member_is_a_reject_not_a_traceback(tmp_path, compression):
    path = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("train/cat.1.jpg", jpeg())
        z.writestr("train/cat.2.jpg", jpeg((64, 48)))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("train/cat.2.jpg")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle : middle + 8] = bytes(
        255 - b for b in data[middle : middle + 8]
    )  # a bad CRC, or a broken deflate stream
    path.write_bytes(bytes(data))
    _, usable, rejects = split.scan(path, workers=2)
    assert usable == [("train/cat.1.jpg", 0)] and rejects == [("train/cat.2.jpg", "truncated or corrupt")]


def test_a_name_given_twice_in_a_zip_is_rejected_not_silently_one_of_the_two(tmp_path):
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("train/cat.1.jpg", jpeg())
        z.writestr("train/dog.1.jpg", jpeg())
        z.writestr("train/dog.1.jpg", jpeg((50, 50)))
    _, usable, rejects = split.scan(path, workers=1)
    assert usable == [("train/cat.1.jpg", 0)] and rejects == [("train/dog.1.jpg", "name repeated in the archive")]


def test_a_one_pixel_image_is_too_small_to_be_a_photo(tmp_path):
    path = tmp_path / "tiny.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("train/cat.1.jpg", jpeg())
        z.writestr("train/cat.2.png", jpeg((1, 1)))
    assert split.scan(path, workers=1) == (("cat", "dog"), [("train/cat.1.jpg", 0)], [("train/cat.2.png", "too small")])


def test_a_kaggle_bundle_whose_train_zip_is_not_a_zip_is_one_error(tmp_path):
    bundle = tmp_path / "dogs-vs-cats.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("train.zip", b"this is not a zip")
        z.writestr("test1.zip", b"nor this")
    with pytest.raises(StageError, match="its train.zip is not a zip archive"):
        download.download(str(bundle), tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw").exists() and list(tmp_path.glob(".raw*")) == []


# ---------------------------------------------------------------- 2: a worker that dies


def die_on_the_third(archive, item):
    if item == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    time.sleep(0.01)
    return item


def stall_on_the_fifth(archive, item):
    if item == 5:
        time.sleep(3600)  # a decoder that never returns
    return item


def test_a_stalled_worker_stops_the_stage_with_one_error_naming_where(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x", b"x")
    start = time.monotonic()
    with pytest.raises(StageError, match=r"validate: a worker has been stuck for over \d s on 2 items \(4 to 5\)"):
        workers.map_archive(path, stall_on_the_fifth, list(range(40)), workers=2, desc="validate", item_seconds=0.2)
    assert time.monotonic() - start < 15


def test_a_killed_worker_stops_the_stage_in_seconds_with_one_error(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x", b"x")
    start = time.monotonic()
    with pytest.raises(StageError, match="a worker process died"):
        workers.map_archive(path, die_on_the_third, list(range(40)), workers=2, desc="validate")
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------- 3: disk and upper bounds


def test_check_refuses_arrays_that_would_not_fit_naming_both_figures(tmp_path):
    source = tmp_path / "photos.zip"
    with zipfile.ZipFile(source, "w") as z:
        for i in range(100):
            z.writestr(f"train/cat.{i}.jpg", b"x")
    data = recipes.load(overrides={"data": {"source": str(source), "image_size": 1000}}).data
    assert check.photos_at_most(data) == 100
    problem = check.disk_problem(data, free=1 << 30)  # 100 × 3 × 1000² = 0.28 GiB, twice, + 1 GiB margin
    assert (
        problem.startswith("data.image_size = 1000: the preprocessed arrays would take 0.3 GiB")
        and "needs 1.6 GiB but 1.0 GiB are free" in problem
    )
    assert check.disk_problem(data, free=2 << 30) is None
    linked = check.disk_problem(data, free=1 << 30, copies=0)  # DVC's cache clones (or hardlinks): 0.28 GiB once
    assert "DVC's cache shares their blocks, no copy" in linked and "needs 1.3 GiB" in linked
    capped = recipes.load(overrides={"data": {"source": "microsoft", "max_per_class": 10, "image_size": 100}}).data
    assert check.photos_at_most(capped) == 20


def test_dvcs_cache_takes_an_outputs_space_again_unless_the_file_system_clones(tmp_path):
    assert check.cache_copies(tmp_path) == 1  # not a DVC project: assume the cache copies
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    (project / ".dvc" / "config").write_text((REPO / ".dvc" / "config").read_text())  # this project's: reflink,copy
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    assert check.cache_copies(project) == (0 if files.clones(project / ".dvc") else 1)  # 1 on ext4, tmpfs, overlayfs
    (project / ".dvc" / "config").write_text("[cache]\n    type = hardlink,copy\n")  # a user's choice: space once
    assert check.cache_copies(project) == 0
    (project / ".dvc" / "config").write_text("[cache]\n    type = copy\n")
    assert check.cache_copies(project) == 1


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"data": {"image_size": 10000}}, "data.image_size"),
        ({"train": {"batch_size": 100000}}, "train.batch_size"),
        ({"train": {"epochs": 1000000}}, "train.epochs"),
        ({"runtime": {"processes": 5000}}, "runtime.processes"),
    ],
)
def test_sizes_past_their_documented_bound_are_refused_with_the_reason(overrides, key):
    with pytest.raises(ParamError, match=rf"^{key} = \d+: must be at most [\d,]+: ") as e:
        recipes.load(overrides=overrides)
    assert e.value.key == key


# ---------------------------------------------------------------- 6, 9: params


@pytest.mark.parametrize(
    "overrides, key, allowed",
    [
        (
            {"models": {"nin": {"dropout": 1.5}}},
            "models.nin.dropout",
            "must be a probability in [0, 1): the share of units dropped",
        ),
        ({"train": {"warmup_epochs": float("nan")}}, "train.warmup_epochs", "must be a finite number"),
        ({"train": {"warmup_epochs": float("inf")}}, "train.warmup_epochs", "must be a finite number"),
        ({"train": {"weight_decay": float("nan")}}, "train.weight_decay", "must be a finite number"),
        ({"train": {"lr": "-inf"}}, "train.lr", "must be a finite number"),
    ],
)
def test_bad_numbers_are_one_error_naming_the_param(overrides, key, allowed):
    with pytest.raises(ParamError) as e:
        recipes.load(overrides=overrides)
    assert e.value.key == key and e.value.allowed == allowed


def write_params(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_params_that_are_not_utf8_are_one_error(tmp_path):
    path = write_params(tmp_path, "model: all\ndata:\n  source: mïcrosoft  # saved as Latin-1\n".encode("latin-1"))
    with pytest.raises(ParamError, match=r"is not UTF-8 text \(byte \d+ is 0xef\)"):
        schema.read(path)


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, monkeypatch):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    bomb += "model: *i\n"  # 9⁹ = 387 million strings, from 400 bytes
    constructed = []  # the bound is on work, not time: refused while composing, before one object is built
    real = yaml.constructor.BaseConstructor.construct_document
    monkeypatch.setattr(
        yaml.constructor.BaseConstructor, "construct_document", lambda s, n: constructed.append(n) or real(s, n)
    )
    with pytest.raises(ParamError, match="aliases") as e:
        schema.read(write_params(tmp_path, bomb))
    assert constructed == [] and len(str(e.value)) < 600


def test_a_key_given_twice_is_refused_naming_it(tmp_path):
    with pytest.raises(ParamError, match=r"the key 'epochs' is given twice"):
        schema.read(write_params(tmp_path, "train:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n"))


def test_an_error_quotes_a_huge_value_in_a_couple_of_hundred_characters():
    with pytest.raises(ParamError) as e:
        recipes.load(overrides={"model": "x" * 1_000_000})
    assert len(str(e.value)) < 2000 and "(1,000,002 characters)" in str(e.value)


def test_an_empty_list_for_models_is_refused_not_read_as_no_overrides():
    with pytest.raises(ParamError, match=r"^models = \[\]: must be a mapping"):
        recipes.load(overrides={"models": []})


def test_a_gpu_that_is_not_there_is_a_check_problem(tmp_path):
    p = recipes.load(overrides={"runtime": {"device": "cuda:99"}, "data": {"source": "synthetic"}, "model": "nin"})
    found = check.problems(p, tmp_path)
    assert any(f.startswith("runtime.device = 'cuda:99'") for f in found), found


# ---------------------------------------------------------------- 7: no param reaches a shell


def test_no_param_is_interpolated_into_a_stage_command():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for var in re.findall(r"\$\{([^}]*)\}", stage["cmd"]):
            assert var.startswith("paths."), f"{name}: ${{{var}}} would put a param's text into a shell command"


def test_an_injection_string_in_processes_is_a_param_error(tmp_path):
    with pytest.raises(ParamError, match="runtime.processes"):
        recipes.load(overrides={"runtime": {"processes": "1 --help >/dev/null; touch PWN; echo"}})
    assert not (tmp_path / "PWN").exists()


# ---------------------------------------------------------------- 8: folder sources


def test_a_folder_source_skips_links_out_of_it_and_lists_them(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("a key")
    folder = tmp_path / "photos"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.jpg").write_bytes(jpeg())
    (folder / "cat" / "2.jpg").symlink_to(folder / "cat" / "1.jpg")  # inside: kept
    (folder / "passwd.jpg").symlink_to(secret)  # outside: skipped
    archive = download.download(str(folder), tmp_path / "raw", tmp_path / "downloads")
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["cat/1.jpg", "cat/2.jpg"]
        assert b"a key" not in b"".join(z.read(n) for n in z.namelist())
    assert f"skipped 1 symbolic link(s) leading out of it in {folder}: passwd.jpg → {secret}" in capsys.readouterr().err


def test_a_folder_without_photos_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / "venv"
    (folder / "lib").mkdir(parents=True)
    for i in range(50):
        (folder / "lib" / f"module{i}.py").write_text("x = 1\n")
    with pytest.raises(StageError, match=r"holds no photo"):
        download.download(str(folder), tmp_path / "raw", tmp_path / "downloads")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["venv"]  # no raw/, no temporary file


STOPPED_DOWNLOAD = """
import signal, sys, time, zipfile
# Ctrl-C as on a terminal, even if pytest was started with SIGINT ignored (`&`)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from pipeline import download
real = zipfile.ZipFile.writestr
def slow(self, *args, **kwargs):
    print("zipping", flush=True)
    time.sleep(0.2)
    return real(self, *args, **kwargs)
zipfile.ZipFile.writestr = slow
download.download(sys.argv[1], Path(sys.argv[2]), Path("dl"))
"""


@pytest.mark.slow  # a fresh interpreter
def test_the_download_stage_stopped_midway_leaves_no_output(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(20):
        (folder / f"cat.{i}.jpg").write_bytes(jpeg())
    stage = subprocess.Popen(
        [sys.executable, "-c", STOPPED_DOWNLOAD, str(folder), str(tmp_path / "raw")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert stage.stdout.readline().strip() == "zipping"  # the archive is half written when Ctrl-C comes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw.")]  # inside its temporary folder
    stage.send_signal(signal.SIGINT)
    stage.wait(timeout=60)
    assert stage.returncode != 0 and "KeyboardInterrupt" in stage.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no raw/, and no temporary file or folder left
