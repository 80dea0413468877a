"""`dvc plots show` and `dvc plots diff` as a user without a network sees them: the real dvc CLI
writes each page from the project's dvc.yaml, its chart templates and its page template
(.dvc/plots.html, the chart libraries inlined), and a headless Chromium with no network draws it;
every chart must come out as an SVG holding the models' (or the revisions') names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.common import atomic
from pipeline.common.formats import csv_text
from tests.helpers import REPO, copy_project, dvc, fake_run, run

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)"),
    pytest.mark.slow,
]
MODELS = ["alexnet", "resnet18"]


def drawn(page: Path, profile: Path) -> str:
    """The DOM after `page`'s scripts ran, in a Chromium that reaches no network."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run([CHROMIUM, *flags], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def charts(dom: str) -> dict[str, str]:
    """{chart id: its markup}: each Vega chart DVC wrote is a `<div id = "...">` of its own."""
    starts = [(m.group(1), m.start()) for m in re.finditer(r'<div id="([^"]+)"', dom)]
    return {
        name: dom[start : (starts[i + 1][1] if i + 1 < len(starts) else len(dom))]
        for i, (name, start) in enumerate(starts)
    }


def write_confusion(root: Path) -> None:
    rows = [(m, a, p, 1 + i) for i, m in enumerate(MODELS) for a in ("cat", "dog") for p in ("cat", "dog")]
    atomic.write_text(root / "plots" / "confusion.csv", csv_text(["model", "actual", "predicted", "count"], rows))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("plots"))
    run(root, "git", "init", "-q", "-b", "main")
    fake_run(root, MODELS)
    write_confusion(root)
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "baseline")
    return root


def vega_charts() -> int:
    import yaml

    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    return sum(
        1
        for plot in plots
        if isinstance(plot, dict)
        for spec in plot.values()
        if isinstance(spec, dict) and "template" in spec
    )


def test_the_template_carries_the_libraries_and_dvc_uses_it():
    page = (REPO / ".dvc" / "plots.html").read_text()
    assert "{plot_divs}" in page and "cdn" not in page.lower().replace("cdnjs", "")
    assert all(name in page for name in ("vega-5.33.1", "vega-lite-5.23.0", "vega-embed-6.29.0"))
    assert "html_template = plots.html" in (REPO / ".dvc" / "config").read_text()
    assert {p.name for p in (REPO / "vendor" / "vega").glob("LICENSE-*")} == {
        "LICENSE-vega",
        "LICENSE-vega-lite",
        "LICENSE-vega-embed",
    }


def written(page: Path) -> list[str]:
    """The ids of the Vega charts DVC put on the page (before any script ran)."""
    return re.findall(r'<div id = "([^"]+)">\s*<script', page.read_text())


def test_dvc_plots_show_draws_every_chart_offline(project, tmp_path):
    dvc(project, "plots", "show", "-o", str(tmp_path / "show"))
    expected = written(tmp_path / "show" / "index.html")
    shown = charts(drawn(tmp_path / "show" / "index.html", tmp_path / "profile"))
    assert len(expected) == vega_charts()
    for name in expected:
        assert "<svg" in shown[name], name  # drawn, not blank
        if "Confusion" not in name:
            assert all(model in shown[name] for model in MODELS), name  # the legend (or facet) names each model


def test_dvc_plots_diff_draws_both_revisions_offline(project, tmp_path):
    fake_run(project, MODELS, epochs=5)  # the workspace: a longer run than the commit's
    dvc(project, "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    expected = written(tmp_path / "diff" / "index.html")
    shown = charts(drawn(tmp_path / "diff" / "index.html", tmp_path / "profile"))
    assert len(expected) >= vega_charts()  # a confusion matrix per revision
    assert all("<svg" in shown[name] for name in expected), [name for name in expected if "<svg" not in shown[name]]
    per_epoch = shown["Validation_accuracy_per_epoch"]
    assert "workspace" in per_epoch and "HEAD" in per_epoch and all(model in per_epoch for model in MODELS)
