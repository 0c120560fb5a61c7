"""MobileViT (Mehta & Rastegari 2022) and MobileViTv2 (Mehta & Rastegari 2023, separable self-attention).

A MobileViT network is a MobileNetV2 with three of its stages ending in a MobileViT block: a local conv,
a transformer over the pixels of non-overlapping 2x2 patches ("unfold"), and the reverse "fold" back to a
feature map. v1 runs multi-head attention on ``[B*P, N, C]`` tokens (P pixels per patch, N patches) and fuses
the result with the block input; v2 keeps the feature map as ``[B, C, P, N]`` and replaces attention with
separable linear self-attention (1x1 convs, a softmax over N, GroupNorm(1) instead of LayerNorm), with
widths scaled by a multiplier alpha.

Module and parameter names equal timm's ``mobilevit_*`` / ``mobilevitv2_*`` (``stem.conv``,
``stages.S.B.conv1_1x1.bn``, ``stages.S.1.transformer.K.attn.qkv`` ...), so timm state dicts load strictly
and give the same logits.

The forward is written to lower to ExecuTorch + XNNPACK with nothing left outside the delegate: tensors
stay at rank <= 5 (Core ML's limit), slices instead of split, reductions as 4-D ``mean`` over dims (2, 3)
with keepdim (XNNPACK's global average pooling), GroupNorm(1) written out the same way, and attention as
3-D ``bmm`` (``layers.Attention``).

Why one file over ~450 lines: one architecture per file, as timm keeps its zoo (v1 and v2 share the MobileNetV2
body and the unfold/fold; their configs and registered variants sit beside them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgevit.models._registry import register_family
from edgevit.models.layers import Block, DropPath


@dataclass(frozen=True)
class MobileViTConfig:
    """One MobileViT variant: stage widths and depths, the transformer shapes, and input defaults.

    ``version`` 1 is MobileViT (multi-head attention, fusion conv, final 1x1 conv to ``num_features``);
    2 is MobileViTv2 (separable linear attention, no fusion, no final conv).
    """

    version: int
    stem_chs: int
    chs: tuple[int, int, int, int, int]  # output channels of the five stages
    transformer_dims: tuple[int, int, int]  # transformer width of the MobileViT blocks in stages 2, 3, 4
    expansion: float = 4.0  # MobileNetV2 (inverted residual) expansion ratio
    depths: tuple[int, int, int, int, int] = (1, 3, 1, 1, 1)  # inverted-residual blocks per stage
    transformer_depths: tuple[int, int, int] = (2, 4, 3)
    num_heads: int = 4  # v1 only; v2's attention has a single context vector
    mlp_ratio: float = 2.0
    patch_size: int = 2
    num_features: int = 0  # width of the final 1x1 conv (v1); 0: none (v2)
    img_size: int = 256
    in_chans: int = 3
    num_classes: int = 1000
    drop_rate: float = 0.0  # dropout before the classifier
    drop_path_rate: float = 0.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the released checkpoints take [0, 1] RGB
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop_pct: float = 0.9


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """``v`` rounded to a multiple of ``divisor``, never more than 10% below ``v`` (timm's/MobileNet's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


class ConvNormAct(nn.Module):
    """``Conv2d`` (no bias, "same" padding) -> ``BatchNorm2d`` -> SiLU (or no activation)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group (LayerNorm over C, H, W), written with ops XNNPACK delegates.

    ``F.group_norm`` has no XNNPACK lowering; here the statistics are 4-D ``mean``s over dims (2, 3) of a
    ``[B, 1, C, H*W]`` view. Same parameters (``weight``, ``bias``) and numerics as ``nn.GroupNorm(1, C)``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        x4 = x.reshape(B, 1, C, -1)  # [B, C, *] -> [B, 1, C, M]
        mu = x4.mean((2, 3), keepdim=True)  # [B, 1, 1, 1]
        xc = x4 - mu
        var = (xc * xc).mean((2, 3), keepdim=True)  # biased, as group_norm
        y = (xc * torch.rsqrt(var + self.eps)).reshape(x.shape)  # [B, 1, C, M] -> [B, C, *]
        affine_shape = (C,) + (1,) * (x.ndim - 2)
        return y * self.weight.reshape(affine_shape) + self.bias.reshape(affine_shape)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise (strided) -> 1x1 linear project, residual if shapes match.

    Named as timm's ``BottleneckBlock`` (``conv1_1x1``, ``conv2_kxk``, ``conv3_1x1``). Unlike timm, drop-path
    only applies to residual blocks (timm also drops the whole output of a downsampling block).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expansion: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        mid_chs = make_divisible(in_chs * expansion)
        self.has_residual = in_chs == out_chs and stride == 1
        self.conv1_1x1 = ConvNormAct(in_chs, mid_chs, 1)
        self.conv2_kxk = ConvNormAct(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs)
        self.conv3_1x1 = ConvNormAct(mid_chs, out_chs, 1, act=False)
        self.drop_path = DropPath(drop_path) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + self.drop_path(y) if self.has_residual else y


def _patch_grid(H: int, W: int, p: int) -> tuple[int, int]:
    """Feature-map size rounded up to a multiple of the patch size ``p`` (MobileViT resizes to it)."""
    return math.ceil(H / p) * p, math.ceil(W / p) * p


class MobileViTBlock(nn.Module):
    """MobileViT (v1) block: local 3x3 + 1x1, transformer over unfolded patches, fold, 1x1 project, 3x3 fusion.

    Unfold turns ``[B, C, H, W]`` into ``[B*P, N, C]``: sequence ``i`` of the batch holds pixel ``i`` of
    every ``p x p`` patch, so attention mixes information across patches (one pixel position at a time).
    """

    def __init__(
        self,
        in_chs: int,
        transformer_dim: int,
        transformer_depth: int,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        patch_size: int = 2,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(in_chs, in_chs, 3)
        self.conv_1x1 = nn.Conv2d(in_chs, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(
            *[
                _transformer_block(transformer_dim, num_heads, int(transformer_dim * mlp_ratio), drop_path)
                for _ in range(transformer_depth)
            ]
        )
        self.norm = nn.LayerNorm(transformer_dim, eps=1e-5)
        self.conv_proj = ConvNormAct(transformer_dim, in_chs, 1)
        self.conv_fusion = ConvNormAct(2 * in_chs, in_chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))  # [B, C_in, H, W] -> [B, C, H, W]
        B, C, H, W = x.shape
        p = self.patch_size
        new_h, new_w = _patch_grid(H, W, p)
        if (new_h, new_w) != (H, W):  # shapes are static: this branch is decided at export time
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        nh, nw = new_h // p, new_w // p
        N, P = nh * nw, p * p

        # unfold with two 4-D permutes (rank <= 4 for every backend; one 6-D permute would also do it)
        x = x.reshape(B * C * nh, p, nw, p).permute(0, 2, 1, 3)  # [B, C, H, W] -> [B*C*nh, nw, p, p]
        x = x.reshape(B, C, N, P).permute(0, 3, 2, 1).reshape(B * P, N, C)  # -> [B, P, N, C] -> [B*P, N, C]

        x = self.norm(self.transformer(x))

        # fold: the exact inverse
        x = x.reshape(B, P, N, C).permute(0, 3, 2, 1)  # [B*P, N, C] -> [B, C, N, P]
        x = x.reshape(B * C * nh, nw, p, p).permute(0, 2, 1, 3)  # -> [B*C*nh, p, nw, p]
        x = x.reshape(B, C, new_h, new_w)  # -> [B, C, H', W']
        if (new_h, new_w) != (H, W):
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)

        x = self.conv_proj(x)  # [B, C, H, W] -> [B, C_in, H, W]
        return self.conv_fusion(torch.cat((shortcut, x), dim=1))


def _transformer_block(dim: int, num_heads: int, mlp_dim: int, drop_path: float) -> Block:
    """``layers.Block`` as MobileViT uses it: LayerNorm eps 1e-5 and a SiLU (not GELU) feed-forward."""
    block = Block(dim, num_heads, mlp_dim, qkv_bias=True, drop_path=drop_path, eps=1e-5)
    block.mlp.act = nn.SiLU()
    return block


class LinearSelfAttention(nn.Module):
    """Separable self-attention (MobileViTv2) on ``[B, C, P, N]``, linear in the number of patches N.

    A 1x1 conv gives one query channel and C key and value channels. The softmax of the query over N weights
    the keys into one context vector per pixel position, which gates ``relu(value)``.
    """

    def __init__(self, embed_dim: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.qkv_proj = nn.Conv2d(embed_dim, 1 + 2 * embed_dim, 1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.out_proj = nn.Conv2d(embed_dim, embed_dim, 1)
        self.out_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, P, N = x.shape
        qkv = self.qkv_proj(x)  # [B, C, P, N] -> [B, 1 + 2C, P, N]
        # channel slices, not split (split_with_sizes stays on portable kernels)
        q, k, v = qkv[:, :1], qkv[:, 1 : 1 + C], qkv[:, 1 + C :]  # [B, 1, P, N], 2 x [B, C, P, N]
        # softmax over the N patches on a 3-D view: XNNPACK keeps a 4-D conv output channels-last (NHWC) and
        # its softmax would then normalise over C instead of N (wrong numbers, executorch 1.5)
        scores = q.reshape(B, P, N).softmax(dim=-1).reshape(B, 1, P, N)  # [B, 1, P, N] -> [B, P, N] -> back
        scores = self.attn_drop(scores)
        # context = sum over N of k * scores, as N * a 4-D mean over dims (2, 3): XNNPACK has no sum.
        # float(N): an int factor becomes an int64 constant whose cast stays outside the delegate
        ctx = (k * scores).reshape(B, C * P, 1, N).mean((2, 3), keepdim=True) * float(N)  # -> [B, C*P, 1, 1]
        ctx = ctx.reshape(B, C, P, 1)  # -> [B, C, P, 1]
        return self.out_drop(self.out_proj(F.relu(v) * ctx))  # ctx broadcasts over N

    def sync_widths_(self) -> None:
        """Re-read ``embed_dim`` from ``out_proj`` after pruning."""
        self.embed_dim = self.out_proj.out_channels


class ConvMlp(nn.Module):
    """Feed-forward with 1x1 convs on ``[B, C, P, N]``: conv -> SiLU -> conv."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class LinearTransformerBlock(nn.Module):
    """Pre-norm MobileViTv2 transformer block on ``[B, C, P, N]``: GroupNorm(1), linear attention, conv MLP."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.attn = LinearSelfAttention(dim)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = GroupNorm1(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class MobileViTV2Block(nn.Module):
    """MobileViTv2 block: depthwise 3x3 + 1x1, linear transformer on ``[B, C, P, N]``, fold, 1x1 project.

    No fusion conv and no activation after the projection. As in the released code, an input whose size is
    not a multiple of the patch size is resized up to one (and stays that size).
    """

    def __init__(
        self,
        in_chs: int,
        transformer_dim: int,
        transformer_depth: int,
        mlp_ratio: float = 2.0,
        patch_size: int = 2,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(in_chs, in_chs, 3, groups=in_chs)
        self.conv_1x1 = nn.Conv2d(in_chs, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(
            *[LinearTransformerBlock(transformer_dim, mlp_ratio, drop_path) for _ in range(transformer_depth)]
        )
        self.norm = GroupNorm1(transformer_dim)
        self.conv_proj = ConvNormAct(transformer_dim, in_chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        p = self.patch_size
        new_h, new_w = _patch_grid(H, W, p)
        if (new_h, new_w) != (H, W):  # static shapes: decided at export time
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))  # [B, C_in, H, W] -> [B, C, H, W]
        C = x.shape[1]
        nh, nw = new_h // p, new_w // p

        # unfold: one 5-D permute (B and C stay adjacent, so they share a dim)
        x = x.reshape(B * C, nh, p, nw, p).permute(0, 2, 4, 1, 3)  # [B, C, H, W] -> [B*C, p, p, nh, nw]
        x = x.reshape(B, C, p * p, nh * nw)  # -> [B, C, P, N]

        x = self.norm(self.transformer(x))

        # fold: the exact inverse
        x = x.reshape(B * C, p, p, nh, nw).permute(0, 3, 1, 4, 2)  # [B, C, P, N] -> [B*C, nh, p, nw, p]
        x = x.reshape(B, C, new_h, new_w)  # -> [B, C, H, W]
        return self.conv_proj(x)  # -> [B, C_in, H, W]


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> linear (timm's ``head.fc``)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True).flatten(1)  # [B, C, H, W] -> [B, C, 1, 1] -> [B, C]
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class MobileViT(nn.Module):
    """MobileViT v1 or v2 classifier: stem, five stages (the last three end in a MobileViT block), head."""

    def __init__(self, cfg: MobileViTConfig):
        super().__init__()
        if cfg.version not in (1, 2):
            raise ValueError(f"MobileViT version must be 1 or 2, got {cfg.version}")
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.default_cfg = {
            "input_size": (cfg.in_chans, cfg.img_size, cfg.img_size),
            "mean": cfg.mean,
            "std": cfg.std,
            "num_classes": cfg.num_classes,
            "crop_pct": cfg.crop_pct,
            "interpolation": "bicubic",
        }
        self.stem = ConvNormAct(cfg.in_chans, cfg.stem_chs, 3, stride=2)

        # stochastic depth grows linearly over all blocks (a MobileViT block counts as one, as in timm)
        n = sum(cfg.depths) + 3
        dpr = iter([cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)])  # plain floats: works on "meta"
        stages, prev = [], cfg.stem_chs
        for i, (chs, depth) in enumerate(zip(cfg.chs, cfg.depths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(depth):
                blocks.append(InvertedResidual(prev, chs, stride if j == 0 else 1, cfg.expansion, next(dpr)))
                prev = chs
            if i >= 2:
                dim, depth_t = cfg.transformer_dims[i - 2], cfg.transformer_depths[i - 2]
                if cfg.version == 1:
                    blk = MobileViTBlock(chs, dim, depth_t, cfg.num_heads, cfg.mlp_ratio, cfg.patch_size, next(dpr))
                else:
                    blk = MobileViTV2Block(chs, dim, depth_t, cfg.mlp_ratio, cfg.patch_size, next(dpr))
                blocks.append(blk)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        if cfg.num_features:
            self.num_features = cfg.num_features
            self.final_conv = ConvNormAct(prev, cfg.num_features, 1)
        else:
            self.num_features = prev
            self.final_conv = nn.Identity()
        self.head = ClassifierHead(self.num_features, cfg.num_classes, cfg.drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ByobNet init: He-normal (fan-out) convs, N(0, 0.01) linears, zero-init last BN of residuals."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, InvertedResidual) and m.has_residual:
                nn.init.zeros_(m.conv3_1x1.bn.weight)  # each residual block starts as the identity

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides norms and biases: none (no tokens or embeddings)."""
        return set()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` image -> ``[B, num_features, H/32, W/32]`` feature map."""
        x = self.stem(x)  # [B, C, H, W] -> [B, stem, H/2, W/2]
        x = self.stages(x)  # -> [B, chs[-1], H/32, W/32]
        return self.final_conv(x)  # -> [B, num_features, H/32, W/32]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``[B, num_features, h, w]`` features -> ``[B, num_classes]`` logits (``[B, num_features]`` if pre_logits)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0 removes it)."""
        self.num_classes = num_classes
        self.cfg = replace(self.cfg, num_classes=num_classes)
        self.default_cfg["num_classes"] = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(self.head.fc.weight, 0.0, 0.01)
            nn.init.zeros_(self.head.fc.bias)

    def sync_widths_(self) -> None:
        """Re-read ``num_features`` from the classifier's input width after pruning (no classifier: unchanged)."""
        if isinstance(self.head.fc, nn.Linear):
            self.num_features = self.head.fc.in_features


def _v1(stem_chs: int, chs: tuple, dims: tuple, expansion: float, num_features: int) -> MobileViTConfig:
    """MobileViT (v1): 4 heads, FFN 2x, 2x2 patches, transformer depths 2/4/3."""
    return MobileViTConfig(1, stem_chs, chs, dims, expansion=expansion, num_features=num_features)


def _v2(alpha: float) -> MobileViTConfig:
    """MobileViTv2 at width multiplier ``alpha``: transformer width is half the stage width; 2 blocks in stage 1."""
    chs = tuple(int(c * alpha) for c in (64, 128, 256, 384, 512))
    dims = tuple(make_divisible(c / 2) for c in chs[2:])
    return MobileViTConfig(2, int(32 * alpha), chs, dims, expansion=2.0, depths=(1, 2, 1, 1, 1), crop_pct=0.888)


_CONFIGS: dict[str, MobileViTConfig] = {
    # MobileViT paper: stem 16, MV2 expansion 2 (XXS) or 4, a final 1x1 conv to 4x the last stage's width
    "mobilevit_xxs": _v1(16, (16, 24, 48, 64, 80), (64, 80, 96), 2.0, 320),
    "mobilevit_xs": _v1(16, (32, 48, 64, 80, 96), (96, 120, 144), 4.0, 384),
    "mobilevit_s": _v1(16, (32, 64, 96, 128, 160), (144, 192, 240), 4.0, 640),
    "mobilevitv2_050": _v2(0.50),
    "mobilevitv2_075": _v2(0.75),
    "mobilevitv2_100": _v2(1.00),
    "mobilevitv2_125": _v2(1.25),
    "mobilevitv2_150": _v2(1.50),
    "mobilevitv2_175": _v2(1.75),
    "mobilevitv2_200": _v2(2.00),
}


def create_mobilevit(cfg: MobileViTConfig, **overrides) -> MobileViT:
    """Build a MobileViT from ``cfg`` with field overrides (``num_classes``, ``img_size``, ``drop_path_rate`` ...).

    Raises:
        TypeError: an override that is not a :class:`MobileViTConfig` field.
    """
    fields = MobileViTConfig.__dataclass_fields__
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"unknown MobileViT arguments {sorted(unknown)}; valid: {sorted(fields)}")
    for key in ("mean", "std", "chs", "depths", "transformer_dims", "transformer_depths"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return MobileViT(replace(cfg, **overrides))


register_family(_CONFIGS, create_mobilevit, "MobileViT")
