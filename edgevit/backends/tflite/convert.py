"""Converting to a TFLite / LiteRT ``.tflite`` with litert-torch.

Precisions: ``fp32``; ``fp16`` (fp16 weights, fp32 compute: ai-edge-quantizer's float casting of the fp32
flatbuffer); ``int8`` (full-integer: litert-torch's PT2E quantizer, static int8 activations, int8 input and
output tensors); ``int8-dynamic`` (litert-torch's dynamic-range mode: int8 weights, activations quantized on
the fly). The runner hides int8 I/O: it quantises the float image with the input tensor's own scale/zero
point and dequantises the logits with the output's, so callers always pass and get float32.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.backends.tflite.quantizer import quantizer
from edgevit.backends.tflite.runtime import interpreter_class
from edgevit.quantize import PTQConfig, calibrate_pt2e, capture, is_quantized
from edgevit.utils import atomic_path, require


def convert(
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
        from litert_torch.quantize.quant_config import QuantConfig  # noqa: PLC0415 -- optional package

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
    from litert_torch import fx_infra  # noqa: PLC0415 -- optional package
    from litert_torch.backend import lowerings  # noqa: PLC0415

    ep = copy.deepcopy(ep)  # litert-torch edits the program in place; ``ep`` may be a capture shared with others
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
    from ai_edge_quantizer import algorithm_manager, qtyping  # noqa: PLC0415 -- optional package
    from ai_edge_quantizer import quantizer as aeq  # noqa: PLC0415

    q = aeq.Quantizer(bytearray(content))
    q.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
    )
    return bytes(q.quantize().quantized_model)
