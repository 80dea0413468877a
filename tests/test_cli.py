"""What a user types: every command's --help names it as it is run, and preprocess reports in words."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from pipeline.preprocess import counts_sentence
from tests.helpers import REPO

STAGES = [
    re.search(r"-m (pipeline\.\w+)", s["cmd"]).group(1)
    for s in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
]


COMMANDS = [*STAGES, "pipeline.preset", "pipeline.predict", "benchmarks.bench"]

# Every command's --help in one interpreter (runpy runs each module as `python -m` would): one
# start-up of torch instead of one per command.
HELP_ALL = """
import contextlib, io, runpy, sys
modules = sys.argv[1:]
for module in modules:
    out = io.StringIO()
    sys.argv = [module, "--help"]
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    print("=== " + module)
    print(out.getvalue(), end="")
"""


@pytest.mark.slow
def test_help_names_the_command_a_user_types():
    shown = subprocess.run(
        [sys.executable, "-c", HELP_ALL, *COMMANDS], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    helps = dict(part.split("\n", 1) for part in shown.stdout.split("=== ")[1:])
    assert list(helps) == COMMANDS
    for module, text in helps.items():
        assert text.startswith(f"usage: python -m {module} "), (module, text[:200])
        assert ".py" not in text.splitlines()[0]


def test_preprocess_counts_read_as_a_sentence():
    assert counts_sentence({"train": 3600, "val": 900, "test": 4500}) == "3,600 train, 900 val and 4,500 test images"
