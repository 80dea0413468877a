"""Presets as data: a named, partial params.yaml (presets/<name>.yaml) turned into the `-S` flags of
one `dvc exp run`, checked against params.yaml first. The command is `python -m pipeline.preset`;
the learning-curve grid (`pipeline.grid`) queues its cells through it."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.common import schema
from pipeline.common.errors import ParamError, StageError
from pipeline.params import recipes, sections

PRESETS = Path("presets")
# what a -S value may hold: the command runs without a shell, but a user pastes the printed one into one
SAFE_VALUE = re.compile(r"[\w.:/+,\[\]-]+")


def preset_file(name: str, folder: Path = PRESETS) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise StageError(f"no preset {name!r}: {path} does not exist; presets here: {', '.join(known) or 'none'}")
    return path


def read(path: Path) -> dict:
    """A preset file, read as strictly as params.yaml (size cap, UTF-8, no aliases or repeated keys)."""
    return schema.read(path)


def nest(flat: Mapping[str, Any]) -> dict:
    """The inverse of `flatten`."""
    tree: dict = {}
    for dotted, value in flat.items():
        *path, last = dotted.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def flag_value(key: str, value: Any) -> str:
    """A value as `-S` writes it: YAML in flow style, one word (so the printed command pastes as is)."""

    def word(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(word(item) for item in v) + "]"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    text = word(value)
    if not SAFE_VALUE.fullmatch(text) or yaml.safe_load(text) != (list(value) if isinstance(value, tuple) else value):
        raise ParamError(key, value, "a preset value must be one word (no spaces or quotes) that reads back as itself")
    return text


def user_overrides(extra: list[str]) -> dict[str, Any]:
    """The `-S key=value` flags among the arguments for dvc, as dotted keys → YAML values (as DVC reads them)."""
    found = {}
    for flag, value in zip(extra, extra[1:]):
        if flag in ("-S", "--set-param") and "=" in value:
            key, _, text = value.partition("=")
            found[key.split(":")[-1]] = schema.loads(text, key)  # `file:key=value` names params.yaml's key too
    return found


def command(preset: dict, extra: list[str], base: Path = sections.PARAMS_FILE) -> list[str]:
    """`dvc exp run` with the preset's flags and `extra`, once params.yaml with all of them applied is valid."""
    mine, theirs = schema.flatten(preset), user_overrides(extra)
    recipes.load(base, nest({**mine, **theirs}))  # raises ParamError naming the key
    flags = [
        arg for key, value in mine.items() if key not in theirs for arg in ("-S", f"{key}={flag_value(key, value)}")
    ]
    return ["dvc", "exp", "run", *flags, *extra]


def carried_over(setting: set[str], base: Path = sections.PARAMS_FILE) -> list[str]:
    """`key: committed → now` for each value params.yaml holds that differs from the last commit's
    and that this experiment does not set itself: after `dvc exp run`, DVC leaves the experiment's
    values in the workspace, and the next experiment starts from them (an earlier
    `evaluate.eval_mode=false` would quietly evaluate the next one without eval mode). [] outside git."""
    try:
        committed = subprocess.run(
            ["git", "show", f"HEAD:{base.as_posix()}"], capture_output=True, text=True, timeout=30
        )
        if committed.returncode != 0:
            return []
        before, now = (
            schema.flatten(schema.loads(committed.stdout, "params file", f"HEAD:{base}") or {}),
            schema.flatten(read(base)),
        )
    except (OSError, subprocess.SubprocessError, yaml.YAMLError, StageError):
        return []
    return [
        f"{k}: {before.get(k)!r} → {now.get(k)!r}"
        for k in sorted(before.keys() | now.keys())
        if before.get(k) != now.get(k) and k not in setting
    ]
