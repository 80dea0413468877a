"""On real photos (the 1,000-photo Kaggle sample, when it sits beside the repository): the shipped
recipe really learns. Split, preprocess and train are the stages' own functions; only the size of
the run is smaller than a user's."""

from dataclasses import replace

import pytest
import torch

from pipeline import preprocess, split
from pipeline.evaluation.metrics import wilson_interval
from pipeline.params import recipes
from pipeline.runtime.tensors import load_split
from pipeline.training.fit import fit
from tests.helpers import REPO

pytestmark = pytest.mark.slow  # `pytest -m 'not slow'` leaves these out of a quick loop


def test_the_shipped_recipe_learns_on_real_photos_in_a_few_epochs(sample_archive, tmp_path):
    p = recipes.load(REPO / "params.yaml", {"model": "resnet18", "data": {"image_size": 64}, "train": {"epochs": 8}})
    data = replace(p.data, source=str(sample_archive))
    summary = split.split(sample_archive, tmp_path / "split", data, workers=2)
    assert summary["images"]["val"] == {"cat": 50, "dog": 50}
    preprocess.preprocess(
        sample_archive, tmp_path / "split", tmp_path / "data", image_size=64, resize=data.resize, channels=3, workers=2
    )
    train, val = (load_split(tmp_path / "data", name, torch.device("cpu")) for name in ("train", "val"))

    rows = []
    _, result = fit(p.models[0], train, val, classes=2, log=lambda epoch, row: rows.append(row))
    correct = round(result["val"]["accuracy"] * len(val))
    # Chance is 0.5. The whole 95% interval must lie clearly above it: a model that guessed, or learnt
    # one class, would land inside it; a model that learns reaches about 0.7 here.
    assert wilson_interval(correct, len(val))[0] > 0.55, rows
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
