"""One optimizer step and what it is made of: the training objective (:func:`build_loss`), the optimizer
(:func:`build_optimizer`) and the step itself (:func:`optimizer_step`: gradient accumulation over micro-batches,
DDP gradient sync on the last, bf16 autocast, gradient clipping, SAM's two passes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn

from edgevit.data.transforms import build_criterion, build_mixup
from edgevit.train.config import LossFn, TrainConfig
from edgevit.train.distill import deit_distillation_loss
from edgevit.train.optim import create_optimizer
from edgevit.train.sam import disable_running_stats
from edgevit.utils import EdgeVitError


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optimizer`` (see :func:`edgevit.train.optim.create_optimizer`)."""
    o = cfg.optimizer
    return create_optimizer(
        model,
        o.name,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        momentum=o.momentum,
        layer_decay=o.layer_decay,
        sam=o.sam.model_dump() if o.sam is not None else None,
    )


def build_loss(
    model: nn.Module,
    cfg: TrainConfig,
    num_classes: int,
    loss_fn: LossFn | None = None,
    teacher: nn.Module | None = None,
) -> tuple[LossFn, Callable | None]:
    """The training objective of ``cfg`` and its batch mixer, as :func:`~edgevit.train.loop.train` uses them.

    Args:
        model: the student; with ``cfg.distill`` it must have a distillation token, and it is set to return
            ``(cls_logits, dist_logits)`` in train mode (``model.distilled_training = True``).
        cfg: ``cfg.loss`` (cross-entropy or DeiT III's BCE), ``cfg.label_smoothing``, ``cfg.aug`` (Mixup/CutMix)
            and ``cfg.distill``.
        num_classes: the number of classes (Mixup/CutMix targets are ``[B, num_classes]``).
        loss_fn: a training loss to use instead of ``cfg.loss`` (not with ``cfg.distill``).
        teacher: the trained teacher, needed with ``cfg.distill``.

    Returns:
        ``(loss, mixup)``: ``loss(outputs, targets, images) -> scalar`` and the Mixup/CutMix batch mixer
        ``mixup(images, labels) -> (images, soft targets)``, or ``None`` without Mixup/CutMix.

    Raises:
        EdgeVitError: ``cfg.distill`` with a ``loss_fn``, without a ``teacher``, or with a student that has no
            distillation token.
    """
    mixup = build_mixup(cfg.aug, num_classes, cfg.label_smoothing)
    base = build_criterion(mixup, cfg.label_smoothing)
    if cfg.loss.kind == "bce":
        from timm.loss import BinaryCrossEntropy  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

        smoothing = 0.0 if mixup is not None else cfg.label_smoothing  # Mixup folds the smoothing in already
        base = BinaryCrossEntropy(smoothing=smoothing, target_threshold=cfg.loss.target_threshold)
    if cfg.distill is None:
        return loss_fn or (lambda outputs, targets, images: base(outputs, targets)), mixup
    if loss_fn is not None:
        raise EdgeVitError("train.distill and a loss_fn are two training objectives; use one")
    if teacher is None:
        raise EdgeVitError("train.distill needs the teacher model: pass train(teacher=...)")
    if getattr(model, "dist_token", None) is None:
        raise EdgeVitError(
            "train.distill: the student has no distillation token; use a distilled model "
            "(deit_tiny_distilled, or model.args: {distilled: true} on a ViT)"
        )
    model.distilled_training = True  # (cls_logits, dist_logits) in train mode; eval averages the two heads
    d = cfg.distill
    return deit_distillation_loss(teacher, d.kind, d.tau, d.alpha, base_criterion=base), mixup


def optimizer_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    group: list[tuple[torch.Tensor, torch.Tensor]],
    criterion: LossFn,
    cfg: TrainConfig,
    amp: contextlib.AbstractContextManager,
) -> tuple[float, float]:
    """One optimizer step over the micro-batches of ``group``, their gradients accumulated (SAM: two passes).

    Args:
        net: what runs forward: ``model``, or its DistributedDataParallel wrapper (gradients sync on the last
            micro-batch only).
        model: the model (its parameters are clipped; SAM's second pass leaves its batch-norm statistics alone).
        optimizer: from :func:`build_optimizer` with ``cfg``.
        group: the micro-batches ``[(images, targets), ...]``; each weighs by its size in the group's mean loss.
        criterion: ``criterion(outputs, targets, images) -> scalar``, from :func:`build_loss`.
        cfg: ``cfg.optimizer.sam`` and ``cfg.grad_clip``.
        amp: the autocast context the forward pass and loss run in.

    Returns:
        ``(loss sum, correct)`` over the group's samples (the first pass's, under SAM).
    """
    total = sum(len(y) for _, y in group)

    def accumulate() -> tuple[float, float]:
        loss_sum, correct = 0.0, 0.0
        for j, (x, y) in enumerate(group):
            last = j == len(group) - 1
            sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
            with sync:
                with amp:
                    out = net(x)
                    loss = criterion(out, y, x)
                (loss * (len(y) / total)).backward()  # the group's mean loss, micro-batches of any size
            logits = out[0] if isinstance(out, tuple) else out
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(-1) == (y if y.ndim == 1 else y.argmax(-1))).sum().item()
        return loss_sum, correct

    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct = accumulate()
    if cfg.optimizer.sam is not None:
        optimizer.first_step(zero_grad=True)
        with disable_running_stats(model):
            accumulate()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if cfg.optimizer.sam is not None:
        optimizer.second_step(zero_grad=True)
    else:
        optimizer.step()
    return loss_sum, correct


__all__ = ["build_loss", "build_optimizer", "optimizer_step"]
