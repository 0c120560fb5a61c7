"""Knowledge distillation from a teacher model's logits (QAT and pruning recovery use it)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgevit.train.loop import LossFn


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


__all__ = ["distillation_loss"]
