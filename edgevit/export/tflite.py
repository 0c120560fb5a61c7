"""TFLite / LiteRT ``.tflite`` via litert-torch, run with the LiteRT interpreter.

Precisions: ``fp32``; ``fp16`` (fp16 weights, fp32 compute: ai-edge-quantizer's float casting of the fp32
flatbuffer); ``int8`` (full-integer: litert-torch's PT2E quantizer, static int8 activations, int8 input and
output tensors); ``int8-dynamic`` (litert-torch's dynamic-range mode: int8 weights, activations quantized on
the fly). The runner hides int8 I/O: it quantises the float image with the input tensor's own scale/zero
point and dequantises the logits with the output's, so callers always pass and get float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import EdgeVitError, atomic_path, require
from edgevit.export.artifact import Runner
from edgevit.quantize import PTQConfig

SUFFIX = ".tflite"
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")


def quantizer(precision: str):
    """litert-torch's PT2E quantizer: int8 symmetric per-channel weights, static or dynamic int8 activations."""
    require("litert_torch", "tflite")
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    dynamic = precision == "int8-dynamic"
    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))


def export(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    precision: str = "fp32",
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
) -> dict[str, Any]:
    """Convert with ``litert_torch.convert`` (quantizing first for int8 precisions) and write the flatbuffer.

    The input stays NCHW, as in PyTorch (litert-torch inserts the layout transposes).
    """
    litert_torch = require("litert_torch", "tflite")
    litert_torch.config.show_progress = False
    info: dict[str, Any] = {"converter": f"litert-torch {getattr(litert_torch, '__version__', '?')}"}
    if precision.startswith("int8"):
        from litert_torch.quantize.quant_config import QuantConfig

        from edgevit.quantize import calibrate_pt2e, capture, is_quantized

        q = quantizer(precision)
        if is_quantized(model):  # already converted (QAT): lower it as it is
            graph = model
        else:
            graph = calibrate_pt2e(capture(model, example), q, calib, "tflite", False, fold_quantize=False, config=ptq)
        content = litert_torch.convert(graph, (example,), quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
        info.update(
            quantizer="litert_torch PT2EQuantizer",
            **(ptq or PTQConfig()).describe(),
            calib_images=0 if calib is None else len(calib),
        )
    else:
        content = litert_torch.convert(model.eval(), (example,)).model_content()
        if precision == "fp16":
            content = _fp16_weights(content)
            info.update(quantizer="ai_edge_quantizer float_casting")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(bytes(content))
    interp = interpreter_class()(model_path=str(path))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    info.update(input_dtype=np.dtype(inp["dtype"]).name, output_dtype=np.dtype(out["dtype"]).name)
    return info


def unsupported(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """Nodes litert-torch has no lowering for, after the pre-convert and pre-lower decompositions it runs."""
    require("litert_torch", "tflite")
    from litert_torch import fx_infra
    from litert_torch.backend import lowerings

    ep = fx_infra.safe_run_decompositions(ep, fx_infra.decomp.pre_convert_decomp(), can_skip=False)
    ep = fx_infra.safe_run_decompositions(ep, fx_infra.decomp.pre_lower_decomp())
    return [
        n
        for n in ep.graph.nodes
        if n.op == "call_function"
        and isinstance(n.target, torch._ops.OpOverload)
        and lowerings.lookup(n.target) is None
    ]


def _fp16_weights(content: bytes) -> bytes:
    """Store every float weight as fp16 (dequantised to fp32 at load): ai-edge-quantizer's float casting."""
    require("ai_edge_quantizer", "tflite")
    from ai_edge_quantizer import algorithm_manager, qtyping
    from ai_edge_quantizer import quantizer as aeq

    q = aeq.Quantizer(bytearray(content))
    q.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
    )
    return bytes(q.quantize().quantized_model)


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
