"""ONNX Runtime's per-layer tracer for ``explain``: chosen tensors added as graph outputs (an in-memory edit)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from edgevit.backends.base import TraceGraph, TraceNode
from edgevit.backends.onnx.convert import export_fp32
from edgevit.utils import require


def onnx_scopes(proto) -> tuple[dict[str, str], dict[str, str]]:
    """Node name -> module and output tensor name -> module, from the dynamo exporter's ``name_scopes``."""
    by_node, by_tensor = {}, {}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if "pkg.torch.onnx.name_scopes" not in meta:
            continue
        scopes = json.loads(meta["pkg.torch.onnx.name_scopes"].replace("'", '"'))
        module = scopes[-2] if len(scopes) >= 2 else ""  # [..., module, node]: the last entry is the node itself
        by_node[node.name] = module
        for t in node.output:
            by_tensor[t] = module
    return by_node, by_tensor


def trace(path: Path, model, example, **context) -> TraceGraph:
    """ONNX Runtime: chosen tensors added as graph outputs; nodes mapped by the exporter's name scopes."""
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    proto = onnx.load(str(path))
    by_node, by_tensor = onnx_scopes(proto)
    if not by_node:  # e.g. ORT's quantizer dropped the metadata: names survive, so take them from a fp32 export
        with tempfile.TemporaryDirectory(prefix="edgevit-explain-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_fp32(model, example, fp32)
            by_node, by_tensor = onnx_scopes(onnx.load(str(fp32)))
    nodes = []
    for node in proto.graph.node:
        module = by_node.get(node.name.split("/")[0])  # ORT fusions append "/FusionName" to the node name
        if module is None:
            module = next((by_tensor[t] for t in node.output if t in by_tensor), None)
        nodes.append(TraceNode(node.op_type, list(node.input), list(node.output), module))
    graph_out = proto.graph.output[0].name

    def make_runner(wanted: list[str]):
        m = onnx.load(str(path))
        have = {o.name for o in m.graph.output}
        for t in wanted:
            if t not in have:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        inp = sess.get_inputs()[0].name

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            vals = sess.run(None, {inp: x.astype(np.float32)})
            return {
                k: v for k, v in zip(names, vals, strict=True) if k in wanted and np.issubdtype(v.dtype, np.floating)
            }

        return run

    graph = TraceGraph(nodes, graph_out, make_runner)
    graph.inherit_modules()
    return graph
