"""When a stage is stopped: a file appears complete or not at all, whether the stage is stopped by
Ctrl-C or killed. (A diverging loss, CUDA out of memory and an interrupted training run: test_fit.)"""

import os
import signal
import subprocess
import sys

import pytest

from pipeline.common.atomic import atomic_path
from tests.helpers import REPO


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


KILLED_PREPROCESS = """
import signal, sys, time
# Ctrl-C as on a terminal, even if pytest was started with SIGINT ignored (`&`)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
import pipeline.preprocess as pre
from tests.archives import tricky_members, write_zip
from pipeline.split import split
from pipeline.params.sections import DataParams
root = Path(sys.argv[1])
archive = write_zip(root / "a.zip", tricky_members("kaggle"))
split(archive, root / "split", DataParams("x", 40, "crop", None, 0.2, 0.2, 0), workers=1)
real = pre.load
def slow(*args):
    print("decoding", flush=True)
    time.sleep(0.2)
    return real(*args)
pre.load = slow
pre.preprocess(archive, root / "split", root / "processed", image_size=40, resize="crop", channels=3, workers=1)
"""


@pytest.mark.slow  # a fresh interpreter
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_stage_stopped_midway_leaves_no_output_that_looks_finished(tmp_path, how):
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_PREPROCESS, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    # the second photo's decoding has begun (0.2 s each): the first is in the half-written array
    assert [process.stdout.readline().strip() for _ in range(2)] == ["decoding", "decoding"]
    process.send_signal(how)
    process.wait(timeout=30)
    left = sorted(p.name for p in (tmp_path / "processed").iterdir())
    assert not [name for name in left if name.endswith(".npy")]  # no array that looks complete
    if how == signal.SIGINT:
        assert left == []  # Ctrl-C: the temporary file is removed too
    else:
        assert all(name.startswith(".") and name.endswith(".tmp") for name in left)  # a kill: only a hidden temp
