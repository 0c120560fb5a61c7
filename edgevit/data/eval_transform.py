"""The evaluation transform as data: one description that the datasets apply to validation images and that an app
bundle records (``bundle.json``'s ``preprocess`` block), so what the app does cannot drift from what was measured.

The description is for 8-bit pixels: an upright RGB image, its shorter side resized to ``resize_shorter`` with a
separable ``interpolation`` filter (widened when downscaling if ``antialias``), a centre crop of ``crop``, then
``(pixel / value_scale - mean) / std`` per channel. :mod:`edgevit.apps.pipeline` is its exact NumPy reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from edgevit.utils import EdgeVitError

CROP_PCT = 0.875  # imagefolder: resize the shorter side to floor(img_size / CROP_PCT), centre-crop img_size (timm)
INTERPOLATIONS = ("bilinear", "bicubic")
COLOR_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class EvalTransform:
    """What the validation transform does to an 8-bit image, in the order applied.

    Attributes:
        resize_shorter: the upright image's shorter side is resized to this; the longer one to
            ``resize_shorter * longer // shorter`` (torchvision ``Resize(int)``).
        crop: centre crop ``(height, width)`` after the resize; each at most ``resize_shorter``.
        mean, std: per channel, in ``color_order``: ``x = (pixel / value_scale - mean) / std``.
        interpolation: ``bilinear`` or ``bicubic`` (PIL's separable filters).
        antialias: widen the filter by the scale factor when downscaling (PIL always does; ``F.interpolate``'s
            default does not).
        value_scale: pixels 0..255 are divided by this first.
        color_order: the model's channel order, ``RGB`` or ``BGR``.
        source: the code this transform is applied by, for people reading a bundle.
    """

    resize_shorter: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    antialias: bool = True
    value_scale: float = 255.0
    color_order: str = "RGB"
    source: str = ""

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise EdgeVitError(f"interpolation {self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")
        if self.color_order not in COLOR_ORDERS:
            raise EdgeVitError(f"color_order {self.color_order!r}: choose one of {', '.join(COLOR_ORDERS)}")
        if self.resize_shorter < 1 or len(self.crop) != 2 or not all(1 <= c <= self.resize_shorter for c in self.crop):
            raise EdgeVitError(f"crop {list(self.crop)} must be 2 sizes in 1..resize_shorter ({self.resize_shorter})")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or self.value_scale <= 0:
            raise EdgeVitError(f"mean {list(self.mean)} and std {list(self.std)} need 3 values each, std > 0")

    def to_json(self) -> dict[str, Any]:
        """The ``preprocess`` block of ``bundle.json`` (lists for tuples; every float as a JSON number)."""
        d = asdict(self)
        d.update(crop=list(self.crop), mean=[float(v) for v in self.mean], std=[float(v) for v in self.std])
        d["value_scale"] = float(self.value_scale)
        return d


def eval_transform(
    dataset: str, img_size: int, mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.5,) * 3
) -> EvalTransform:
    """The evaluation transform of ``dataset`` (``digits`` or ``imagefolder``) at ``img_size`` with the model's
    ``mean``/``std``: the description :mod:`edgevit.data.datasets` builds its validation transform from.

    - ``imagefolder``: PIL images, shorter side to ``floor(img_size / 0.875)`` bilinear (PIL, so antialiased),
      centre crop ``img_size`` (timm's ``create_transform(is_training=False, crop_pct=0.875)``).
    - ``digits``: the 8x8 scans (ink 0..16 read as ``ink / 16``) upsampled to ``img_size`` by
      ``F.interpolate(mode="bilinear", align_corners=False)``, no antialias, no crop beyond the square.

    Raises:
        EdgeVitError: an unknown dataset.
    """
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if dataset == "imagefolder":
        return EvalTransform(
            math.floor(img_size / CROP_PCT),
            (img_size, img_size),
            mean,
            std,
            source=f"edgevit imagefolder val: torchvision Resize + CenterCrop on PIL images (crop_pct {CROP_PCT})",
        )
    if dataset == "digits":
        return EvalTransform(
            img_size,
            (img_size, img_size),
            mean,
            std,
            antialias=False,
            source="edgevit digits val: 8x8 scans (ink / 16) upsampled by F.interpolate(bilinear, align_corners=False)",
        )
    raise EdgeVitError(f"no evaluation transform for dataset {dataset!r}; choose digits or imagefolder")


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """``(height, width)`` after resizing the shorter side to ``shorter`` (torchvision ``Resize(int)``)."""
    if height <= width:
        return shorter, shorter * width // height
    return shorter * height // width, shorter


def crop_offsets(height: int, width: int, crop: Sequence[int]) -> tuple[int, int]:
    """``(top, left)`` of a centre crop (torchvision ``CenterCrop``: ``round((size - crop) / 2)``, half to even)."""

    def half_even(d: int) -> int:
        q = d // 2
        return q + 1 if d % 2 and q % 2 else q

    return half_even(height - crop[0]), half_even(width - crop[1])


def resize_crop_tensor(t: EvalTransform, images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` float images resized and centre-cropped as ``t`` says, with ``F.interpolate``
    (``align_corners=False``; the digits path, whose pixels are already floats)."""
    h, w = resized_size(images.shape[-2], images.shape[-1], t.resize_shorter)
    x = F.interpolate(images, size=(h, w), mode=t.interpolation, align_corners=False, antialias=t.antialias)
    top, left = crop_offsets(h, w, t.crop)
    return x[..., top : top + t.crop[0], left : left + t.crop[1]]  # [N, C, h, w] -> [N, C, crop_h, crop_w]


def pil_transform(t: EvalTransform) -> Callable[[Any], torch.Tensor]:
    """A torchvision transform mapping an RGB PIL image to the normalised ``[3, crop_h, crop_w]`` tensor ``t``
    describes (the imagefolder path; PIL resizes 8-bit images with the antialiased filter).

    Raises:
        EdgeVitError: ``t`` asks for something PIL's RGB path does not do (``BGR``, a ``value_scale`` other than 255,
            no antialias).
    """
    from torchvision import transforms as T  # noqa: PLC0415 -- seconds to import; needed only here

    if t.color_order != "RGB" or t.value_scale != 255.0 or not t.antialias:
        raise EdgeVitError(f"the PIL evaluation transform is RGB, pixel / 255, antialiased; got {t}")
    interpolation = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[t.interpolation]
    return T.Compose(
        [
            T.Resize(t.resize_shorter, interpolation=interpolation),
            T.CenterCrop(list(t.crop)),
            T.ToTensor(),
            T.Normalize(mean=torch.tensor(t.mean), std=torch.tensor(t.std)),
        ]
    )
