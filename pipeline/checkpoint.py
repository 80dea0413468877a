"""A trained model on disk: its weights together with everything needed to rebuild and judge it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import models
from pipeline.io import atomic_path


def save(path: Path, model: nn.Module, *, name: str, options: dict, meta: dict[str, Any]) -> None:
    """Weights (on the CPU, so any machine can load them) plus the builder name and options."""
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"name": name, "options": options, "state_dict": state, "meta": meta}, tmp)


def load(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the architecture from its recorded options and load the trained weights.

    Pretrained weights are not fetched again (`pretrained: false`): the checkpoint holds them.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    options = dict(ckpt["options"])
    if "pretrained" in models.option_types(ckpt["name"]):
        options["pretrained"] = False
    model = models.build(ckpt["name"], **options)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device, memory_format=torch.channels_last)
    return model, {"name": ckpt["name"], "options": ckpt["options"], **ckpt["meta"]}


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
