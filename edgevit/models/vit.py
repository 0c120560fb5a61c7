"""Vision Transformer (Dosovitskiy et al. 2021) in the shapes of the Scaling-ViT table (Zhai et al. 2022).

Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.attn.qkv``, with LayerScale ``blocks.N.ls1.gamma`` ...), so a timm ViT state dict with the same shape
loads directly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn

from edgevit.models._registry import register_family
from edgevit.models.layers import Block, PatchEmbed, resample_pos_embed


class LayerScale(nn.Module):
    """``x * gamma`` with a learned per-channel ``gamma`` of ``dim`` values started at ``init_values`` (timm's
    ``LayerScale``: a constant-shaped multiply, which XNNPACK delegates as one elementwise op)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma  # [B, N, D] * [D]


class LayerScaleBlock(Block):
    """:class:`~edgevit.models.layers.Block` with LayerScale on both branches (timm's ``Block`` with
    ``init_values``): ``x + ls1 * attn(norm1(x))``, then ``x + ls2 * mlp(norm2(x))``."""

    def __init__(self, dim: int, *args, init_values: float = 1e-5, **kwargs):
        super().__init__(dim, *args, **kwargs)
        self.ls1 = LayerScale(dim, init_values)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


@dataclass(frozen=True)
class ViTConfig:
    """One ViT variant: width, depth, MLP width and heads, plus patching and input defaults."""

    embed_dim: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int = 16
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    qkv_bias: bool = True
    distilled: bool = False  # DeiT: a distillation token with its own head; eval averages the two heads
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    init_values: float | None = None  # LayerScale (CaiT, DeiT III): per-channel residual-branch scales start here
    no_embed_class: bool = False  # DeiT III: position embeddings on the patch tokens only (timm's no_embed_class)
    drop_path_uniform: bool = False  # DeiT III: drop_path_rate in every block, not growing linearly with depth
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


class VisionTransformer(nn.Module):
    """A plain ViT with a class token, learned position embeddings and a pre-norm encoder.

    With ``cfg.init_values`` (timm's name; DeiT III trains with 1e-4 for ViT-S/B at 224 px) every block scales
    its two residual branches by learned per-channel ``gamma`` vectors started at that value (LayerScale).

    With ``cfg.no_embed_class`` (DeiT III, timm's ``no_embed_class``) ``pos_embed`` holds the patch grid only
    (``[1, N, D]``): it is added to the patch tokens before the class token is prepended. With
    ``cfg.drop_path_uniform`` (DeiT III) every block drops its residual branches at ``drop_path_rate``
    instead of timm's linear ramp from 0 at the first block to ``drop_path_rate`` at the last.

    With ``cfg.distilled`` (DeiT) a distillation token follows the class token and feeds ``head_dist``;
    in eval (and in export) the output is the mean of the two heads' logits, as in DeiT and timm. Set
    ``model.distilled_training = True`` to get ``(cls_logits, dist_logits)`` in train mode.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = cfg.embed_dim
        self.default_cfg = {"input_size": (cfg.in_chans, cfg.img_size, cfg.img_size), "mean": cfg.mean, "std": cfg.std}
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.num_prefix_tokens = 2 if cfg.distilled else 1
        self.distilled_training = False
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.distilled else None
        self.no_embed_class = cfg.no_embed_class  # finetune.load_pretrained_ reads it (as timm's attribute)
        embedded = 0 if cfg.no_embed_class else self.num_prefix_tokens  # prefix tokens with a position embedding
        self.pos_embed = nn.Parameter(torch.zeros(1, embedded + self.patch_embed.num_patches, cfg.embed_dim))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        if cfg.drop_path_uniform:  # DeiT III models_v2.py: dpr = [drop_path_rate for i in range(depth)]
            dpr = [cfg.drop_path_rate] * cfg.depth
        else:
            dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # grows with depth
        block = partial(LayerScaleBlock, init_values=cfg.init_values) if cfg.init_values is not None else Block
        self.blocks = nn.Sequential(
            *[
                block(
                    cfg.embed_dim,
                    cfg.num_heads,
                    cfg.mlp_dim,
                    qkv_bias=cfg.qkv_bias,
                    drop=cfg.drop_rate,
                    attn_drop=cfg.attn_drop_rate,
                    drop_path=dpr[i],
                )
                for i in range(cfg.depth)
            ]
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.distilled:
            self.head_dist = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed (besides norms and biases)."""
        return {"pos_embed", "cls_token", "dist_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` image -> ``[B, prefix + N, D]`` normalised tokens (prefix: class [+ distillation])."""
        x = self.patch_embed(x)  # [B, N, D]
        prefix = [self.cls_token] if self.dist_token is None else [self.cls_token, self.dist_token]
        if x.shape[0] > 1:  # at batch 1 (the exported shape) skip expand: XNNPACK would leave it as a copy
            prefix = [t.expand(x.shape[0], -1, -1) for t in prefix]  # [1, 1, D] -> [B, 1, D]
        if self.no_embed_class:
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)  # [B, N, D] + [1, N, D] -> [B, prefix + N, D]
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed  # [B, prefix + N, D]
        x = self.blocks(self.pos_drop(x))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``[B, prefix + N, D]`` tokens -> ``[B, num_classes]`` logits from the class (and distillation) token."""
        cls = x[:, :1].flatten(1)  # [B, T, D] -> [B, D]; slice + view, not select (a portable-kernel copy)
        if self.dist_token is None:
            return cls if pre_logits else self.head(cls)
        dist = x[:, 1:2].flatten(1)  # [B, T, D] -> [B, D]
        if pre_logits:
            return (cls + dist) * 0.5
        cls, dist = self.head(cls), self.head_dist(dist)
        if self.distilled_training and self.training:
            return cls, dist
        return (cls + dist) * 0.5  # both heads fused into one output (* 0.5: "/ 2" lifts an int constant + cast)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0 removes it)."""
        self.num_classes = num_classes
        self.cfg = replace(self.cfg, num_classes=num_classes)
        heads = ["head", "head_dist"] if self.dist_token is not None else ["head"]
        for name in heads:
            head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            if num_classes > 0:
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
            setattr(self, name, head)

    def sync_widths_(self) -> None:
        """Re-read ``embed_dim`` (the width ``reset_classifier`` builds heads of) from the patch embedding."""
        self.embed_dim = self.patch_embed.proj.out_channels

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights, resampling the position embedding when the checkpoint's grid differs."""
        pe = state_dict.get("pos_embed")
        if pe is not None and pe.shape != self.pos_embed.shape:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens  # rows kept as they are
            pe = resample_pos_embed(pe, self.patch_embed.grid_size, prefix)
            state_dict = dict(state_dict, pos_embed=pe)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


# Scaling-ViT table: width / depth / MLP / heads.
_CONFIGS: dict[str, ViTConfig] = {
    "vit_mini_patch28": ViTConfig(256, 6, 1024, 8, patch_size=28),
    "vit_mini_patch16": ViTConfig(256, 6, 1024, 8, patch_size=16),
    "vit_tiny_patch16": ViTConfig(192, 12, 768, 3, patch_size=16),
    "vit_small_patch32": ViTConfig(384, 12, 1536, 6, patch_size=32),
    "vit_small_patch16": ViTConfig(384, 12, 1536, 6, patch_size=16),
    "vit_base_patch32": ViTConfig(768, 12, 3072, 12, patch_size=32),
    "vit_base_patch28": ViTConfig(768, 12, 3072, 12, patch_size=28),
    "vit_base_patch16": ViTConfig(768, 12, 3072, 12, patch_size=16),
    "vit_large_patch16": ViTConfig(1024, 24, 4096, 16, patch_size=16),
    "vit_giant_patch14": ViTConfig(1408, 40, 6144, 16, patch_size=14),
    "vit_gigantic_patch14": ViTConfig(1664, 48, 8192, 16, patch_size=14),
}


def create_vit(base: ViTConfig, **overrides) -> VisionTransformer:
    """Build a ViT from ``base`` with field overrides (``img_size``, ``patch_size``, ``depth``, ``num_classes`` ...)."""
    unknown = set(overrides) - set(ViTConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown ViT arguments {sorted(unknown)}; valid: {sorted(ViTConfig.__dataclass_fields__)}")
    for key in ("mean", "std"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return VisionTransformer(replace(base, **overrides))


register_family(_CONFIGS, create_vit, "ViT")
