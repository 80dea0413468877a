"""The failures a user can act on. Every stage's CLI turns them into one `error:` line and exit status 2
(pipeline.cli.run); anything else is a bug and keeps its traceback."""

from __future__ import annotations

from typing import Any


class StageError(RuntimeError):
    """A failure the user can act on (missing data, network, weights); its message says what to do."""


class ParamError(StageError):
    """A bad value in params.yaml; the message names the dotted key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {quoted(value)}: {allowed}")


QUOTED = 200  # characters of a value an error message quotes: a huge value must not make a huge message


def quoted(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 600:  # repr of an int past 4,300 digits is itself an error
        return f"a whole number of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # a list nested a thousand deep, a huge int inside one
        return f"a {type(value).__name__} too large to quote"
    return text if len(text) <= QUOTED else f"{text[:QUOTED]}… ({len(text):,} characters)"
