"""A trained model on disk (models/<name>.pt): its weights together with everything needed to
rebuild and judge it, written by the train stage and read by evaluate, predict and export."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.common.atomic import atomic_path
from pipeline.common.errors import StageError
from pipeline.common.formats import read_json
from pipeline.models.registry import build, option_types

# Bumped whenever a model file's content changes meaning; a file of any other format is refused, by name.
FORMAT = 3


def save(path: Path, model: nn.Module, *, name: str, options: dict, meta: dict[str, Any]) -> None:
    """Weights (on the CPU, so any machine can load them) plus the builder name and options."""
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "name": name, "options": options, "state_dict": state, "meta": meta}, tmp)


def read(path: Path) -> dict:
    """A model file's content, loaded as data only (`weights_only`: a file from a stranger cannot
    run code); StageError naming the file if it is missing, not a model file, or of another format."""
    if not Path(path).is_file():
        raise StageError(f"{path}: no such model file")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle it is about to refuse: the error says it
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, another format, a pickle that wants more than tensors
        raise StageError(f"{path} is not a model file this code can read ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(content, dict) or "state_dict" not in content:
        raise StageError(f"{path} is not a model file written by this project's train stage")
    if content.get("format") != FORMAT:
        raise StageError(
            f"{path} was written by another version of this code (model format {content.get('format', 'unknown')}, "
            f"this one reads {FORMAT}): train it again (dvc repro -f train)"
        )
    return content


def load(path: Path, device: torch.device | str = "cpu", memory_format: torch.memory_format = torch.channels_last) -> tuple[nn.Module, dict]:
    """Rebuild the architecture from its recorded options, classes and channels, and load the
    trained weights. Pretrained weights are not fetched again (`pretrained: false`): the file holds them."""
    content = read(path)
    options = dict(content["options"])
    if "pretrained" in option_types(content["name"]):
        options["pretrained"] = False
    meta = content["meta"]
    model = build(content["name"], num_classes=len(meta["classes"]), in_channels=meta["channels"], **options)
    model.load_state_dict(content["state_dict"])
    model.to(device, memory_format=memory_format)
    return model, {"name": content["name"], "options": content["options"], **meta}


def find(model: str | None, paths: dict[str, str]) -> Path:
    """The model file a command means: `model` as a path (an existing file, or anything ending in
    .pt), or a name under the pipeline's models folder (`paths`: dvc.yaml's vars); by default the
    leaderboard's best model (metrics.json's `best`)."""
    if model is not None and (model.endswith(".pt") or Path(model).is_file()):
        return Path(model)
    if not paths:
        raise StageError("no dvc.yaml here to find the models folder: run from the project's folder, or give --model a model file")
    folder = Path(paths["models"])
    if model is None:
        metrics = Path(paths["metrics"])
        if not metrics.is_file():
            raise StageError(f"no {metrics} to take the best model from: run `dvc repro`, or name one with --model")
        model = read_json(metrics)["best"]
    path = folder / f"{model}.pt"
    if not path.is_file():
        trained = sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
        raise StageError(f"no trained model {model!r} in {folder}/ (trained: {', '.join(trained) or 'none; run dvc repro'})")
    return path


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
