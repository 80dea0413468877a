"""The curves the train stage logs: one row per model and epoch, written through DVCLive to one
table, dvclive/plots/custom/epochs.json, which dvc.yaml's charts and the report read.

One table for every model is what lets one chart of dvc.yaml's `plots:` draw them all, whichever
models `model` selects. Both losses are plain log loss: train's on the augmented batches in train
mode, val's on the clean validation images in eval mode.
"""

from __future__ import annotations

from pathlib import Path

EPOCHS = "epochs"  # the table's name, a DVCLive custom plot
CURVES = (
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "train_loss_spread",
)  # beside `model` and `epoch` (from 1)


def epochs_file(live: Path) -> Path:
    """Where DVCLive writes the table under the train stage's `live` folder: a JSON list of rows
    {model, epoch (from 1), train_loss, train_accuracy, val_loss, val_accuracy, lr, train_loss_spread}
    (the step-to-step spread of the batches' loss: training.fit.StepSpread)."""
    return Path(live) / "plots" / "custom" / f"{EPOCHS}.json"


class EpochLog:
    """Every model's rows, rewritten through DVCLive after each epoch, so the table can be watched
    during a run. `live` is a dvclive.Live."""

    def __init__(self, live):
        self.live = live
        self.rows: list[dict] = []

    def add(self, name: str, epoch: int, row: dict) -> None:
        self.rows.append({"model": name, "epoch": epoch + 1, **row})
        self.live.log_plot(EPOCHS, self.rows, x="epoch", y="val_accuracy", template="by_model")


def epoch_line(name: str, epoch: int, epochs: int, row: dict, images_per_second: float) -> str:
    """`    resnet18 epoch 3/12: loss 0.4123 acc 0.812 | val loss 0.3990 acc 0.830 | 140 img/s`"""
    train = f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}"
    val = f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}"
    return f"{name:>12s} epoch {epoch + 1}/{epochs}: {train} | {val} | {images_per_second:.0f} img/s"
