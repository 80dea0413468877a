"""A frozen backbone's features computed once (training.precompute, `precompute: true`): they are the
backbone's outputs on each photo and its mirror image, a step on them is a step on the photos, the
backbone runs once per photo (not once per epoch) until it thaws, and the time estimate knows it."""

import pytest
import torch
from torch import nn

from pipeline import models
from pipeline.models import inputs
from pipeline.params import recipes
from pipeline.runtime.device import Compute
from pipeline.runtime.tensors import Split, normalize
from pipeline.training import estimate, precompute
from pipeline.training.fit import fit
from tests.helpers import toy_split

CPU = Compute(torch.device("cpu"))


def spec(epochs=3, **options):
    overrides = {
        "model": "efficientnet_lite0",
        "data": {"image_size": 32},
        "train": {"epochs": epochs, "batch_size": 8, "translate": 0.0},
        "models": {"efficientnet_lite0": {"freeze": "backbone", "precompute": True, "max_epochs": epochs, **options}},
    }
    return recipes.load(overrides=overrides).models[0]


def test_the_features_are_the_backbones_outputs_on_each_photo_and_its_mirror_image():
    model = models.build("efficientnet_lite0").eval()
    split = toy_split(6)
    found = precompute.extract(model, split, 4, CPU, mirrored=True)
    assert found.images.shape == (6, 2, 1280) and torch.equal(found.labels, split.labels)
    with torch.no_grad():
        own = model.backbone(normalize(split.images, inputs.of(model)))
        mirrored = model.backbone(normalize(split.images.flip(-1), inputs.of(model)))
    torch.testing.assert_close(found.images[:, 0], own, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found.images[:, 1], mirrored, rtol=1e-4, atol=1e-5)


def test_a_step_on_features_is_a_step_on_the_photos_it_draws():
    torch.manual_seed(0)
    model = models.build("efficientnet_lite0", head=[]).eval()
    split = toy_split(8)
    features = precompute.extract(model, split, 8, CPU, mirrored=True)
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.0)  # nothing moves: the loss is compared
    tp = spec().train
    loss, logits = precompute.head_step(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        features.images,
        split.labels,
        tp,
        torch.Generator().manual_seed(3),
        CPU,
    )
    flipped = torch.rand(8, generator=torch.Generator().manual_seed(3)) < 0.5  # the same draw
    photos = torch.where(flipped[:, None, None, None], split.images.flip(-1), split.images)
    assert 0 < flipped.sum() < 8
    with torch.no_grad():
        expected = model(normalize(photos, inputs.of(model)))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(expected, split.labels), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_a_step_of_the_head_never_makes_the_host_wait():
    device = torch.device("cuda")
    model = models.build("efficientnet_lite0").to(device).eval()
    split = toy_split(8)
    gpu = Split(images=split.images.to(device), labels=split.labels.to(device), device=device)
    features = precompute.extract(model, gpu, 8, Compute(device, "bf16"), mirrored=True)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-3, fused=True)
    args = (model, optimizer, nn.CrossEntropyLoss(), features.images, gpu.labels, spec().train)
    precompute.head_step(*args, torch.Generator().manual_seed(0), Compute(device, "bf16"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any copy or read that waits for the GPU raises
    try:
        for seed in range(3):
            precompute.head_step(*args, torch.Generator().manual_seed(seed), Compute(device, "bf16"))
    finally:
        torch.cuda.set_sync_debug_mode("default")


class Counter:
    """Photos a module's forward pass has seen."""

    def __init__(self, module: nn.Module):
        self.images = 0
        module.register_forward_hook(lambda m, i, o: setattr(self, "images", self.images + len(i[0])))


def counted_builds(monkeypatch) -> list[Counter]:
    """A counter on the backbone of every network that training builds from now on."""
    counters, real = [], models.build

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        counters.append(Counter(model.backbone))
        return model

    monkeypatch.setattr(models, "build", build)
    return counters


def test_the_backbone_runs_once_per_photo_while_frozen_then_on_every_batch_once_thawed(monkeypatch):
    train, val = toy_split(16), toy_split(8, seed=1)
    counters = counted_builds(monkeypatch)
    rows = []
    _, summary = fit(spec(), train, val, classes=2, log=lambda e, r: rows.append(r))
    assert len(rows) == 3 and summary["trainable_parameters"] == 1280 * 512 + 512 + 512 * 2 + 2  # the head alone
    assert (
        counters[0].images == 2 * 16 + 8
    )  # each training photo and its mirror image, each validation photo: once in three epochs
    fit(spec(epochs=2, freeze_epochs=1), train, val, classes=2)
    # epoch 1 on the features (2 × 16 + 8), epoch 2 through the thawed backbone: its 16 photos and the 8 validation
    # photos
    assert counters[1].images == 2 * 16 + 8 + 16 + 8


def test_precompute_does_nothing_where_the_backbone_trains(monkeypatch):
    train, val = toy_split(16), toy_split(8, seed=1)
    counters = counted_builds(monkeypatch)
    fit(spec(epochs=2, freeze="none"), train, val, classes=2)  # the whole network trains: every batch goes through it
    assert counters[0].images == 2 * (16 + 8)
    assert not models.precomputes(spec(freeze="none").options) and not models.precomputes(
        spec(requirse_grad=True).options
    )
    assert models.precomputes(spec().options) and not models.precomputes(spec(precompute=False).options)


def test_the_estimate_counts_the_features_once_and_the_thawed_epochs_at_their_own_cost():
    frozen_step, thawed_step = 1.0, 3.0
    step = estimate.timer(lambda thawed: thawed_step if thawed else frozen_step)
    # 640 training photos in steps of 64 (10) and 100 validation photos (2 batches)
    assert estimate.seconds_left(spec(epochs=5), 640, 100, 64, 5, step) == pytest.approx(frozen_step * (2 * 10 + 2))
    assert estimate.seconds_left(spec(epochs=3, freeze_epochs=1), 640, 100, 64, 3, step) == pytest.approx(
        frozen_step * 22 + 2 * thawed_step * (10 + 2 / 3)
    )
    assert estimate.seconds_left(spec(epochs=3, freeze_epochs=1), 640, 100, 64, 2, step) == pytest.approx(
        2 * thawed_step * (10 + 2 / 3)
    )  # resumed after the frozen epoch
    without = spec(epochs=3, precompute=False)
    assert estimate.seconds_left(without, 640, 100, 64, 3, step) == pytest.approx(3 * frozen_step * (10 + 2 / 3))
    whole = spec(epochs=3, precompute=False, freeze="none")
    assert estimate.seconds_left(whole, 640, 100, 64, 3, step) == pytest.approx(
        3 * frozen_step * (10 + 2 / 3)
    )  # as built: nothing to thaw
