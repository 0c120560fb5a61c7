"""Compute accounting: parameters (backbone and full), MACs and FLOPs at any resolution.

Convention: FLOPs = 2 x MACs, counted by ``torch.utils.flop_counter.FlopCounterMode`` over the ops that
multiply-accumulate: convolutions (grouped/depthwise included), linear layers and matmuls, attention's
``q @ k^T`` and ``attn @ v`` included. Element-wise ops (norms, activations, softmax, adds) are not counted,
as in the papers' tables. The model is profiled on the ``meta`` device, so even billion-parameter models
cost no compute or memory. Backbone parameters exclude the classifier head(s) and the class/distillation
tokens (the Scaling-ViT table's convention); position embeddings count.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

_HEAD_PREFIXES = ("head.", "head_dist.", "classifier.", "fc.")
_TOKENS = ("cls_token", "dist_token")


def backbone_param_count(model: nn.Module) -> int:
    """Parameters without classifier head(s) and class/distillation tokens."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if not n.startswith(_HEAD_PREFIXES) and n not in _TOKENS and not n.startswith("head.fc.")
    )


def profile(model: nn.Module, img_size: int | tuple[int, int] | None = None, batch_size: int = 1) -> dict[str, Any]:
    """Parameters, MACs and FLOPs of ``model`` for a ``[batch_size, C, H, W]`` input.

    Args:
        model: any edgevit or timm classifier (not modified; a meta-device copy is profiled).
        img_size: input resolution; defaults to ``model.default_cfg["input_size"]``. Models with learned
            position embeddings (ViT, DeiT) must be built at that size: ``create_model(name, img_size=...)``.
        batch_size: MACs and FLOPs are for the whole batch.

    Returns:
        ``{"params", "backbone_params", "macs", "flops", "input_size"}``.
    """
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415 -- imports triton: seconds at start-up

    c, h, w = model.default_cfg["input_size"]
    if img_size is not None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(batch_size, c, h, w, device="meta"))
    flops = counter.get_total_flops()
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "backbone_params": backbone_param_count(model),
        "macs": flops // 2,
        "flops": flops,
        "input_size": [c, h, w],
    }
