"""Core ML ``.mlpackage`` (ML Program, fp16 compute as is Core ML's default) via coremltools.

Conversion works on any OS; executing needs macOS (``MLModel.predict``). Off macOS, ``load`` raises
:class:`NotRunnable` so the parity report says so instead of dropping the artifact.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import atomic_path, require
from edgevit.export.artifact import NotRunnable, Runner

SUFFIX = ".mlpackage"
PRECISIONS = ("fp16",)


def export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Convert ``torch.export``'s program to an ML Program with fp16 compute; float32 ``image``/``logits`` I/O."""
    _quiet_coremltools()
    ct = require("coremltools", "coreml")
    ep = torch.export.export(model.eval(), (example,)).run_decompositions({})
    mlmodel = ct.convert(
        ep,
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=ct.target.iOS17,
        inputs=[ct.TensorType(name="image", shape=tuple(example.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
    )
    with atomic_path(path) as tmp:
        mlmodel.save(str(tmp))
    return {"compute_precision": "fp16", "minimum_deployment_target": "iOS17"}


def load(path: Path, threads: int) -> Runner:
    """``MLModel.predict`` on macOS (``threads`` is not controllable in Core ML); NotRunnable elsewhere."""
    if platform.system() != "Darwin":
        raise NotRunnable(f"Core ML runtime needs macOS (this host is {platform.system()})")
    _quiet_coremltools()
    ct = require("coremltools", "coreml")
    mlmodel = ct.models.MLModel(str(path))

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(mlmodel.predict({"image": x.astype(np.float32)})["logits"], dtype=np.float32)

    return run


def _quiet_coremltools() -> None:
    """coremltools warns on import about untested torch/sklearn versions and missing macOS libraries."""
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)
