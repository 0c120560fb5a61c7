"""Divergence finder: where inside the network does an artifact stop computing what PyTorch computes?

``explain(model, artifact, images)`` runs the PyTorch reference with forward hooks on its named modules and the
artifact in its own runtime with its intermediate tensors exposed, maps each artifact tensor back to the module
that produced it, and compares them module by module (relative L2 error over a few images) in network order.
The first module whose error exceeds the tolerance is the *first divergent* layer; the whole list shows how the
error grows along the network. The result is the ``explain`` entry of an artifact in ``parity.json``::

    {"tolerance": float, "metric": "rel_l2", "images": int, "backend": str, "note": str | null,
     "layers": [{"module": "blocks.2.attn", "op": str, "rel_err": float, "max_abs_err": float,
                 "tensor": str}, ...in network order],
     "first_divergent": {that layer's dict} | null,
     "unmapped": [module names with no artifact tensor],
     "relowering": {"images", "partitions", "max_abs_diff_vs_shipped", "max_abs_shipped"}}  # ExecuTorch only

A module's output is the last tensor produced inside it (by its own ops or its children's) that is used outside
it. ``input`` is the image the artifact was fed vs the one PyTorch saw (a preprocessing fault shows there);
``output`` is the logits. How each runtime exposes intermediates:

- ONNX Runtime: the chosen tensors are added as graph outputs (an in-memory model edit). Nodes map to modules by
  the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata; graphs that lost it (ORT's int8 quantizer) by
  node and tensor names of a fresh fp32 export of the same model; quantize/dequantize nodes belong to the node
  whose output they carry.
- LiteRT: ``Interpreter(experimental_preserve_all_tensors=True)``; litert-torch names every tensor by its module
  scope (``Class_attr/Class_attr;N``); int8 tensors are dequantised with their own scale and zero point.
- Core ML: the emulator's per-op outputs (:meth:`edgevit.parity.coreml.Emulator.trace`); MIL variable names are
  the ``torch.export`` node names (plus ``_cast_fp16``-style suffixes), whose ``nn_module_stack`` names the module.
  W8A8 residual adds that coremltools computes in one operand's scale are read back in real units
  (:func:`_mil_units`).
- ExecuTorch: the shipped XNNPACK delegate is one opaque call, so the model is re-lowered as the exporter lowers it
  with the wanted FX nodes tapped as extra delegate outputs (``executorch.devtools.intermediate_output_tap``: same
  partitioning, same XNNPACK kernels); FX node names carry ``nn_module_stack``. ``output`` is the shipped ``.pte``'s
  logits, and ``relowering`` reports how far the re-lowering's logits are from them (0 when it is faithful).
  Quantized ``.pte`` files are re-quantized first as the exporter quantizes them (same XNNPACK quantizer, same
  calibration images and PTQ settings, passed in as ``calib`` and ``ptq``; PT2E calibration is deterministic), and
  each module's output is tapped as the float value after its ``dequantize`` (the int8 tensor the next layer reads;
  a quantized op's own float output cannot be tapped: it is fused into XNNPACK's int8 kernel). Without ``calib``
  (static int8) or for a QAT-quantized file they are compared at the delegate boundary only.

Layouts are matched by shape: NHWC vs NCHW, ``[B*h, N, d]`` vs ``[B, h, N, d]`` and dropped unit dimensions are
tried and the best-matching arrangement is compared.
"""

from __future__ import annotations

import itertools
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit._utils import EdgeVitError, require
from edgevit.export.artifact import to_layout

METRIC = "rel_l2"
# a module's relative L2 error above this is divergence; per precision, well above what healthy artifacts of a
# small trained digits ViT showed on 16 val images: fp32 (ONNX, LiteRT) <= 4e-7, Core ML fp16 (emulated) <= 7e-4,
# int8 (ORT QDQ, LiteRT full-integer) <= 6e-2; planted faults read 0.1-1 and more
DEFAULT_TOLERANCE = {
    "fp32": 1e-3,
    "fp16": 2e-2,
    "sparse": 2e-2,
    "w8": 5e-2,
    "int8": 0.3,
    "int8-dynamic": 0.3,
    "w4": 0.3,
    "w4-lut": 0.3,
}
INPUT, OUTPUT = "input", "output"
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "QUANTIZE", "DEQUANTIZE", "quantize", "dequantize", "cast"}


@dataclass
class _Node:
    """One op of an artifact's graph, in execution order, and the module it was traced from (None: unknown)."""

    op: str
    inputs: list[str]
    outputs: list[str]
    module: str | None = None


@dataclass
class _Graph:
    """An artifact seen as a graph: nodes in execution order, its output, and a way to read tensors."""

    nodes: list[_Node]
    output: str
    # wanted tensor names -> runner(image [1, C, H, W]) -> {name: float32 array}
    make_runner: Callable[[list[str]], Callable[[np.ndarray], dict[str, np.ndarray]]]
    note: str | None = None
    producers: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific facts merged into the result

    def __post_init__(self) -> None:
        self.producers = {t: i for i, n in enumerate(self.nodes) for t in n.outputs}

    def inherit_modules(self) -> None:
        """Unattributed quantize/dequantize/cast nodes belong to the node whose output they carry."""
        for n in self.nodes:
            if n.module is None and n.op in _QDQ_OPS and n.inputs and n.inputs[0] in self.producers:
                n.module = self.nodes[self.producers[n.inputs[0]]].module


def explain(
    model,
    artifact,
    images: np.ndarray,
    artifact_images: np.ndarray | None = None,
    tolerance: float | None = None,
    max_images: int = 16,
    calib=None,
    ptq=None,
) -> dict[str, Any]:
    """Compare ``artifact`` with ``model`` module by module and find the first layer that diverges.

    Args:
        model: the fp32 PyTorch reference (``nn.Module``, eval mode).
        artifact: an :class:`edgevit.export.Artifact` (onnx, tflite, coreml or executorch).
        images: ``[N, C, H, W]`` float32 images preprocessed as in training (what PyTorch sees).
        artifact_images: what the artifact is fed, when that differs (e.g. preprocessed as the app's manifest
            says); default ``images``.
        tolerance: relative L2 error above which a module diverges; default per precision
            (:data:`DEFAULT_TOLERANCE`).
        max_images: how many of the images to compare on (the first ones).
        calib: ``[N, C, H, W]`` calibration images the artifact was quantized with (ExecuTorch static int8: the
            re-lowering re-quantizes with them; without them such a ``.pte`` is compared at its boundary only).
        ptq: the :class:`edgevit.quantize.PTQConfig` it was quantized with (its ``method`` and float modules are
            taken from the artifact's manifest info when recorded there).

    Returns:
        The ``explain`` dict described in the module docstring.

    Raises:
        EdgeVitError: an unknown backend, a missing runtime, or an artifact that cannot be read.
    """
    import torch

    tol = float(tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(artifact.precision, 1e-3))
    n = min(max_images, len(images))
    ref_x = np.ascontiguousarray(images[:n], dtype=np.float32)
    art_x = ref_x if artifact_images is None else np.ascontiguousarray(artifact_images[:n], dtype=np.float32)
    if ref_x.shape != art_x.shape:
        raise EdgeVitError(f"explain: images {ref_x.shape} and artifact_images {art_x.shape} differ in shape")
    example = torch.from_numpy(ref_x[:1])
    tracers = {"onnx": _onnx_graph, "tflite": _tflite_graph, "coreml": _coreml_graph, "executorch": _pte_graph}
    if artifact.backend not in tracers:
        raise EdgeVitError(f"explain: no tracer for backend {artifact.backend!r}; choose one of {', '.join(tracers)}")
    model = model.eval()
    layout = getattr(artifact, "layout", "NCHW")  # an NHWC export takes [1, H, W, C]: fed so, compared as NCHW
    if artifact.backend == "executorch":
        info = getattr(artifact, "info", None) or {}
        graph = _pte_graph(
            Path(artifact.path), model, example, artifact.precision, calib, _artifact_ptq(ptq, info), info, layout
        )
        feed = lambda a: a  # noqa: E731 -- the re-lowered program takes NCHW; the shipped .pte is fed its layout
    else:
        graph = tracers[artifact.backend](Path(artifact.path), model, example)
        feed = lambda a: to_layout(a, layout)  # noqa: E731
    ref_names, ref_outputs, ref_inputs = _reference(model, ref_x)  # [module], {module: [n, ...] array}
    chosen, in_tensors = _module_tensors(graph, ref_names)  # module -> (tensor, op); module -> input tensor
    runner = graph.make_runner(sorted({t for t, _ in chosen.values()} | set(in_tensors.values())))
    art_outputs: dict[str, list[np.ndarray]] = {}
    for x in art_x:
        for t, v in runner(feed(x[None])).items():
            art_outputs.setdefault(t, []).append(v)
    layers = [_compare(INPUT, "preprocess", "input", ref_x, art_x)]
    rows: dict[str, dict] = {}
    unmapped = []
    for name in ref_names:
        row = None
        if name in chosen:
            tensor, op = chosen[name]
            row = _compare(name or OUTPUT, op, tensor, ref_outputs[name], art_outputs.get(tensor))
        if row is None:
            unmapped.append(name)
        else:
            layers.append(row)
            rows[name] = row
    first = _first_divergent(layers, tol)
    name = next((k for k, r in rows.items() if r is first), None)
    if name and name in in_tensors and name in ref_inputs:  # already wrong on the way in: a parent's own op?
        got = _compare(name, "", in_tensors[name], ref_inputs[name], art_outputs.get(in_tensors[name]))
        if got is not None and got["rel_err"] > tol:
            first = _origin(graph, name, in_tensors[name], rows) or first
    return {
        "tolerance": tol,
        "metric": METRIC,
        "images": n,
        "backend": artifact.backend,
        "note": graph.note,
        "layers": layers,
        "first_divergent": first,
        "unmapped": unmapped,
        **graph.extra,
    }


# ------------------------------------------------------------------------------------------------- reference


def _reference(model, images: np.ndarray) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Module names in the order their outputs complete, and each module's outputs and first inputs over ``images``.

    Modules that return their input unchanged (dropout, identity in eval) own no op and are left out. The root
    module (``""``) is the logits.
    """
    import torch

    order: list[str] = []
    outs: dict[str, list[np.ndarray]] = {}
    ins: dict[str, list[np.ndarray]] = {}

    def hook(name):
        def fn(module, inputs, output):
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if name and x is not None and x.data_ptr() == output.data_ptr() and x.shape == output.shape:
                return  # an identity in eval mode
            if name not in outs:
                order.append(name)
            outs.setdefault(name, []).append(output.detach().float().numpy().copy())
            if x is not None:
                ins.setdefault(name, []).append(x.detach().float().numpy().copy())

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    try:
        with torch.no_grad():
            for x in images:
                model(torch.from_numpy(x[None]))
    finally:
        for h in handles:
            h.remove()

    def per_image(v: list[np.ndarray]) -> np.ndarray:  # [n, ...]; a module that folds patches into the batch
        return np.concatenate(v) if all(a.shape[:1] == (1,) for a in v) else np.stack(v)  # (MobileViT) keeps it

    stack = {k: per_image(v) for k, v in outs.items()}
    return order, stack, {k: per_image(v) for k, v in ins.items() if len(v) == len(images)}


def _first_divergent(layers: list[dict], tol: float) -> dict | None:
    """The first row over ``tol`` whose error the next row carries on (also over ``tol``; the last row counts).

    A row over tolerance followed by one within it is a tensor the runtime does not really produce: e.g. LiteRT
    folds LayerNorm's scale and shift into the next ``FULLY_CONNECTED``, so its stored "LayerNorm output" is the
    normalised tensor before the affine. Such rows are flagged ``carried: false``, not reported as the cause.
    """
    for i, row in enumerate(layers):
        if row["rel_err"] <= tol:
            continue
        if i + 1 == len(layers) or layers[i + 1]["rel_err"] > tol:
            return row
        row["carried"] = False
    return None


def _inside(node: _Node, m: str) -> bool:
    return node.module is not None and (m == "" or node.module == m or node.module.startswith(m + "."))


def _module_tensors(graph: _Graph, modules: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """For each module, the artifact tensor that is its output (and the op computing it), and its input tensor.

    The output of module ``m`` is the last tensor produced by a node inside ``m`` (its own or a child's) that a node
    outside ``m`` consumes; the root module's is the graph output. Its input is the first activation a node inside
    ``m`` reads from outside ``m``.
    """
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            consumers.setdefault(t, []).append(i)
    chosen, inputs = {}, {}
    for m in modules:
        if m == "":
            chosen[m] = (graph.output, _compute_op(graph, graph.output))
            continue
        last = None
        for n in graph.nodes:
            if not _inside(n, m):
                continue
            for t in n.inputs:
                p = graph.producers.get(t)
                if m not in inputs and p is not None and not _inside(graph.nodes[p], m):
                    inputs[m] = t
            for t in n.outputs[:1]:
                if t == graph.output or any(not _inside(graph.nodes[j], m) for j in consumers.get(t, [])):
                    last = t
        if last is not None:
            chosen[m] = (last, _compute_op(graph, last))
    return chosen, inputs


def _origin(graph: _Graph, module: str, tensor: str, rows: dict[str, dict]) -> dict | None:
    """The row of the enclosing module whose own ops produced ``tensor`` (``module``'s input), if it has one.

    A fault in a module's own ops (e.g. attention's softmax, between its ``qkv`` and ``proj`` children) first
    shows in the output of the child that follows it; the child's input already diverges, and its producer
    belongs to the parent.
    """
    p = graph.producers.get(tensor)
    owner = graph.nodes[p].module if p is not None else None
    if owner is None or owner not in rows or not (owner == "" or module.startswith(owner + ".")):
        return None
    return rows[owner]


def _compute_op(graph: _Graph, tensor: str) -> str:
    """The op that computes ``tensor``, looking through quantize/dequantize/cast wrappers."""
    i = graph.producers.get(tensor)
    while i is not None:
        node = graph.nodes[i]
        if node.op not in _QDQ_OPS or not node.inputs:
            return node.op
        i = graph.producers.get(node.inputs[0])
    return "?"


# ------------------------------------------------------------------------------------------------- comparison


def _layouts(a: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Arrangements of ``a`` ([n, ...] per-image stack) with the reference's per-image ``shape``."""
    n = a.shape[0]
    if a[0].size != int(np.prod(shape)):
        return []
    out = [a.reshape(n, *shape)]  # same memory order (e.g. [1, 17, 3, 64] vs [1, 17, 192])
    src = [d for d in a.shape[1:] if d != 1]
    dst = [d for d in shape if d != 1]
    if sorted(src) == sorted(dst) and src != dst and len(src) <= 6:
        sq = a.reshape(n, *src)
        for p in itertools.permutations(range(len(src))):  # NHWC vs NCHW and other transposed layouts
            if [src[i] for i in p] == dst:
                out.append(sq.transpose(0, *(i + 1 for i in p)).reshape(n, *shape))
    return out


def _compare(module: str, op: str, tensor: str, ref: np.ndarray, got) -> dict[str, Any] | None:
    """Relative L2 and max abs error of ``got`` vs ``ref`` (best-matching layout); None when shapes cannot match."""
    if got is None:
        return None
    got = np.asarray(got if isinstance(got, np.ndarray) else np.stack(got), np.float64)  # [n, *artifact shape]
    if got.shape[0] != ref.shape[0]:
        return None
    ref = ref.astype(np.float64)
    best = None
    for cand in _layouts(got, ref.shape[1:]):
        err = np.linalg.norm(cand - ref) / max(np.linalg.norm(ref), 1e-12)
        if best is None or err < best[0]:
            best = (float(err), float(np.abs(cand - ref).max()))
    if best is None:
        return None
    return {"module": module, "op": op, "rel_err": best[0], "max_abs_err": best[1], "tensor": tensor}


# ------------------------------------------------------------------------------------------------- backends


def _fx_modules(model, example, decompose: Callable | None = None) -> dict[str, str]:
    """``torch.export`` node name -> the module path that traced it (deepest ``nn_module_stack`` entry)."""
    import torch

    ep = torch.export.export(model, (example,))
    ep = decompose(ep) if decompose else ep.run_decompositions({})
    names = {}
    for node in ep.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and stack:
            names[node.name] = list(stack.values())[-1][0]
    return names


def _onnx_scopes(proto) -> tuple[dict[str, str], dict[str, str]]:
    """Node name -> module and output tensor name -> module, from the dynamo exporter's ``name_scopes``."""
    import json

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


def _onnx_graph(path: Path, model, example) -> _Graph:
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    proto = onnx.load(str(path))
    by_node, by_tensor = _onnx_scopes(proto)
    if not by_node:  # e.g. ORT's quantizer dropped the metadata: names survive, so take them from a fp32 export
        from edgevit.export import onnx as onnx_export

        with tempfile.TemporaryDirectory(prefix="edgevit-explain-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            onnx_export._export_fp32(model, example, fp32)
            by_node, by_tensor = _onnx_scopes(onnx.load(str(fp32)))
    nodes = []
    for node in proto.graph.node:
        module = by_node.get(node.name.split("/")[0])  # ORT fusions append "/FusionName" to the node name
        if module is None:
            module = next((by_tensor[t] for t in node.output if t in by_tensor), None)
        nodes.append(_Node(node.op_type, list(node.input), list(node.output), module))
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

    graph = _Graph(nodes, graph_out, make_runner)
    graph.inherit_modules()
    return graph


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


def _tflite_graph(path: Path, model, example) -> _Graph:
    from edgevit.export.tflite import interpreter_class

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
    from ai_edge_litert.interpreter import OpResolverType

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
        nodes.append(_Node(op["op_name"], ins, outs, module))
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
    graph = _Graph(nodes, str(out["index"]), make_runner, note)
    for n in graph.nodes:  # unnamed ops (re-quantize, layout transposes) belong to their input's module
        if n.module is None and n.inputs and n.inputs[0] in graph.producers:
            n.module = graph.nodes[graph.producers[n.inputs[0]]].module
    return graph


_MIL_SUFFIX = re.compile(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32|_quantized|_dequantized|_dequantize)+$")


def _coreml_graph(path: Path, model, example) -> _Graph:
    from edgevit.parity.coreml import Emulator, _dequantize

    fx = _fx_modules(model, example)
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
        nodes.append(_Node(op.op_type, ins, outs, module_of(outs[0]) or module_of(op.name)))
    (in_name,) = list(em.inputs)
    qparams = _mil_qparams(em)
    units = _mil_units(em, qparams)

    def value(env, t: str) -> np.ndarray:
        v = np.asarray(env[t], dtype=np.float32)
        if t in qparams:  # dequantise as the next `dequantize` op would
            scale, zero, axis, _ = qparams[t]
            v = _dequantize(v, em._compute_consts[scale], em._compute_consts.get(zero) if zero else None, axis)
        return np.asarray(v * units.get(t, 1.0), dtype=np.float32)  # rescaled residual adds back in real units

    def make_runner(wanted: list[str]):
        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            env = em.trace({in_name: x})
            return {t: value(env, t) for t in wanted if t in env}

        return run

    graph = _Graph(nodes, em.outputs[0], make_runner)
    graph.inherit_modules()
    return graph


def _mil_qparams(em) -> dict[str, tuple[str, str | None, int | None, str]]:
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


def _mil_units(em, qparams: dict[str, tuple]) -> dict[str, float]:
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


def _pte_graph(
    path: Path,
    model,
    example,
    precision: str = "fp32",
    calib=None,
    ptq=None,
    info: dict | None = None,
    layout: str = "NCHW",
) -> _Graph:
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
    (:func:`edgevit.export.executorch.quantizer`, :func:`edgevit.quantize.calibrate_pt2e` on ``calib`` with
    ``ptq``). PT2E's ``quantize``/``dequantize`` nodes carry no ``nn_module_stack``: a ``quantize`` belongs to the
    module that produced its input and its ``dequantize`` to that module too, so a module's output is the float
    value the next layer reads. Without the calibration images (static int8), or for a QAT-converted file, they are
    compared at the delegate boundary only.
    """

    from edgevit.export import executorch as et
    from edgevit.quantize import CALIBRATED_PRECISIONS

    run_shipped = et.load(path, 2)

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
    elif precision not in et.PRECISIONS:
        why = f"explain cannot reproduce precision {precision!r}"
    if why:
        note = (
            f"ExecuTorch {precision}: compared at the XNNPACK delegate's boundary only (input and logits): {why}; "
            "inner layers are listed as unmapped"
        )
        return _Graph(
            [_Node("executorch_call_delegate", ["image"], [_SHIPPED], None)],
            _SHIPPED,
            lambda wanted: lambda x: {_SHIPPED: np.asarray(shipped(x), dtype=np.float32)},
            note,
        )

    ep = et.prepare(model, example, precision, calib, ptq)  # the program the exporter lowered
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
        nodes.append(_Node(op, [a.name for a in node.all_input_nodes], [node.name], module))
    # the shipped program's logits close the graph: the root module's row is the artifact itself
    nodes.append(_Node("executorch_call_delegate", [fx_out], [_SHIPPED], None))
    graph = _Graph(nodes, _SHIPPED, lambda wanted: None)
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
    import copy

    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.devtools.intermediate_output_tap import FULL_TENSOR, strip_taps_, tap_intermediate_outputs_
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

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

    call = method._method.call  # no torch clone of the outputs (see edgevit.export.executorch.load)

    def run(x: np.ndarray, _keep=program) -> list[np.ndarray]:
        outs = call([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))], clone_outputs=False)
        return [outs[index[t]].numpy().astype(np.float32, copy=True) for t in names]

    return run, names, partitions


# ------------------------------------------------------------------------------------------------- parity hook


def app_inputs(images: np.ndarray, model_norm, manifest_input: dict | None):
    """``images`` as an app that follows the manifest feeds them, and the map back to the model's normalisation.

    Args:
        images: ``[N, C, H, W]`` images normalised with the model's own ``(mean, std)`` (``model_norm``).
        model_norm: ``(mean, std)`` the model was trained with (``model.json``), or None.
        manifest_input: the manifest's ``input`` section (``mean``, ``std``), or None.

    Returns:
        ``(app_images, to_model, app_norm)``: the images normalised as the manifest says, a function mapping such
        images back to the model's normalisation (the PyTorch reference sees what training saw), and the manifest's
        ``(mean, std)``. When both agree (or one is missing) the images are returned unchanged.
    """
    same = (images, lambda x: x, model_norm)
    if not manifest_input or model_norm is None or "mean" not in manifest_input or "std" not in manifest_input:
        return same
    m_mean, m_std = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in model_norm)  # [C] -> [1, C, 1, 1]
    a_mean = np.asarray(manifest_input["mean"], np.float32).reshape(1, -1, 1, 1)
    a_std = np.asarray(manifest_input["std"], np.float32).reshape(1, -1, 1, 1)
    if np.array_equal(m_mean, a_mean) and np.array_equal(m_std, a_std):
        return same
    app = ((images * m_std + m_mean - a_mean) / a_std).astype(np.float32)  # pixel/255, normalised per manifest

    def to_model(x: np.ndarray) -> np.ndarray:
        return ((x * a_std + a_mean - m_mean) / m_std).astype(np.float32)

    return app, to_model, (list(manifest_input["mean"]), list(manifest_input["std"]))


def explain_report(
    report,
    artifacts,
    model,
    images: np.ndarray,
    app_images: np.ndarray | None,
    everything: bool,
    calib=None,
    ptq=None,
):
    """Add an ``explain`` entry to each failing artifact of ``report`` (every runnable one with ``everything``).

    ``images`` are what PyTorch saw, ``app_images`` what the artifacts were fed; ``calib`` and ``ptq`` are the
    calibration images and PTQ settings the run's quantized artifacts were made with (see :func:`explain`). An
    artifact that cannot be explained gets ``explain: null`` and ``explain_error: why``; parity's verdict never
    depends on it.
    """
    by_path = {str(a.path): a for a in artifacts}
    for entry in report.artifacts:
        art = by_path.get(str(entry.get("path")))
        if art is None or not entry.get("runnable") or entry.get("top1") is None:
            continue  # not run here, or crashed: nothing to compare inside
        if not everything and entry.get("passed") is not False:
            continue
        try:
            entry["explain"] = explain(model, art, images, app_images, calib=calib, ptq=ptq)
        except Exception as e:  # a tracer failing must not hide the parity verdict
            entry["explain"] = None
            entry["explain_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


# ------------------------------------------------------------------------------------------------- rendering


def table(entry: dict[str, Any], title: str = ""):
    """A ``rich`` table of an ``explain`` dict: each layer's error and its growth, the first divergent marked."""
    from rich.table import Table

    first = (entry.get("first_divergent") or {}).get("module")
    t = Table(
        title=title or f"explain (rel L2 over {entry.get('images', '?')} images, tolerance {entry['tolerance']:g})"
    )
    for col in ("module", "op", "rel err", "× prev", "max abs", ""):
        right = col in ("rel err", "× prev", "max abs")
        t.add_column(col, justify="right" if right else "left", no_wrap=col in ("module", "op"))
    prev = None
    for row in entry.get("layers") or []:
        growth = "–" if not prev or prev < 1e-6 else f"{row['rel_err'] / prev:.1f}"
        prev = row["rel_err"]
        mark = ""
        if row["module"] == first:
            mark, first = "[red]◀ first divergent[/red]", None  # only the first such row
        elif row.get("carried") is False:
            mark = "[dim]over, not carried on[/dim]"
        elif row["rel_err"] > entry["tolerance"]:
            mark = "[yellow]over[/yellow]"
        t.add_row(row["module"], row["op"], f"{row['rel_err']:.2e}", growth, f"{row['max_abs_err']:.2e}", mark)
    if entry.get("note"):
        t.caption = entry["note"]
    return t


def summary(entry: dict[str, Any]) -> str:
    """One line: which layer diverges first (or none), with its op and error."""
    fd = entry.get("first_divergent")
    if not fd:
        carried = [r for r in entry.get("layers") or [] if r.get("carried") is not False] or [{"rel_err": 0.0}]
        worst = max(r["rel_err"] for r in carried)
        return f"no layer diverges beyond rel L2 {entry['tolerance']:g} (largest {worst:.2e})"
    return f"first divergent layer: {fd['module']} ({fd['op']}), rel L2 {fd['rel_err']:.2e} > {entry['tolerance']:g}"


__all__ = ["DEFAULT_TOLERANCE", "app_inputs", "explain", "explain_report", "summary", "table"]
