"""Datasets: scikit-learn's bundled handwritten ``digits`` (real data, no download) and ``imagefolder``.

Both return a :class:`DataSplits` of two map-style datasets yielding ``(image [3, H, W] float, label)``,
normalised with the model's mean/std, plus the class names. The validation transform is deterministic,
so parity compares every backend on exactly the same tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from edgevit.data.constants import IMAGENET_MEAN, IMAGENET_STD
from edgevit.data.eval_transform import eval_transform, pil_transform, resize_crop_tensor
from edgevit.data.images import BadImages, check_images, load_rgb
from edgevit.data.transforms import AugConfig, as_aug_config, build_train_transform
from edgevit.utils import EdgeVitError


@dataclass
class DataSplits:
    """A train and a validation dataset plus the class names, in label order."""

    train: Dataset
    val: Dataset
    classes: list[str]


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a fixed stratified train/val split (the same for the same labels, fraction and seed)."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 -- scikit-learn takes a second to import; only the digits data needs it

    if not 0.0 < val_fraction < 1.0:
        raise EdgeVitError(f"val_fraction must be in (0, 1), got {val_fraction}")
    idx = list(range(len(labels)))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, stratify=list(labels), random_state=seed)
    return sorted(train_idx), sorted(val_idx)


def digits_images(img_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as ``[N, 3, img_size, img_size]`` floats in [0, 1] and ``[N]`` labels.

    The 8x8 images (ink 0..16) are scaled to [0, 1], bilinearly upsampled and repeated to 3 channels (an
    expanded view: clone an image before changing it in place).
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 -- scikit-learn takes a second to import; only the digits data needs it

    d = load_digits()
    x = torch.from_numpy(d.images).float().div_(16.0).unsqueeze(1)  # [N, 8, 8] -> [N, 1, 8, 8] in [0, 1]
    x = resize_crop_tensor(eval_transform("digits", img_size), x).clamp_(0.0, 1.0)  # bilinear upsampling
    x = x.expand(-1, 3, -1, -1)  # [N, 1, S, S] -> [N, 3, S, S]
    return x, torch.from_numpy(d.target).long()


def digits_tensors(img_size: int = 32, mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.5,) * 3):
    """All 1,797 scikit-learn digits as ``[N, 3, img_size, img_size]`` normalised floats and ``[N]`` labels.

    :func:`digits_images` normalised with ``mean``/``std``.
    """
    x, y = digits_images(img_size)
    return _normalise(x, mean, std), y


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


class TransformedImages(Dataset):
    """``(transform(images[i]), labels[i])`` over in-memory ``[N, C, H, W]`` images (a fresh draw per access)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[Any], torch.Tensor]):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i].clone()), self.labels[i]


def digits(
    img_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    mean: Sequence[float] = (0.5,) * 3,
    std: Sequence[float] = (0.5,) * 3,
    aug: AugConfig | dict | None = None,
    train_transform: Callable[[Any], torch.Tensor] | None = None,
) -> DataSplits:
    """scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes) with a stratified split by seed.

    Validation images are always the precomputed normalised tensors. Training images are too, unless ``aug``
    turns on a per-image augmentation (then :func:`~edgevit.data.transforms.build_train_transform`) or a
    ``train_transform`` is given: either sees a ``[3, S, S]`` float image in [0, 1] and must return it
    normalised. The default ``AugConfig()`` leaves the training tensors exactly as without it.
    """
    if img_size < 8:
        raise EdgeVitError(f"digits img_size must be >= 8 (the native size), got {img_size}")
    images, y = digits_images(img_size)
    full = TensorDataset(_normalise(images, mean, std), y)
    train_idx, val_idx = stratified_split(y.tolist(), val_fraction, seed)
    train_tf = _train_transform(aug, train_transform, img_size, mean, std)
    train = full if train_tf is None else TransformedImages(images, y, train_tf)
    return DataSplits(Subset(train, train_idx), Subset(full, val_idx), [str(i) for i in range(10)])


def _train_transform(aug, train_transform, img_size, mean, std) -> Callable[[Any], torch.Tensor] | None:
    """The training transform from ``aug`` or ``train_transform`` (not both); ``None`` when nothing augments."""
    if aug is not None and train_transform is not None:
        raise EdgeVitError("pass either aug= or train_transform=, not both")
    if train_transform is not None:
        return train_transform
    aug = as_aug_config(aug)
    if aug is None or not aug.per_image:
        return None
    return build_train_transform(aug, img_size, mean, std)


def imagefolder(
    root: str | Path,
    img_size: int = 224,
    val_fraction: float = 0.2,
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: bool = True,
    aug: AugConfig | dict | None = None,
    train_transform: Callable[[Any], torch.Tensor] | None = None,
    bad_images: BadImages = "fail",
) -> DataSplits:
    """A user's ``root/<class>/<image>`` dataset.

    If ``root`` has ``train/`` and ``val/`` subfolders they are used as the splits; otherwise one folder is
    split (stratified, by ``seed``). Training uses ``train_transform`` (PIL image -> normalised tensor) if
    given, else :func:`~edgevit.data.transforms.build_train_transform` if ``aug`` turns on a per-image
    augmentation, else (as before ``aug`` existed) timm's standard train transform (random-resized crop,
    flip, colour jitter) when ``augment`` and a plain resize + centre crop when not; validation resizes to
    ``img_size / 0.875`` and centre-crops ``img_size``. Files that are not readable images fail with their name
    or are skipped (``bad_images``, see :mod:`edgevit.data.images`).

    Raises:
        EdgeVitError: no such directory, no class folders or images, fewer than 2 classes, train/ and val/ with
            different classes, or unreadable images (with ``bad_images="fail"``).
    """
    from timm.data import create_transform  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here
    from torchvision.datasets import ImageFolder  # noqa: PLC0415 -- seconds to import; needed only here

    root = Path(root)
    if not root.is_dir():
        raise EdgeVitError(f"dataset path not found or not a directory: {root}")
    train_tf = _train_transform(aug, train_transform, img_size, mean, std)
    if train_tf is None:
        train_tf = create_transform(img_size, is_training=augment, mean=mean, std=std, crop_pct=0.875)
    val_tf = pil_transform(eval_transform("imagefolder", img_size, mean, std))  # = timm's eval transform

    def folder(path: Path, transform) -> ImageFolder:
        try:
            ds = ImageFolder(str(path), transform=transform, loader=load_rgb)
        except (FileNotFoundError, RuntimeError) as e:  # torchvision: no class folders / no valid images
            raise EdgeVitError(f"cannot read an image-folder dataset at {path}: {e}") from e
        if len(ds.classes) < 2:
            raise EdgeVitError(
                f"{path} has {len(ds.classes)} class folder ({', '.join(ds.classes)}): a classifier needs at least 2 "
                "(one sub-folder of images per class)"
            )
        ds.samples = ds.imgs = check_images(ds.samples, bad_images, path)
        ds.targets = [label for _, label in ds.samples]
        return ds

    if (root / "train").is_dir() and (root / "val").is_dir():
        train = folder(root / "train", train_tf)
        val = folder(root / "val", val_tf)
        if val.classes != train.classes:
            raise EdgeVitError(f"{root}/train and {root}/val have different class folders")
        return DataSplits(train, val, list(train.classes))
    train_full = folder(root, train_tf)
    val_full = ImageFolder(str(root), transform=val_tf, loader=load_rgb)  # the same files, checked once
    val_full.samples = val_full.imgs = train_full.samples
    val_full.targets = train_full.targets
    train_idx, val_idx = stratified_split(train_full.targets, val_fraction, seed)
    return DataSplits(Subset(train_full, train_idx), Subset(val_full, val_idx), list(train_full.classes))


DATASETS = {"digits": digits, "imagefolder": imagefolder}


def build_dataset(name: str, **kwargs) -> DataSplits:
    """Build a dataset by name (``digits`` or ``imagefolder``) with its keyword arguments.

    Both accept ``aug=`` (an :class:`~edgevit.data.transforms.AugConfig` or its dict) or ``train_transform=``.
    """
    if name not in DATASETS:
        raise EdgeVitError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](**kwargs)


class _Relabelled(Dataset):
    """``dataset[indices[i]]`` with its label mapped through ``new_label`` (old label -> new label)."""

    def __init__(self, dataset: Dataset, indices: list[int], new_label: dict[int, int]):
        self.dataset, self.indices, self.new_label = dataset, indices, new_label

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset[self.indices[i]]
        return x, torch.tensor(self.new_label[int(y)])


def _labels(dataset: Dataset) -> list[int]:
    """Every label of ``dataset``, read without decoding images where the dataset keeps them apart."""
    if isinstance(dataset, Subset):
        inner = _labels(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].tolist()
    if isinstance(dataset, TransformedImages):
        return dataset.labels.tolist()
    if hasattr(dataset, "targets"):  # torchvision ImageFolder
        return [int(t) for t in dataset.targets]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def select_classes(splits: DataSplits, classes: Sequence[str]) -> DataSplits:
    """Only the images of ``classes`` (names from ``splits.classes``), relabelled ``0..len(classes)-1`` in the
    given order; e.g. digits ``["5", "6", "7", "8", "9"]`` for a transfer experiment.

    Raises:
        EdgeVitError: an unknown or repeated class name.
    """
    unknown = [c for c in classes if c not in splits.classes]
    if unknown or len(set(classes)) != len(classes) or not classes:
        why = f"unknown {unknown}" if unknown else "empty or repeated names"
        raise EdgeVitError(f"data.classes: {why}; the dataset's classes are {splits.classes}")
    new_label = {splits.classes.index(c): i for i, c in enumerate(classes)}

    def keep(ds: Dataset) -> Dataset:
        return _Relabelled(ds, [i for i, y in enumerate(_labels(ds)) if y in new_label], new_label)

    return DataSplits(keep(splits.train), keep(splits.val), list(classes))


def calibration_batch(dataset: Dataset, num_images: int, seed: int = 0) -> torch.Tensor:
    """A deterministic ``[num_images, C, H, W]`` sample of ``dataset`` images (for PTQ calibration)."""
    n = min(num_images, len(dataset))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
    return torch.stack([dataset[i][0] for i in idx])
