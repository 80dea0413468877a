"""How a model computes here (runtime.device): what `auto` picks for a given device and CPU
(capabilities mocked), that explicit choices are kept, threads, and what a model file records."""

import pytest
import torch

from pipeline.common.errors import ParamError
from pipeline.params import recipes
from pipeline.params.sections import RuntimeParams
from pipeline.runtime.device import Compute, auto_precision, choose_device, cpu_features, resolve
from tests.helpers import REPO

CPU = torch.device("cpu")


def runtime(**keys) -> RuntimeParams:
    return RuntimeParams(**{"device": "cpu", "compile": "auto", "resume": True, **keys})


@pytest.mark.parametrize(
    "features, precision, said",
    [
        (
            frozenset({"amx_bf16", "avx512_bf16"}),
            "bf16",
            "this CPU has AMX and AVX-512 BF16",
        ),  # Sapphire Rapids and later
        (frozenset({"avx512_bf16"}), "bf16", "this CPU has AVX-512 BF16"),  # AMD Zen 4 and 5, Cooper Lake
        (frozenset(), "fp32", "neither AMX nor AVX-512 BF16: bf16 would be emulated"),  # older x86, most laptops
    ],
)
def test_auto_precision_on_a_cpu_follows_its_bf16_instructions(features, precision, said):
    chosen, why = auto_precision(CPU, features)
    assert chosen == precision and said in why
    compute = resolve(runtime(), device=CPU, features=features)
    assert compute.precision == precision and compute.reasons[0] == f"precision {precision}: {why}"


def test_auto_picks_channels_last_and_eager_and_explicit_choices_are_kept():
    auto = resolve(runtime(), device=CPU, features=frozenset())
    assert (auto.memory_format, auto.compile) == ("channels_last", False) and auto.format == torch.channels_last
    assert any(r.startswith("eager, not compiled: ") for r in auto.reasons)
    chosen = resolve(
        runtime(precision="bf16", memory_format="contiguous", compile=True), device=CPU, features=frozenset()
    )
    assert chosen == Compute(CPU, "bf16", "contiguous", True) and chosen.reasons == ()  # nothing left to explain
    assert chosen.describe() == f"cpu ({torch.get_num_threads()} threads), bf16, contiguous, compiled"
    assert chosen.record() == {"precision": "bf16", "memory_format": "contiguous", "compile": True}


def test_auto_keeps_fp32_for_an_architecture_bf16_costs_accuracy_and_an_explicit_bf16_is_kept():
    from pipeline import models

    assert not models.bf16_ok("googlenet") and models.bf16_ok("resnet18") and models.bf16_ok("torchvision:resnet18")
    auto = resolve(runtime(), device=CPU, features=frozenset({"avx512_bf16"}))
    assert auto.for_model("resnet18", True) is auto
    kept = auto.for_model("googlenet", False)
    assert kept.precision == "fp32" and kept.reasons == (
        "precision fp32 for googlenet: bf16 was measured to cost it accuracy",
    )
    asked = resolve(runtime(precision="bf16"), device=CPU, features=frozenset({"avx512_bf16"}))
    assert asked.for_model("googlenet", False).precision == "bf16"  # the user's own choice
    plain = resolve(runtime(), device=CPU, features=frozenset())
    assert plain.for_model("googlenet", False) is plain  # fp32 already


def test_bf16_autocasts_the_matrix_products_and_fp32_leaves_them_alone():
    layer = torch.nn.Linear(4, 3)
    with Compute(CPU, "bf16").autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with Compute(CPU, "fp32").autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def test_threads_set_the_cpu_threads_and_zero_means_every_core():
    before = torch.get_num_threads()
    try:
        choose_device("cpu", threads=1)
        assert torch.get_num_threads() == 1
        choose_device("cpu", threads=0, processes=1)
        assert torch.get_num_threads() == len(__import__("os").sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_this_cpus_features_are_the_ones_torch_or_linux_reports():
    found = cpu_features()
    assert found <= {"amx_bf16", "avx512_bf16"}
    if hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        assert ("avx512_bf16" in found) == torch.cpu._is_avx512_bf16_supported()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"precision": "fp16"}, "runtime.precision"),  # fp16 would need loss scaling: not offered
        ({"memory_format": "nhwc"}, "runtime.memory_format"),
        ({"compile": "yes"}, "runtime.compile"),
        ({"threads": -1}, "runtime.threads"),
        ({"threads": 10_000}, "runtime.threads"),
    ],
)
def test_bad_runtime_values_name_the_param(overrides, key):
    with pytest.raises(ParamError) as e:
        recipes.load(REPO / "params.yaml", {"runtime": overrides})
    assert e.value.key == key


def test_the_shipped_runtime_is_auto_everywhere():
    rp = recipes.load(REPO / "params.yaml").runtime
    assert (rp.precision, rp.memory_format, rp.compile, rp.threads) == ("auto", "auto", "auto", 0)
