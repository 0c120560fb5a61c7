"""Knowledge distillation from a teacher's logits: Hinton's soft loss (QAT and pruning recovery use it) and DeiT's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgevit.data import DataSplits
from edgevit.models import load_model
from edgevit.train.config import LossFn
from edgevit.utils import EdgeVitError


def distillation_loss(
    teacher: nn.Module, temperature: float = 2.0, weight: float = 0.5, label_smoothing: float = 0.0
) -> LossFn:
    """``(1 - weight) * CE(logits, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(logits / T))``.

    Hinton et al.'s soft-target loss; the ``T^2`` keeps its gradients on the scale of the cross-entropy's.
    ``teacher`` runs in eval mode without gradients on the same images. Pass the result as ``train(loss_fn=)``.
    """
    teacher.eval().requires_grad_(False)
    cross_entropy = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(images)
        kd = F.kl_div(
            F.log_softmax(logits / temperature, -1),
            F.log_softmax(target / temperature, -1),
            reduction="batchmean",
            log_target=True,
        )
        return (1 - weight) * cross_entropy(logits, labels) + weight * temperature**2 * kd

    return loss


def deit_distillation_loss(
    teacher: nn.Module,
    kind: str = "hard",
    tau: float = 1.0,
    alpha: float = 0.5,
    base_criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> LossFn:
    """DeiT's distillation through the distillation token (Touvron et al. 2021; facebookresearch/deit ``losses.py``).

    The student is a distilled ViT/DeiT (``distilled=True``, e.g. ``deit_tiny_distilled``) with
    ``model.distilled_training = True``, so in train mode it returns ``(cls_logits, dist_logits)``. Then::

        hard: (1 - alpha) * base(cls, y) + alpha * CE(dist, argmax(teacher(x)))
        soft: (1 - alpha) * base(cls, y) + alpha * tau^2 * KL(softmax(teacher / tau) || softmax(dist / tau))

    DeiT trains hard distillation with ``alpha = 0.5`` (1/2 each). The KL is DeiT's exactly: summed over
    batch and classes and divided by ``dist.numel()`` (batch x classes), not by the batch size.

    Args:
        teacher: any classifier on the same images; run in eval mode without gradients.
        kind: ``"hard"`` or ``"soft"``.
        tau: the soft loss's temperature, > 0.
        alpha: weight of the distillation term, in [0, 1].
        base_criterion: the class-token loss ``(logits, targets)``; default cross-entropy. Pass timm's
            ``SoftTargetCrossEntropy`` (``build_criterion``) when training with Mixup/CutMix.

    Returns:
        A loss ``(outputs, labels, images) -> scalar`` for ``train(loss_fn=)``.

    Raises:
        EdgeVitError: bad ``kind``/``tau``/``alpha``; at call time, a student output that is not a pair.
    """
    if kind not in ("hard", "soft"):
        raise EdgeVitError(f"DeiT distillation kind must be 'hard' or 'soft', got {kind!r}")
    if not tau > 0:
        raise EdgeVitError(f"distillation tau must be > 0, got {tau}")
    if not 0.0 <= alpha <= 1.0:
        raise EdgeVitError(f"distillation alpha must be in [0, 1], got {alpha}")
    teacher.eval().requires_grad_(False)
    base = base_criterion or nn.CrossEntropyLoss()

    def loss(outputs: Any, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            raise EdgeVitError(
                "DeiT distillation needs the student's (cls_logits, dist_logits): use a distilled model "
                "(distilled=True) and set model.distilled_training = True"
            )
        cls_logits, dist_logits = outputs
        base_loss = base(cls_logits, labels)
        with torch.no_grad():
            teacher_logits = teacher(images)
        if kind == "soft":
            kd = (
                F.kl_div(
                    F.log_softmax(dist_logits / tau, dim=1),
                    F.log_softmax(teacher_logits / tau, dim=1),
                    reduction="sum",
                    log_target=True,
                )
                * (tau * tau)
                / dist_logits.numel()
            )
        else:
            kd = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=1))
        return base_loss * (1 - alpha) + kd * alpha

    return loss


__all__ = ["deit_distillation_loss", "distillation_loss"]


class _Renormalize(nn.Module):
    """Feed a model trained with another mean/std: ``x`` normalised with (mean, std) -> the model's own."""

    def __init__(self, model: nn.Module, mean, std, model_mean, model_std):
        super().__init__()
        self.model = model
        view = (1, -1, 1, 1)
        self.register_buffer("scale", (torch.tensor(std) / torch.tensor(model_std)).view(view))
        self.register_buffer(
            "shift", ((torch.tensor(mean) - torch.tensor(model_mean)) / torch.tensor(model_std)).view(view)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


def load_teacher(path: str | Path, student_cfg: dict, data: DataSplits) -> nn.Module:
    """A trained edgevit model (run directory or ``model.safetensors``) as a distillation teacher, in eval mode.

    Images are normalised for the student; a teacher trained with another mean/std is fed renormalised ones.

    Raises:
        EdgeVitError: no trained model there, or one trained on other classes.
    """
    p = Path(path)
    if not (p / "model.safetensors").is_file() and not (p.suffix == ".safetensors" and p.is_file()):
        raise EdgeVitError(
            f"train.distill.teacher: {path} is not a trained run directory or model.safetensors; train the teacher "
            f"first (`edgevit train TEACHER.yaml --out {path}`)"
        )
    teacher, meta = load_model(p)
    if meta.get("classes") is not None and list(meta["classes"]) != list(data.classes):
        raise EdgeVitError(
            f"train.distill.teacher: {path} was trained on {len(meta['classes'])} other classes than this data's "
            f"{len(data.classes)}"
        )
    mean, std = list(student_cfg["mean"]), list(student_cfg["std"])
    t_mean, t_std = meta.get("mean", mean), meta.get("std", std)
    if [float(v) for v in t_mean + t_std] != [float(v) for v in mean + std]:
        teacher = _Renormalize(teacher, mean, std, t_mean, t_std)
    return teacher.eval().requires_grad_(False)
