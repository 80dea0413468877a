"""Training one model (training.fit): it learns, keeps the epoch `train.keep` asks for, is
deterministic on the CPU, resumes an interrupted run to the same weights, skips a model already
trained, and stops a diverging or out-of-memory run with what to change."""

import math
from pathlib import Path

import pytest
import torch

from pipeline.common.errors import StageError
from pipeline.params import recipes
from pipeline.runtime.device import Compute
from pipeline.runtime.distributed import World
from pipeline.training import estimate
from pipeline.training import fit as fitting
from pipeline.training.fit import fit
from pipeline.training.resume import ResumeFile
from tests.helpers import AUTO_PRECISION, toy_split


def spec(name="resnet18", **train):
    overrides = {"model": name, "train": {"epochs": 3, "batch_size": 16, "seed": 0, **train}}
    return recipes.load(overrides=overrides).models[0]


def states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # ResNet-18 trained for several epochs: seconds
def test_a_model_really_learns_and_keeps_its_best_validation_epoch():
    rows = []
    model, summary = fit(
        spec(keep="best"), toy_split(96), toy_split(32, seed=1), classes=2, log=lambda e, r: rows.append(r)
    )
    assert rows[-1]["lr"] < rows[0]["lr"]  # the cosine decays
    assert summary["val"]["accuracy"] >= 0.9
    assert summary["val"]["accuracy"] == max(r["val_accuracy"] for r in rows)
    assert summary["kept_epoch"] == 1 + [r["val_accuracy"] for r in rows].index(summary["val"]["accuracy"])
    assert summary["epochs"] == 3 and summary["images_per_second"] > 0
    assert summary["parameters"] == summary["trainable_parameters"] == 11_177_538
    assert all(math.isfinite(r["train_loss"]) for r in rows)


@pytest.mark.slow  # ResNet-18 trained for several epochs: seconds
def test_epoch_images_trains_a_small_set_for_more_steps_between_validations():
    rows = []
    one = spec(epochs=2, batch_size=8, epoch_images=64)  # 16 photos shown 4 times an epoch: 8 steps, not 2
    assert one.train.repeats(16) == 4 and one.train.repeats(64) == 1 and one.train.repeats(100) == 1
    _, summary = fit(one, toy_split(16), toy_split(8, seed=1), classes=2, log=lambda e, r: rows.append(r))
    assert len(rows) == 2  # two validations, one an epoch
    assert summary["images_per_second"] > 0 and estimate.steps_in_all(16 * 4, 8, 2) == 16
    assert fitting.Schedule.of(16 * one.train.repeats(16), 8, one.train).total == 16


class Scripted:
    """A step whose logits the test chooses: batch k's are `logits[k]` for every image (so the epoch's
    loss and accuracy are known by hand), its loss NaN at step `nan_at`; it counts the steps."""

    def __init__(self, logits: list[list[float]], nan_at: int = -1):
        self.logits, self.nan_at, self.calls = logits, nan_at, 0

    def __call__(self, runner, optimizer, criterion, x, y, tp, generator, compute):
        row = torch.tensor(self.logits[self.calls % len(self.logits)])
        loss = torch.tensor(float("nan") if self.calls == self.nan_at else 0.5)
        optimizer.step()
        self.calls += 1
        return loss, row.expand(len(y), -1)


def epoch_of(step, *, n=40, batch_size=8, repeats=1, first_step=0, average=None, lr=0.01):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 / (k + 1))  # rate lr / (step + 1)
    tp = spec(batch_size=batch_size).train
    return fitting.train_one_epoch(
        model,
        optimizer,
        scheduler,
        torch.nn.CrossEntropyLoss(),
        toy_split(n, size=8),
        tp=tp,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(0),
        compute=Compute(torch.device("cpu")),
        step_with=step,
        repeats=repeats,
        first_step=first_step,
        average=average,
    )


def test_one_epoch_returns_its_numbers_computed_by_hand():
    # 40 photos, half of each class, in batches of 8: 5 steps. Batches 0-2 say "class 0" with logits
    # (ln 3, 0): P = 3/4, so loss ln(4/3) on a class-0 photo, ln 4 on a class-1 photo; batches 3-4 say
    # nothing (0, 0): ln 2 on each. Accuracy: every batch right on its class-0 photos only (a tie is
    # argmax's first class): 20 of 40.
    sure, unsure = [math.log(3), 0.0], [0.0, 0.0]
    step = Scripted([sure, sure, sure, unsure, unsure])
    numbers = epoch_of(step)
    assert (numbers.steps, numbers.images, step.calls) == (5, 40, 5)
    zeros_in_first_three = sum(per_batch_zeros(40, 8, steps=3))
    ones_in_first_three = 24 - zeros_in_first_three
    loss = (zeros_in_first_three * math.log(4 / 3) + ones_in_first_three * math.log(4) + 16 * math.log(2)) / 40
    assert numbers.loss == pytest.approx(loss, rel=1e-5)
    assert numbers.accuracy == 0.5
    assert numbers.lr == pytest.approx(0.01 / 5)  # the last step's rate: lr / (4 + 1)
    # per-batch mean losses l_k; the spread is sqrt(mean of squared differences / 2)
    means = [(z * math.log(4 / 3) + (8 - z) * math.log(4)) / 8 for z in per_batch_zeros(40, 8, steps=3)]
    means += [math.log(2)] * 2
    diffs = [(b - a) ** 2 for a, b in zip(means, means[1:])]
    assert numbers.spread == pytest.approx(math.sqrt(sum(diffs) / len(diffs) / 2), rel=1e-5)


def per_batch_zeros(n, batch_size, *, steps, seed=0):
    """How many class-0 photos each of the first `steps` shuffled batches holds (batches() draws the order)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % 2
    return [int((labels[order[k * batch_size : (k + 1) * batch_size]] == 0).sum()) for k in range(steps)]


def test_one_epoch_shows_a_small_set_again_and_drops_a_partial_batch():
    step = Scripted([[0.0, 0.0]])
    numbers = epoch_of(step, n=12, batch_size=8, repeats=3)  # 36 images a pass: 4 full batches, 4 images dropped
    assert (numbers.steps, numbers.images, step.calls) == (4, 32, 4)


def test_one_epoch_names_the_first_non_finite_step_counted_over_the_run():
    with pytest.raises(fitting.NonFiniteLoss) as bad:
        epoch_of(Scripted([[0.0, 0.0]], nan_at=2), first_step=100)
    assert bad.value.step == 102  # the third step of an epoch that starts at step 100


def test_one_epoch_updates_the_moving_average_once_a_step():
    model = torch.nn.Linear(2, 2)
    average = torch.optim.swa_utils.AveragedModel(model)
    epoch_of(Scripted([[0.0, 0.0]]), average=(model, average))
    assert int(average.n_averaged) == 5


def test_training_is_deterministic_on_the_cpu():
    a, _ = fit(spec(epochs=1), toy_split(48), toy_split(16, seed=1), classes=2)
    b, _ = fit(spec(epochs=1), toy_split(48), toy_split(16, seed=1), classes=2)
    assert states_equal(a.state_dict(), b.state_dict())


@pytest.mark.slow  # ResNet-18 trained for several epochs: seconds
def test_an_interrupted_run_resumes_and_ends_with_the_same_weights(tmp_path):
    data, two = (toy_split(48), toy_split(16, seed=1)), spec(epochs=2)  # the cosine half-way down at the cut
    whole, whole_summary = fit(two, *data, classes=2, resume=ResumeFile(tmp_path / "whole.pt", "k"))

    def interrupt_in_epoch_2(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C after epoch 2 trained, before its state was saved

    with pytest.raises(KeyboardInterrupt):
        fit(two, *data, classes=2, log=interrupt_in_epoch_2, resume=ResumeFile(tmp_path / "cut.pt", "k"))
    logged = []
    resumed, summary = fit(
        two, *data, classes=2, log=lambda e, r: logged.append(e), resume=ResumeFile(tmp_path / "cut.pt", "k")
    )
    assert logged == [0, 1]  # epoch 1's curves replayed from the resume file, then epoch 2 trained again
    assert states_equal(resumed.state_dict(), whole.state_dict())
    assert summary["val"] == whole_summary["val"] and summary["kept_epoch"] == whole_summary["kept_epoch"]


def test_a_model_trained_with_the_same_key_is_not_trained_again(tmp_path, monkeypatch):
    data = toy_split(32), toy_split(16, seed=1)
    first, _ = fit(spec(epochs=1), *data, classes=2, resume=ResumeFile(tmp_path / "m.pt", "k"))
    assert torch.load(tmp_path / "m.pt", weights_only=True)["optimizer"] is None  # finished: no optimiser state kept

    def never(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(fitting, "train_step", never)
    again, _ = fit(spec(epochs=1), *data, classes=2, resume=ResumeFile(tmp_path / "m.pt", "k"))
    assert states_equal(again.state_dict(), first.state_dict())
    with pytest.raises(AssertionError, match="trained again"):  # another key (params or data changed): a fresh run
        fit(spec(epochs=1), *data, classes=2, resume=ResumeFile(tmp_path / "m.pt", "other"))
    with pytest.raises(AssertionError, match="trained again"):  # runtime.resume: false ignores the file
        fit(spec(epochs=1), *data, classes=2, resume=ResumeFile(tmp_path / "m.pt", "k", reuse=False))


@pytest.mark.slow  # ResNet-18 trained for several epochs: seconds
def test_a_nan_loss_stops_training_naming_model_epoch_and_step_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_augment = fitting.augment

    def poisoned(x, **kwargs):  # the 3rd batch of epoch 2 (3 batches of 16 per epoch) turns to NaN
        calls["n"] += 1
        out = real_augment(x, **kwargs)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(fitting, "augment", poisoned)
    with pytest.raises(StageError) as e:
        fit(spec(), toy_split(48), toy_split(16, seed=1), classes=2, resume=ResumeFile(tmp_path / "m.pt", "k"))
    message = str(e.value)
    assert message.startswith("resnet18: the training loss became NaN or infinite at epoch 2, step 3 of 3")
    assert "models.resnet18.lr_scale" in message and str(tmp_path / "m.pt") in message
    kept = torch.load(tmp_path / "m.pt", weights_only=True)
    assert len(kept["history"]) == 1  # epoch 1, the last good one
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_cuda_out_of_memory_names_the_batch_size_and_suggests_half(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fitting, "augment", oom)
    with pytest.raises(StageError) as e:
        fit(spec(batch_size=16), toy_split(48), toy_split(16, seed=1), classes=2)
    assert "resnet18: CUDA ran out of memory at batch size 16" in str(e.value)
    assert "models.resnet18.batch_size: 8" in str(e.value)
    p = recipes.load(overrides={"model": "resnet18", "train": {"batch_size": 16}})
    with pytest.raises(
        StageError, match="resnet18: CUDA ran out of memory at batch size 16"
    ):  # in the estimate, before training
        estimate.estimates(
            p, toy_split(48), toy_split(16, seed=1), Path("no-resume"), {"resnet18": "k"}, "cuda", World(), classes=2
        )


# ---------------------------------------------------------------- the precisions and compilation a GPU takes, run on
# the CPU

BF16 = Compute(torch.device("cpu"), "bf16")


LEARNING = dict(epochs=4)  # 4 epochs: resnet18's BatchNorm statistics settle by then on this toy task


@pytest.fixture(scope="module")
def fp32() -> dict:
    """The plain fp32 run the other precisions and layouts are compared with: trained once for all."""
    return fit(spec(**LEARNING), toy_split(96), toy_split(32, seed=1), classes=2)[1]


@pytest.mark.slow  # three runs of several epochs
@pytest.mark.parametrize(
    "compute", [BF16, Compute(torch.device("cpu"), "fp32", "contiguous")], ids=["bf16", "fp32-contiguous"]
)
def test_bf16_and_contiguous_steps_learn_as_fp32_does(compute, fp32):
    model, other = fit(spec(**LEARNING), toy_split(96), toy_split(32, seed=1), classes=2, compute=compute)
    assert fp32["val"]["accuracy"] >= 0.9 and other["val"]["accuracy"] >= 0.9  # the same band: the toy task learnt
    assert other["compute"] == compute.record() and fp32["compute"]["precision"] == "fp32"  # the model file says how
    assert all(p.dtype == torch.float32 for p in model.parameters())  # bf16 autocast keeps fp32 weights


@pytest.mark.slow  # two runs of several epochs
def test_an_interrupted_bf16_run_resumes_to_the_same_weights(tmp_path):
    data = toy_split(48), toy_split(16, seed=1)
    whole, _ = fit(spec(), *data, classes=2, compute=BF16, resume=ResumeFile(tmp_path / "whole.pt", "k"))

    def interrupt_in_epoch_2(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            spec(),
            *data,
            classes=2,
            compute=BF16,
            log=interrupt_in_epoch_2,
            resume=ResumeFile(tmp_path / "cut.pt", "k"),
        )
    resumed, _ = fit(spec(), *data, classes=2, compute=BF16, resume=ResumeFile(tmp_path / "cut.pt", "k"))
    assert states_equal(resumed.state_dict(), whole.state_dict())


@pytest.mark.slow  # torch.compile: tens of seconds of compiling, even for a small model
def test_a_compiled_run_learns_saves_plain_weights_and_resumes(tmp_path):
    # In the precision `auto` trains in here. NiN, not ResNet-18: what is tested is the compiled run's
    # bookkeeping, not an architecture. With an empty compile cache (CI's), alone on a core of a 2-core
    # Zen 3: ResNet-18 took 75 s in emulated bf16 and 54 s in fp32 on 2026-12-06; on 2026-12-07, a
    # slower day, ResNet-18 in fp32 took 75 s and NiN 48 s.
    compiled = Compute(torch.device("cpu"), AUTO_PRECISION, "channels_last", compile=True)
    data = toy_split(48, size=67), toy_split(16, size=67, seed=1)  # 67 px: NiN's smallest
    one = spec("nin", epochs=2)

    def interrupt_in_epoch_2(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            one, *data, classes=2, compute=compiled, log=interrupt_in_epoch_2, resume=ResumeFile(tmp_path / "m.pt", "k")
        )
    model, summary = fit(one, *data, classes=2, compute=compiled, resume=ResumeFile(tmp_path / "m.pt", "k"))
    assert summary["compute"]["compile"] is True and summary["kept_epoch"] == 2
    assert not any(
        key.startswith("_orig_mod") for key in model.state_dict()
    )  # the plain module's weights, loadable anywhere
    assert torch.isfinite(torch.stack([p.float().norm() for p in model.parameters()])).all()


def test_the_step_spread_is_the_noise_about_the_trend():
    spread = fitting.StepSpread(torch.device("cpu"))
    for loss in (1.0, 0.8, 1.0, 0.7):  # jumps -0.2, +0.2, -0.3
        spread.add(torch.tensor(loss))
    assert fitting.StepSpread.value(*spread.sums()) == pytest.approx(math.sqrt((0.04 + 0.04 + 0.09) / 3 / 2))
    steady = fitting.StepSpread(torch.device("cpu"))
    for loss in (1.0, 0.9, 0.8, 0.7):  # a falling loss without noise: standard deviation 0.13, spread 0.07
        steady.add(torch.tensor(loss))
    assert fitting.StepSpread.value(*steady.sums()) == pytest.approx(0.1 / math.sqrt(2))
    assert fitting.StepSpread.value(0.0, 0) == 0.0


@pytest.mark.slow  # ResNet-18 trained for several epochs: seconds
def test_each_epoch_logs_the_spread_of_its_steps_plain_log_loss(monkeypatch):
    losses = []  # each step's plain cross-entropy, recomputed from what the step returned
    real_step = fitting.train_step

    def recording(runner, optimizer, criterion, x, y, *rest):
        loss, logits = real_step(runner, optimizer, criterion, x, y, *rest)
        losses.append(torch.nn.functional.cross_entropy(logits, y).item())
        return loss, logits

    monkeypatch.setattr(fitting, "train_step", recording)
    rows = []
    fit(
        spec("resnet18", epochs=2, label_smoothing=0.1),
        toy_split(64),
        toy_split(16, seed=1),
        classes=2,
        log=lambda e, r: rows.append(r),
    )
    per_epoch = len(losses) // 2
    for row, epoch in zip(rows, (losses[:per_epoch], losses[per_epoch:])):
        jumps = [(b - a) ** 2 for a, b in zip(epoch, epoch[1:])]
        assert row["train_loss_spread"] == pytest.approx(math.sqrt(sum(jumps) / len(jumps) / 2), rel=1e-4)
