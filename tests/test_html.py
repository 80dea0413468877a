"""reports/index.html as a browser sees it: a real headless Chromium loads the page built from small
fabricated inputs, with no network, and the DOM it dumps is checked, with its console log."""

from __future__ import annotations

import base64

import pytest

from pipeline.report import report
from tests.helpers import CHROMIUM, Dom, chromium_dom, console_errors, fake_run, result, results_of

MODELS = ["alexnet", "torchvision:resnet34"]  # a colon, as torchvision names have, in ids and file names
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)"),
    pytest.mark.slow,  # a real browser, started for each page
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> tuple[Dom, str]:
    root = tmp_path_factory.mktemp("report")
    live, plots = fake_run(root, MODELS)
    results = [result("alexnet", 0.61, 0.66, (0.51, 0.70)), result("torchvision:resnet34", 0.93, 0.2, (0.9, 0.95))]
    report(results, root / "reports", live=live, plots=plots)
    markup, log = chromium_dom(root / "reports" / "index.html", root / "profile")
    return Dom(markup), log


def test_the_page_shows_the_leaderboard_and_a_section_per_model(loaded):
    dom, _ = loaded
    text = " ".join(dom.text)
    assert all(name in text for name in MODELS)
    assert [a.get("id") for a in dom.all("table")] == ["leaderboard", "pairwise"]
    assert len(dom.all("tr")) == 2 * (1 + len(MODELS))  # each table: a header, then one row per model
    assert (
        "better: +0.320 (+0.229 to +0.411), p 4.7e-10" in text
    )  # 93 right against 61 on the same photos: 32 discordant, all one way, p = 2 × 2⁻³²
    assert [a["id"] for a in dom.all("section")] == ["torchvision:resnet34", "alexnet"]  # leaderboard order
    assert [a["href"] for a in dom.all("a")] == ["#torchvision:resnet34", "#alexnet"]


def test_every_image_is_embedded_so_the_page_works_offline(loaded):
    dom, _ = loaded
    imgs = dom.all("img")
    assert len(imgs) == 3 + 4 * len(
        MODELS
    )  # accuracy against time, validation accuracy, ROC; per model curves, confusion, most wrong, Grad-CAM
    assert [img["alt"] for img in imgs[:3]] == [
        "test accuracy against training time",
        "validation accuracy per epoch, every model",
        "ROC curves of every model on the test split",
    ]
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        assert img.get("alt")
    external = [
        (t, a)
        for t, a in dom.tags
        for k, v in a.items()
        if k in ("src", "href", "srcset") and not v.startswith(("data:", "#"))
    ]
    assert external == []
    assert dom.all("script") == [] and dom.all("link") == []


def test_the_page_logs_no_console_or_script_error(loaded):
    _, log = loaded
    assert console_errors(log) == []


def test_the_console_check_catches_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>notDefined();</script></body></html>")
    _, log = chromium_dom(page, tmp_path / "profile")
    assert any("Uncaught ReferenceError" in line for line in console_errors(log))


def test_the_grid_page_shows_its_picture_tables_and_verdicts_offline(tmp_path):
    from pipeline import grid

    cells = {f"g-{r}-{n}-s0": grid.Cell(r, n, 0) for r in ("scratch", "probe") for n in ("40", "all")}
    right = {
        "g-scratch-40-s0": [True] * 5 + [False] * 15,
        "g-probe-40-s0": [True] * 18 + [False] * 2,
        "g-scratch-all-s0": [True] * 19 + [False],
        "g-probe-all-s0": [True] * 20,
    }
    photos = {n: 40 if "-40-" in n else 7200 for n in cells}
    grid.write(grid.summarise(cells, {n: results_of(r) for n, r in right.items()}, photos), tmp_path / "grid")
    markup, log = chromium_dom(tmp_path / "grid" / "grid.html", tmp_path / "profile")
    dom, text = Dom(markup), " ".join(Dom(markup).text)
    assert [a.get("id") for a in dom.all("table")] == ["cells", "pairs"] and len(dom.all("tr")) == (1 + 4) + (1 + 2)
    assert "scratch needs 7,200 photos to reach probe's accuracy with 40 (180 times as many; mean over seeds)" in text
    (img,) = dom.all("img")
    assert base64.b64decode(img["src"].split(",", 1)[1]) == (tmp_path / "grid" / "grid.png").read_bytes()
    assert dom.all("script") == [] and dom.all("link") == [] and console_errors(log) == []
