"""The one base of every config section: unknown keys are errors (a typo never silently does nothing)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown keys; recipe sections and device profiles derive from it."""

    model_config = ConfigDict(extra="forbid")


def key_path(loc: Iterable) -> str:
    """A pydantic error location as a dotted key path for messages: ``train.optimizer.name``; a key that is not
    printable on one line (a newline, a tab) is shown quoted, so the message stays one line."""
    return ".".join(str(p) if str(p).isprintable() else repr(p) for p in loc)
