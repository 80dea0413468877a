"""`python -m pipeline.predict`: photos, folders and zips in, one CSV row each out, the Kaggle
submission format, bad files reported without stopping, and a model file that cannot run code."""

from __future__ import annotations

import csv
import io
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import models, predict
from pipeline.common.errors import StageError
from pipeline.data import images
from pipeline.evaluate import evaluate_model
from pipeline.models import modelfile
from pipeline.params.sections import EvaluateParams, load_evaluate
from pipeline.runtime.device import Compute
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split

CPU = Compute(torch.device("cpu"))  # fp32, channels-last: what evaluate computes by default

SIZE = 32


def jpeg(seed: int, size=(48, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A ResNet-18 model file as the train stage writes it (random weights: only the plumbing is tested)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "resnet18.pt"
    meta = {
        "image_size": SIZE,
        "resize": "crop",
        "channels": 3,
        "classes": ["cat", "dog"],
        "device": "cpu",
        "epochs": 1,
    }
    modelfile.save(path, models.build("resnet18"), name="resnet18", options={}, meta=meta)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of three photos and three bad files, and a Kaggle-layout test1.zip."""
    root = tmp_path_factory.mktemp("inputs")
    folder = root / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(1))
    (folder / "b.jpg").write_bytes(jpeg(2, (30, 60)))
    (folder / "c.png").write_bytes(jpeg(3))  # a JPEG named .png: read by its content
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.jpg").write_bytes(jpeg(4)[:300])
    (folder / "notes.txt").write_text("not a photo")
    with zipfile.ZipFile(root / "test1.zip", "w") as z:
        for i in range(1, 13):
            z.writestr(f"test1/{i}.jpg", jpeg(10 + i))
        z.writestr("test1/13.jpg", b"\xff\xd8 broken")
    return root


def run_predict(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.predict", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_photos_come_in_the_inputs_order_named_as_given(inputs):
    found = predict.photos([inputs / "photos" / "b.jpg", inputs / "test1.zip", inputs / "photos"])
    names = [p.name for p in found]
    assert names[0] == f"{inputs}/photos/b.jpg"
    assert names[1:4] == [
        f"{inputs}/test1.zip:test1/1.jpg",
        f"{inputs}/test1.zip:test1/10.jpg",
        f"{inputs}/test1.zip:test1/11.jpg",
    ]
    assert names[-6:] == [
        f"{inputs}/photos/{n}" for n in ("a.jpg", "b.jpg", "c.png", "cut.jpg", "empty.jpg", "notes.txt")
    ]


def test_probabilities_are_the_evaluate_paths_and_tta_averages_the_mirror_image(model_file, inputs):
    model, meta = modelfile.load(model_file)
    found = predict.photos([inputs / "photos"])
    got = predict.predict(model, meta, found, compute=CPU, batch_size=2)
    arrays = np.stack([images.load(p.read(), SIZE, "crop") for p in found[:3]])  # what preprocess stores for evaluate
    split = Split(images=torch.from_numpy(arrays), labels=torch.zeros(3, dtype=torch.long), device=torch.device("cpu"))
    expected = probabilities(model, split, 64).numpy()
    assert np.allclose(np.stack([p.proba for p in got[:3]]), expected, atol=1e-6)
    assert [p.error for p in got[3:]] == ["truncated or corrupt", "empty file", "not an image"]
    assert all(p.proba is None and p.label == "" for p in got[3:])
    mirrored = Split(images=split.images.flip(-1), labels=split.labels, device=split.device)
    tta = predict.predict(model, meta, found[:3], compute=CPU, tta=True)
    assert np.allclose(
        np.stack([p.proba for p in tta]), (expected + probabilities(model, mirrored, 64).numpy()) / 2, atol=1e-6
    )


def test_flip_tta_of_a_mirror_symmetric_photo_equals_no_tta(model_file):
    model, _ = modelfile.load(model_file)
    half = torch.randint(0, 256, (4, 3, SIZE, SIZE // 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)  # each photo its own mirror image
    split = Split(images=symmetric, labels=torch.zeros(4, dtype=torch.long), device=torch.device("cpu"))
    torch.testing.assert_close(
        probabilities(model, split, 64, tta=True), probabilities(model, split, 64), rtol=0, atol=1e-6
    )
    other = Split(
        images=torch.cat([half, half], dim=-1), labels=split.labels, device=split.device
    )  # not symmetric: TTA changes something
    assert not torch.allclose(probabilities(model, other, 64, tta=True), probabilities(model, other, 64))


def test_evaluate_with_tta_averages_each_test_photo_with_its_mirror_image(model_file):
    model, meta = modelfile.load(model_file)
    meta |= {
        "val": {},
        "epochs": 1,
        "kept_epoch": 1,
        "seconds": 1.0,
        "images_per_second": 1.0,
        "parameters": 1,
        "trainable_parameters": 1,
    }
    photos = torch.randint(0, 256, (6, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    test = Split(images=photos, labels=torch.tensor([0, 1, 0, 1, 0, 1]), device=torch.device("cpu"))
    result, _, proba = evaluate_model(model, meta, test, 4, how=EvaluateParams(tta=True))
    mirrored = Split(images=photos.flip(-1), labels=test.labels, device=test.device)
    expected = (probabilities(model, test, 64) + probabilities(model, mirrored, 64)) / 2
    assert np.allclose(proba, expected.numpy(), atol=1e-6) and result["evaluation"]["tta"] is True


def test_predict_and_classifier_predict_as_evaluate_did_unless_told(model_file, inputs, tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("evaluate:\n  tta: true\n")
    monkeypatch.chdir(tmp_path)
    assert load_evaluate().tta is True
    from pipeline import Classifier

    clf = Classifier.load(model_file, device="cpu", precision="fp32")
    photo = inputs / "photos" / "a.jpg"
    model, meta = modelfile.load(model_file)
    with_tta, without = (
        predict.predict(model, meta, predict.photos([photo]), compute=CPU, tta=t)[0].proba for t in (True, False)
    )
    assert not np.allclose(with_tta, without)
    assert np.allclose(
        list(clf.predict(photo).probabilities.values()), with_tta, atol=1e-6
    )  # params.yaml's evaluate.tta
    assert np.allclose(list(clf.predict(photo, tta=False).probabilities.values()), without, atol=1e-6)
    (tmp_path / "params.yaml").unlink()
    assert load_evaluate().tta is False  # no params.yaml: the default


@pytest.mark.slow  # a fresh interpreter
def test_the_cli_writes_one_csv_row_per_input_and_reports_bad_files_without_stopping(model_file, inputs):
    done = run_predict("--model", str(model_file), str(inputs / "photos"))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["file", "label", "p_cat", "p_dog", "error"]
    assert [Path(r["file"]).name for r in rows] == ["a.jpg", "b.jpg", "c.png", "cut.jpg", "empty.jpg", "notes.txt"]
    for r in rows[:3]:
        assert r["label"] in ("cat", "dog") and r["error"] == ""
        assert abs(float(r["p_cat"]) + float(r["p_dog"]) - 1) <= 1e-4 and len(r["p_dog"].split(".")[1]) == 4
        assert r["label"] == ("dog" if float(r["p_dog"]) > float(r["p_cat"]) else "cat")
    assert [(r["label"], r["p_dog"], r["error"]) for r in rows[3:]] == [
        ("", "", "truncated or corrupt"),
        ("", "", "empty file"),
        ("", "", "not an image"),
    ]
    summary = done.stderr.strip().splitlines()[-1]
    assert (
        summary.startswith("predict: 6 photos with resnet18: ")
        and ", 3 unreadable; " in summary
        and "img/s on cpu" in summary
    )


@pytest.mark.slow  # a fresh interpreter
def test_a_kaggle_submission_is_id_label_sorted_by_id_with_clipped_probabilities(model_file, inputs, tmp_path):
    out = tmp_path / "submission.csv"
    done = run_predict("--model", str(model_file), "--kaggle", str(inputs / "test1.zip"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = out.read_text().splitlines()
    assert lines[0] == "id,label"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(i) for i, _ in rows] == list(range(1, 14))  # 2 before 10: by number, not by name
    assert all(0.005 <= float(p) <= 0.995 for _, p in rows)
    assert rows[12] == ["13", "0.5000"]  # unreadable: every id keeps its row, with no information


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such model file"),
        ("old format", "was written by another version of this code (model format unknown, this one reads 3 and 4)"),
        ("not a model", "is not a model file this code can read"),
        ("code in the pickle", "is not a model file this code can read"),
    ],
)
def test_a_model_file_that_cannot_be_used_is_refused_by_name(model_file, tmp_path, case, message):
    model = tmp_path / "model.pt"
    if case == "old format":
        state = torch.load(model_file, weights_only=True)
        del state["format"]
        torch.save(state, model)
    elif case == "not a model":
        model.write_bytes(b"PK\x03\x04 truncated")
    elif case == "code in the pickle":
        model.write_bytes(pickle.dumps(Trap(tmp_path / "PWNED")))
    with pytest.raises(StageError, match=re.escape(message)) as e:
        modelfile.load(model)
    assert str(model) in str(e.value)
    assert not (tmp_path / "PWNED").exists()  # loading never ran the pickle's command


@pytest.mark.parametrize("case", ["no photos", "no such input", "not a zip"])
def test_inputs_without_photos_are_refused(tmp_path, case):
    path = tmp_path / {"no photos": "empty", "no such input": "nowhere.jpg", "not a zip": "fake.zip"}[case]
    if case == "no photos":
        path.mkdir()
    elif case == "not a zip":
        path.write_text("not a zip")
    message = {
        "no photos": "no photos in",
        "no such input": "no such file or folder",
        "not a zip": "is not a readable zip file",
    }[case]
    with pytest.raises(StageError, match=message):
        predict.photos([path])


@pytest.mark.slow  # a fresh interpreter
def test_from_the_command_line_a_refusal_is_one_error_line_and_status_2(inputs, tmp_path):
    (tmp_path / "model.pt").write_bytes(pickle.dumps(Trap(tmp_path / "PWNED")))
    done = run_predict("--model", str(tmp_path / "model.pt"), str(inputs / "photos"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "is not a model file this code can read" in done.stderr
    assert not (tmp_path / "PWNED").exists()


class Trap:
    """A pickle that runs a command when loaded: torch.load(weights_only=True) must refuse it."""

    def __init__(self, witness: Path):
        self.witness = witness

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.witness)],))


@pytest.mark.slow  # a fresh interpreter
def test_without_a_model_name_the_leaderboards_best_is_used(model_file, inputs, tmp_path):
    (tmp_path / "dvc.yaml").write_text("vars:\n  - paths:\n      models: trained\n      metrics: scores.json\n")
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "resnet18.pt").write_bytes(model_file.read_bytes())
    (tmp_path / "scores.json").write_text('{"acc": {"resnet18": 0.9}, "best": "resnet18"}')
    done = run_predict(str(inputs / "photos" / "a.jpg"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "with resnet18" in done.stderr
    done = run_predict("--model", "vgg11", str(inputs / "photos" / "a.jpg"), cwd=tmp_path)
    assert done.returncode == 2 and "no trained model 'vgg11' in trained/ (trained: resnet18)" in done.stderr


def test_explain_writes_a_grad_cam_overlay_per_readable_photo(model_file, inputs, tmp_path):
    model, meta = modelfile.load(model_file)
    found = predict.photos([inputs / "photos"])
    predictions = predict.predict(model, meta, found, compute=CPU, explain=tmp_path / "why")
    written = sorted(p.name for p in (tmp_path / "why").iterdir())
    names = predict.explanation_names(found)
    assert written == sorted(names[p.name] for p in found[:3])  # not the 3 bad files
    assert [p.explanation for p in predictions] == [names[p.name] for p in found[:3]] + ["", "", ""]
    assert all(name.endswith(".png") and "/" not in name and ":" not in name for name in written)
    with Image.open(tmp_path / "why" / written[0]) as overlay:
        assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"


@pytest.mark.slow  # a fresh interpreter
def test_from_python_in_two_lines_the_same_probabilities_as_the_command(model_file, inputs, tmp_path):
    import csv

    from pipeline import Classifier

    clf = Classifier.load(model_file, device="cpu", precision="fp32")
    one = clf.predict(inputs / "photos" / "a.jpg")
    assert one.label in ("cat", "dog") and set(one.probabilities) == {"cat", "dog"}
    assert abs(sum(one.probabilities.values()) - 1) < 1e-5
    done = run_predict("--model", str(model_file), "--precision", "fp32", "--device", "cpu", str(inputs / "photos"))
    rows = {r["file"].rpartition("/")[2]: r for r in csv.DictReader(io.StringIO(done.stdout))}
    assert one.label == rows["a.jpg"]["label"] and f"{one.probabilities['dog']:.4f}" == rows["a.jpg"]["p_dog"]
    many = clf.predict(inputs / "photos")  # a folder: one Prediction per file, errors as predict gives them
    assert [(p.source.rpartition("/")[2], p.label, p.error) for p in many] == [
        (n, rows[n]["label"], rows[n]["error"]) for n in rows
    ]
    pixels = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")  # lossless: the array and the file are the same photo
    from_array, from_file = clf.predict(pixels), clf.predict(tmp_path / "x.png")
    assert from_array.label == from_file.label
    assert all(abs(from_array.probabilities[c] - from_file.probabilities[c]) < 1e-6 for c in ("cat", "dog"))
    assert clf.predict(Image.fromarray(pixels)).probabilities == from_array.probabilities
    with pytest.raises(StageError, match="uint8"):
        clf.predict(pixels.astype(np.float32))
