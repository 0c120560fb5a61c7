"""Converting to a Core ML ``.mlpackage`` (ML Program, fp16 compute as is Core ML's default) with coremltools.

Precisions: ``fp16``; ``int8`` (W8A8: int8 weights and activations as Core ML quantize/dequantize ops);
``w8`` (weight-only int8, per channel), ``w4`` (weight-only int4, per block of 32) and ``w4-lut`` (4-bit
k-means palettisation), all with coremltools.optimize on the converted ML Program and fp16 compute.

Conversion works on any OS; executing needs macOS (``MLModel.predict``). Off macOS, ``load`` raises
:class:`NotRunnable`, and :meth:`edgevit.export.Artifact.load` runs the package in
:mod:`edgevit.backends.coreml.emulator` (a NumPy interpreter of the ML Program with per-op fp16 rounding) instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.backends.coreml.quantizer import quantizer
from edgevit.backends.coreml.runtime import quiet_coremltools
from edgevit.quantize import PTQConfig, calibrate_pt2e, capture
from edgevit.utils import atomic_path, require


def convert(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    precision: str = "fp16",
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
) -> dict[str, Any]:
    """Convert ``torch.export``'s program to an ML Program with fp16 compute (``fp32``: float32 compute, i.e.
    ``compute_precision=FLOAT32``, no fp16 casts); float32 ``image``/``logits`` I/O.

    ``int8`` calibrates a PT2E graph first; ``w8``/``w4``/``w4-lut`` compress the converted program's weights.
    """
    quiet_coremltools()
    ct = require("coremltools", "coreml")
    fp32 = precision == "fp32"
    info: dict[str, Any] = {"compute_precision": "fp32" if fp32 else "fp16"}
    if precision == "int8":
        model = calibrate_pt2e(capture(model, example), quantizer(precision), calib, "coreml", False, config=ptq)
        _fold_asymmetric_constants(model)
        info.update(
            quantizer="PT2E W8A8 (XNNPACKQuantizer scheme)", **(ptq or PTQConfig()).describe(), calib_images=len(calib)
        )
    target = ct.target.iOS18 if precision == "w4" else ct.target.iOS17  # per-block int4 needs iOS 18
    ep = torch.export.export(model, (example,))
    mlmodel = ct.convert(
        ep.run_decompositions({}),
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16,
        minimum_deployment_target=target,
        inputs=[ct.TensorType(name="image", shape=tuple(example.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
    )
    if precision in ("w8", "w4", "w4-lut", "sparse"):
        mlmodel = _compress_weights(mlmodel, precision)
        info.update(compression=precision)
    with atomic_path(path) as tmp:
        mlmodel.save(str(tmp))
    info.update(minimum_deployment_target=target.name, ops=op_counts(mlmodel))
    return info


def _fold_asymmetric_constants(gm: torch.fx.GraphModule) -> None:
    """Replace ``dequantize(constant)`` with a non-zero zero point by the float constant, in place.

    PT2E quantizes scalar operands lifted to tensors (e.g. attention's ``q * 0.125``) like activations:
    asymmetric int8, value 127 with zero point -128. coremltools folds that ``dequantize`` computing
    ``q - zero_point`` in int8, which wraps (255 -> -1): the quickstart ViT's attention scale became -0.00049
    instead of 0.125 (found by the Core ML emulator: W8A8 agreement 24%). Weights are symmetric (zero point 0)
    and keep their int8 storage.
    """
    dq = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    for node in list(gm.graph.nodes):
        if node.target is not dq or node.args[0].op != "get_attr" or int(node.args[2]) == 0:
            continue
        const = getattr(gm, node.args[0].target)
        name = f"{node.args[0].target}_dequantized"
        gm.register_buffer(name, dq(const, *node.args[1:]).detach().clone())
        with gm.graph.inserting_before(node):
            folded = gm.graph.get_attr(name)
        node.replace_all_uses_with(folded)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def unsupported(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """Nodes coremltools' torch frontend has no op for (the registry ``ct.convert`` looks each node up in)."""
    require("coremltools", "coreml")
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY  # noqa: PLC0415
    from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind  # noqa: PLC0415

    bad = []
    for node in ep.run_decompositions({}).graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            if sanitize_op_kind(node.target.name()) not in _TORCH_OPS_REGISTRY:
                bad.append(node)
    return bad


def _compress_weights(mlmodel, precision: str):
    """coremltools.optimize.coreml on the ML Program: linear int8/int4, 4-bit k-means palettisation, or sparse
    storage (``constexpr_sparse_to_dense``) of weights with >= 30% exact zeros (after ``edgevit sparsify``)."""
    import coremltools.optimize.coreml as cto  # noqa: PLC0415 -- optional package

    if precision == "sparse":  # prunes nothing new: stores the zeros of a sparsified model as bitmask + values
        op = cto.OpThresholdPrunerConfig(threshold=1e-12, minimum_sparsity_percentile=0.3, weight_threshold=2048)
        return cto.prune_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    if precision == "w4-lut":
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=2048)
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    if precision == "w8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    else:
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32)
    return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


def op_counts(mlmodel) -> dict[str, int]:
    """MIL op type -> count in the ML Program (``const`` omitted)."""
    counts: dict[str, int] = {}
    for fn in mlmodel._mil_program.functions.values():
        for op in fn.operations:
            if op.op_type != "const":
                counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return dict(sorted(counts.items()))
