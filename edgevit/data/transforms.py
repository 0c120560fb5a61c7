"""Training augmentation (AugReg, DeiT III) as one config: :class:`AugConfig` -> :func:`build_train_transform`.

Per-image transforms run in the dataset; Mixup/CutMix run on the batch (:func:`build_mixup`) with the
soft-target loss from :func:`build_criterion`. timm supplies RandAugment, RandomErasing and Mixup; DeiT III's
3-Augment is timm's ``"3a"`` AutoAugment policy (see :func:`three_augment`). The default config augments
nothing, so a recipe without an ``aug`` section trains on exactly the tensors it always did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn as nn
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgevit.utils import EdgeVitError

Interpolation = Literal["bilinear", "bicubic"]


class AugConfig(BaseModel):
    """What to do to each training image (and batch). Every default means "off".

    Attributes:
        crop: ``"rrc"`` RandomResizedCrop with ``scale``; ``"src"`` DeiT III's Simple Random Crop (resize the
            shorter side to the image size, reflect-pad by ``padding``, random crop); ``"none"`` resize the
            shorter side and centre-crop (a no-op on digits, which are already at the image size).
        scale: RandomResizedCrop's range of crop area fractions (``rrc`` only).
        padding: Simple Random Crop's reflect padding in pixels (``src`` only; DeiT III uses 4 at 224 px).
        interpolation: resampling for the crops (DeiT and timm train with bicubic).
        hflip: probability of a horizontal flip.
        rand_augment: a timm RandAugment string, e.g. ``"rand-m9-mstd0.5-inc1"``; ``None`` is off.
        three_augment: DeiT III's 3-Augment: per image exactly one of grayscale, solarisation, Gaussian blur.
        color_jitter: brightness/contrast/saturation jitter strength (DeiT III: 0.3); ``None`` is off.
        random_erasing: probability of timm's RandomErasing (per-pixel random fill) after normalisation.
        mixup: Mixup's Beta(alpha, alpha); 0 is off.
        cutmix: CutMix's Beta(alpha, alpha); 0 is off.
        mixup_prob: probability of mixing a batch (or element).
        mixup_switch_prob: with both on, probability of CutMix instead of Mixup.
        mixup_mode: draw the mixing parameters per ``"batch"``, per ``"pair"`` or per ``"elem"``ent.
    """

    model_config = ConfigDict(extra="forbid")

    crop: Literal["rrc", "src", "none"] = "none"
    scale: tuple[float, float] = (0.08, 1.0)
    padding: int = Field(4, ge=0)
    interpolation: Interpolation = "bicubic"
    hflip: float = Field(0.0, ge=0.0, le=1.0)
    rand_augment: str | None = None
    three_augment: bool = False
    color_jitter: float | None = Field(None, ge=0.0)
    random_erasing: float = Field(0.0, ge=0.0, le=1.0)
    mixup: float = Field(0.0, ge=0.0)
    cutmix: float = Field(0.0, ge=0.0)
    mixup_prob: float = Field(1.0, ge=0.0, le=1.0)
    mixup_switch_prob: float = Field(0.5, ge=0.0, le=1.0)
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError(f"must be (min, max) with 0 < min <= max <= 1, got {v}")
        return v

    @field_validator("rand_augment")
    @classmethod
    def _check_rand_augment(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from timm.data import rand_augment_transform  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

        try:  # timm parses with asserts; build once to learn whether the string is valid
            if not v.startswith("rand"):
                raise ValueError("must start with 'rand'")
            rand_augment_transform(v, {"translate_const": 100, "img_mean": (128, 128, 128)})
        except (AssertionError, ValueError, KeyError, IndexError) as e:
            raise ValueError(f"{v!r} is not a timm RandAugment string like 'rand-m9-mstd0.5-inc1' ({e})") from None
        return v

    @model_validator(mode="after")
    def _check_exclusive(self) -> AugConfig:
        if self.rand_augment and self.three_augment:
            raise ValueError("rand_augment and three_augment are alternatives (AugReg vs DeiT III); set only one")
        return self

    @property
    def per_image(self) -> bool:
        """Whether any per-image augmentation is on (Mixup/CutMix are per batch and do not count)."""
        return bool(
            self.crop != "none"
            or self.hflip > 0
            or self.rand_augment
            or self.three_augment
            or self.color_jitter
            or self.random_erasing > 0
        )

    @property
    def mixes(self) -> bool:
        """Whether Mixup or CutMix is on."""
        return self.mixup > 0 or self.cutmix > 0


def as_aug_config(value: AugConfig | dict | None) -> AugConfig | None:
    """``value`` as an :class:`AugConfig` (``None`` stays ``None``).

    Raises:
        EdgeVitError: a dict with an unknown key or an impossible value; the message names the key.
    """
    if value is None or isinstance(value, AugConfig):
        return value
    try:
        return AugConfig.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "aug"
        raise EdgeVitError(f"aug key '{key}': {err['msg']}") from None


class ToPIL:
    """A ``[C, H, W]`` float tensor in [0, 1] -> a ``PIL.Image`` (rounded to uint8); PIL images pass through.

    timm's RandAugment and AutoAugment ops are written for PIL images, as the published recipes ran on them.
    """

    def __call__(self, img: Any) -> Any:
        if not isinstance(img, torch.Tensor):
            return img
        arr = img.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # [C,H,W]->[H,W,C]
        return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)  # uint8 [H, W, 3]: RGB; [H, W]: L


class ToFloat:
    """A PIL image -> ``[C, H, W]`` float32 in [0, 1] (``ToTensor``); float tensors pass through unchanged."""

    def __call__(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            return img
        from torchvision.transforms.v2 import functional as TF  # noqa: PLC0415 -- seconds to import; needed only here

        return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


def three_augment(img_mean: Sequence[int] = (128, 128, 128)) -> Callable[[Any], Any]:
    """DeiT III's 3-Augment on a PIL image: exactly one of grayscale, solarisation, Gaussian blur, chosen uniformly.

    timm 1.0 ships it as the ``"3a"`` AutoAugment policy, which picks one sub-policy uniformly per image
    (``random.choice``) and is op for op DeiT III's ``RandomChoice([gray_scale(p=1), Solarization(p=1),
    GaussianBlur(p=1)])`` (facebookresearch/deit ``augment.py``): Desaturate at magnitude 10 (full grayscale),
    Solarize at magnitude 5 (threshold 128, PIL's default) and GaussianBlurRand (radius uniform in [0.1, 2.0]).
    Colour jitter and the flip are separate steps of :func:`build_train_transform`, as in DeiT III.
    """
    from timm.data.auto_augment import auto_augment_transform  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

    return auto_augment_transform("3a", {"img_mean": tuple(img_mean)})


def _posterize(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize, but 0 bits gives the black image (Pillow >= 10 raises on 0; older Pillow returned black)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _pillow_safe(rand_augment: Any) -> Any:
    """Swap timm's posterize for :func:`_posterize` in a RandAugment.

    timm maps magnitudes near 10 (``PosterizeIncreasing``, e.g. ``rand-m9-mstd0.5-inc1`` when the magnitude
    noise reaches 10) and below 2.5 (``Posterize``) to 0 bits, which current Pillow rejects with ValueError.
    """
    from timm.data import auto_augment  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

    for op in rand_augment.ops:
        if op.aug_fn is auto_augment.posterize:
            op.aug_fn = _posterize
    return rand_augment


def build_train_transform(
    cfg: AugConfig, img_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any], torch.Tensor]:
    """The per-image training transform for ``cfg``: an image -> a normalised ``[3, img_size, img_size]`` tensor.

    Args:
        cfg: the augmentation config.
        img_size: output side in pixels.
        mean, std: per-channel normalisation, applied after the augmentations (and before RandomErasing).

    Returns:
        A callable taking a PIL image or a ``[3, H, W]`` float tensor in [0, 1]. Order, as in timm and DeiT III:
        crop, flip, RandAugment or 3-Augment, colour jitter, to float, normalise, RandomErasing. Tensors stay
        float throughout unless RandAugment/3-Augment is on (those timm ops need PIL, so the image is rounded to
        uint8 first); with no augmentation a tensor input comes out exactly ``(x - mean) / std``.
    """
    from timm.data import rand_augment_transform  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here
    from timm.data.random_erasing import RandomErasing  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here
    from timm.data.transforms import str_to_pil_interp  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here
    from torchvision.transforms import InterpolationMode, v2  # noqa: PLC0415 -- seconds to import; needed only here

    interp = InterpolationMode.BICUBIC if cfg.interpolation == "bicubic" else InterpolationMode.BILINEAR
    tfl: list[Callable] = []
    if cfg.crop == "rrc":
        tfl.append(v2.RandomResizedCrop(img_size, scale=cfg.scale, interpolation=interp, antialias=True))
    elif cfg.crop == "src":  # DeiT III: Resize(img_size) keeps the aspect ratio, then a padded random crop
        tfl += [
            v2.Resize(img_size, interpolation=interp, antialias=True),
            v2.RandomCrop(img_size, padding=cfg.padding, padding_mode="reflect"),
        ]
    else:
        tfl += [v2.Resize(img_size, interpolation=interp, antialias=True), v2.CenterCrop(img_size)]
    if cfg.hflip > 0:
        tfl.append(v2.RandomHorizontalFlip(cfg.hflip))
    img_mean = tuple(min(255, round(255 * m)) for m in mean)
    if cfg.rand_augment:
        hparams = {
            "translate_const": int(img_size * 0.45),
            "img_mean": img_mean,
            "interpolation": str_to_pil_interp(cfg.interpolation),
        }
        tfl += [ToPIL(), _pillow_safe(rand_augment_transform(cfg.rand_augment, hparams))]
    if cfg.three_augment:
        tfl += [ToPIL(), three_augment(img_mean)]
    if cfg.color_jitter:
        tfl.append(v2.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter))
    tfl += [ToFloat(), v2.Normalize(list(mean), list(std))]
    if cfg.random_erasing > 0:
        tfl.append(RandomErasing(cfg.random_erasing, mode="pixel", device="cpu"))
    return v2.Compose(tfl)


def build_mixup(cfg: AugConfig, num_classes: int, label_smoothing: float = 0.0):
    """timm's batch-level Mixup/CutMix for ``cfg``, or ``None`` when both are off.

    The returned ``mixup(images, labels) -> (mixed_images, soft_targets [B, num_classes])`` draws from
    NumPy's global RNG, may change ``images`` in place, and folds ``label_smoothing`` into the targets; train
    it with :func:`build_criterion` (soft-target cross-entropy). timm's Mixup needs an even batch; here an odd
    batch (an epoch's last, without ``drop_last``) mixes all but its last image, which keeps its own
    (smoothed) label.
    """
    if not cfg.mixes:
        return None
    return _mixup_class()(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        mode=cfg.mixup_mode,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


def _mixup_class():
    from timm.data import Mixup  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here
    from timm.data.mixup import mixup_target  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

    class EvenMixup(Mixup):
        """timm's Mixup; an odd batch mixes its first ``B - 1`` images and leaves the last one as it is."""

        def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if len(x) % 2 == 0:
                return super().__call__(x, target)
            head, head_target = super().__call__(x[:-1], target[:-1])
            last = mixup_target(target[-1:], self.num_classes, 1.0, self.label_smoothing)
            return torch.cat([head, x[-1:]]), torch.cat([head_target, last.to(head_target)])

    return EvenMixup


def build_criterion(mixup: Any | None, label_smoothing: float = 0.0) -> nn.Module:
    """The training loss to pair with :func:`build_mixup`'s result.

    With Mixup/CutMix: timm's ``SoftTargetCrossEntropy`` (the targets are already mixed and smoothed);
    without: ``nn.CrossEntropyLoss(label_smoothing=label_smoothing)``. Both take ``(logits, targets)``.
    """
    if mixup is None:
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    from timm.loss import SoftTargetCrossEntropy  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

    return SoftTargetCrossEntropy()


__all__ = ["AugConfig", "as_aug_config", "build_criterion", "build_mixup", "build_train_transform", "three_augment"]
