"""The train stage (pipeline.train): the model files carry what the preprocessed data says (its
size, channels, classes and resize policy: one source for each), the folders it writes are
checked before any training, and an earlier version's resume folder gets one clear line."""

import torch

from pipeline import train
from pipeline.common.errors import StageError
from pipeline.models import modelfile
from pipeline.models.inputs import IMAGENET
from pipeline.params import recipes
from tests.helpers import REPO, toy_split, write_processed


def test_the_image_size_classes_and_channels_come_from_the_preprocessed_data(tmp_path, capsys):
    # params.yaml says 224 px; the arrays, and their meta.json, say 32: what the model saw is 32
    data = write_processed(
        tmp_path / "processed", {"train": toy_split(32), "val": toy_split(16, seed=1)}, classes=("left", "right")
    )
    p = recipes.load(
        REPO / "params.yaml",
        {"model": "resnet18", "train": {"epochs": 1, "batch_size": 16}, "runtime": {"device": "cpu"}},
    )
    assert p.data.image_size == 224
    (tmp_path / "checkpoints").mkdir()  # an earlier version's resume folder, beside the new one
    summaries = train.train_all(p, data, tmp_path / "models", tmp_path / "dvclive", tmp_path / "resume")
    out = capsys.readouterr().out
    assert "train: 32 train / 16 val images of 2 classes (left, right) at 32 px on cpu" in out
    assert f"{tmp_path / 'checkpoints'}/ holds resume state of an earlier version, which is not read" in out
    model, meta = modelfile.load(tmp_path / "models" / "resnet18.pt")
    assert (meta["image_size"], meta["channels"], meta["classes"], meta["resize"]) == (32, 3, ["left", "right"], "crop")
    # the summary, and the normalisation its inputs took, which the model file adds (ImageNet's for the zoo)
    assert meta == {
        "name": "resnet18",
        "options": {"zero_init_residual": False},
        **summaries["resnet18"],
        "normalization": IMAGENET.record(),
    }
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["resnet18.pt", "resnet18.weights.pt"]
    copied, model_file = tmp_path / "resume" / "resnet18.weights.pt", tmp_path / "models" / "resnet18.pt"
    assert (
        copied.read_bytes() == model_file.read_bytes() and copied.stat().st_ino != model_file.stat().st_ino
    )  # a copy, never a link
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_a_folder_that_cannot_be_written_is_one_error_naming_it(tmp_path):
    (tmp_path / "a-file").write_text("")
    try:
        train.writable_folder(tmp_path / "a-file" / "resume", "the resume state")
    except StageError as e:
        assert str(e).startswith(f"{tmp_path / 'a-file' / 'resume'}: cannot write the resume state there (")
    else:
        raise AssertionError("no error")
