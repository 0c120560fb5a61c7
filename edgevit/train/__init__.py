"""Training: the loop, optimizers (AdamW, SGD, LAMB; SAM, layer decay), losses (CE, DeiT III's BCE), samplers
(repeated augmentation, MobileViT's multi-scale batches), distillation, fine-tuning (FixRes, transfer, linear
probe), checkpoints, evaluation helpers."""

from edgevit.train.checkpoint import load_checkpoint, load_state_dict, save_checkpoint, save_state_dict
from edgevit.train.config import LossConfig, TrainConfig, TrainResult
from edgevit.train.distill import deit_distillation_loss, distillation_loss
from edgevit.train.finetune import FinetuneConfig, freeze_backbone_, frozen_to_eval_, load_pretrained_
from edgevit.train.loop import predict, top1, train
from edgevit.train.multiscale import MultiScaleConfig
from edgevit.train.optim import create_optimizer
from edgevit.train.rng import seed_everything
from edgevit.train.sam import SAM, disable_running_stats

__all__ = [
    "SAM",
    "FinetuneConfig",
    "LossConfig",
    "MultiScaleConfig",
    "TrainConfig",
    "TrainResult",
    "create_optimizer",
    "deit_distillation_loss",
    "disable_running_stats",
    "distillation_loss",
    "freeze_backbone_",
    "frozen_to_eval_",
    "load_checkpoint",
    "load_pretrained_",
    "load_state_dict",
    "predict",
    "save_checkpoint",
    "save_state_dict",
    "seed_everything",
    "top1",
    "train",
]
