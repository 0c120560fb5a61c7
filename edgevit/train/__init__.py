"""Training: the loop, optimizers (SAM, layer decay), distillation, checkpoints, evaluation helpers."""

from edgevit.train.checkpoint import load_checkpoint, load_state_dict, save_checkpoint, save_state_dict
from edgevit.train.distill import deit_distillation_loss, distillation_loss
from edgevit.train.loop import TrainConfig, TrainResult, predict, seed_everything, top1, train
from edgevit.train.optim import create_optimizer
from edgevit.train.sam import SAM, disable_running_stats

__all__ = [
    "SAM",
    "TrainConfig",
    "TrainResult",
    "create_optimizer",
    "deit_distillation_loss",
    "disable_running_stats",
    "distillation_loss",
    "load_checkpoint",
    "load_state_dict",
    "predict",
    "save_checkpoint",
    "save_state_dict",
    "seed_everything",
    "top1",
    "train",
]
