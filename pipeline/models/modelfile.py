"""A trained model on disk (models/<name>.pt): its weights together with everything needed to
rebuild and judge it, written by the train stage and read by evaluate, predict and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.common.atomic import torch_save
from pipeline.common.bounds import LIMITS, POLICIES, classes_problem
from pipeline.common.errors import ParamError, StageError
from pipeline.common.formats import read_json
from pipeline.models import inputs, weightsfile
from pipeline.models.inputs import IMAGENET, Normalization
from pipeline.models.registry import build, check_options, min_image_size, option_types

# Bumped whenever a model file's content changes meaning; a file of any other format is refused, by name.
# 4: meta.normalization, the inputs the weights were trained on. Format 3 files are read as
# ImageNet's, the only normalisation the code that wrote them had.
FORMAT = 4
READABLE = (3, 4)
# Bytes a model file may hold, on disk and unpacked: VGG-11, the zoo's largest, is 515 MB in fp32.
MAX_MODEL_BYTES = weightsfile.MAX_BYTES


def save(path: Path, model: nn.Module, *, name: str, options: dict, meta: dict[str, Any]) -> None:
    """Weights (on the CPU, so any machine can load them) plus the builder name and options, and in
    `meta` the normalisation the model's inputs took (models.inputs.of), which every consumer repeats."""
    state = {k: v.detach().cpu() for k, v in inputs.unwrap(model).state_dict().items()}
    meta = {**meta, "normalization": inputs.of(model).record()}
    torch_save({"format": FORMAT, "name": name, "options": options, "state_dict": state, "meta": meta}, path)


def read(path: Path) -> dict:
    """A model file's content, loaded as data only (`weights_only`: a file from a stranger cannot
    run code); StageError naming the file if it is missing, not a model file, or of another format."""
    if not Path(path).exists():
        raise StageError(f"{path}: no such model file")
    content = weightsfile.load(path, "model file", MAX_MODEL_BYTES, noun="a model file")
    if not isinstance(content, dict) or "state_dict" not in content:
        raise StageError(f"{path} is not a model file written by this project's train stage")
    if content.get("format") not in READABLE:
        raise StageError(
            f"{path} was written by another version of this code (model format {content.get('format', 'unknown')}, "
            f"this one reads {' and '.join(map(str, READABLE))}): train it again (dvc repro -f train)"
        )
    validate(content, path)
    return content


def validate(content: dict, path: Path) -> None:
    """A model file is a stranger's input: every field its loading uses is checked against the
    bounds params have (architecture, options, image size, resize policy, channels, classes), and
    its weights against the architecture it names (every tensor's name and shape, built on the meta
    device: no memory), before anything is allocated. StageError naming the file and the field."""

    def bad(field: str, value: Any, why: str) -> StageError:
        return StageError(f"{path}: {ParamError(field, value, why)} (a damaged or hostile model file)")

    name = content.get("name")
    if not _architecture(name):
        raise bad("name", name, "not an architecture of this code (python -m pipeline.check lists them)")
    options = content.get("options")
    if not isinstance(options, dict):
        raise bad("options", options, "must be a mapping of the builder's options")
    try:
        check_options(name, options, key="options")
    except ParamError as e:
        raise StageError(f"{path}: {e} (a damaged or hostile model file)") from None
    meta = content.get("meta")
    if not isinstance(meta, dict):
        raise bad("meta", meta, "must be a mapping")
    size, low, (high, _) = meta.get("image_size"), min_image_size(name), LIMITS["image_size"]
    if type(size) is not int or not low <= size <= high:
        raise bad(
            "meta.image_size", size, f"must be a whole number of pixels from {low} ({name}'s smallest) to {high:,}"
        )
    if meta.get("resize") not in POLICIES:
        raise bad("meta.resize", meta.get("resize"), f"must be one of {', '.join(POLICIES)}")
    if meta.get("channels") not in (1, 3) or type(meta.get("channels")) is not int:
        raise bad("meta.channels", meta.get("channels"), "must be 3 (RGB) or 1 (grey)")
    if problem := classes_problem(meta.get("classes")):
        raise bad("meta.classes", meta.get("classes"), problem)
    if content["format"] >= 4:
        try:
            Normalization.from_record(meta.get("normalization"), meta["channels"])
        except ValueError as e:
            raise bad("meta.normalization", meta.get("normalization"), str(e)) from None
    state = content["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise bad("state_dict", type(state).__name__, "must map parameter names to tensors")
    with torch.device("meta"):
        arguments = {**options, **({"pretrained": False} if "pretrained" in option_types(name) else {})}
        reference = build(
            name, num_classes=len(meta["classes"]), in_channels=meta["channels"], **arguments
        ).state_dict()
    built = {k: v.shape for k, v in reference.items()}
    missing, unexpected = sorted(built.keys() - state.keys()), sorted(state.keys() - built.keys())
    if missing or unexpected:
        said = "; ".join(
            f"{what} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise bad("state_dict", f"{len(state)} tensors", f"not the weights of {name} with these options ({said})")
    for key, shape in built.items():
        if state[key].shape != shape:
            raise bad(f"state_dict[{key!r}]", tuple(state[key].shape), f"must have {name}'s shape {tuple(shape)}")
    if why := weightsfile.problem(state, reference):
        raise bad("state_dict", f"{len(state)} tensors", f"not weights this code trains: {why}")


def _architecture(name: Any) -> bool:
    try:
        return isinstance(name, str) and option_types(name) is not None
    except ParamError:  # not a registered name
        return False


def load(
    path: Path, device: torch.device | str = "cpu", memory_format: torch.memory_format = torch.channels_last
) -> tuple[nn.Module, dict]:
    """Rebuild the architecture from its recorded options, classes and channels, and load the
    trained weights. Pretrained weights are not fetched again (`pretrained: false`): the file holds
    them. The network carries the normalisation the file records (models.inputs.of), and the meta
    returned says it too."""
    content = read(path)  # validated: every field below is in bounds and the weights fit
    options = dict(content["options"])
    if "pretrained" in option_types(content["name"]):
        options["pretrained"] = False
    meta = dict(content["meta"])
    meta["normalization"] = recorded(content).record()
    arguments = {"num_classes": len(meta["classes"]), "in_channels": meta["channels"], **options}
    with torch.device("meta"):  # no memory and no random initialisation for weights about to be replaced
        model = build(content["name"], **arguments)
    model.load_state_dict(content["state_dict"], assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # a tensor no state dict holds
        model = build(content["name"], **arguments)
        model.load_state_dict(content["state_dict"])
    model.to(device, memory_format=memory_format)
    inputs.attach(model, recorded(content))
    return model, {"name": content["name"], "options": content["options"], **meta}


def recorded(content: dict) -> Normalization:
    """The normalisation a (validated) model file's weights were trained with."""
    meta = content["meta"]
    if content["format"] < 4:
        return IMAGENET.for_channels(meta["channels"])
    return Normalization.from_record(meta["normalization"], meta["channels"])


def find(model: str | None, paths: dict[str, str]) -> Path:
    """The model file a command means: `model` as a path (an existing file, or anything ending in
    .pt), or a name under the pipeline's models folder (`paths`: dvc.yaml's vars); by default the
    leaderboard's best model (metrics.json's `best`)."""
    if model is not None and (model.endswith(".pt") or Path(model).is_file()):
        return Path(model)
    if not paths:
        raise StageError(
            "no dvc.yaml here to find the models folder: run from the project's folder, or give --model a model file"
        )
    folder = Path(paths["models"])
    if model is None:
        metrics = Path(paths["metrics"])
        if not metrics.is_file():
            raise StageError(f"no {metrics} to take the best model from: run `dvc repro`, or name one with --model")
        model = read_json(metrics)["best"]
    path = folder / f"{model}.pt"
    if not path.is_file():
        trained = sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
        raise StageError(
            f"no trained model {model!r} in {folder}/ (trained: {', '.join(trained) or 'none; run dvc repro'})"
        )
    return path
