"""The package's import graph: every module imports alone, and no two modules import each other,
directly or around a loop, not even through an import hidden inside a function."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.importgraph import ROOT, find_cycle, graph, imported, loaded, modules


def test_the_cycle_finder_finds_a_known_loop_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from pipeline.schema import coerce\n    from pipeline import errors\n")
    assert imported(fake, modules()) == {"pipeline.schema", "pipeline.errors"}


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " → ".join(cycle)


def test_the_leaves_import_nothing_of_the_project_but_errors():
    edges = graph()
    assert edges["pipeline.errors"] == set()
    assert edges["pipeline.schema"] == {"pipeline.errors"}
    # the registry asks nothing of params: params asks the registry
    assert edges["pipeline.models.registry"] <= {"pipeline.errors", "pipeline.schema"}


def test_the_data_stages_load_no_model_and_no_torch_module_of_ours():
    edges = graph()
    for stage in ("pipeline.download", "pipeline.split", "pipeline.preprocess"):
        assert not {m for m in loaded(stage, edges) if m.startswith("pipeline.models")}, stage
        assert "pipeline.params" not in loaded(stage, edges), stage


# One interpreter loads the third-party libraries once, then forks a child per project module that
# imports that module first of all the project's: what matters to an import-order bug is which
# project module comes first, not torch's start-up, paid once instead of once per module.
IMPORT_EACH_ALONE = """
import os, sys, traceback
import matplotlib, numpy, PIL.Image, sklearn.metrics, torch, torchvision, tqdm, yaml, dvclive
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
print(" ".join(failed))
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_ALONE, *sorted(modules())], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], result.stderr[-4000:]
