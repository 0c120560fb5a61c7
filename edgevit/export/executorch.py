"""ExecuTorch ``.pte`` with the XNNPACK delegate: fp32, static int8 and dynamic int8 (XNNPACK's PT2E quantizer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import atomic_path, require
from edgevit.export import executorch_lowering
from edgevit.export.artifact import Runner
from edgevit.quantize import PTQConfig

SUFFIX = ".pte"
PRECISIONS = ("fp32", "int8", "int8-dynamic")


def quantizer(precision: str):
    """XNNPACK's PT2E quantizer: int8 symmetric per-channel weights; activations static or dynamic int8."""
    require("executorch", "executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    class PTQXNNPACKQuantizer(XNNPACKQuantizer):
        # The conv-bn[-relu] patterns are QAT-only (prepare_pt2e folds BN into the conv before annotating), and
        # matching them re-exports 12 pattern graphs on every call: ~5 s of each PTQ run on 2 cores, for nothing.
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]

    dynamic = precision == "int8-dynamic"
    return PTQXNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))


def export(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    precision: str = "fp32",
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
) -> dict[str, Any]:
    """Quantize (for int8 precisions), lower with ``to_edge_transform_and_lower`` + ``XnnpackPartitioner`` (its fast
    equivalent :func:`edgevit.export.executorch_lowering.lower`: the same ``.pte``), write a ``.pte``.

    ``model`` may already be PT2E-converted (e.g. after QAT); then it is lowered as it is.
    Returns delegation facts: the number of XNNPACK partitions and the ops left outside the delegate
    (each runs on ExecuTorch's portable CPU kernels, and each partition boundary costs a copy).
    """
    require("executorch", "executorch")
    from executorch.devtools.backend_debug import get_delegation_info

    from edgevit.quantize import is_quantized

    quant: dict[str, Any] = {}
    if precision != "fp32" and not is_quantized(model):
        quant = {
            "quantizer": "XNNPACKQuantizer",
            **(ptq or PTQConfig()).describe(),
            "calib_images": 0 if calib is None else len(calib),
        }
    ep = prepare(model, example, precision, calib, ptq, decompose=False)
    edge = executorch_lowering.lower(ep, _XNNPACK_FRIENDLY_DECOMPOSITIONS)
    info = get_delegation_info(edge.exported_program().graph_module)
    outside = {
        op: b.non_delegated
        for op, b in sorted(info.delegation_by_operator.items())
        if b.non_delegated and op not in ("getitem",)
    }
    program = executorch_lowering.to_executorch(edge)
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
    """The program :func:`export` lowers: PT2E-quantized with XNNPACK's quantizer for int8 precisions (unless
    ``model`` already is), exported and decomposed with the XNNPACK-friendly decompositions. The divergence finder
    (:mod:`edgevit.parity.explain`) re-lowers this same program with intermediate outputs tapped.

    ``decompose=False`` returns it before the decompositions (:func:`export` leaves them to
    :func:`~edgevit.export.executorch_lowering.lower`, which runs them with ExecuTorch's own in one pass). The
    capture is shared inside :func:`~edgevit.export.executorch_lowering.shared_capture`."""
    from edgevit.quantize import calibrate_pt2e, is_quantized

    if precision != "fp32" and not is_quantized(model):
        graph = executorch_lowering.captured_module(model, example)
        model = calibrate_pt2e(graph, quantizer(precision), calib, "executorch", progress=False, config=ptq)
    ep = executorch_lowering.export_program(model, example)
    return ep.run_decompositions(_XNNPACK_FRIENDLY_DECOMPOSITIONS) if decompose else ep


def _layer_norm_via_mean(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``native_layer_norm``, written with ops XNNPACK takes.

    XNNPACK's partitioner has no layer_norm, and its ``mean.dim`` only reduces the two innermost dims of a
    4-D tensor, so ``x`` is viewed as ``[1, M, 1, K]`` (K = normalised elements) and averaged over dims
    (2, 3); M lands in XNNPACK's channel dim, where its pooling kernels vectorise. Without this every
    LayerNorm stays on ExecuTorch's portable kernels and splits the delegate.
    """
    shape = x.shape
    k = math.prod(normalized_shape)
    x4 = x.reshape(1, -1, 1, k)  # [..., *normalized_shape] -> [1, M, 1, K]
    mu = x4.mean((2, 3), keepdim=True)  # [1, M, 1, 1]
    xc = x4 - mu
    rstd = torch.rsqrt((xc * xc).mean((2, 3), keepdim=True) + eps)
    y = (xc * rstd).reshape(shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    stat_shape = (*shape[: x.dim() - len(normalized_shape)], *([1] * len(normalized_shape)))
    return y, mu.reshape(stat_shape), rstd.reshape(stat_shape)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return _layer_norm_via_mean(x, normalized_shape, weight, bias, eps)[0]


def _silu(x):
    """``silu`` as ``x * sigmoid(x)``: XNNPACK's delegate takes ``aten.silu`` but runs it ~4x slower than
    the two-op form here (measured: 3x3 conv + SiLU on 256 px, 1.56 ms vs 0.49 ms; LiteRT 0.35 ms), which made
    MobileViT 1.9x slower in ExecuTorch than in LiteRT."""
    return x * torch.sigmoid(x)


# torch.export keeps ``aten.layer_norm`` in its graph; later decompositions turn it into ``native_layer_norm``.
_XNNPACK_FRIENDLY_DECOMPOSITIONS = {
    torch.ops.aten.layer_norm.default: _layer_norm,
    torch.ops.aten.native_layer_norm.default: _layer_norm_via_mean,
    torch.ops.aten.silu.default: _silu,
}


def unsupported(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """Nodes ExecuTorch's ATen-dialect verifier rejects (not core ATen) after the decompositions ``export`` runs."""
    require("executorch", "executorch")
    from executorch.exir.tracer import _default_decomposition_table
    from executorch.exir.verification.verifier import EXIRATenDialectVerifier

    ep = ep.run_decompositions({**_default_decomposition_table(), **_XNNPACK_FRIENDLY_DECOMPOSITIONS})
    verifier, bad = EXIRATenDialectVerifier(), []
    for node in ep.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            try:
                verifier.check_valid_op(node.target)
            except Exception:  # SpecViolationError: not in the core ATen opset, no portable kernel
                bad.append(node)
    return bad


def load(path: Path, threads: int) -> Runner:
    """Load a ``.pte`` into ``executorch.runtime`` with an XNNPACK threadpool of ``threads``.

    Outputs are copied out with numpy, not cloned by the bindings: their ``clone_outputs=True`` copies with
    ``torch``, whose OpenMP workers (``torch.get_num_threads()`` of them) then spin against XNNPACK's threadpool.
    Measured on MobileViT-XXS's stem (a 1x16x128x128 output), 2 threads: 8.7-18 ms per call cloned, 0.93 ms
    copied with numpy (LiteRT 0.7-1.8 ms in the same run).
    """
    require("executorch", "executorch")
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(Path(path)).load_method("forward")
    call = method._method.call  # the bindings' method: ``execute`` takes no clone_outputs

    def run(x: np.ndarray) -> np.ndarray:
        # the outputs alias the method's planned memory until the next call: copy them out now
        out = call([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))], clone_outputs=False)
        return out[0].numpy().copy()

    return run
