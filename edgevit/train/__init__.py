"""Training: the loop, checkpoints, evaluation helpers."""

from edgevit.train.checkpoint import load_checkpoint, load_state_dict, save_checkpoint, save_state_dict
from edgevit.train.loop import TrainConfig, TrainResult, predict, seed_everything, top1, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "load_state_dict",
    "predict",
    "save_checkpoint",
    "save_state_dict",
    "seed_everything",
    "top1",
    "train",
]
