"""Running a ``.tflite`` with the LiteRT interpreter (XNNPACK delegate on by default); float32 in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevit.backends.base import Runner, TensorIO
from edgevit.utils import EdgeVitError


def interpreter_class():
    """LiteRT's ``Interpreter`` (``ai_edge_litert``), falling back to ``tflite_runtime``."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 -- optional package
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # noqa: PLC0415
        except ImportError as e:
            raise EdgeVitError(
                "no LiteRT runtime: install it with `pip install 'edgevit[tflite]'` (ai-edge-litert)"
            ) from e
    return Interpreter


def io_tensors(path: Path) -> tuple[TensorIO, TensorIO]:
    """The ``.tflite``'s input and output element types and quantization, read from the interpreter."""
    interp = interpreter_class()(model_path=str(path))

    def io(detail: dict) -> TensorIO:
        dtype = np.dtype(detail["dtype"]).name
        if not np.issubdtype(detail["dtype"], np.integer):
            return TensorIO(dtype)
        scale, zero = detail["quantization"]
        return TensorIO(dtype, float(scale), int(zero))

    return io(interp.get_input_details()[0]), io(interp.get_output_details()[0])


def load(path: Path, threads: int, compute_units: str | None = None) -> Runner:
    """A LiteRT interpreter (XNNPACK delegate on by default) with ``threads`` threads; float32 in and out."""
    interp = interpreter_class()(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    quantized_in = np.issubdtype(inp["dtype"], np.integer)
    quantized_out = np.issubdtype(out["dtype"], np.integer)

    def run(x: np.ndarray) -> np.ndarray:
        if quantized_in:  # the model's own input scale/zero point: q = round(x / s) + z, saturated
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max)
        interp.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if quantized_out:
            return ((y.astype(np.float32) - out_zero) * out_scale).astype(np.float32)
        return y.astype(np.float32)

    return run
