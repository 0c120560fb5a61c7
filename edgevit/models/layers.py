"""Blocks shared by the architectures. Parameter names follow timm so timm state dicts load as-is.

The forward passes are written for lowering: attention is explicit ``matmul -> softmax -> matmul``
(no fused SDPA kernel whose decomposition backends would have to re-discover), and every reshape
uses static sizes taken from the module's config, not from ``x.shape`` arithmetic on symbolic dims.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class PatchEmbed(nn.Module):
    """Image to patch tokens with a strided conv: ``[B, C, H, W] -> [B, N, D]``."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # [B, C, H, W] -> [B, D, H/p, W/p]
        return x.flatten(2).transpose(1, 2)  # -> [B, N, D]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        h, d = self.num_heads, self.head_dim
        C = h * d  # the inner width: the token width, unless heads were pruned (edgevit.prune)
        # slices (not unbind/split) and 3-D bmm (not 4-D matmul): lowers to XNNPACK slice + bmm with no
        # split/expand/squeeze copies left on portable kernels
        qkv = self.qkv(x)  # [B, N, 3C]
        q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]  # 3 x [B, N, C]
        q = (q * self.scale).reshape(B, N, h, d).permute(0, 2, 1, 3).reshape(B * h, N, d)  # -> [B*h, N, d]
        k = k.reshape(B, N, h, d).permute(0, 2, 3, 1).reshape(B * h, d, N)  # -> [B*h, d, N]
        v = v.reshape(B, N, h, d).permute(0, 2, 1, 3).reshape(B * h, N, d)  # -> [B*h, N, d]
        attn = self.attn_drop(torch.bmm(q, k).softmax(dim=-1))  # [B*h, N, N]
        x = torch.bmm(attn, v)  # [B*h, N, d]
        x = x.reshape(B, h, N, d).permute(0, 2, 1, 3).reshape(B, N, C)  # -> [B, N, C]
        return self.proj_drop(self.proj(x))

    def sync_widths_(self) -> None:
        """Re-read ``num_heads`` from the qkv width after pruning (whole heads go: ``head_dim`` is unchanged)."""
        self.num_heads = self.qkv.out_features // (3 * self.head_dim)


class Mlp(nn.Module):
    """Transformer feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth per sample; the identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, drop=drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubically resize a ``[1, prefix + g*g, D]`` position embedding to a ``new_grid`` square grid (FixRes).

    timm's ``resample_abs_pos_embed`` (bicubic, antialiased, ``align_corners=False``: the grid is treated as
    pixel centres, PIL's bicubic); the ``num_prefix_tokens`` rows (class, distillation token) are kept as they
    are. The same grid returns ``pos_embed`` itself.

    Raises:
        ValueError: the grid part of ``pos_embed`` is not square.
    """
    from timm.layers import resample_abs_pos_embed  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

    n = pos_embed.shape[1] - num_prefix_tokens
    old = round(n**0.5)
    if old * old != n:
        raise ValueError(f"position embedding has {n} grid tokens after {num_prefix_tokens} prefix tokens: not square")
    # [1, prefix + g*g, D] -> [1, prefix + g'*g', D]
    return resample_abs_pos_embed(pos_embed, [new_grid, new_grid], [old, old], num_prefix_tokens=num_prefix_tokens)
