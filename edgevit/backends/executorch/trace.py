"""ExecuTorch's per-layer tracer for ``explain``: the model re-lowered with chosen tensors tapped as outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from edgevit.backends.base import TraceGraph, TraceNode, to_layout
from edgevit.backends.executorch.convert import prepare
from edgevit.backends.executorch.runtime import load
from edgevit.quantize import CALIBRATED_PRECISIONS
from edgevit.utils import EdgeVitError

REPRODUCIBLE = ("fp32", "int8", "int8-dynamic")  # precisions the re-lowering can re-quantize as the exporter did


def trace(
    path: Path,
    model,
    example,
    *,
    precision: str = "fp32",
    info: dict | None = None,
    layout: str = "NCHW",
    calib=None,
    ptq=None,
) -> TraceGraph:
    """ExecuTorch: the model re-lowered as the exporter lowers it, with the wanted tensors tapped as extra outputs.

    The shipped ``.pte`` is one opaque XNNPACK delegate call. ``executorch.devtools.intermediate_output_tap``
    surfaces chosen FX nodes as extra program outputs, so the same partitioning and the same XNNPACK kernels run,
    and each tapped value leaves the delegate; FX node names carry ``nn_module_stack``. The root module's row
    (``output``) is the *shipped* ``.pte``'s logits, and each run also compares the re-lowering's logits with the
    shipped ones (``relowering`` in the result), so a fault that is in the file but not in this model's lowering
    (other weights, a hand-edited program) shows as ``output`` diverging with every inner layer healthy.

    ``layout`` is the shipped file's input layout (an NHWC export is fed ``[1, H, W, C]``; the re-lowering, from
    ``model``, takes NCHW).

    Quantized artifacts are re-quantized first with the exporter's own quantizer and calibration path
    (:func:`edgevit.backends.executorch.quantizer.quantizer`, :func:`edgevit.quantize.calibrate_pt2e` on ``calib`` with
    ``ptq``). PT2E's ``quantize``/``dequantize`` nodes carry no ``nn_module_stack``: a ``quantize`` belongs to the
    module that produced its input and its ``dequantize`` to that module too, so a module's output is the float
    value the next layer reads. Without the calibration images (static int8), or for a QAT-converted file, they are
    compared at the delegate boundary only.
    """
    ptq = _artifact_ptq(ptq, info or {})
    run_shipped = load(path, 2)

    def shipped(x: np.ndarray) -> np.ndarray:  # x: NCHW, as the re-lowered program takes it
        return run_shipped(to_layout(x, layout))

    quantized = precision != "fp32"
    why = None
    if quantized and (info or {}).get("method") == "qat":
        why = (
            "it was quantized by QAT, whose converted graph comes from the run's QAT checkpoint, not from this model "
            "and a calibration pass"
        )
    elif precision in CALIBRATED_PRECISIONS and calib is None:
        why = "explain was not given the calibration images (and PTQ settings) the artifact was quantized with"
    elif precision not in REPRODUCIBLE:
        why = f"explain cannot reproduce precision {precision!r}"
    if why:
        note = (
            f"ExecuTorch {precision}: compared at the XNNPACK delegate's boundary only (input and logits): {why}; "
            "inner layers are listed as unmapped"
        )
        return TraceGraph(
            [TraceNode("executorch_call_delegate", ["image"], [_SHIPPED], None)],
            _SHIPPED,
            lambda wanted: lambda x: {_SHIPPED: np.asarray(shipped(x), dtype=np.float32)},
            note,
            takes_nchw=True,
        )

    ep = prepare(model, example, precision, calib, ptq)  # the program the exporter lowered
    nodes, fx_out = [], None
    for node in ep.graph.nodes:
        if node.op == "output":
            fx_out = node.args[0][0].name
        if node.op != "call_function":
            continue
        stack = node.meta.get("nn_module_stack") or {}
        module = list(stack.values())[-1][0] if stack else None
        op = getattr(node.target, "_opname", None) or getattr(node.target, "__name__", str(node.target))
        if op.startswith(("quantize_per", "dequantize_per")):  # -> "quantize"/"dequantize": owned by their input
            op, module = op.split("_per")[0], None
        nodes.append(TraceNode(op, [a.name for a in node.all_input_nodes], [node.name], module))
    # the shipped program's logits close the graph: the root module's row is the artifact itself
    nodes.append(TraceNode("executorch_call_delegate", [fx_out], [_SHIPPED], None))
    graph = TraceGraph(nodes, _SHIPPED, lambda wanted: None, takes_nchw=True)
    graph.inherit_modules()
    gaps: list[tuple[float, float]] = []  # per image: (max |relowered - shipped|, max |shipped|)

    # A tapped ``dequantize`` whose consumer XNNPACK fuses into an int8 kernel leaves the delegate as zeros; its
    # ``quantize`` leaves it as the int8 values: tap that and dequantize here with the node's scale and zero point.
    # XNNPACK's channels-last pass cannot take a tapped 4-D (NCHW conv) int8 tensor as an extra delegate output
    # (``KeyError: 'val'``): those stay unmapped, listed in ``untapped``.
    fx = {n.name: n for n in ep.graph.nodes}
    via_q: dict[str, tuple[str, float, int]] = {}  # dequantize -> (its quantize, scale, zero point)
    skip: set[str] = set()
    for n in nodes if quantized else []:
        if n.op != "dequantize" or not n.inputs or n.inputs[0] not in fx:
            continue
        q = fx[n.inputs[0]]
        if str(q.target).startswith("quantized_decomposed.quantize_per_tensor") and isinstance(q.args[1], float):
            via_q[n.outputs[0]] = (q.name, q.args[1], int(q.args[2]))
        if getattr(fx[n.outputs[0]].meta.get("val"), "ndim", 0) == 4:
            skip.add(n.outputs[0])

    def make_runner(wanted: list[str]):
        if skip & set(wanted):
            graph.extra["untapped"] = sorted(skip & set(wanted))
        wanted = [t for t in wanted if t != _SHIPPED and t not in skip]
        tap = sorted({via_q[t][0] if t in via_q else t for t in wanted} | {fx_out})
        run_debug, outputs, partitions = _tapped_program(ep, tap, example)

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            got = dict(zip(outputs, run_debug(x), strict=True))
            for t in wanted:  # int8 values -> real values, as the dequantize computes them
                if t in via_q:
                    q, scale, zero = via_q[t]
                    got[t] = ((got[q] - zero) * scale).astype(np.float32)
            logits = np.asarray(shipped(x), dtype=np.float32)
            gaps.append((float(np.abs(got[fx_out] - logits).max()), float(np.abs(logits).max())))
            graph.extra["relowering"] = {
                "images": len(gaps),
                "partitions": partitions,
                "max_abs_diff_vs_shipped": max(g for g, _ in gaps),
                "max_abs_shipped": max(m for _, m in gaps),
            }
            graph.note = _pte_note(graph.extra["relowering"], precision)
            return {**got, _SHIPPED: logits}

        return run

    graph.make_runner = make_runner
    graph.note = _pte_note(None, precision)
    return graph


def _artifact_ptq(ptq, info: dict):
    """``ptq`` (the recipe's quantize settings) as this artifact was quantized: the PT2E/NNCF method and the float
    modules its manifest info records (a target's own ``method``, an accuracy-controlled plan's ``float_modules``)."""
    if ptq is None or info.get("method") not in ("pt2e", "nncf"):
        return ptq
    return ptq.model_copy(update={"method": info["method"], "keep_float": list(info.get("float_modules", []))})


_SHIPPED = "shipped.pte:output"


def _pte_note(relowering: dict | None, precision: str = "fp32") -> str:
    head = (
        "ExecuTorch: inner layers come from a re-lowering of this model with the exporter's decompositions and "
        "XnnpackPartitioner, their tensors tapped as extra delegate outputs (same XNNPACK kernels; not the shipped "
        ".pte byte for byte); `output` is the shipped .pte's logits"
    )
    if precision != "fp32":
        head += (
            f"; {precision}: re-quantized with the exporter's XNNPACKQuantizer and calibration images, each module's "
            "output read after its dequantize"
        )
    if relowering is None:
        return head
    gap, scale = relowering["max_abs_diff_vs_shipped"], relowering["max_abs_shipped"]
    verdict = (
        "faithful"
        if gap <= 1e-4 * max(scale, 1.0)
        else "NOT faithful: the shipped .pte computes something this model's lowering does not (other weights, "
        "other calibration or an edited program), so trust only its `output` row"
    )
    return f"{head}. Re-lowering vs shipped logits: max abs diff {gap:.2e} ({verdict})"


def _tapped_program(ep, wanted: list[str], example):
    """Lower ``ep`` (a copy) with ``wanted`` FX nodes tapped as extra outputs.

    Returns ``(run, names, partitions)``: ``run(image)`` gives the tapped tensors in the order of ``names``;
    ``partitions`` is the number of XNNPACK delegate calls of the tapped program.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: PLC0415
    from executorch.devtools.backend_debug import get_delegation_info  # noqa: PLC0415
    from executorch.devtools.intermediate_output_tap import (  # noqa: PLC0415
        FULL_TENSOR,
        strip_taps_,
        tap_intermediate_outputs_,
    )
    from executorch.exir import to_edge_transform_and_lower  # noqa: PLC0415
    from executorch.runtime import Runtime  # noqa: PLC0415

    want = set(wanted)
    ep = copy.deepcopy(ep)
    ep, specs = tap_intermediate_outputs_(ep, (lambda n: n.name in want, FULL_TENSOR))
    missing = want - {s.node_name for s in specs}
    if missing:
        raise EdgeVitError(f"explain executorch: cannot tap {sorted(missing)} (not call_function nodes of the export)")
    try:
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    except Exception as e:  # e.g. XNNPACK rejects a tapped value that is also a delegate input (a pass-through)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EdgeVitError(
            f"explain executorch: lowering the model with {len(specs)} tapped module outputs failed: {first}; "
            "`explain` needs every tapped FX node to be computed inside the XNNPACK delegate"
        ) from e
    strip_taps_(edge)
    partitions = get_delegation_info(edge.exported_program().graph_module).num_delegated_subgraphs
    buffer = edge.to_executorch().buffer
    program = Runtime.get().load_program(buffer)  # keeps ``buffer`` alive: the method reads from it
    method = program.load_method("forward")
    index = {s.node_name: s.output_index for s in specs}
    names = sorted(want)

    call = method._method.call  # no torch clone of the outputs (see edgevit.backends.executorch.runtime.load)

    def run(x: np.ndarray, _keep=program) -> list[np.ndarray]:
        outs = call([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))], clone_outputs=False)
        return [outs[index[t]].numpy().astype(np.float32, copy=True) for t in names]

    return run, names, partitions
