"""The package's import graph: every module imports alone, no two modules import each other,
directly or around a loop, not even through an import hidden inside a function, and the shared
packages form layers under the stages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.deps import ROOT, find_cycle, graph, imported, loaded, modules


def test_the_cycle_finder_finds_a_known_loop_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from pipeline.common.schema import coerce\n    from pipeline.common import errors\n")
    assert imported(fake, modules()) == {"pipeline.common.schema", "pipeline.common.errors"}


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " → ".join(cycle)


def test_the_leaves_import_nothing_of_the_project_but_errors():
    edges = graph()
    assert edges["pipeline.common.errors"] == set()
    assert edges["pipeline.common.files"] == {"pipeline.common.errors"}  # what may be read and written: a leaf too
    assert edges["pipeline.common.schema"] == {"pipeline.common.errors", "pipeline.common.files"}
    # the registry asks nothing of params: params asks the registry; what a network's inputs are is a leaf of its own
    assert edges["pipeline.models.inputs"] == set()
    assert edges["pipeline.models.registry"] <= {
        "pipeline.common.errors",
        "pipeline.common.schema",
        "pipeline.models.inputs",
    }


# The shared packages in layers, lowest first: each imports only from its own layer's package and
# the layers below; the stages and commands (pipeline/<name>.py) use any of them, and none another.
LAYERS = (("common",), ("data", "models"), ("params",), ("runtime",), ("training", "evaluation"))
TOP = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package(module: str) -> str | None:
    """The shared package a module belongs to, or None for a stage or command (and the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TOP else None


def test_the_shared_packages_are_layers_and_no_stage_imports_another():
    edges, found = graph(), []
    for module, imports in edges.items():
        own = package(module)
        for target in imports:
            other = package(target)
            if own is not None and other is None:
                found.append(f"{module} (shared) imports {target} (a stage or command)")
            elif own is not None and other != own and TOP[other] >= TOP[own]:
                found.append(f"{module} ({own}, layer {TOP[own]}) imports {target} ({other}, layer {TOP[other]})")
            elif own is None and other is None and target != "pipeline" and module != "pipeline":
                found.append(f"{module} imports {target}: one stage or command imports another")
    assert found == []
    assert set(TOP) == {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}  # every package has its layer


def test_the_data_stages_load_no_model_and_no_torch_module_of_ours():
    edges = graph()
    for stage in ("pipeline.download", "pipeline.split", "pipeline.preprocess"):
        ours = loaded(stage, edges)
        assert not {m for m in ours if package(m) in ("models", "runtime", "training", "evaluation")}, stage
        assert "pipeline.params.recipes" not in ours, stage


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
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, *sorted(modules())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], result.stderr[-4000:]
