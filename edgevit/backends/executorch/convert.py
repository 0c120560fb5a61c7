"""Lowering to an ExecuTorch ``.pte`` with the XNNPACK delegate: fp32, static int8 and dynamic int8."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from edgevit.backends.executorch import lowering
from edgevit.backends.executorch.quantizer import quantizer
from edgevit.quantize import PTQConfig, calibrate_pt2e, capture, export_program, is_quantized
from edgevit.utils import atomic_path, require


def convert(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    precision: str = "fp32",
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
) -> dict[str, Any]:
    """Quantize (for int8 precisions), lower with ``to_edge_transform_and_lower`` + ``XnnpackPartitioner`` (its fast
    equivalent :func:`edgevit.backends.executorch.lowering.lower`: the same ``.pte``), write a ``.pte``.

    ``model`` may already be PT2E-converted (e.g. after QAT); then it is lowered as it is.
    Returns delegation facts: the number of XNNPACK partitions and the ops left outside the delegate
    (each runs on ExecuTorch's portable CPU kernels, and each partition boundary costs a copy).
    """
    require("executorch", "executorch")
    from executorch.devtools.backend_debug import get_delegation_info  # noqa: PLC0415

    quant: dict[str, Any] = {}
    if precision != "fp32" and not is_quantized(model):
        quant = {
            "quantizer": "XNNPACKQuantizer",
            **(ptq or PTQConfig()).describe(),
            "calib_images": 0 if calib is None else len(calib),
        }
    ep = prepare(model, example, precision, calib, ptq, decompose=False)
    edge = lowering.lower(ep, XNNPACK_FRIENDLY_DECOMPOSITIONS)
    info = get_delegation_info(edge.exported_program().graph_module)
    outside = {
        op: b.non_delegated
        for op, b in sorted(info.delegation_by_operator.items())
        if b.non_delegated and op not in ("getitem",)
    }
    program = lowering.to_executorch(edge)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        program.write_to_file(f)
    return {
        **quant,
        "delegate": "XnnpackBackend",
        "partitions": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "ops_outside_delegate": outside,
    }


def prepare(
    model: torch.nn.Module,
    example: torch.Tensor,
    precision: str = "fp32",
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
    decompose: bool = True,
) -> torch.export.ExportedProgram:
    """The program :func:`convert` lowers: PT2E-quantized with XNNPACK's quantizer for int8 precisions (unless
    ``model`` already is), exported and decomposed with the XNNPACK-friendly decompositions. The divergence finder
    (:mod:`edgevit.backends.executorch.trace`) re-lowers this same program with intermediate outputs tapped.

    ``decompose=False`` returns it before the decompositions (:func:`convert` leaves them to
    :func:`~edgevit.backends.executorch.lowering.lower`, which runs them with ExecuTorch's own in one pass). The
    capture is shared inside :func:`edgevit.quantize.shared_capture`."""
    if precision != "fp32" and not is_quantized(model):
        graph = capture(model, example)
        model = calibrate_pt2e(graph, quantizer(precision), calib, "executorch", progress=False, config=ptq)
    ep = export_program(model, example)
    return ep.run_decompositions(XNNPACK_FRIENDLY_DECOMPOSITIONS) if decompose else ep


def layer_norm_via_mean(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``native_layer_norm``, written with ops XNNPACK takes.

    XNNPACK's partitioner has no layer_norm, and its ``mean.dim`` only reduces the two innermost dims of a
    4-D tensor (as global average pooling, which reads channels-last), so the statistics come from ``x``
    viewed as ``[1, M, 1, K]`` (K = normalised elements) averaged over dims (2, 3): M lands in XNNPACK's
    channel dim, where its pooling kernels vectorise, at the cost of one layout transpose of ``x``. The
    normalisation itself reads ``x`` in its own layout with the statistics reshaped to rows: normalising the
    channels-last copy would need a second full transpose back (measured on the emulated Cortex-A76: 39 k
    fewer instructions per 197x192 LayerNorm, docs/guides/arm-cost.md). Without this every LayerNorm stays on
    ExecuTorch's portable kernels and splits the delegate.
    """
    shape = x.shape
    k = math.prod(normalized_shape)
    x4 = x.reshape(1, -1, 1, k)  # [..., *normalized_shape] -> [1, M, 1, K]
    mu4 = x4.mean((2, 3), keepdim=True)  # [1, M, 1, 1]
    xc4 = x4 - mu4
    rstd4 = torch.rsqrt((xc4 * xc4).mean((2, 3), keepdim=True) + eps)
    stat_shape = (*shape[: x.dim() - len(normalized_shape)], *([1] * len(normalized_shape)))
    mu, rstd = mu4.reshape(stat_shape), rstd4.reshape(stat_shape)
    y = (x - mu) * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mu, rstd


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return layer_norm_via_mean(x, normalized_shape, weight, bias, eps)[0]


def _silu(x):
    """``silu`` as ``x * sigmoid(x)``: XNNPACK's delegate takes ``aten.silu`` but runs it ~4x slower than the
    two-op form (see docs/design-notes.md: it made MobileViT 1.9x slower in ExecuTorch than in LiteRT)."""
    return x * torch.sigmoid(x)


# torch.export keeps ``aten.layer_norm`` in its graph; later decompositions turn it into ``native_layer_norm``.
XNNPACK_FRIENDLY_DECOMPOSITIONS = {
    torch.ops.aten.layer_norm.default: _layer_norm,
    torch.ops.aten.native_layer_norm.default: layer_norm_via_mean,
    torch.ops.aten.silu.default: _silu,
}


def unsupported(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """Nodes ExecuTorch's ATen-dialect verifier rejects (not core ATen) after the decompositions ``convert`` runs."""
    require("executorch", "executorch")
    from executorch.exir.tracer import _default_decomposition_table  # noqa: PLC0415
    from executorch.exir.verification.verifier import EXIRATenDialectVerifier  # noqa: PLC0415

    ep = ep.run_decompositions({**_default_decomposition_table(), **XNNPACK_FRIENDLY_DECOMPOSITIONS})
    verifier, bad = EXIRATenDialectVerifier(), []
    for node in ep.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            try:
                verifier.check_valid_op(node.target)
            except Exception:  # SpecViolationError: not in the core ATen opset, no portable kernel
                bad.append(node)
    return bad
