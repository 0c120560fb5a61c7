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
- Core ML: the emulator's per-op outputs (:meth:`edgevit.backends.coreml.emulator.Emulator.trace`); MIL variable
  names are
  the ``torch.export`` node names (plus ``_cast_fp16``-style suffixes), whose ``nn_module_stack`` names the module.
  W8A8 residual adds that coremltools computes in one operand's scale are read back in real units
  (:func:`edgevit.backends.coreml.trace.mil_units`).
- ExecuTorch: the shipped XNNPACK delegate is one opaque call, so the model is re-lowered as the exporter lowers it
  with the wanted FX nodes tapped as extra delegate outputs (``executorch.devtools.intermediate_output_tap``: same
  partitioning, same XNNPACK kernels); FX node names carry ``nn_module_stack``. ``output`` is the shipped ``.pte``'s
  logits, and ``relowering`` reports how far the re-lowering's logits are from them (0 when it is faithful).
  Quantized ``.pte`` files are re-quantized first as the exporter quantizes them (same XNNPACK quantizer, same
  calibration images and PTQ settings, passed in as ``calib`` and ``ptq``; PT2E calibration is deterministic), and
  each module's output is tapped as the float value after its ``dequantize`` (the int8 tensor the next layer reads;
  a quantized op's own float output cannot be tapped: it is fused into XNNPACK's int8 kernel). Without ``calib``
  (static int8) or for a QAT-quantized file they are compared at the delegate boundary only.

Each backend's tracer is its ``trace`` (:meth:`edgevit.backends.Backend.trace`, in
``edgevit/backends/<name>/trace.py``);
this module is the backend-independent algorithm. Layouts are matched by shape: NHWC vs NCHW, ``[B*h, N, d]`` vs
``[B, h, N, d]`` and dropped unit dimensions are
tried and the best-matching arrangement is compared.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from edgevit.backends import TraceGraph, TraceNode, get_backend, to_layout
from edgevit.backends.base import INPUT, OUTPUT, QDQ_OPS
from edgevit.utils import EdgeVitError

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
    tol = float(tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(artifact.precision, 1e-3))
    n = min(max_images, len(images))
    ref_x = np.ascontiguousarray(images[:n], dtype=np.float32)
    art_x = ref_x if artifact_images is None else np.ascontiguousarray(artifact_images[:n], dtype=np.float32)
    if ref_x.shape != art_x.shape:
        raise EdgeVitError(f"explain: images {ref_x.shape} and artifact_images {art_x.shape} differ in shape")
    example = torch.from_numpy(ref_x[:1])
    model = model.eval()
    layout = getattr(artifact, "layout", "NCHW")  # an NHWC export takes [1, H, W, C]: fed so, compared as NCHW
    info = getattr(artifact, "info", None) or {}
    context = {"precision": artifact.precision, "info": info, "layout": layout, "calib": calib, "ptq": ptq}
    graph = get_backend(artifact.backend).trace(Path(artifact.path), model, example, **context)

    def feed(a: np.ndarray) -> np.ndarray:  # a re-lowering (ExecuTorch) takes NCHW; the artifact its own layout
        return a if graph.takes_nchw else to_layout(a, layout)

    ref_names, ref_outputs, ref_inputs = reference_outputs(model, ref_x)  # [module], {module: [n, ...] array}
    chosen, in_tensors = _module_tensors(graph, ref_names)  # module -> (tensor, op); module -> input tensor
    runner = graph.make_runner(sorted({t for t, _ in chosen.values()} | set(in_tensors.values())))
    art_outputs: dict[str, list[np.ndarray]] = {}
    for x in art_x:
        for t, v in runner(feed(x[None])).items():
            art_outputs.setdefault(t, []).append(v)
    layers = [compare(INPUT, "preprocess", "input", ref_x, art_x)]
    rows: dict[str, dict] = {}
    unmapped = []
    for name in ref_names:
        row = None
        if name in chosen:
            tensor, op = chosen[name]
            row = compare(name or OUTPUT, op, tensor, ref_outputs[name], art_outputs.get(tensor))
        if row is None:
            unmapped.append(name)
        else:
            layers.append(row)
            rows[name] = row
    first = first_divergent(layers, tol)
    name = next((k for k, r in rows.items() if r is first), None)
    if name and name in in_tensors and name in ref_inputs:  # already wrong on the way in: a parent's own op?
        got = compare(name, "", in_tensors[name], ref_inputs[name], art_outputs.get(in_tensors[name]))
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


def reference_outputs(model, images: np.ndarray) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Module names in the order their outputs complete, and each module's outputs and first inputs over ``images``.

    Modules that return their input unchanged (dropout, identity in eval) own no op and are left out. The root
    module (``""``) is the logits.
    """
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


def first_divergent(layers: list[dict], tol: float) -> dict | None:
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


def _inside(node: TraceNode, m: str) -> bool:
    return node.module is not None and (m == "" or node.module == m or node.module.startswith(m + "."))


def _module_tensors(graph: TraceGraph, modules: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
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


def _origin(graph: TraceGraph, module: str, tensor: str, rows: dict[str, dict]) -> dict | None:
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


def _compute_op(graph: TraceGraph, tensor: str) -> str:
    """The op that computes ``tensor``, looking through quantize/dequantize/cast wrappers."""
    i = graph.producers.get(tensor)
    while i is not None:
        node = graph.nodes[i]
        if node.op not in QDQ_OPS or not node.inputs:
            return node.op
        i = graph.producers.get(node.inputs[0])
    return "?"


# ------------------------------------------------------------------------------------------------- comparison


def layouts(a: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
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


def compare(module: str, op: str, tensor: str, ref: np.ndarray, got) -> dict[str, Any] | None:
    """Relative L2 and max abs error of ``got`` vs ``ref`` (best-matching layout); None when shapes cannot match."""
    if got is None:
        return None
    got = np.asarray(got if isinstance(got, np.ndarray) else np.stack(got), np.float64)  # [n, *artifact shape]
    if got.shape[0] != ref.shape[0]:
        return None
    ref = ref.astype(np.float64)
    best = None
    for cand in layouts(got, ref.shape[1:]):
        err = np.linalg.norm(cand - ref) / max(np.linalg.norm(ref), 1e-12)
        if best is None or err < best[0]:
            best = (float(err), float(np.abs(cand - ref).max()))
    if best is None:
        return None
    return {"module": module, "op": op, "rel_err": best[0], "max_abs_err": best[1], "tensor": tensor}


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


__all__ = [
    "DEFAULT_TOLERANCE",
    "compare",
    "explain",
    "explain_report",
    "first_divergent",
    "layouts",
    "reference_outputs",
    "summary",
    "table",
]
