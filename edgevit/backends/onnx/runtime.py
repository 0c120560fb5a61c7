"""Running an ``.onnx`` with ONNX Runtime's CPU execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevit.backends.base import Runner
from edgevit.utils import require


def load(path: Path, threads: int, compute_units: str | None = None) -> Runner:
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
