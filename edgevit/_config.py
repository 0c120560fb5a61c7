"""The one base of every config section: unknown keys are errors (a typo never silently does nothing)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown keys; recipe sections and device profiles derive from it."""

    model_config = ConfigDict(extra="forbid")
