"""Accuracy-controlled mixed precision: find the layers int8 hurts most and keep just those in float.

Like NNCF's ``quantize_with_accuracy_control``, but over the PT2E quantizer of the target backend, so the
plan is made with the same quantization scheme the artifact gets:

1. **Sensitivity.** Every layer group (the module that owns a Linear/Conv: ``blocks.3.attn``,
   ``blocks.3.mlp``, ``patch_embed``, ``head``, ...) is quantized *alone*, calibrated, and evaluated on a
   validation subset: its top-1 drop vs fp32 and the relative logit error it causes.
2. **Plan.** Quantize everything; while the drop exceeds ``max_drop``, move the next most sensitive group
   (by top-1 drop, then logit error) to float and re-measure.
3. The plan (which modules stay float, why, every group's sensitivity) is saved as JSON and applied on each
   backend that can skip modules: PT2E quantizers (executorch, tflite, coreml) through
   :func:`skip_modules`, ONNX Runtime through ``nodes_to_exclude``.

Everything is deterministic: the calibration and validation images are fixed, and ties are broken by name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from edgevit.quantize.capture import capture
from edgevit.utils import EdgeVitError, progress_bar, read_json, write_json_atomic


def module_paths(node: torch.fx.Node) -> set[str]:
    """The module paths (``blocks.0.attn.qkv`` and its ancestors) a traced node was called from."""
    stack = node.meta.get("nn_module_stack") or {}
    return {str(path).removeprefix("L['self'].").removeprefix("L__self__.") for path, _ in stack.values()}


def under(paths: set[str], modules: list[str] | set[str]) -> bool:
    """Whether a node with module ``paths`` (see :func:`module_paths`) lies inside one of ``modules``."""
    return any(m in paths for m in modules)


def skip_modules(inner, keep_float: list[str] | None = None, only: list[str] | None = None):
    """A PT2E quantizer that annotates like ``inner`` but leaves the nodes of ``keep_float`` modules (with
    ``only``: every node outside ``only``) unannotated, so they stay float.

    It edits the annotations ``inner`` wrote, so it works with any PT2E quantizer (XNNPACK, litert-torch, the
    Core ML scheme) rather than relying on each one's ``set_module_name`` (litert-torch's cannot take ``None``
    and mis-parses module paths that contain underscores).
    """
    from torchao.quantization.pt2e.quantizer import Quantizer  # noqa: PLC0415 -- optional package (edgevit[executorch])

    class SkipModules(Quantizer):
        def transform_for_annotation(self, model):
            return inner.transform_for_annotation(model)

        def annotate(self, model):
            model = inner.annotate(model)
            for node in model.graph.nodes:
                paths = module_paths(node)
                if under(paths, keep_float or []) or (only is not None and not under(paths, only)):
                    node.meta.pop("quantization_annotation", None)
            return model

        def validate(self, model):
            return inner.validate(model)

    return SkipModules()


def layer_groups(model: torch.nn.Module) -> list[str]:
    """The modules sensitivity is measured over: the parent of each Linear/Conv (its own path when the parent
    is the model itself), in model order. ``blocks.0.attn`` groups qkv, proj and the attention matmuls."""
    groups: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            group = name.rsplit(".", 1)[0] if "." in name else name
            if group not in groups:
                groups.append(group)
    return groups


class GroupSensitivity(BaseModel):
    """What quantizing one group alone costs on the validation subset."""

    group: str
    top1: float
    drop: float = Field(description="fp32 top-1 minus this top-1, in points")
    logit_error: float = Field(description="mean ||q - f|| / ||f|| of the logits")


class MixedPrecisionPlan(BaseModel):
    """Which modules stay float so that int8 loses at most ``max_drop`` top-1 points (saved as JSON)."""

    quantizer: str
    max_drop: float
    images: int
    calib_images: int
    fp32_top1: float
    int8_top1: float = Field(description="everything quantized")
    final_top1: float = Field(description="with float_modules in float")
    met: bool
    float_modules: list[str]
    reasons: dict[str, str]
    sensitivity: list[GroupSensitivity]

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON, atomically."""
        return write_json_atomic(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> MixedPrecisionPlan:
        """Read a plan written by :meth:`save`."""
        try:
            return cls.model_validate(read_json(path, "mixed-precision plan"))
        except ValueError as e:
            raise EdgeVitError(f"{path} is not a mixed-precision plan: {e}") from e


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(-1) == labels).mean() * 100.0)


@torch.no_grad()
def _run(model, images: torch.Tensor, batch: int = 100) -> np.ndarray:
    return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)]).numpy()


def plan_mixed_precision(
    model: torch.nn.Module,
    quantizer,
    calib: torch.Tensor,
    images: torch.Tensor,
    labels: np.ndarray,
    max_drop: float,
    quantizer_name: str = "XNNPACKQuantizer",
    groups: list[str] | None = None,
    progress: bool = True,
) -> MixedPrecisionPlan:
    """Measure each layer group's int8 sensitivity and keep the most sensitive ones float until the top-1 drop
    on ``images`` is at most ``max_drop``.

    Args:
        model: the eval-mode float model.
        quantizer: the backend's PT2E quantizer (e.g. ``edgevit.export.executorch.quantizer("int8")``).
        calib: ``[N, C, H, W]`` calibration images (training split).
        images, labels: the validation subset the drop is measured on.
        max_drop: allowed top-1 drop in points (e.g. ``1.0``).
        quantizer_name: recorded in the plan.
        groups: module paths to consider (default :func:`layer_groups`).
        progress: a progress bar over the analysis.

    Returns:
        The plan. If only an all-float model meets ``max_drop``, every group is listed in ``float_modules``.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: PLC0415 -- optional package (edgevit[executorch])

    model = model.eval()
    groups = groups or layer_groups(model)
    fp32 = _run(model, images)
    fp32_top1 = _top1(fp32, labels)
    captured = capture(model, images[:2], dynamic_batch=True)  # evaluated in batches, calibrated per image

    def quantized(keep_float: list[str] | None = None, only: list[str] | None = None) -> np.ndarray:
        graph = prepare_pt2e(copy.deepcopy(captured), skip_modules(quantizer, keep_float, only))
        with torch.no_grad():
            for i in range(len(calib)):  # one image at a time, as calibrate_pt2e does for the artifacts
                graph(calib[i : i + 1])
        return _run(convert_pt2e(graph), images)

    def logit_error(q: np.ndarray) -> float:
        return float(np.mean(np.linalg.norm(q - fp32, axis=-1) / np.maximum(np.linalg.norm(fp32, axis=-1), 1e-12)))

    sensitivity = []
    with progress_bar(progress) as bars:
        task = bars.add_task("int8 sensitivity", total=len(groups), info="")
        for g in groups:
            q = quantized(only=[g])
            top1 = _top1(q, labels)
            sensitivity.append(GroupSensitivity(group=g, top1=top1, drop=fp32_top1 - top1, logit_error=logit_error(q)))
            bars.update(task, advance=1, info=g)
        ranked = sorted(sensitivity, key=lambda s: (-s.drop, -s.logit_error, s.group))
        int8_top1 = final_top1 = _top1(quantized(), labels)
        keep: list[str] = []
        reasons: dict[str, str] = {}
        task = bars.add_task("mixed precision", total=len(ranked), info="")
        for rank, s in enumerate(ranked, 1):
            if fp32_top1 - final_top1 <= max_drop:
                break
            keep.append(s.group)
            reasons[s.group] = (
                f"sensitivity rank {rank}: int8 alone costs {s.drop:.2f} points (logit error {s.logit_error:.3f}); "
                f"drop was {fp32_top1 - final_top1:.2f} > max_drop {max_drop}"
            )
            final_top1 = fp32_top1 if len(keep) == len(ranked) else _top1(quantized(keep_float=keep), labels)
            bars.update(task, advance=1, info=f"{len(keep)} float, drop {fp32_top1 - final_top1:.2f}")
    return MixedPrecisionPlan(
        quantizer=quantizer_name,
        max_drop=max_drop,
        images=len(images),
        calib_images=len(calib),
        fp32_top1=fp32_top1,
        int8_top1=int8_top1,
        final_top1=final_top1,
        met=fp32_top1 - final_top1 <= max_drop,
        float_modules=keep,
        reasons=reasons,
        sensitivity=sensitivity,
    )


def summary(plan: MixedPrecisionPlan) -> dict[str, Any]:
    """A one-line-per-fact view for manifests and logs."""
    return {
        "max_drop": plan.max_drop,
        "int8_drop": round(plan.fp32_top1 - plan.int8_top1, 3),
        "mixed_drop": round(plan.fp32_top1 - plan.final_top1, 3),
        "float_modules": plan.float_modules,
    }


__all__ = ["MixedPrecisionPlan", "skip_modules", "layer_groups", "plan_mixed_precision"]
