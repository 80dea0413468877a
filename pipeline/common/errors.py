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
    text = repr(value)
    return text if len(text) <= QUOTED else f"{text[:QUOTED]}… ({len(text):,} characters)"
