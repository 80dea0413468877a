"""The course's three fine-tuning mistakes, each reproduced as the course's code made it, and only
when asked for: (a) evaluation without eval() (BatchNorm on each test batch's statistics, updating
them, dropout on; the order and size of the batches matter), (b) `requirse_grad` (nothing frozen,
the backbone back-propagated but never stepped, its statistics drifting), (c) the abrupt head."""

import pytest
import torch
from torch import nn

from pipeline import models
from pipeline.evaluation import mistakes
from pipeline.params import recipes
from pipeline.runtime.device import Compute
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split
from pipeline.training.fit import fit
from tests.helpers import REPO, toy_split

CPU = Compute(torch.device("cpu"))


def load(**overrides):
    return recipes.load(
        REPO / "params.yaml",
        {
            "model": "efficientnet_lite0",
            "data": {"image_size": 64},
            "train": {"epochs": 1, "batch_size": 16},
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def trained():
    model, _ = fit(load().models[0], toy_split(32, size=64), toy_split(16, size=64, seed=1), classes=2)
    return model


def test_a_without_eval_normalises_each_batch_by_itself_and_updates_the_running_statistics(trained):
    test = toy_split(48, size=64, seed=2)
    bn = trained.backbone._bn0
    before, mode = bn.running_mean.clone(), {m: m.training for m in trained.modules()}
    seen = []
    hook = bn.register_forward_hook(lambda m, i, o: seen.append(m.running_mean.clone()))
    proper = probabilities(trained, test, 16)
    mistaken = mistakes.without_eval(trained, test, 16, order="split", compute=CPU)
    hook.remove()
    assert len(seen) == 3 + 3  # eval mode's three batches, then the mistaken three
    assert all(torch.equal(m, before) for m in seen[:3])  # eval mode leaves the statistics alone
    assert not torch.equal(seen[3], before) and not torch.equal(
        seen[4], seen[3]
    )  # train mode overwrites them batch by batch
    assert (
        torch.equal(bn.running_mean, before) and {m: m.training for m in trained.modules()} == mode
    )  # then put back, modes too
    assert not torch.allclose(mistaken, proper, atol=1e-3)  # other probabilities than the model's


def test_a_the_order_and_size_of_the_batches_change_the_answer_only_without_eval(trained):
    test = toy_split(48, size=64, seed=2)
    sorted_, shuffled = (mistakes.without_eval(trained, test, 16, order=o, compute=CPU) for o in ("sorted", "shuffled"))
    small = mistakes.without_eval(trained, test, 8, order="shuffled", compute=CPU)
    assert not torch.allclose(sorted_, shuffled, atol=1e-3) and not torch.allclose(shuffled, small, atol=1e-3)
    assert torch.equal(
        shuffled, mistakes.without_eval(trained, test, 16, order="shuffled", compute=CPU)
    )  # seeded: reproducible
    # A model without BatchNorm or dropout is the same in both modes: then the mistake is harmless,
    # and what comes back is in the split's order whatever the batches' order was.
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for order in ("sorted", "shuffled", "split"):
        torch.testing.assert_close(
            mistakes.without_eval(plain, test, 7, order=order, compute=CPU),
            probabilities(plain, test, 7),
            rtol=0,
            atol=1e-6,
        )


def test_a_last_batch_of_one_photo_joins_the_one_before():
    test = Split(images=toy_split(17, size=64).images, labels=torch.arange(17) % 2, device=torch.device("cpu"))
    assert mistakes.without_eval(
        models.build("efficientnet_lite0").eval(), test, 8, order="split", compute=CPU
    ).shape == (17, 2)


def test_b_requirse_grad_freezes_nothing_and_optimises_only_the_head():
    model = models.build("efficientnet_lite0", requirse_grad=True)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert model.frozen == [] and all(p.requires_grad for p in model.parameters())
    tp = load(models={"efficientnet_lite0": {"requirse_grad": True}}).models[0].train
    from pipeline.training.optim import make_optimizer

    optimizer = make_optimizer(model, tp)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.head.parameters()}  # the course's optim.Adam(net.fc.parameters())
    model.train()
    x = torch.randn(8, 3, 64, 64)
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1] * 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.backbone.state_dict()
    assert model.backbone._conv_stem.weight.grad is not None  # every step back-propagates through the backbone
    assert torch.equal(after["_conv_stem.weight"], before["_conv_stem.weight"])  # whose weights stay
    assert not torch.equal(after["_bn0.running_mean"], before["_bn0.running_mean"])  # while its statistics drift


def test_c_the_abrupt_head_is_one_linear_layer():
    head = models.build("efficientnet_lite0", head=[]).head
    assert (
        len(head) == 1 and isinstance(head[0], nn.Linear) and (head[0].in_features, head[0].out_features) == (1280, 2)
    )


def test_each_mistake_in_effect_is_one_warning_and_the_defaults_reproduce_none():
    assert load().mistakes() == []
    found = load(
        evaluate={"eval_mode": False, "order": "sorted", "batch_size": 16},
        models={"efficientnet_lite0": {"requirse_grad": True, "head": []}},
    ).mistakes()
    assert [line.split(":")[1].strip() for line in found] == [
        "evaluate.eval_mode = false",
        "models.efficientnet_lite0.requirse_grad = true",
        "models.efficientnet_lite0.head = []",
    ]
    assert "sorted in batches of 16" in found[0] and all("the course's mistake" in line for line in found)
