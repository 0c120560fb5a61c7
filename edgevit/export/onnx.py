"""ONNX ``.onnx`` (fp32) via the ``torch.onnx`` dynamo exporter, run with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import atomic_path, require
from edgevit.export.artifact import Runner

SUFFIX = ".onnx"
PRECISIONS = ("fp32",)


def export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Export with ``torch.onnx.export(..., dynamo=True)`` (opset from torch's default), input ``image``."""
    require("onnxscript", "onnx")
    onnx = require("onnx", "onnx")
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            model, (example,), input_names=["image"], output_names=["logits"], dynamo=True, verbose=False
        )
        program.save(str(tmp))
        onnx.checker.check_model(str(tmp))
    proto = onnx.load(str(path), load_external_data=False)
    return {"opset": proto.opset_import[0].version, "nodes": len(proto.graph.node)}


def load(path: Path, threads: int) -> Runner:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (inter-op 1)."""
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return run
