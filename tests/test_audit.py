"""The label audit: label flips planted in a set of photos (a photo of one class stored under the
other's name) come out at the top of its ranking; its page opens offline; its verdict template is
a verdict file the split reads."""

from __future__ import annotations

import csv
import importlib.util
import io
import random
import zipfile
from pathlib import Path

import pytest
import torch

from pipeline.audit import audit
from pipeline.common.errors import StageError
from pipeline.data import synthetic, verdicts
from pipeline.runtime.device import Compute
from tests.helpers import CHROMIUM, Dom, chromium_dom, console_errors
from tests.paths import SHARED_DATA

# found, not imported: importing cleanlab costs each test worker 1.3 s of collection, for these tests only
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("cleanlab") is None, reason="cleanlab is absent: pip install -e '.[audit]'"
)
SAMPLE = SHARED_DATA / "dogs-vs-cats-sample" / "train.zip"
CPU = Compute(torch.device("cpu"))


def planted(source: Path, out: Path, flips: int, seed: int = 0) -> set[str]:
    """A copy of a Kaggle-layout archive in which `flips` photos, drawn at random, are stored under
    the other class's name (train/cat.7.jpg becomes train/dog.100007.jpg); returns their new names."""
    moved = set()
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(out, "w") as w:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        chosen = set(random.Random(seed).sample(names, flips))
        for name in names:
            folder, base = name.rsplit("/", 1)
            cls, index, ext = base.split(".")
            new = f"{folder}/{'dog' if cls == 'cat' else 'cat'}.{100000 + int(index)}.{ext}" if name in chosen else name
            w.writestr(new, z.read(name))
            if name in chosen:
                moved.add(new)
    return moved


def issues(out: Path) -> list[str]:
    with open(out / "suspects.csv", newline="") as f:
        return [r["member"] for r in csv.DictReader(f) if r["kind"] == "label issue"]


@pytest.fixture(scope="module")
def synthetic_audit(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(
            synthetic, "SWAPPED_COLOUR", 0.0
        )  # no photo coloured like the other class: the given labels are all right
        synthetic.make_archive(root / "clean.zip", per_class=60, size=96)
    flipped = planted(root / "clean.zip", root / "planted.zip", 8)  # then 8 of the 120 are not
    summary = audit(root / "planted.zip", root / "out", compute=CPU, image_size=128, folds=4, top=20, workers=1)
    return root / "out", flipped, summary


@pytest.mark.slow  # a whole audit: features, five folds, cleanlab
def test_planted_flips_in_synthetic_photos_top_the_ranking(synthetic_audit):
    out, flipped, summary = synthetic_audit
    found = issues(out)
    assert summary["photos"] == 120 and summary["classes"] == ["cat", "dog"]
    # measured: 7 of the 8 in the first 8 suspects, all 8 in the first 9 (cross-validated accuracy 0.925: the 8 flips
    # and one more photo wrong)
    assert len(flipped & set(found[:8])) >= 6  # recall ≥ 6/8 at precision ≥ 6/8 in the first eight
    assert len(flipped & set(found[:10])) >= 7  # recall ≥ 7/8 at precision ≥ 7/10 in the first ten


@pytest.mark.slow  # the same audit
def test_the_verdict_template_is_a_verdict_file_that_changes_nothing_until_edited(synthetic_audit):
    out, flipped, _ = synthetic_audit
    template = verdicts.read(out / "verdicts-todo.yaml")
    assert set(issues(out)) <= set(template) and all(v == verdicts.Verdict("keep") for v in template.values())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH")
@pytest.mark.slow
def test_the_review_page_opens_offline_with_a_thumbnail_per_suspect(synthetic_audit, tmp_path):
    out, _, summary = synthetic_audit
    markup, log = chromium_dom(out / "index.html", tmp_path / "profile")
    dom = Dom(markup)
    with open(out / "suspects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    imgs = dom.all("img")
    assert [i["alt"] for i in imgs] == [r["member"] for r in rows] and all(
        i["src"].startswith("data:image/jpeg;base64,") for i in imgs
    )
    assert [a["id"] for a in dom.all("h2")] == ["label-issues", "outliers"]
    external = [
        (t, a)
        for t, a in dom.tags
        for k, v in a.items()
        if k in ("src", "href", "srcset") and not v.startswith(("data:", "#"))
    ]
    assert external == [] and dom.all("script") == [] and console_errors(log) == []


@pytest.mark.parametrize(
    "kwargs, said",
    [({"top": 0}, "--top 0"), ({"folds": 1}, "--folds 1"), ({"model_name": "resnet18"}, "needs a pretrained network")],
)
def test_bad_arguments_are_one_line_before_any_work(tmp_path, kwargs, said):
    with pytest.raises(StageError, match=said):
        audit(tmp_path / "none.zip", tmp_path / "out", compute=CPU, **kwargs)


def test_a_class_smaller_than_the_folds_is_refused_naming_the_fix(tmp_path):
    with zipfile.ZipFile(tmp_path / "few.zip", "w") as w:
        synthetic.make_archive(tmp_path / "src.zip", per_class=6, size=32)
        with zipfile.ZipFile(tmp_path / "src.zip") as z:
            for name in z.namelist():
                if not name.startswith("train/dog.") or name.endswith((".0.jpg", ".1.jpg", ".2.jpg")):
                    w.writestr(name, z.read(name))
    with pytest.raises(StageError, match="the smallest class has 3 photos"):
        audit(tmp_path / "few.zip", tmp_path / "out", compute=CPU, image_size=32, folds=5, workers=1)


@pytest.mark.skipif(not SAMPLE.is_file(), reason="the 1,000-photo sample is not at ../shared/data")
@pytest.mark.slow
def test_planted_flips_in_real_photos_top_the_ranking(tmp_path):
    flipped = planted(SAMPLE, tmp_path / "planted.zip", 20)
    audit(tmp_path / "planted.zip", tmp_path / "out", compute=CPU, top=40, workers=2)
    found = issues(tmp_path / "out")
    # measured on a Zen 4: 18 of the 20 among 18 label issues; asserted: recall ≥ 16/20 at precision ≥ 16/20 in the
    # first 20
    assert len(flipped & set(found[:20])) >= 16


def test_thumbnails_show_the_whole_photo_small(tmp_path):
    from PIL import Image

    from pipeline.audit import THUMB, thumbnail
    from pipeline.data.images import Archive

    buffer = io.BytesIO()
    Image.new("RGB", (400, 200), (200, 10, 10)).save(buffer, format="JPEG")
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as w:
        w.writestr("train/cat.1.jpg", buffer.getvalue())
    with Archive(tmp_path / "a.zip") as a:
        small = Image.open(io.BytesIO(thumbnail(a, "train/cat.1.jpg")))
    assert small.size == (THUMB, THUMB // 2)  # the whole frame, not the training crop
