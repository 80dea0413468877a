"""The one prediction path (runtime.inference): eval mode whatever the model's mode was, and bf16
inference that keeps fp32's predictions: the same labels, probabilities within 0.02."""

import pytest
import torch

from pipeline.params import recipes
from pipeline.runtime.device import Compute
from pipeline.runtime.inference import probabilities
from pipeline.training.fit import fit
from tests.helpers import toy_split

CPU = torch.device("cpu")
TOLERANCE = 0.02  # bf16 keeps 8 bits of mantissa: about 2-3 significant digits of a probability


@pytest.fixture(scope="module")
def trained():
    spec = recipes.load(overrides={"model": "resnet18", "train": {"epochs": 3, "batch_size": 16}}).models[0]
    model, _ = fit(spec, toy_split(96), toy_split(32, seed=1), classes=2)
    return model


@pytest.mark.slow  # a model trained for 3 epochs first
@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
def test_bf16_inference_keeps_the_fp32_predictions(trained, memory_format):
    test = toy_split(64, seed=3)
    fp32 = probabilities(trained, test, 16, compute=Compute(CPU, "fp32", memory_format))
    bf16 = probabilities(trained, test, 16, compute=Compute(CPU, "bf16", memory_format))
    assert bf16.dtype == torch.float32 and torch.allclose(bf16.sum(1), torch.ones(64), atol=1e-5)  # fp32 softmax
    assert torch.equal(fp32.argmax(1), bf16.argmax(1))
    assert (fp32 - bf16).abs().max() <= TOLERANCE
    assert not torch.equal(fp32, bf16)  # bf16 really ran


@pytest.mark.slow  # the same trained model
def test_predictions_are_made_in_eval_mode_and_the_mode_is_restored(trained):
    test = toy_split(16, seed=4)
    trained.train()
    first = probabilities(trained, test, 8)
    assert trained.training  # restored
    assert torch.equal(first, probabilities(trained, test, 8))  # no dropout, no BatchNorm update: eval mode
