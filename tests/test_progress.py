"""Progress a person can watch: plain periodic lines in a log, a bar on a terminal, and training that
reports inside each epoch. (The time estimate printed before training: test_estimate.)"""

from __future__ import annotations

import io

from pipeline.common.progress import Progress, about, duration
from pipeline.params import recipes
from pipeline.training import fit as fitting
from pipeline.training.fit import fit
from tests.helpers import toy_split


class Clock:
    """A clock the test moves: `now` seconds since the start."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (0.4, 42, 185, 3599, 8400, 86400 * 3 + 4 * 3600)] == [
        "0 s",
        "42 s",
        "3 min 05 s",
        "59 min 59 s",
        "2 h 20 min",
        "3 d 04 h",
    ]
    assert about(0.3) == "under 1 s" and about(840) == "~14 min 00 s"


def test_in_a_log_progress_is_a_whole_line_every_30_seconds_with_rate_and_time_left():
    out, clock = io.StringIO(), Clock()
    with Progress(1000, "vgg11 epoch 3/12", file=out, clock=clock) as bar:
        for step in range(10):  # 100 images every 10 s: 10 img/s
            clock.now += 10
            bar.update(100, loss=0.5123 - step / 100)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and out.getvalue().endswith("\n")
    assert lines == [
        "vgg11 epoch 3/12: 300/1,000 img (30%), 10 img/s, 1 min 10 s left, loss 0.4923",  # at 30 s
        "vgg11 epoch 3/12: 600/1,000 img (60%), 10 img/s, 40 s left, loss 0.4623",  # at 60 s
        "vgg11 epoch 3/12: 900/1,000 img (90%), 10 img/s, 10 s left, loss 0.4323",  # at 90 s
    ]  # nothing at 100 s: the pass is over, and the stage prints its own summary


def test_a_resumed_download_counts_only_this_runs_bytes_for_its_speed():
    out, clock = io.StringIO(), Clock()
    bar = Progress(100 << 20, "train.zip", unit="B", initial=40 << 20, file=out, clock=clock)
    clock.now = 30
    bar.update(30 << 20)
    assert out.getvalue() == "train.zip: 70.0/100.0 MiB (70%), 1.0 MiB/s, 30 s left\n"


def test_on_a_terminal_it_is_a_tqdm_bar_and_disabled_it_prints_nothing():
    screen = Terminal()
    with Progress(10, "nin validation", file=screen) as bar:
        bar.update(5)
    assert "nin validation" in screen.getvalue() and "\r" in screen.getvalue()
    quiet, clock = io.StringIO(), Clock()
    with Progress(10, "rank 1", file=quiet, clock=clock, enabled=False) as bar:
        clock.now = 100
        bar.update(5)
    assert quiet.getvalue() == ""


def spec(epochs=2):
    return recipes.load(overrides={"model": "resnet18", "train": {"epochs": epochs, "batch_size": 16}}).models[0]


def test_training_reports_inside_every_epoch_and_validation_as_plain_lines(monkeypatch, capsys):
    # a line at every batch, so that a tiny run shows them (a log gets one every 30 s)
    monkeypatch.setattr(fitting, "Progress", lambda *a, **k: Progress(*a, **{**k, "every": 0.0}))
    fit(spec(), toy_split(48), toy_split(24, seed=1), classes=2)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    # 3 steps of 16 per epoch, 2 batches of validation: a line after each but the last (when the
    # stage prints the epoch's own summary line instead)
    assert [line.split(":")[0] for line in lines] == [
        "resnet18 epoch 1/2",
        "resnet18 epoch 1/2",
        "resnet18 validation",
        "resnet18 epoch 2/2",
        "resnet18 epoch 2/2",
        "resnet18 validation",
    ]
    assert lines[1].startswith("resnet18 epoch 1/2: 32/48 img (67%), ") and ", loss " in lines[1]
