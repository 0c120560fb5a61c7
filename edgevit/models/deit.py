"""DeiT (Touvron et al. 2021): ViT-Ti/S/B at 224 px with ImageNet normalisation, and the distilled variants.

The distilled models carry a distillation token and a second head (``dist_token``, ``head_dist``); at
inference the two heads' logits are averaged. Parameter names equal timm's ``deit_*_patch16_224`` and
``deit_*_distilled_patch16_224``, so their state dicts load as-is.
"""

from __future__ import annotations

from dataclasses import replace

from edgevit.data.constants import IMAGENET_MEAN, IMAGENET_STD
from edgevit.models._registry import register_family
from edgevit.models.vit import ViTConfig, create_vit

_BASE = {
    "tiny": ViTConfig(192, 12, 768, 3, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "small": ViTConfig(384, 12, 1536, 6, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "base": ViTConfig(768, 12, 3072, 12, mean=IMAGENET_MEAN, std=IMAGENET_STD),
}

_CONFIGS = {f"deit_{size}": cfg for size, cfg in _BASE.items()}
_CONFIGS |= {f"deit_{size}_distilled": replace(cfg, distilled=True) for size, cfg in _BASE.items()}

register_family(_CONFIGS, create_vit, "DeiT")
