"""Datasets (``digits``, ``imagefolder``) and calibration subsets."""

from edgevit.data.datasets import DATASETS, DataSplits, build_dataset, calibration_batch, digits, imagefolder

__all__ = ["DATASETS", "DataSplits", "build_dataset", "calibration_batch", "digits", "imagefolder"]
