"""Beyond cats and dogs: classes found in the layout, N-class splits, metrics and models, grey input.

Every expected figure is worked out by hand in the comments (pair counts for ROC AUC, known
parameter counts) or comes from an independent source (torchvision's published parameter count,
Pillow's luma), never from the code under test.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm
from torchvision import models as tv

from pipeline import check, models
from pipeline.common.errors import ParamError, StageError
from pipeline.common.formats import read_json
from pipeline.data import fashion_mnist
from pipeline.data.images import DOGS_VS_CATS, Archive, labelling, load
from pipeline.data.layout import SPLITS, images_file, index_file, read_index
from pipeline.data.sources import source_problem
from pipeline.download import download
from pipeline.evaluate import gradcam_photos
from pipeline.evaluation.metrics import classification_metrics as metrics_of
from pipeline.evaluation.metrics import confusion_rows, roc_rows
from pipeline.models.inputs import IMAGENET
from pipeline.models.transfer import grey_input
from pipeline.params.sections import DataParams
from pipeline.preprocess import preprocess
from pipeline.runtime.tensors import normalize
from pipeline.split import split
from tests.archives import class_folder_members, encode, fashion_mnist_files, jpeg, write_zip

DATA = DataParams(
    source="unused", image_size=32, resize="crop", max_per_class=None, val_fraction=0.2, test_fraction=0.2, seed=0
)
FLOWERS = ["rose", "tulip", "daisy"]


# ---------------------------------------------------------------- classes from the layout


@pytest.mark.parametrize(
    "names, classes, labels",
    [
        # Dogs-vs-Cats' layouts keep their two classes, whatever else lies beside them
        (["train/cat.1.jpg", "train/dog.2.jpg", "train/Thumbs.db"], ("cat", "dog"), [0, 1, None]),
        (["PetImages/Cat/1.jpg", "PetImages/Dog/1.jpg", "readme[1].txt"], ("cat", "dog"), [0, 1, None]),
        (["cats/1.jpg", "dogs/2.png"], ("cat", "dog"), [0, 1]),
        # one folder per class, at any depth, sorted by name; a file outside a photo folder has none
        (
            ["flowers/tulip/1.jpg", "flowers/rose/2.png", "flowers/daisy/x/3.jpg", "flowers/README.txt", "LICENSE"],
            ("rose", "tulip", "x"),
            [1, 0, 2, None, None],
        ),
        # a third class next to cats and dogs: all three are classes, none is dropped
        (["cats/1.jpg", "dogs/1.jpg", "birds/1.jpg"], ("birds", "cats", "dogs"), [1, 2, 0]),
        (["Zebra/1.jpg", "ant/1.jpg"], ("Zebra", "ant"), [0, 1]),  # names as written, sorted by code point
    ],
)
def test_labelling_finds_the_classes_from_the_paths_alone(names, classes, labels):
    assert labelling(names) == (classes, labels)


def three_class_zip(tmp_path, per_class=10, **kwargs):
    members = class_folder_members(FLOWERS, per_class, root="flowers/", **kwargs)
    return write_zip(tmp_path / "flowers.zip", members | {"flowers/README.txt": b"photos", "LICENSE": b"CC-BY"})


def test_a_class_folder_zip_splits_stratified_per_class_and_records_its_classes(tmp_path):
    summary = split(three_class_zip(tmp_path), tmp_path / "split", DATA, workers=1)
    assert summary["classes"] == ["daisy", "rose", "tulip"]
    # 10 photos a class: 2 test (0.2), 2 val (0.2 of the whole), 6 train
    assert summary["images"] == {
        s: {c: n for c in ("daisy", "rose", "tulip")} for s, n in (("train", 6), ("val", 2), ("test", 2))
    }
    assert summary["rejects"] == {"no class in its path": 2} and summary["test"] == "drawn at data.test_fraction"
    members, labels = read_index(index_file(tmp_path / "split", "test"), ("daisy", "rose", "tulip"))
    assert all(m.split("/")[1] == ("daisy", "rose", "tulip")[k] for m, k in zip(members, labels))


def test_max_per_class_caps_every_class(tmp_path):
    summary = split(
        three_class_zip(tmp_path), tmp_path / "split", dataclasses.replace(DATA, max_per_class=5), workers=1
    )
    assert {c: sum(summary["images"][s][c] for s in SPLITS) for c in summary["classes"]} == {
        "daisy": 5,
        "rose": 5,
        "tulip": 5,
    }


def test_a_class_too_small_for_three_splits_is_refused_by_name_and_count(tmp_path):
    members = class_folder_members(["rose", "tulip"], 6) | class_folder_members(["daisy"], 2)
    with pytest.raises(StageError, match=r"'daisy' has 2; each class needs 3 at least"):
        split(write_zip(tmp_path / "a.zip", members), tmp_path / "split", DATA, workers=1)


def test_a_zip_of_a_single_class_is_refused(tmp_path):
    with pytest.raises(StageError, match=r"a single class, 'rose'"):
        split(write_zip(tmp_path / "a.zip", class_folder_members(["rose"], 9)), tmp_path / "split", DATA, workers=1)
    with pytest.raises(StageError, match="no photo in the archive has a class"):
        split(
            write_zip(tmp_path / "b.zip", {"1.jpg": jpeg((1, 2, 3)), "2.jpg": jpeg((4, 5, 6))}),
            tmp_path / "s",
            DATA,
            workers=1,
        )


def test_an_archive_with_train_and_test_folders_keeps_its_own_test_split(tmp_path):
    members = class_folder_members(FLOWERS, 8, root="train/") | class_folder_members(FLOWERS, 4, root="test/", seed=1)
    archive = write_zip(tmp_path / "a.zip", members)
    summary = split(archive, tmp_path / "split", dataclasses.replace(DATA, val_fraction=0.25), workers=1)
    test, _ = read_index(index_file(tmp_path / "split", "test"), tuple(summary["classes"]))
    assert sorted(test) == sorted(m for m in members if m.startswith("test/"))  # the archive's own, whole
    # validation is a quarter of each class's 8 train/ photos
    assert summary["images"]["val"] == {c: 2 for c in summary["classes"]} and summary["images"]["train"] == {
        c: 6 for c in summary["classes"]
    }
    assert summary["test"] == "the archive's own test/ folder"
    # capped, the test part keeps the archive's train:test proportion: 4 of 8 train, so 2 of 4 test
    capped = split(
        archive, tmp_path / "capped", dataclasses.replace(DATA, val_fraction=0.25, max_per_class=4), workers=1
    )
    assert capped["images"]["test"] == {c: 2 for c in summary["classes"]}
    assert {c: capped["images"]["train"][c] + capped["images"]["val"][c] for c in summary["classes"]} == {
        c: 4 for c in summary["classes"]
    }


# ---------------------------------------------------------------- grey input


def test_grey_preprocessing_keeps_a_grey_photo_exactly_and_takes_the_luma_of_a_colour_one():
    grey = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    out = load(encode(Image.fromarray(grey), "PNG"), 32, "crop", channels=1)
    assert out.shape == (1, 32, 32) and np.array_equal(out[0], grey)
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    luma = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]  # ITU-R 601, what Pillow's "L" is
    got = load(encode(Image.fromarray(rgb), "PNG"), 32, "crop", channels=1)[0]
    assert np.abs(got.astype(np.float64) - luma).max() <= 1  # Pillow rounds in fixed point


def test_preprocess_writes_one_channel_arrays_and_says_so(tmp_path):
    archive = three_class_zip(tmp_path, per_class=5)
    split(archive, tmp_path / "split", DATA, workers=1)
    meta = preprocess(
        archive, tmp_path / "split", tmp_path / "out", image_size=24, resize="crop", workers=1, channels=1
    )
    assert meta["channels"] == 1 and meta["classes"] == ["daisy", "rose", "tulip"]
    assert np.load(images_file(tmp_path / "out", "train")).shape == (9, 1, 24, 24)
    rgb = preprocess(archive, tmp_path / "split", tmp_path / "rgb", image_size=24, resize="crop", channels=3, workers=1)
    assert rgb["digest"] != meta["digest"]  # a grey run never resumes an RGB checkpoint


def test_grey_batches_are_normalised_with_one_mean_and_std():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    grey_mean, grey_std = (
        sum((0.485, 0.456, 0.406)) / 3,
        sum((0.229, 0.224, 0.225)) / 3,
    )  # ImageNet's, averaged over R, G, B
    expected = (torch.tensor([0, 51, 255]) / 255 - grey_mean) / grey_std
    assert torch.allclose(normalize(x, IMAGENET).flatten(), expected, atol=1e-6)


# ---------------------------------------------------------------- models for N classes and 1 channel


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_alexnet_for_fashion_mnist_has_the_course_s_parameter_count():
    # weights + biases: 1 → 96 (11×11) 11,712; 96 → 256 (5×5) 614,656; 256 → 384 (3×3) 885,120;
    # 384 → 384 1,327,488; 384 → 256 884,992; 6400 → 4096 26,218,496; 4096 → 4096 16,781,312; 4096 → 10 40,970
    assert count(models.build("alexnet", num_classes=10, in_channels=1)) == 46_764_746


def test_resnet18_for_ten_grey_classes_is_torchvision_s_less_its_head_and_two_input_channels():
    # torchvision's ResNet-18 (1000 classes, RGB): 11,689,512; its head 512 × 1000 + 1000 = 513,000;
    # ten classes: 5,130; one input channel instead of three: 2 × 64 × 7 × 7 = 6,272 fewer weights
    assert count(tv.resnet18()) == 11_689_512
    assert count(models.build("resnet18", num_classes=10, in_channels=1)) == 11_689_512 - 513_000 + 5_130 - 6_272


@pytest.mark.parametrize(
    "name, first_layer",
    [
        ("alexnet", 96 * 11 * 11),
        ("alexnet_bn", 96 * 11 * 11),
        ("vgg11", 64 * 3 * 3),
        ("vgg11_bn", 64 * 3 * 3),
        ("nin", 96 * 11 * 11),
        ("googlenet", 64 * 7 * 7),
        ("resnet18", 64 * 7 * 7),
        ("resnet50", 64 * 7 * 7),
    ],
)
def test_every_architecture_takes_one_channel_with_its_first_layer_a_third_as_wide(name, first_layer):
    """first_layer: weights per input channel of the first convolution (out channels × kernel area)."""
    options = {"pretrained": False} if name == "resnet50" else {}
    with torch.device("meta"):
        rgb, grey = models.build(name, **options), models.build(name, num_classes=2, in_channels=1, **options)
        assert count(rgb) - count(grey) == 2 * first_layer
        assert models.build(name, num_classes=10, in_channels=1, **options).eval()(torch.empty(2, 1, 96, 96)).shape == (
            2,
            10,
        )


def test_a_pretrained_first_layer_for_grey_input_is_its_filters_summed_over_rgb():
    rgb = tv.resnet18()  # random weights stand in for ImageNet's: the identity holds for any
    grey = tv.resnet18()
    grey.load_state_dict(rgb.state_dict())
    grey_input(grey)
    assert grey.conv1.in_channels == 1 and torch.equal(grey.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(grey.conv1(x), rgb.conv1(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- metrics for N classes

CLASSES3 = ("a", "b", "c")
LABELS3 = np.array([0, 0, 1, 1, 2, 2, 2])
PROBA3 = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.8, 0.1],
        [0.1, 0.3, 0.6],
        [0.2, 0.2, 0.6],
        [0.3, 0.3, 0.4],
        [0.1, 0.1, 0.8],
    ]
)  # predicted: a, b (wrong), b, c (wrong), c, c, c


def test_three_class_metrics_match_the_hand_computed_ones():
    m = metrics_of(LABELS3, PROBA3, CLASSES3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["confusion"] == {
        "a": {"a": 1, "b": 1, "c": 0},
        "b": {"a": 0, "b": 1, "c": 1},
        "c": {"a": 0, "b": 0, "c": 3},
    }
    assert m["precision"] == pytest.approx({"a": 1, "b": 1 / 2, "c": 3 / 4})
    assert m["recall"] == pytest.approx({"a": 1 / 2, "b": 1 / 2, "c": 1})
    assert m["f1"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 6 / 7})
    assert m["macro"] == pytest.approx({"precision": 0.75, "recall": 2 / 3, "f1": (2 / 3 + 1 / 2 + 6 / 7) / 3})
    # weighted by 2, 2 and 3 images
    assert m["weighted"] == pytest.approx({"precision": 5.25 / 7, "recall": 5 / 7, "f1": (4 / 3 + 1 + 18 / 7) / 7})
    # one-vs-rest AUC by pair counts (a tie counts half): a 8.5/10, b 8.5/10, c 10.5/12
    assert m["roc_auc"] == pytest.approx((0.85 + 0.85 + 0.875) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.2, 0.8, 0.3, 0.6, 0.4, 0.8])))
    assert "top5_accuracy" not in m  # three classes: top-5 is always 1


def test_top5_accuracy_from_six_classes_up():
    proba = np.array([[0.5, 0.2, 0.1, 0.1, 0.06, 0.04], [0.3, 0.25, 0.2, 0.15, 0.07, 0.03]])
    m = metrics_of(np.array([5, 2]), proba, tuple("abcdef"))  # ranked 6th (out of the top 5), then 3rd (in)
    assert m["top5_accuracy"] == 0.5 and m["roc_auc"] is None  # not every class is in this split


def test_two_class_results_keep_exactly_their_keys():
    labels, proba = np.array([0, 1, 1, 0]), np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]])
    assert set(metrics_of(labels, proba, DOGS_VS_CATS)) == {
        "images",
        "accuracy",
        "accuracy_ci95",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "f1_macro",
        "roc_auc",
        "log_loss",
        "confusion",
    }
    assert metrics_of(labels, proba, DOGS_VS_CATS)["precision"].keys() == set(DOGS_VS_CATS)


def test_the_roc_of_three_classes_is_the_exact_mean_of_the_one_vs_rest_curves():
    rows = roc_rows("m", LABELS3, PROBA3)
    fpr, tpr = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    assert (
        (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        and np.all(np.diff(fpr) >= 0)
        and np.all(np.diff(tpr) >= -1e-9)
    )
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids
    ovr = skm.roc_auc_score(LABELS3, PROBA3, multi_class="ovr", average="macro")
    assert area == pytest.approx(ovr, abs=1e-6) and area == pytest.approx((0.85 + 0.85 + 0.875) / 3, abs=1e-6)


def test_confusion_rows_and_gradcam_photos_cover_every_class():
    assert len(confusion_rows("m", LABELS3, PROBA3, CLASSES3)) == 9
    assert ("m", "c", "c", 3) in confusion_rows("m", LABELS3, PROBA3, CLASSES3)
    chosen = gradcam_photos(LABELS3, PROBA3)
    assert list(chosen[:3]) == [0, 2, 4]  # the first photo of each class, then the mistakes
    assert set(chosen[3:]) == {1, 3}


def test_chance_over_ten_classes_is_a_log_loss_of_ln_10_and_an_auc_of_one_half():
    labels = np.arange(10)
    m = metrics_of(labels, np.full((10, 10), 0.1), tuple(f"k{i}" for i in range(10)))
    assert m["log_loss"] == pytest.approx(math.log(10)) and m["roc_auc"] == pytest.approx(0.5)


def test_data_channels_must_be_one_or_three():
    with pytest.raises(ParamError, match="data.channels"):
        dataclasses.replace(DATA, channels=2)
    with pytest.raises(ParamError, match="data.channels"):
        dataclasses.replace(DATA, channels=True)


# ---------------------------------------------------------------- the fashion-mnist source


def test_fashion_mnist_from_a_local_folder_becomes_a_class_folder_archive_with_its_own_split(tmp_path):
    written = fashion_mnist_files(tmp_path / "raw", train_per_class=3, test_per_class=1)
    archive = download(f"fashion-mnist:{tmp_path / 'raw'}", tmp_path / "data" / "raw", tmp_path / "downloads")
    with Archive(archive) as opened:
        names = opened.names()
        assert len(names) == 40 and sum(n.startswith("test/") for n in names) == 10
        images, labels = written["train"]
        # the first training image, under its class's folder
        first = f"train/{fashion_mnist.CLASSES[labels[0]]}/00000.png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(opened.read(first)))), images[0])
    assert read_json(tmp_path / "data" / "raw" / "source.json")["origin"] == str(tmp_path / "raw")
    summary = split(archive, tmp_path / "split", dataclasses.replace(DATA, val_fraction=1 / 3), workers=1)
    assert summary["classes"] == sorted(fashion_mnist.CLASSES) and summary["test"] == "the archive's own test/ folder"
    assert summary["images"]["test"] == {c: 1 for c in fashion_mnist.CLASSES} and summary["images"]["val"] == {
        c: 1 for c in fashion_mnist.CLASSES
    }


def test_the_fashion_mnist_source_is_checked_before_any_work(tmp_path):
    assert "was not found" in source_problem(f"fashion-mnist:{tmp_path / 'nowhere'}", tmp_path)
    cached = tmp_path / "fashion-mnist"
    cached.mkdir()
    for remote in fashion_mnist.REMOTES:  # a verified cache (sparse files of the right sizes): no network needed
        with open(cached / remote.filename, "wb") as f:
            f.truncate(remote.size)
    assert source_problem("fashion-mnist", tmp_path) is None
    data = dataclasses.replace(DATA, source="fashion-mnist", max_per_class=100)
    assert check.photos_at_most(dataclasses.replace(data, max_per_class=None)) == 70_000
    assert check.photos_at_most(data) == 2_000  # 100 per class of train, and of test at most as many
