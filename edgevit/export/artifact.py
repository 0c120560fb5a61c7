"""The exported artifact as an object, and the backend table.

Every backend module (``executorch.py``, ``tflite.py``, ``coreml.py``, ``onnx.py``) provides:

- ``SUFFIX``: the file (or package directory) suffix;
- ``PRECISIONS``: the precisions it exports, float first (quantized ones with the backend's own quantizer);
- ``export(model, example, path, precision, calib) -> dict``: quantize ``model`` if ``precision`` asks for it
  (calibrating on ``calib`` images when it is static), lower it for a fixed ``example`` input and write
  ``path`` atomically; returns export facts (delegation coverage, quantizer, op counts) for the manifest;
- ``load(path, threads) -> Callable[[np.ndarray], np.ndarray]``: a runner mapping one float32 image in the
  artifact's input layout (``[1, C, H, W]``, or ``[1, H, W, C]`` for an NHWC export) to ``[1, K]`` float32
  logits, or raise :class:`NotRunnable` saying why (Core ML's also takes ``compute_units``).

The input layout is the exporter's choice (``export(..., layout="NHWC")`` bakes an NCHW <- NHWC permute into the
graph); it is recorded in ``info["input_layout"]`` with ``info["input_shape"]``, so whoever runs the artifact
feeds it the right layout (:meth:`Artifact.feed`) and a wrong one is a clear error (:meth:`Artifact.load`).

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
LAYOUTS = ("NCHW", "NHWC")  # input layouts an export can take
COMPUTE_UNITS = ("ALL", "CPU_AND_GPU", "CPU_AND_NE", "CPU_ONLY")  # Core ML's (coremltools.ComputeUnit names)
DEFAULT_PRECISION = {"executorch": "fp32", "tflite": "fp32", "coreml": "fp16", "onnx": "fp32"}

Runner = Callable[[np.ndarray], np.ndarray]


class NotRunnable(Exception):
    """The artifact is valid but cannot execute on this host (e.g. Core ML off macOS)."""


class RunFailed(Exception):
    """The artifact's runtime crashed or failed while running it (e.g. on an emulated device); a parity failure."""


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """``[N, C, H, W]`` images in ``layout``: unchanged for ``NCHW``, ``[N, H, W, C]`` (contiguous) for ``NHWC``."""
    if layout not in LAYOUTS:
        raise EdgeVitError(f"unknown input layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "NCHW":
        return images
    return np.ascontiguousarray(np.moveaxis(np.asarray(images), 1, -1))  # [N, C, H, W] -> [N, H, W, C]


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

    @property
    def layout(self) -> str:
        """The input layout baked into the artifact: ``NCHW`` (the default), or ``NHWC``."""
        return self.info.get("input_layout", "NCHW")

    def feed(self, images: np.ndarray) -> np.ndarray:
        """``[N, C, H, W]`` images as this artifact takes them (``[N, H, W, C]`` for an NHWC artifact)."""
        return to_layout(images, self.layout)

    def load(self, threads: int = 1, compute_units: str | None = None) -> Runner:
        """A callable ``image -> [1, K] float32`` taking one image in the artifact's layout (:attr:`layout`:
        ``[1, C, H, W]``, or ``[1, H, W, C]`` for NHWC; :meth:`feed` converts); raises :class:`NotRunnable`
        off-platform. ``compute_units`` (Core ML only: ``ALL``, ``CPU_AND_GPU``, ``CPU_AND_NE``, ``CPU_ONLY``) is
        passed to ``MLModel``; None keeps Core ML's default.

        The runner raises EdgeVitError when an image's shape is not the exported input shape (naming both and the
        layout), instead of the runtime's own error or, worse, a silent reshape.
        """
        if not Path(self.path).exists():
            raise EdgeVitError(f"artifact not found: {self.path}")
        if compute_units is not None and compute_units not in COMPUTE_UNITS:
            raise EdgeVitError(
                f"unknown Core ML compute units {compute_units!r}; choose one of {', '.join(COMPUTE_UNITS)}"
            )
        extra = {"compute_units": compute_units} if compute_units and self.backend == "coreml" else {}
        return self.checked(backend_module(self.backend).load(Path(self.path), threads, **extra))

    def checked(self, runner: Runner) -> Runner:
        """``runner`` with its input checked against the exported input shape (when the manifest records it)."""
        shape = self.info.get("input_shape")
        if not shape:
            return runner
        want, layout, what = tuple(shape), self.layout, f"{self.backend} {self.precision} artifact {self.path}"

        def run(x: np.ndarray) -> np.ndarray:
            if tuple(np.shape(x)) != want:
                hint = ""
                if layout == "NHWC" and np.ndim(x) == 4 and np.shape(x)[1] == want[3]:
                    hint = "; this looks like NCHW: feed Artifact.feed(images) ([N, C, H, W] -> [N, H, W, C])"
                elif layout == "NCHW" and np.ndim(x) == 4 and np.shape(x)[3] == want[1]:
                    hint = "; this looks like NHWC: this artifact takes NCHW"
                raise EdgeVitError(
                    f"{what} takes {layout} input of shape {list(want)}; got shape {list(np.shape(x))}{hint}"
                )
            return runner(x)

        if hasattr(runner, "execution"):  # an emulator's runner says how it ran
            run.execution = runner.execution
        return run

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
