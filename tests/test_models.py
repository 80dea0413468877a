"""The zoo: every architecture builds, has the parameter count worked out by hand, and transfer
learning cannot repeat the course's three mistakes (no eval mode, nothing frozen, an abrupt head)."""

import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tv

from pipeline import models
from pipeline.common.errors import ParamError, StageError
from pipeline.models import probe
from pipeline.models.inputs import IMAGENET
from pipeline.models.transfer import TransferModel
from pipeline.params import recipes
from pipeline.runtime.inference import probabilities as predict
from pipeline.runtime.tensors import Split
from pipeline.training import optim
from tests.helpers import REPO, skeleton


def conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense(f_in, f_out, bias=True):
    return f_in * f_out + (f_out if bias else 0)


def inception(c_in, c1, c2, c3, c4):
    return (
        conv(1, c_in, c1)
        + conv(1, c_in, c2[0])
        + conv(3, *c2)
        + conv(1, c_in, c3[0])
        + conv(5, *c3)
        + conv(1, c_in, c4)
    )


# Parameter counts for 3 input channels and 2 classes, from the layer shapes alone.
ALEXNET = (
    conv(11, 3, 96)
    + conv(5, 96, 256)
    + conv(3, 256, 384)
    + conv(3, 384, 384)
    + conv(3, 384, 256)
    + dense(6400, 4096)
    + dense(4096, 4096)
    + dense(4096, 2)
)
# BatchNorm variants: convs and hidden dense layers lose their bias, each gains a scale and a shift.
ALEXNET_BN = ALEXNET - (96 + 256 + 384 + 384 + 256 + 4096 + 4096) + 2 * (96 + 256 + 384 + 384 + 256 + 4096 + 4096)
VGG11_CONVS = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
VGG11 = sum(conv(3, a, b) for a, b in VGG11_CONVS) + dense(25088, 4096) + dense(4096, 4096) + dense(4096, 2)
VGG11_BN = VGG11 + sum(b for _, b in VGG11_CONVS) + 4096 + 4096
NIN = (
    conv(11, 3, 96)
    + 2 * conv(1, 96, 96)
    + conv(5, 96, 256)
    + 2 * conv(1, 256, 256)
    + conv(3, 256, 384)
    + 2 * conv(1, 384, 384)
    + conv(3, 384, 384)
    + conv(1, 384, 384)
    + conv(1, 384, 2)  # the last block stays 384 wide until the scores
)
GOOGLENET = (
    conv(7, 3, 64)
    + conv(1, 64, 64)
    + conv(3, 64, 192)
    + inception(192, 64, (96, 128), (16, 32), 32)
    + inception(256, 128, (128, 192), (32, 96), 64)
    + inception(480, 192, (96, 208), (16, 48), 64)
    + inception(512, 160, (112, 224), (24, 64), 64)
    + inception(512, 128, (128, 256), (24, 64), 64)
    + inception(512, 112, (144, 288), (32, 64), 64)
    + inception(528, 256, (160, 320), (32, 128), 128)
    + inception(832, 256, (160, 320), (32, 128), 128)
    + inception(832, 384, (192, 384), (48, 128), 128)
    + dense(1024, 2)
)
EXPECTED = {
    "alexnet": ALEXNET,
    "alexnet_bn": ALEXNET_BN,
    "vgg11": VGG11,
    "vgg11_bn": VGG11_BN,
    "nin": NIN,
    "googlenet": GOOGLENET,
    "resnet18": 11_177_538,  # torchvision's ResNet-18 (11,689,512) with a 512 → 2 classifier
    "resnet50": 23_508_032 + dense(2048, 512) + dense(512, 2),  # torchvision's backbone + 2048 → 512 → 2
    # EfficientNet-Lite0's published 4,652,008 less its 1,280 → 1,000 ImageNet layer, + 1,280 → 512 → 2
    # the ImageNet networks' counts (timm's tf_efficientnet_lite0/1/2: 4.65 M, 5.42 M, 6.09 M), their classifier
    # replaced by the head
    "efficientnet_lite0": 4_652_008 - dense(1280, 1000) + dense(1280, 512) + dense(512, 2),
    "efficientnet_lite1": 5_416_680 - dense(1280, 1000) + dense(1280, 512) + dense(512, 2),
    "efficientnet_lite2": 6_092_072 - dense(1280, 1000) + dense(1280, 512) + dense(512, 2),
}
OFFLINE = {"resnet50": {"pretrained": False}}


def build(name, **options):
    return models.build(name, **{**OFFLINE.get(name, {}), **options})


def test_the_zoo_is_the_course_plus_batchnorm_and_transfer():
    assert models.names() == ["alexnet", "alexnet_bn", "vgg11", "vgg11_bn", "nin", "googlenet", "resnet18", "resnet50"]
    assert models.registered() == [
        *models.names(),
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    ]  # trained when named, not by `model: all`
    assert EXPECTED["alexnet"] == 46_755_202  # the figure quoted in the issue


@pytest.mark.parametrize("name, features", [("alexnet", 256 * 5 * 5), ("vgg11_bn", 512 * 7 * 7)])
def test_the_dense_width_changes_only_the_classifier(name, features):
    def head(w: int) -> int:
        # features → w → w → 2: the weights, the last layer's 2 biases, and each hidden layer's w biases
        # (BatchNorm's weight and bias instead, 2w, where the Linear has no bias before it)
        per_hidden = 2 * w if name.endswith("_bn") else w
        return features * w + w * w + w * 2 + 2 + 2 * per_hidden

    assert sum(p.numel() for p in build(name, dense=64).parameters()) == EXPECTED[name] - head(4096) + head(64)
    with pytest.raises(ParamError, match=rf"models\.{name}\.dense = 0: must be a whole number of units"):
        recipes.load(overrides={"model": name, "models": {name: {"dense": 0}}})


@pytest.mark.parametrize("name", models.registered())
def test_every_architecture_gives_two_logits_at_96_and_224_px_with_its_known_size(name):
    model = skeleton(name, **OFFLINE.get(name, {})).eval()
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[name]
    with torch.inference_mode():
        for size in (96, 224):
            assert model(torch.randn(2, 3, size, size)).shape == (2, 2)


@pytest.mark.parametrize("name", models.registered())
def test_minimum_image_size_is_exact(name):
    model, size = skeleton(name, **OFFLINE.get(name, {})).eval(), models.min_image_size(name)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 2)
        if name in ("alexnet", "alexnet_bn", "nin"):  # the strided stem and three pools leave 0×0
            with pytest.raises(RuntimeError):
                model(torch.randn(1, 3, size - 1, size - 1))


def flat_features(model, size):
    """Width of the first dense layer's input at `size` px."""
    seen = []
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    first.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    with torch.inference_mode():
        model.eval()(torch.randn(1, 3, size, size))
    return seen[0]


def test_feature_sizes_at_224_px_are_the_course_material_s():
    assert flat_features(skeleton("alexnet"), 224) == 256 * 5 * 5 == 6400
    assert flat_features(skeleton("vgg11"), 224) == 512 * 7 * 7
    assert flat_features(skeleton("alexnet"), 96) == 6400  # adaptive pooling keeps the classifier's shape


def test_from_scratch_resnet18_and_vgg11_match_torchvision_layer_for_layer():
    with torch.device("meta"):  # shapes only: nothing drawn
        pairs = [(build("resnet18"), tv.resnet18(num_classes=2)), (build("vgg11"), tv.vgg11(num_classes=2))]
    for ours, theirs in pairs:
        assert sorted(p.shape for p in ours.parameters()) == sorted(p.shape for p in theirs.parameters())


def test_alexnet_lrn_is_optional_and_parameter_free():
    plain, lrn = skeleton("alexnet"), skeleton("alexnet", lrn=True)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in lrn.modules()) == 2
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in plain.modules())
    assert sum(p.numel() for p in lrn.parameters()) == ALEXNET


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ParamError) as e:
        models.build("lenet")
    assert "lenet" in str(e.value) and all(name in str(e.value) for name in models.registered())


# ---------------------------------------------------------------- transfer learning


def snapshot(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def steps(model, freeze_steps=3, size=64):
    """A few real optimiser steps through the project's own optimiser construction."""
    from pipeline.params import recipes

    tp = recipes.load(overrides={"train": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0}}).train
    optimizer = optim.make_optimizer(model, tp)
    model.train()
    for _ in range(freeze_steps):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, size, size)), torch.tensor([0, 1, 0, 1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


def changed(before: dict, after: dict, prefix: str) -> set[str]:
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> str:
    """A stand-in for the ImageNet weights file (seeded random weights, same keys and shapes)."""
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.manual_seed(1)
    torch.save(tv.resnet50(weights=None).state_dict(), path)
    return str(path)


def pretrained(**options) -> TransferModel:
    return models.build("resnet50", pretrained=True, **options)


def test_freeze_backbone_really_freezes_weights_and_batchnorm_statistics(imagenet_like):
    model = pretrained(weights=imagenet_like, freeze="backbone")
    assert isinstance(model, TransferModel)
    before = snapshot(model)
    optimizer = steps(model)
    after = snapshot(model)
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    assert changed(before, after, "backbone.") == set()  # weights and BN buffers bit-identical
    assert changed(before, after, "head.") == {k for k in before if k.startswith("head.")}
    given = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert given == {id(p) for p in model.head.parameters()}  # the optimiser never sees the backbone
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules())  # frozen BN stays in eval mode


def test_freeze_none_trains_the_backbone_at_a_lower_learning_rate(imagenet_like):
    model = pretrained(weights=imagenet_like, freeze="none", backbone_lr_scale=0.1)
    before = snapshot(model)
    optimizer = steps(model, freeze_steps=1)
    after = snapshot(model)
    assert "backbone.conv1.weight" in changed(before, after, "backbone.")
    assert "backbone.bn1.running_mean" in changed(before, after, "backbone.")
    lrs = {round(g["lr"], 6) for g in optimizer.param_groups}
    assert lrs == {0.1, 0.01}


def test_freeze_layer4_trains_layer4_and_the_head_only(imagenet_like):
    model = pretrained(weights=imagenet_like, freeze="layer4")
    before = snapshot(model)
    steps(model, freeze_steps=1)
    after = snapshot(model)
    moved = changed(before, after, "backbone.")
    assert moved and all(k.startswith("backbone.layer4.") for k in moved)
    assert "backbone.layer4.0.bn1.running_mean" in moved
    assert not model.backbone.layer3.training and model.backbone.layer4.training


def test_random_weights_train_whole_at_the_full_rate_whatever_freeze_says():
    # freezing or slowing random features would train the head on noise: both keep pretrained ones only
    model = build("resnet50", pretrained=False, freeze="backbone", backbone_lr_scale=0.1)
    assert model.frozen == [] and all(p.requires_grad for p in model.parameters())
    optimizer = steps(model, freeze_steps=1)
    assert {round(g["lr"], 6) for g in optimizer.param_groups} == {0.1}


def test_the_head_is_gentle_by_default_and_configurable():
    head = build("resnet50").head
    assert [m.__class__ for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (2048, 512, 2)
    single = build("resnet50", head=[]).head
    assert [(m.in_features, m.out_features) for m in single] == [(2048, 2)]


def test_any_torchvision_classifier_gets_the_same_head_and_freezing(tmp_path):
    torch.save(tv.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "weights.pth")
    model = models.build("torchvision:mobilenet_v3_small", weights=str(tmp_path / "weights.pth"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    assert model.head[0].in_features == 1024
    with torch.inference_mode():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_predict_is_always_in_eval_mode():
    torch.manual_seed(0)
    model = build("alexnet_bn")  # Dropout and BatchNorm: train mode changes every output
    images = torch.randint(0, 256, (6, 3, 72, 72), dtype=torch.uint8)
    split = Split(images=images, labels=torch.zeros(6, dtype=torch.long), device=torch.device("cpu"))
    model.train()
    got = predict(model, split, batch_size=4)
    assert model.training  # restored afterwards
    from pipeline.runtime.tensors import normalize

    with torch.no_grad():
        expected = torch.softmax(model.eval()(normalize(images, IMAGENET)), 1)
        training = torch.softmax(model.train()(normalize(images, IMAGENET)), 1)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, training, atol=1e-3)


# ---------------------------------------------------------------- weights without network


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and no network: any download attempt fails as it would offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, progress=True):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "hub" / "checkpoints"


def in_hub(hub: Path, imagenet_like: str, name: str) -> dict:
    """The stand-in weights put in the hub cache under torchvision's file `name`; their tensors."""
    hub.mkdir(parents=True)
    shutil.copyfile(imagenet_like, hub / name)
    return torch.load(imagenet_like, weights_only=True)


def test_pretrained_weights_load_from_the_hub_cache_offline(hub, imagenet_like):
    state = in_hub(hub, imagenet_like, "resnet50-11ad3fa6.pth")  # torchvision's file name for these weights
    model = models.build("resnet50", pretrained=True)
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])


def test_pretrained_weights_load_from_a_file_named_in_params(hub, imagenet_like):
    state = torch.load(imagenet_like, weights_only=True)
    model = models.build("resnet50", weights=imagenet_like)
    assert isinstance(model.backbone.fc, nn.Identity)
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"], rtol=0, atol=0)


def test_missing_weights_fail_at_once_saying_where_to_put_them(hub):
    with pytest.raises(StageError) as e:
        models.build("resnet50", pretrained=True)
    message = str(e.value)
    assert str(hub / "resnet50-11ad3fa6.pth") in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert "weights:" in message and "pretrained: false" in message
    assert not hub.exists() or not any(hub.iterdir())  # no half-written weights left behind


def test_a_missing_weights_file_named_in_params_is_reported(hub, tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        models.build("resnet50", weights=str(tmp_path / "nowhere.pth"))


def test_the_courses_imagenet1k_v1_weights_are_one_param_away(hub, imagenet_like):
    # torchvision's file names: V1 (the course's pretrained=True, 76.1% top-1), V2 (DEFAULT, 80.9%)
    state = in_hub(hub, imagenet_like, "resnet50-0676ba61.pth")
    model = models.build("resnet50", weights="IMAGENET1K_V1")
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    with pytest.raises(StageError) as e:  # the default is V2, which this offline cache does not hold
        models.build("resnet50")
    assert "resnet50-11ad3fa6.pth" in str(e.value)
    with pytest.raises(StageError, match="IMAGENET1K_V1, IMAGENET1K_V2"):  # a name that is no published set
        models.build("resnet50", weights="IMAGENET1K_V3")


def test_pretrained_false_works_offline(hub):
    assert isinstance(models.build("resnet50", pretrained=False), TransferModel)


@pytest.mark.parametrize(
    "name, image_size, expected",
    [
        ("alexnet", 224, (5, 5)),  # (224 + 2 − 11) / 4 + 1 = 54 → 26 → 12 → 5: what its dense layers were built for
        ("alexnet", 96, (1, 5)),  # 22 → 10 → 4 → 1: one position copied 25 times
        ("vgg11", 224, (7, 7)),  # five 2× pools: 224 / 32
        ("vgg11", 64, (2, 7)),
        ("nin", 128, (2, 1)),  # 30 → 14 → 6 → 2, then global pooling
        ("resnet18", 96, (3, 1)),  # 96 / 32
    ],
)
def test_feature_map_is_what_the_classifier_reads(name, image_size, expected):
    assert models.feature_map(name, image_size) == expected


def test_a_model_without_an_adaptive_pool_has_no_feature_map_to_report():
    assert models.feature_map("torchvision:vit_b_16", 224) is None


def test_resnet18_blocks_start_as_the_identity_only_when_asked():
    from pipeline.models.resnet import Residual

    default = [m for m in models.build("resnet18").modules() if isinstance(m, Residual)]
    assert len(default) == 8 and all(torch.equal(b.bn2.weight, torch.ones(b.bn2.num_features)) for b in default)
    block = next(m for m in models.build("resnet18", zero_init_residual=True).modules() if isinstance(m, Residual))
    x = torch.rand(2, 64, 8, 8)  # non-negative, as after the stem's ReLU; the first block keeps 64 channels
    with torch.inference_mode():
        assert torch.equal(block.eval()(x), x)


def test_alexnets_three_ideas_can_each_be_replaced_by_what_came_before():
    plain = skeleton("alexnet")
    lenet_like = skeleton("alexnet", activation="sigmoid", pool="avg", dropout=0.0)
    kinds = lambda m: {type(x) for x in m.modules()}  # noqa: E731
    assert {nn.ReLU, nn.MaxPool2d} <= kinds(plain) and nn.Sigmoid not in kinds(plain)
    assert {nn.Sigmoid, nn.AvgPool2d} <= kinds(lenet_like) and not {nn.ReLU, nn.MaxPool2d} & kinds(lenet_like)
    assert [m.p for m in lenet_like.modules() if isinstance(m, nn.Dropout)] == [0.0, 0.0]
    assert sum(p.numel() for p in lenet_like.parameters()) == EXPECTED["alexnet"]  # the same weights, other functions
    assert lenet_like(torch.randn(2, 3, 72, 72)).shape == (2, 2)
    with pytest.raises(ParamError, match=r"models.alexnet.pool.*use one of max, avg"):
        recipes.load(
            REPO / "params.yaml",
            {"model": "alexnet", "data": {"image_size": 72}, "models": {"alexnet": {"pool": "min"}}},
        )


def test_the_registry_lists_every_architecture_with_what_its_weights_are():
    from pipeline.models.__main__ import table

    rows = {line.split()[0]: line for line in table().splitlines()[1:]}
    assert list(rows) == models.registered()
    assert f"{EXPECTED['resnet18']:,}" in rows["resnet18"] and "trained from scratch" in rows["resnet18"]
    for name, top1, size in (
        ("efficientnet_lite0", "75.1%", "224 px"),
        ("efficientnet_lite1", "76.7%", "240 px"),
        ("efficientnet_lite2", "77.6%", "260 px"),
    ):
        assert all(f in rows[name] for f in (f"{EXPECTED[name]:,}", top1, size, "0.5/0.5/0.5 / 0.5/0.5/0.5"))
    assert "80.858%" in rows["resnet50"] and "ImageNet's" in rows["resnet50"]


@pytest.mark.parametrize("name", ["nin", "resnet18", "vgg11_bn"])
def test_a_model_built_on_the_meta_device_draws_no_weights(name, monkeypatch):
    # Shapes only (a model file's check, the preflight): a draw there would import torch._dynamo, 1.5 s
    drawn = []
    monkeypatch.setattr(nn.init, "kaiming_normal_", lambda *a, **k: drawn.append("conv"))
    monkeypatch.setattr(nn.init, "normal_", lambda *a, **k: drawn.append("dense"))
    with torch.device("meta"):
        model = models.build(name)
    assert drawn == [] and all(p.is_meta for p in model.parameters())
    models.build(name)  # on the CPU the same builder draws
    assert "conv" in drawn  # (NiN has no dense layer)


@pytest.mark.slow  # a fresh interpreter
def test_the_shape_check_runs_small_models_for_real_without_importing_torch_dynamo():
    # In a fresh interpreter: this worker's earlier tests may have loaded torch._dynamo already.
    code = (
        "import sys; from pipeline import models; from pipeline.params import recipes; "
        "p = recipes.load(overrides={'model': ['nin', 'resnet18', 'vgg11_bn'], 'data': {'image_size': 72}}); "
        "models.preflight(p.models, 72); print(models.feature_map('vgg11', 64), 'torch._dynamo' in sys.modules)"
    )
    shown = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["(2,", "7)", "False"]


@pytest.mark.parametrize(
    "limit, dynamo, device",
    [(probe.REAL_FORWARD_BYTES, False, "cpu"), (probe.REAL_FORWARD_BYTES, True, "meta"), (0, False, "meta")],
    ids=["cpu", "meta-once-dynamo-is-loaded", "meta-for-large-weights"],
)
def test_the_shape_check_gives_the_same_answers_on_the_cpu_and_on_meta(limit, dynamo, device, monkeypatch):
    monkeypatch.setattr(probe, "REAL_FORWARD_BYTES", limit)  # 0: every model's weights are too large for the CPU
    monkeypatch.setattr(probe, "dynamo_loaded", lambda: dynamo)  # this worker's earlier tests may have loaded it
    out = probe.shapes_forward(lambda: models.build("resnet18", in_channels=1), 2, 1, 40)
    assert out.shape == (2, 2) and out.device.type == device
    assert models.feature_map("alexnet", 96) == (1, 5)
    p = recipes.load(REPO / "params.yaml", {"model": "alexnet", "data": {"image_size": 96}})
    with pytest.raises(StageError, match="alexnet cannot take 32 px images"):
        models.preflight(p.models, 32)
