"""What a user types: every command's --help names it as it is run, and preprocess reports in words."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from pipeline.preprocess import counts_sentence
from tests.helpers import REPO

STAGES = [re.search(r"-m (pipeline\.\w+)", s["cmd"]).group(1) for s in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()]


@pytest.mark.slow
@pytest.mark.parametrize("module", STAGES + ["pipeline.preset", "benchmarks.bench"])
def test_help_names_the_command_a_user_types(module):
    shown = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: python -m {module} ")
    assert ".py" not in shown.stdout.splitlines()[0]


def test_preprocess_counts_read_as_a_sentence():
    assert counts_sentence({"train": 3600, "val": 900, "test": 4500}) == "3,600 train, 900 val and 4,500 test images"
