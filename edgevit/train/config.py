"""The training configuration (the ``train:`` section of a recipe) and what a run returns.

:class:`TrainConfig` and its sections (:class:`OptimizerConfig`, :class:`SAMConfig`, :class:`LossConfig`,
:class:`DistillConfig`, and :class:`~edgevit.train.multiscale.MultiScaleConfig`) are strict pydantic models:
an unknown key is an error naming it. :data:`LossFn` is the signature of a training objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgevit.data.transforms import AugConfig
from edgevit.train.multiscale import MultiScaleConfig

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, labels, images) -> scalar loss``: a training objective other than cross-entropy."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SAMConfig(_Strict):
    """Sharpness-Aware Minimisation (Foret et al. 2021): a second forward/backward per step at w + rho*g/|g|."""

    rho: float = Field(0.05, gt=0, description="radius of the ascent step")
    adaptive: bool = Field(False, description="ASAM: scale the ascent by |w| (use a larger rho, e.g. 2.0)")


class OptimizerConfig(_Strict):
    """The optimizer (the ``train.optimizer:`` section)."""

    name: Literal["adamw", "sgd", "lamb"] = Field("adamw", description="lamb: timm.optim.Lamb (DeiT III)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    sam: SAMConfig | None = Field(None, description="wrap the optimizer in SAM (batch norm stats skip its 2nd pass)")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise LR decay (fine-tuning)")


class LossConfig(_Strict):
    """The training loss (the ``train.loss:`` section; ``loss: bce`` is short for ``loss: {kind: bce}``).

    ``ce``: cross-entropy with ``train.label_smoothing`` (soft-target cross-entropy under Mixup/CutMix).
    ``bce``: DeiT III's binary cross-entropy, one sigmoid per class, through ``timm.loss.BinaryCrossEntropy``
    (mean over batch and classes): integer labels become one-hot targets smoothed by ``train.label_smoothing``
    (on ``1 - s + s/K``, off ``s/K``); Mixup/CutMix targets come mixed and smoothed already. With
    ``target_threshold`` every target above it becomes 1 and the rest 0: DeiT III binarises the mixed
    targets with ``targets.gt(0.0)`` (facebookresearch/deit engine.py, ``--bce-loss``), i.e. 0.0 here.
    """

    kind: Literal["ce", "bce"] = "ce"
    target_threshold: float | None = Field(None, ge=0, lt=1, description="bce only: binarise targets above it")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _threshold_is_bce(self) -> LossConfig:
        if self.target_threshold is not None and self.kind != "bce":
            raise ValueError("target_threshold is a bce setting; set kind: bce or drop it")
        return self


class DistillConfig(_Strict):
    """DeiT distillation through the student's distillation token (the ``train.distill:`` section).

    The student must be a distilled ViT/DeiT (``deit_*_distilled``, or ``model.args: {distilled: true}``).
    """

    teacher: str = Field(description="run directory (or model.safetensors) of a trained edgevit model")
    kind: Literal["hard", "soft"] = "hard"
    tau: float = Field(1.0, gt=0, description="soft distillation's temperature")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term")


class TrainConfig(_Strict):
    """Training hyperparameters (the ``train:`` section of a recipe)."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1, description="per process and micro-step")
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_epochs: float = Field(2.0, ge=0)
    warmup_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    loss: LossConfig = Field(default_factory=LossConfig, description="ce (default) or DeiT III's bce")
    grad_clip: float | None = Field(None, gt=0)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None keeps torch's default")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="keep an EMA of the weights (e.g. 0.9998); the EMA model is the one saved"
    )
    ema_warmup: bool = Field(
        False, description="ramp the EMA decay as 1 - (1 + step)^(-2/3) up to ema_decay (timm; for short runs)"
    )
    amp: Literal["none", "bf16"] = Field("none", description="bf16 autocast for forward and loss")
    accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    ckpt_every_steps: int | None = Field(None, ge=1, description="also checkpoint every N optimizer steps")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="auto: cuda when available")
    workers: int = Field(
        0, ge=0, description="DataLoader workers; any number keeps exact resume (augmentation is seeded per sample)"
    )
    tensorboard: bool = Field(True, description="write TensorBoard events to RUN/tb (needs `tensorboard`)")
    drop_path: float | None = Field(
        None, ge=0, lt=1, description="stochastic depth rate, passed to the model as drop_path_rate"
    )
    aug: AugConfig = Field(default_factory=AugConfig, description="per-image augmentation and Mixup/CutMix")
    repeated_aug: int | None = Field(
        None, ge=2, description="repeated augmentation: each drawn image this many times (DeiT: 3); see RepeatedOrder"
    )
    multiscale: MultiScaleConfig | None = Field(
        None, description="MobileViT's multi-scale sampler: a resolution per batch, pixels per batch constant"
    )
    distill: DistillConfig | None = Field(None, description="DeiT distillation from a trained teacher")

    @model_validator(mode="after")
    def _even_batch_for_mixup(self) -> TrainConfig:
        if self.aug.mixes and self.batch_size % 2:
            raise ValueError(f"batch_size must be even with Mixup/CutMix (they pair images), got {self.batch_size}")
        if self.multiscale and self.repeated_aug:
            raise ValueError("multiscale and repeated_aug are two samplers; set only one")
        return self


@dataclass
class TrainResult:
    """What a run produced: the best and final validation top-1 (percent) and the run directory.

    With EMA, the top-1 numbers are the EMA model's and ``ema_model`` holds its weights (the raw model's
    final top-1 is ``final_val_top1_raw``).
    """

    best_val_top1: float
    final_val_top1: float
    epochs_run: int
    out_dir: Path
    final_val_top1_raw: float | None = None
    ema_model: nn.Module | None = None


__all__ = [
    "DistillConfig",
    "LossConfig",
    "LossFn",
    "OptimizerConfig",
    "SAMConfig",
    "TrainConfig",
    "TrainResult",
]
