"""Datasets (``digits``, ``imagefolder``), training augmentation, calibration subsets and normalisation constants."""

from edgevit.data.constants import IMAGENET_MEAN, IMAGENET_STD
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
    "IMAGENET_MEAN",
    "IMAGENET_STD",
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
