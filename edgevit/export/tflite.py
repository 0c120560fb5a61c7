"""TFLite / LiteRT ``.tflite`` (fp32) via litert-torch, run with the LiteRT interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import EdgeVitError, atomic_path, require
from edgevit.export.artifact import Runner

SUFFIX = ".tflite"
PRECISIONS = ("fp32",)


def export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Convert with ``litert_torch.convert(model.eval(), (example,))`` and write the flatbuffer.

    The input stays NCHW float32, as in PyTorch (litert-torch inserts the layout transposes).
    """
    litert_torch = require("litert_torch", "tflite")
    litert_torch.config.show_progress = False
    edge_model = litert_torch.convert(model.eval(), (example,))
    with atomic_path(path) as tmp:
        edge_model.export(str(tmp))
    return {"converter": f"litert-torch {getattr(litert_torch, '__version__', '?')}"}


def interpreter_class():
    """LiteRT's ``Interpreter`` (``ai_edge_litert``), falling back to ``tflite_runtime``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as e:
            raise EdgeVitError(
                "no LiteRT runtime: install it with `pip install 'edgevit[tflite]'` (ai-edge-litert)"
            ) from e
    return Interpreter


def load(path: Path, threads: int) -> Runner:
    """A LiteRT interpreter (XNNPACK delegate on by default) with ``threads`` threads."""
    interp = interpreter_class()(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
        interp.invoke()
        return interp.get_tensor(out["index"]).astype(np.float32)

    return run
