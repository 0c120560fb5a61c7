"""LiteRT's per-layer tracer for ``explain``: every tensor of the interpreter, mapped to modules by name scope."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevit.backends.base import TraceGraph, TraceNode
from edgevit.backends.tflite.runtime import interpreter_class


def _tflite_scopes(model) -> dict[str, str]:
    """litert-torch's scope string (``pkg.Class_attr/pkg.Class_attr``) of every module -> its path, without the
    root's own segment (an NHWC export's root class is the model's channels-last subclass, named differently)."""
    scopes = {"": ""}
    seg = {"": ""}
    for name, m in model.named_modules():
        if not name:
            continue
        parent, _, attr = name.rpartition(".")
        seg[name] = f"{seg[parent]}/{type(m).__module__}.{type(m).__qualname__}_{attr}"
        scopes[seg[name]] = name
    return scopes


def trace(path: Path, model, example, **context) -> TraceGraph:
    """LiteRT: every tensor, by its module scope, from the built-in kernels (``context`` is not needed)."""
    scopes = _tflite_scopes(model)

    def module_of(name: str) -> str | None:
        first, slash, rest = name.split(";")[0].partition("/")
        if not first.startswith(f"{type(model).__module__}."):  # not scoped under the model: no module
            return None
        base = slash + rest  # "/pkg.Class_attr/...", or "" for the root module
        while True:
            if base in scopes:
                return scopes[base]
            if not base:
                return None
            base = base.rpartition("/")[0]

    # the XNNPACK delegate keeps no intermediate tensors: LiteRT's built-in kernels run every op for this
    from ai_edge_litert.interpreter import OpResolverType  # noqa: PLC0415 -- optional package

    interp = interpreter_class()(
        model_path=str(path),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        num_threads=2,
    )
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    produced = set()
    nodes = []
    for op in interp._get_ops_details():  # execution order
        ins = [str(i) for i in op["inputs"] if i >= 0]
        outs = [str(i) for i in op["outputs"]]
        produced.update(outs)
        module = module_of(details[int(outs[0])]["name"]) if outs else None
        if module is None:  # e.g. the graph output tensor: the op's weights still carry their module's name
            consts = [module_of(details[int(i)]["name"]) for i in ins if i not in produced]
            consts = [c for c in consts if c]
            module = max(consts, key=len) if consts else None
        nodes.append(TraceNode(op["op_name"], ins, outs, module))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def make_runner(wanted: list[str]):
        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            if np.issubdtype(inp["dtype"], np.integer):  # full-integer model: quantise as the parity runner does
                scale, zero = inp["quantization"]
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x / scale) + zero, info.min, info.max)
            interp.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
            interp.invoke()
            got = {}
            for t in wanted:
                d = details[int(t)]
                v = interp.get_tensor(int(t))
                if np.issubdtype(v.dtype, np.integer):
                    scale, zero = d["quantization"]
                    if not scale:
                        continue  # not a quantized activation (shapes, indices)
                    v = (v.astype(np.float32) - zero) * scale
                got[t] = v.astype(np.float32)
            return got

        return run

    note = (
        "LiteRT: intermediates from its built-in kernels (the XNNPACK delegate, which parity's logits come from, "
        "keeps none)"
    )
    graph = TraceGraph(nodes, str(out["index"]), make_runner, note)
    for n in graph.nodes:  # unnamed ops (re-quantize, layout transposes) belong to their input's module
        if n.module is None and n.inputs and n.inputs[0] in graph.producers:
            n.module = graph.nodes[graph.producers[n.inputs[0]]].module
    return graph
