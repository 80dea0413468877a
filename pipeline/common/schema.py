"""A YAML mapping checked against a dataclass: every key known, every value of its declared type.

Generic: it knows nothing of this project's sections (pipeline.params.sections) or models (pipeline.models),
so both can use it without importing each other. Errors are ParamErrors naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.common import files
from pipeline.common.errors import ParamError, StageError


class StrictLoader(yaml.SafeLoader):
    """YAML's safe subset, less two things a params file never needs: aliases (`*name`: a
    600-byte file of nested ones expands to gigabytes) and a key given twice (the last one would
    silently win)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a params file", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if (
                not isinstance(key, (str, int, float, bool)) and key is not None
            ):  # `? [a, b]`: no param is named by a list
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name, not a {type(key).__name__}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


# Bytes a params file may hold: params.yaml is about 10 kB with its comments, a preset under 2 kB. A
# bigger file (3 million keys) would take minutes and gigabytes to parse before a key was checked.
MAX_PARAMS_BYTES = 1 << 20


def read(path: Path) -> dict:
    """A params file as a mapping of sections; a missing file, anything but a regular file, one over
    MAX_PARAMS_BYTES, text that is not UTF-8 or bad YAML (aliases and repeated keys included) is a ParamError."""
    try:
        data = files.read_bytes(path, "the file", MAX_PARAMS_BYTES)
    except files.TooLarge:
        size = Path(path).stat().st_size
        raise ParamError(
            "params file",
            str(path),
            f"is {size:,} bytes, more than a params file needs ({MAX_PARAMS_BYTES:,} bytes at most): is it the right "
            "file?",
        ) from None
    except files.NotRegular as e:
        raise ParamError(
            "params file", str(path), f"{str(e).removeprefix(f'the file {path} ')}: give a params file"
        ) from None
    except StageError as e:
        if not Path(path).exists():
            raise ParamError("params file", str(path), "not found: run from the repository root") from None
        raise ParamError("params file", str(path), str(e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamError(
            "params file", str(path), f"is not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})"
        ) from None
    raw = loads(text, "params file", str(path)) or {}
    if not isinstance(raw, dict):
        raise ParamError("params file", str(path), "must be a mapping of sections")
    return raw


def loads(text: str, key: str, value: str | None = None) -> Any:
    """YAML text read as strictly as a params file (no aliases, no repeated or non-name keys, at most
    MAX_PARAMS_BYTES, no numbers Python refuses, bounded nesting); its faults are ParamErrors on `key`."""
    value = text if value is None else value
    if len(text) > MAX_PARAMS_BYTES:
        raise ParamError(
            key, value, f"is {len(text):,} characters, more than a params file needs ({MAX_PARAMS_BYTES:,} at most)"
        )
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as e:
        raise ParamError(key, value, f"is not valid YAML: {' '.join(str(e).split())[:300]}") from None
    except ValueError as e:  # an integer of more than 4,300 digits: Python refuses to convert it
        raise ParamError(
            key, value, f"holds a number Python will not read ({' '.join(str(e).split())[:120]})"
        ) from None
    except RecursionError:
        raise ParamError(key, value, "is nested too deeply to be a params file") from None


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 8}} → {"train.epochs": 8}: the dotted keys `dvc exp run -S` takes; a list
    (or an empty mapping) is one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def merge(base: Mapping, overrides: Mapping) -> dict:
    """Nested dict update: overrides win, sections merge key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_section(cls, raw: Any, section: str):
    """Build a section dataclass from a mapping: every key known, every value of its declared type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamError(section, raw, "must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    no_unknown_keys(section, raw, fields)
    values = {}
    for name, f in fields.items():
        key = f"{section}.{name}"
        if name in raw:
            values[name] = coerce(key, raw[name], hints[name])
        elif f.default is dataclasses.MISSING:
            raise ParamError(key, None, "is missing from params.yaml")
    try:
        return cls(**values)
    except ParamError as e:
        prefix, _, rest = e.key.partition(".")
        if rest and prefix != section:  # a train key checked under models.<name>: name where it came from
            raise ParamError(f"{section}.{rest}", e.value, e.allowed) from None
        raise


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against a type hint; numbers written as strings (YAML reads 1e-3 as a string) become floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(key, value, option)
            except ParamError as e:
                errors.append(e.allowed)
        raise ParamError(key, value, " or ".join(errors) + (" or null" if type(None) in args else ""))
    if origin is Literal:
        if value in args:
            return value
        raise ParamError(key, value, f"use one of {', '.join(map(str, args))}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ParamError(key, value, "must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParamError(key, value, "must be a whole number")
    if hint is float:
        number = None
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str) and len(value) <= 100:  # float() of a 10-MB string of digits takes seconds
                number = float(value)
        except (ValueError, OverflowError):  # an int past float's range (1.8e308) is too large to be a number here
            number = math.inf if isinstance(value, int) else None
        if number is None:
            raise ParamError(key, value, "must be a number")
        if not math.isfinite(number):  # .nan and .inf are YAML floats; no param means them
            raise ParamError(key, value, "must be a finite number")
        return number
    if hint is str:
        if isinstance(value, str):
            if "\0" in value:  # no path or name holds one, and the OS refuses it with a ValueError
                raise ParamError(key, value, "must not contain a NUL character")
            return value
        raise ParamError(key, value, "must be a string")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParamError(key, value, "must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ParamError(key, value, f"must be a list of {len(args)} values")
            return tuple(coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    raise TypeError(f"{key}: unsupported type hint {hint!r}")


def no_unknown_keys(section: str, raw: Mapping, known) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        where = "" if section == "params.yaml" else f"{section}."
        raise ParamError(
            f"{where}{unknown[0]}", raw[unknown[0]], f"unknown key; known keys here: {', '.join(sorted(known))}"
        )


def asdict(section) -> dict:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
