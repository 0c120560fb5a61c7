"""Core ML's per-layer tracer for ``explain``: the emulator's per-op outputs (:meth:`Emulator.trace`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgevit.backends.base import TraceGraph, TraceNode, fx_modules
from edgevit.backends.coreml.emulator import Emulator, dequantize

_MIL_SUFFIX = re.compile(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32|_quantized|_dequantized|_dequantize)+$")


def trace(path: Path, model, example, **context) -> TraceGraph:
    """Core ML: the emulator's per-op outputs, mapped to modules by the ``torch.export`` node names MIL keeps."""
    fx = fx_modules(model, example)
    em = Emulator(path)

    def module_of(var: str) -> str | None:
        base = _MIL_SUFFIX.sub("", var)
        if base in fx:
            return fx[base]
        if base.endswith("_0") and base[:-2] in fx:  # MIL renames e.g. the first `linear` to linear_0
            return fx[base[:-2]]
        return None

    nodes = []
    for op, _, args in em._plan:
        ins = [n for a in args.values() for n in (a if isinstance(a, tuple) else (a,))]
        outs = [o.name for o in op.outputs]
        nodes.append(TraceNode(op.op_type, ins, outs, module_of(outs[0]) or module_of(op.name)))
    (in_name,) = list(em.inputs)
    qparams = mil_qparams(em)
    units = mil_units(em, qparams)

    def value(env, t: str) -> np.ndarray:
        v = np.asarray(env[t], dtype=np.float32)
        if t in qparams:  # dequantise as the next `dequantize` op would
            scale, zero, axis, _ = qparams[t]
            v = dequantize(v, em._compute_consts[scale], em._compute_consts.get(zero) if zero else None, axis)
        return np.asarray(v * units.get(t, 1.0), dtype=np.float32)  # rescaled residual adds back in real units

    def make_runner(wanted: list[str]):
        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            env = em.trace({in_name: x})
            return {t: value(env, t) for t in wanted if t in env}

        return run

    graph = TraceGraph(nodes, em.outputs[0], make_runner)
    graph.inherit_modules()
    return graph


def mil_qparams(em) -> dict[str, tuple[str, str | None, int | None, str]]:
    """Each int8 activation (a W8A8 ``quantize`` output) -> the names of its scale and zero point, its axis, and
    the ``quantize``'s input."""
    qparams = {}
    for op, _, args in em._plan:
        if op.op_type == "quantize":
            axis = op.inputs.get("axis")
            qparams[op.outputs[0].name] = (
                args["scale"],
                args.get("zero_point"),
                None if axis is None else int(axis.val),
                args["input"],
            )
    return qparams


# ops that commute with a scale factor: a tensor computed by one of them from inputs in the same unit is in that unit
_MIL_LINEAR = {"add", "sub", "reshape", "transpose", "concat", "slice_by_index", "squeeze", "expand_dims", "identity"}


def mil_units(em, qparams: dict[str, tuple]) -> dict[str, float]:
    """Variables that coremltools computes in a rescaled unit, and the factor back to real values.

    coremltools rewrites a W8A8 residual ``add(dequantize(a, s_a), dequantize(b, s_b))`` in units of ``s_b``: the
    ``dequantize`` of ``b`` gets scale 1 (its output is ``b``'s int8 values, e.g. +-28), ``a``'s gets ``s_a / s_b``,
    and the ``quantize`` after the add a scale divided by ``s_b`` (the int8 result, and the program's output, are
    unchanged). A ``quantize(x, s_q)`` -> ``dequantize(s_dq)`` pair moves ``x``'s unit by ``s_q / s_dq``; linear
    ops keep it. Returns ``{variable: unit}`` for the variables whose unit is not 1 (real = value * unit).
    """
    consts = em._compute_consts
    unit: dict[str, float] = {}
    for op, _, args in em._plan:
        out = op.outputs[0].name
        if op.op_type == "quantize":
            u = unit.get(args["input"], 1.0)  # its int8 values dequantise (with its own scale) to its input's unit
        elif op.op_type == "dequantize" and args.get("input") in qparams:
            s_q = np.asarray(consts[qparams[args["input"]][0]], np.float64)
            s_dq = np.asarray(consts[args["scale"]], np.float64)
            ratio = s_q / s_dq
            if ratio.size == 0 or not np.allclose(ratio, ratio.flat[0], rtol=1e-3):
                continue  # per-channel scales that differ unevenly: no single unit, leave it as computed
            u = unit.get(qparams[args["input"]][3], 1.0) * float(ratio.flat[0])
        elif op.op_type in _MIL_LINEAR:
            ins = [n for a in args.values() for n in (a if isinstance(a, tuple) else (a,)) if n not in consts]
            got = [unit.get(n, 1.0) for n in ins]  # the rescaled scales are fp16: equal units agree to ~1e-3
            u = float(np.mean(got)) if got and max(got) <= min(got) * 1.01 else 1.0
        else:
            continue
        if abs(u - 1.0) > 1e-3:
            unit[out] = u
    return unit
