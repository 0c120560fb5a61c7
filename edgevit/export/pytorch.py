"""A ``torch.export`` program (``.pt2``): how the int8 PT2E model is kept and re-checked in PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import EdgeVitError, atomic_path
from edgevit.export.artifact import Runner

SUFFIX = ".pt2"
PRECISIONS = ("fp32", "int8")


def export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """``torch.export.save`` of ``torch.export.export(model, (example,))``."""
    with atomic_path(path) as tmp:
        torch.export.save(torch.export.export(model, (example,)), str(tmp))
    return {"format": "torch.export"}


def load(path: Path, threads: int) -> Runner:
    """Load with ``torch.export.load`` and run eagerly with ``threads`` intra-op threads."""
    try:
        import torchao.quantization.pt2e  # noqa: F401  (registers the quantized_decomposed ops)
    except ImportError:
        pass
    try:
        module = torch.export.load(str(path)).module()
    except Exception as e:
        raise EdgeVitError(f"{path} is corrupt or not a torch.export program: {e}") from e
    torch.set_num_threads(threads)

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return run
