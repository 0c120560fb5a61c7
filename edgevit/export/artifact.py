"""The exported artifact as an object, and the backend table.

Every backend module (``executorch.py``, ``tflite.py``, ``coreml.py``, ``onnx.py``) provides:

- ``SUFFIX``: the file (or package directory) suffix;
- ``PRECISIONS``: the precisions it exports, float first (quantized ones with the backend's own quantizer);
- ``export(model, example, path, precision, calib) -> dict``: quantize ``model`` if ``precision`` asks for it
  (calibrating on ``calib`` images when it is static), lower it for a fixed ``example`` input and write
  ``path`` atomically; returns export facts (delegation coverage, quantizer, op counts) for the manifest;
- ``load(path, threads) -> Callable[[np.ndarray], np.ndarray]``: a runner mapping a ``[1, C, H, W]``
  float32 image to ``[1, K]`` float32 logits, or raise :class:`NotRunnable` saying why.

Backend modules import their heavy library lazily and never import each other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit._utils import EdgeVitError

BACKENDS = ("executorch", "tflite", "coreml", "onnx")  # the phone-facing targets
DEFAULT_PRECISION = {"executorch": "fp32", "tflite": "fp32", "coreml": "fp16", "onnx": "fp32"}

Runner = Callable[[np.ndarray], np.ndarray]


class NotRunnable(Exception):
    """The artifact is valid but cannot execute on this host (e.g. Core ML off macOS)."""


class RunFailed(Exception):
    """The artifact's runtime crashed or failed while running it (e.g. on an emulated device); a parity failure."""


def backend_module(name: str):
    """The module implementing backend ``name``."""
    if name not in BACKENDS:
        raise EdgeVitError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"edgevit.export.{name}")


@dataclass
class Artifact:
    """One exported model file: which backend and precision it is for, and where it lives."""

    backend: str
    precision: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    def load(self, threads: int = 1) -> Runner:
        """A callable ``[1, C, H, W] float32 -> [1, K] float32``; raises :class:`NotRunnable` off-platform."""
        if not Path(self.path).exists():
            raise EdgeVitError(f"artifact not found: {self.path}")
        return backend_module(self.backend).load(Path(self.path), threads)

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """A JSON-able record; ``path`` relative to ``root`` when given."""
        d = asdict(self)
        d["path"] = str(Path(self.path).relative_to(root)) if root else str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], root: Path | None = None) -> Artifact:
        """Inverse of :meth:`to_json`."""
        path = Path(d["path"])
        return cls(d["backend"], d["precision"], root / path if root else path, d.get("info", {}))
