"""Reading JSON documents (``bundle.json``, ``cases.json``) with errors that name the key path that is wrong."""

from __future__ import annotations

import json
from typing import Any

from edgevit.utils import EdgeVitError


class KeyPathReader:
    """Typed access to a JSON document that names the key path in every error."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, path: str, why: str) -> EdgeVitError:
        return EdgeVitError(f"{self.where}: {path}: {why}")

    def get(self, obj: Any, key: str, path: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
        full = f"{path}.{key}" if path else key
        if not isinstance(obj, dict):
            raise self.fail(path or "(top level)", "must be a JSON object")
        if key not in obj:
            if required:
                raise self.fail(full, "missing required key")
            return None
        value = obj[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise self.fail(full, f"must be {_kind_name(kind)}, got {json.dumps(value)[:60]}")
        return value

    def enum(self, obj: Any, key: str, path: str, choices) -> str:
        value = self.get(obj, key, path, str)
        if value not in choices:
            raise self.fail(f"{path}.{key}" if path else key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def numbers(self, obj: Any, key: str, path: str, n: int, kind: type = float) -> list:
        values = self.get(obj, key, path, list)
        ok = (int, float) if kind is float else (int,)
        if len(values) != n or not all(isinstance(v, ok) and not isinstance(v, bool) for v in values):
            raise self.fail(f"{path}.{key}", f"must be {n} {'numbers' if kind is float else 'integers'}")
        return [kind(v) for v in values]


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    names[dict] = "an object"
    return " or ".join(names[k] for k in kind) if isinstance(kind, tuple) else names[kind]
