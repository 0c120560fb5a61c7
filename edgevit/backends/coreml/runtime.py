"""Running a ``.mlpackage`` with Core ML (``MLModel.predict``), which needs macOS."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np

from edgevit.backends.base import NotRunnable, Runner
from edgevit.utils import require


def load(path: Path, threads: int, compute_units: str | None = None) -> Runner:
    """``MLModel.predict`` on macOS (``threads`` is not controllable in Core ML); NotRunnable elsewhere.

    ``compute_units``: a ``coremltools.ComputeUnit`` name (``ALL``, ``CPU_AND_GPU``, ``CPU_AND_NE``, ``CPU_ONLY``)
    for ``MLModel(..., compute_units=...)``; None: Core ML's default (``ALL``).
    """
    if platform.system() != "Darwin":
        raise NotRunnable(f"Core ML runtime needs macOS (this host is {platform.system()})")
    quiet_coremltools()
    ct = require("coremltools", "coreml")
    units = {} if compute_units is None else {"compute_units": ct.ComputeUnit[compute_units]}
    mlmodel = ct.models.MLModel(str(path), **units)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(mlmodel.predict({"image": x.astype(np.float32)})["logits"], dtype=np.float32)

    return run


def quiet_coremltools() -> None:
    """coremltools warns on import about untested torch/sklearn versions and missing macOS libraries."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
