"""Exporting to ONNX with the ``torch.onnx`` dynamo exporter; int8 with ONNX Runtime's own quantizer.

Precisions: ``fp32``; ``int8``: ONNX Runtime's own static quantizer (``quantize_static``) on the exported
fp32 graph: QDQ format, symmetric per-channel weights (7-bit range, see ``_quantize_static``), int8
activations calibrated (min/max) on the calibration images. ORT fuses the QDQ pairs into integer kernels at
session creation.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.quantize import PTQConfig
from edgevit.utils import EdgeVitError, atomic_path, require


def convert(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    precision: str = "fp32",
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
) -> dict[str, Any]:
    """Export with ``torch.onnx.export(..., dynamo=True)`` (input ``image``); ``int8`` then runs ORT's QDQ PTQ."""
    require("onnxscript", "onnx")
    onnx = require("onnx", "onnx")
    info: dict[str, Any] = {}
    if precision != "fp32" and ptq is not None and ptq.method != "pt2e":
        raise EdgeVitError(
            f"onnx int8 uses onnxruntime's own quantizer; method {ptq.method!r} applies to executorch, tflite, coreml"
        )
    with atomic_path(path) as tmp:
        if precision == "fp32":
            export_fp32(model, example, Path(tmp))
        else:
            with tempfile.TemporaryDirectory(prefix="edgevit-onnx-") as work:
                fp32 = Path(work) / "fp32.onnx"
                export_fp32(model, example, fp32)
                keep_float = ptq.keep_float if ptq is not None else []
                _quantize_static(fp32, Path(work), Path(tmp), calib, keep_float)
            info.update(quantizer="onnxruntime quantize_static (QDQ)", calib_images=len(calib))
            if keep_float:
                info.update(float_modules=list(keep_float))
        onnx.checker.check_model(str(tmp))
    proto = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    info.update(opset=proto.opset_import[0].version, nodes=len(proto.graph.node), ops=dict(sorted(ops.items())))
    return info


def unsupported(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """Nodes ``torch.onnx``'s torchlib registry has no function for, after its ONNX-friendly decompositions."""
    require("onnxscript", "onnx")
    from torch.onnx._internal.exporter import _fx_passes, _registration  # noqa: PLC0415 -- needs onnxscript

    registry = _registration.ONNXRegistry.from_torchlib()
    ep = _fx_passes.decompose_with_registry(ep, registry)
    return [
        n
        for n in ep.graph.nodes
        if n.op == "call_function"
        and isinstance(n.target, torch._ops.OpOverload)
        and n.target.namespace in ("aten", "prims")
        and not n.target.name().startswith("aten::_assert")  # the exporter drops assertion nodes
        and not registry.is_registered(n.target)
    ]


def export_fp32(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """The fp32 ``.onnx`` (input ``image``, output ``logits``) with the dynamo exporter's name-scope metadata."""
    program = torch.onnx.export(
        model, (example,), input_names=["image"], output_names=["logits"], dynamo=True, verbose=False
    )
    program.save(str(path))


def _nodes_under(model_path: Path, modules: list[str]) -> list[str]:
    """Names of the ONNX nodes the dynamo exporter traced from ``modules`` (its ``name_scopes`` metadata)."""
    onnx = require("onnx", "onnx")
    names = []
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = set(json.loads(meta.get("pkg.torch.onnx.name_scopes", "[]").replace("'", '"')))
        if scopes & set(modules):
            names.append(node.name)
    return names


def _float_nodes(fp32: Path, pre: Path, modules: list[str]) -> list[str]:
    """Nodes of the pre-processed model that stay float for ``modules``: the nodes traced from them
    (pre-processing drops the metadata but keeps names; fused nodes get a ``/...`` suffix), plus every node whose
    outputs feed only those (so the activation entering a float module is not quantized on the way, e.g. the
    LayerNorm and Gemm-input reshape before a float attention block)."""
    onnx = require("onnx", "onnx")
    traced = set(_nodes_under(fp32, modules))
    nodes = list(onnx.load(str(pre), load_external_data=False).graph.node)
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    excluded = {n.name for n in nodes if n.name.split("/")[0] in traced}
    changed = True
    while changed:
        changed = False
        for n in nodes:
            users = [u for o in n.output for u in consumers.get(o, [])]
            if n.name not in excluded and users and all(u in excluded for u in users):
                excluded.add(n.name)
                changed = True
    return [n.name for n in nodes if n.name in excluded]


def _quantize_static(fp32: Path, work: Path, out: Path, calib: torch.Tensor, keep_float: list[str]) -> None:
    """``quant_pre_process`` (graph optimisation + shape inference, as ORT recommends), then QDQ int8 PTQ,
    leaving the nodes of ``keep_float`` modules float (``nodes_to_exclude``)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import (  # noqa: PLC0415 -- optional package
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib[i : i + 1].numpy() for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"image": x}

    pre = work / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    # pre-processing drops the metadata but keeps node names (fused nodes get a "/..." suffix)
    exclude = _float_nodes(fp32, pre, keep_float) if keep_float else []
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        # 7-bit weights: on x86 without VNNI (AVX2, this CI's machines) ORT's fused int8 kernels use
        # VPMADDUBSW, whose int16 accumulation saturates with full-range weights. Measured on the quickstart
        # ViT: 8-bit weights lost 1.67 points top-1 fused (the same QDQ graph run unfused: +0.55), 7-bit
        # weights keep 99.7% agreement and the same top-1 as ExecuTorch int8. ORT documents this setting.
        reduce_range=True,
        nodes_to_exclude=exclude,
    )
