"""Optimiser parameter groups (weight-decay exclusions, layer-wise LR decay) and ``create_optimizer`` (AdamW, SGD,
timm's LAMB; any of them inside SAM)."""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn

from edgevit.train.sam import SAM
from edgevit.utils import EdgeVitError

_BLOCK = re.compile(r"^(?:blocks|stages)\.(\d+)\.")


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Each parameter's depth for layer-wise LR decay, and the number of layers.

    Parameters of the top-level ``blocks.N`` / ``stages.N`` (ViT, DeiT, Mobile-Former / MobileViT) get
    ``N + 1``; parameters registered before the first block (patch/stem embedding, class and distillation
    tokens, position embedding) get 0; the rest (final norm, head) get the last id, ``num_blocks + 1``.
    That is BEiT's and timm's layout (``param_groups_layer_decay`` with ViT's ``group_matcher``); edgevit's
    models do not define timm's ``group_matcher``, so timm's function would fall back to grouping
    parameters by count, and the ids are computed here instead.

    Raises:
        EdgeVitError: the model has no ``blocks.N`` or ``stages.N`` modules.
    """
    names = [n for n, _ in model.named_parameters()]
    block_of = {n: int(m.group(1)) for n in names if (m := _BLOCK.match(n))}
    if not block_of:
        raise EdgeVitError(
            f"layer_decay needs a model with top-level blocks.N or stages.N modules; {type(model).__name__} has none"
        )
    last = max(block_of.values()) + 2
    ids, seen_block = {}, False
    for n in names:
        if n in block_of:
            seen_block = True
            ids[n] = block_of[n] + 1
        else:
            ids[n] = last if seen_block else 0
    return ids, last + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Optimiser groups: no weight decay for biases, norm weights, position embeddings and class/distillation tokens.

    A parameter is not decayed if it is 1-D (biases, norm scales) or named in ``model.no_weight_decay()``
    (``pos_embed``, ``cls_token``, ``dist_token``); frozen parameters (``requires_grad=False``) are left out.

    Args:
        model: the model.
        weight_decay: decay of the decayed group(s).
        layer_decay: layer-wise LR decay (BEiT; e.g. 0.65-0.75 when fine-tuning): layer ``i`` of ``L`` (see
            :func:`layer_ids`) gets ``lr_scale = layer_decay ** (L - 1 - i)``, so the head trains at the full
            LR and the embeddings at the smallest. ``None``: no ``lr_scale``.

    Returns:
        Without ``layer_decay``: ``[{"params": decay, "weight_decay": weight_decay}, {"params": no_decay,
        "weight_decay": 0.0}]`` (the order the train loop has always used). With it: one group per (layer,
        decayed or not) with ``lr_scale``. timm's schedulers multiply each group's LR by ``lr_scale``; with
        another scheduler, set ``group["lr"] = lr * group["lr_scale"]`` yourself.

    Raises:
        EdgeVitError: ``layer_decay`` not in (0, 1]; or see :func:`layer_ids`.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if layer_decay is None:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    if not 0.0 < layer_decay <= 1.0:
        raise EdgeVitError(f"layer_decay must be in (0, 1], got {layer_decay}")
    ids, num_layers = layer_ids(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = not (p.ndim <= 1 or name in skip)
        layer = ids[name]
        group = groups.setdefault(
            (layer, decayed),
            {
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr_scale": layer_decay ** (num_layers - 1 - layer),
            },
        )
        group["params"].append(p)
    return list(groups.values())


def create_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
    nesterov: bool = False,
    layer_decay: float | None = None,
    sam: dict[str, Any] | None = None,
) -> torch.optim.Optimizer:
    """An optimiser over :func:`param_groups` of ``model``.

    Args:
        model: the model.
        name: ``"adamw"`` (with ``betas``), ``"sgd"`` (with ``momentum``) or ``"lamb"`` (``timm.optim.Lamb``
            with ``betas`` and timm's defaults: eps 1e-6, bias correction, the gradient clipped to global norm
            1.0 inside the step, as NVIDIA apex's FusedLAMB that DeiT III trained with).
        lr: the base learning rate (scaled per group by ``lr_scale`` under timm's schedulers).
        weight_decay: for the decayed groups; norms, biases, embeddings and tokens get none.
        betas: AdamW's and LAMB's.
        momentum: SGD's.
        nesterov: SGD's Nesterov momentum.
        layer_decay: layer-wise LR decay, see :func:`param_groups`.
        sam: ``{"rho": 0.05, "adaptive": False}`` wraps the optimiser in :class:`~edgevit.train.sam.SAM`.

    Returns:
        ``torch.optim.AdamW`` / ``SGD`` / ``timm.optim.Lamb``, or a ``SAM`` around it.

    Raises:
        EdgeVitError: unknown ``name`` or ``sam`` key, ``rho <= 0``, bad ``layer_decay``.
    """
    groups = param_groups(model, weight_decay, layer_decay)
    if name == "adamw":
        cls, kwargs = torch.optim.AdamW, {"lr": lr, "betas": tuple(betas)}
    elif name == "sgd":
        cls, kwargs = torch.optim.SGD, {"lr": lr, "momentum": momentum, "nesterov": nesterov}
    elif name == "lamb":
        from timm.optim import Lamb  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

        cls, kwargs = Lamb, {"lr": lr, "betas": tuple(betas)}
    else:
        raise EdgeVitError(f"unknown optimizer {name!r}; choose 'adamw', 'sgd' or 'lamb'")
    if sam is None:
        return cls(groups, **kwargs)
    unknown = set(sam) - {"rho", "adaptive"}
    if unknown:
        raise EdgeVitError(f"unknown sam key(s) {sorted(unknown)}; valid: ['adaptive', 'rho']")
    return SAM(groups, cls, rho=sam.get("rho", 0.05), adaptive=sam.get("adaptive", False), **kwargs)


__all__ = ["create_optimizer", "layer_ids", "param_groups"]
