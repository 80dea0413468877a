"""Model files: they rebuild the very model that was trained, refuse any other format by name, and
are found by a name, a path or the leaderboard's best."""

import json

import pytest
import torch

from pipeline.common.errors import StageError
from pipeline.models import modelfile
from pipeline.params import recipes
from pipeline.runtime.inference import probabilities
from pipeline.training.fit import fit
from tests.helpers import toy_split


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = recipes.load(overrides={"model": "alexnet_bn", "train": {"epochs": 1, "batch_size": 16}}).models[0]
    model, summary = fit(spec, toy_split(32, size=72), toy_split(16, size=72, seed=1), classes=2)
    path = tmp_path_factory.mktemp("models") / "alexnet_bn.pt"
    meta = {**summary, "image_size": 72, "resize": "crop", "channels": 3, "classes": ["cat", "dog"]}
    modelfile.save(path, model, name=spec.name, options=spec.options, meta=meta)
    return path, model


def test_a_model_file_rebuilds_the_same_model(trained):
    path, model = trained
    loaded, meta = modelfile.load(path)
    val = toy_split(16, size=72, seed=2)
    torch.testing.assert_close(probabilities(loaded, val, 8), probabilities(model, val, 8), rtol=0, atol=0)
    assert meta["name"] == "alexnet_bn" and meta["kept_epoch"] == 1 and meta["classes"] == ["cat", "dog"]


def test_a_model_file_of_another_format_is_refused_by_name(trained, tmp_path):
    content = torch.load(trained[0], weights_only=True)
    for written in (2, 5, None):
        older = (
            {**content, "format": written}
            if written is not None
            else {k: v for k, v in content.items() if k != "format"}
        )
        torch.save(older, tmp_path / "old.pt")
        with pytest.raises(
            StageError,
            match=rf"old.pt was written by another version of this code \(model format "
            rf"{written if written is not None else 'unknown'}, this one reads 3 and 4\)",
        ):
            modelfile.read(tmp_path / "old.pt")


def test_a_model_is_found_by_path_by_name_or_as_the_best(trained, tmp_path):
    path, _ = trained
    paths = {"models": str(path.parent), "metrics": str(tmp_path / "metrics.json")}
    assert modelfile.find(str(path), {}) == path
    assert modelfile.find("alexnet_bn", paths) == path
    with pytest.raises(StageError, match="no metrics.json to take the best model from"):
        modelfile.find(None, {**paths, "metrics": "metrics.json"})
    (tmp_path / "metrics.json").write_text(json.dumps({"best": "alexnet_bn"}))
    assert modelfile.find(None, paths) == path
    with pytest.raises(StageError, match=r"no trained model 'vgg11' in .*/ \(trained: alexnet_bn\)"):
        modelfile.find("vgg11", paths)
