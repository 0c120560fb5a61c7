"""Datasets (``digits``, ``imagefolder``), training augmentation and calibration subsets."""

from edgevit.data.datasets import (
    DATASETS,
    DataSplits,
    build_dataset,
    calibration_batch,
    digits,
    imagefolder,
    select_classes,
)
from edgevit.data.transforms import AugConfig, build_criterion, build_mixup, build_train_transform

__all__ = [
    "DATASETS",
    "AugConfig",
    "DataSplits",
    "build_criterion",
    "build_dataset",
    "build_mixup",
    "build_train_transform",
    "calibration_batch",
    "digits",
    "imagefolder",
    "select_classes",
]
