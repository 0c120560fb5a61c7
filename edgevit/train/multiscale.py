"""MobileViT's multi-scale sampler (Mehta & Rastegari, ICLR 2022, Sec. 3.3; CVNets' ``VariableBatchSampler``).

Each batch gets a resolution drawn from a set, and a batch size that keeps the pixels per batch constant:
``b_t = b * (H * W) / (H_t * W_t)`` with ``b`` the batch at the base resolution ``H x W`` (CVNets rounds it as
``max(1, int(round(b * H * W / (H_t * W_t), 2)))``, and so does :func:`batch_sizes`). The paper trains
MobileViT at {160, 192, 256, 288, 320} px around a base of 256; CVNets derives that set from its defaults
(min 160, max 320, 5 scales, sizes made divisible by 32; :func:`cvnets_sizes`).

timm has no equivalent, so this module is edgevit's own. The dataset still makes base-size images (crop,
augmentation); :func:`resize_batch` then resizes each collated batch to its step's resolution (a batch-level
transform, so the crop follows the sampled resolution). Every rank reads its share of the same seeded
permutation as :class:`~edgevit.train.sampling.EpochOrder` and draws the same resolution schedule from
``(seed, epoch)``, so in DDP all ranks step at the same resolution and batch size; the position in the epoch
(for exact resume) is the batch index.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.func import functional_call
from torch.utils.data import Sampler

from edgevit.train.sampling import EpochOrder
from edgevit.utils import EdgeVitError


class MultiScaleConfig(BaseModel):
    """The ``train.multiscale:`` section: the resolutions to draw from (the base is ``data.img_size``, whose
    batch is ``train.batch_size``)."""

    model_config = ConfigDict(extra="forbid")

    sizes: list[int] = Field(min_length=1, description="square resolutions in px, e.g. [160, 192, 256, 288, 320]")

    @field_validator("sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(s < 8 for s in v):
            raise ValueError(f"every size must be at least 8 px, got {v}")
        return sorted(set(v))


def cvnets_sizes(base: int, min_size: int = 160, max_size: int = 320, scales: int = 5, divisor: int = 32) -> list[int]:
    """CVNets' resolution set: ``scales`` sizes evenly spaced in ``[min_size, max_size]`` plus ``base``, each made
    divisible by ``divisor`` (rounded to the nearest multiple, CVNets' ``make_divisible``). Defaults are CVNets'
    (``sampler.vbs``); for ``base=256`` they give the paper's {160, 192, 256, 288, 320}."""
    step = (max_size - min_size) / (scales - 1) if scales > 1 else 0.0
    raw = [min_size + i * step for i in range(scales)] + [base]
    return sorted({max(divisor, int(s + divisor / 2) // divisor * divisor) for s in raw})


def batch_sizes(batch_size: int, base: int, sizes: list[int]) -> dict[int, int]:
    """``{size: b_t}`` with ``b_t = max(1, int(round(batch_size * base^2 / size^2, 2)))`` (CVNets)."""
    return {s: max(1, int(round(batch_size * base * base / (s * s), 2))) for s in sizes}


class MultiScaleBatches(Sampler[list[int]]):
    """A batch sampler: this rank's share of the ``seed + epoch`` permutation, cut into batches whose size
    follows a resolution drawn per batch (the same draws on every rank).

    Every index of this rank's share appears once per epoch; the last batch takes what is left (or is dropped
    with ``drop_last`` when it is short, for Mixup/CutMix). :meth:`set_epoch` with ``skip`` starts after that
    many batches (resume). :meth:`size` is the resolution of batch ``k`` of the epoch.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        batch_size: int,
        base: int,
        sizes: list[int],
        rank: int = 0,
        world: int = 1,
        drop_last: bool = False,
    ):
        self.order = EpochOrder(n, seed, rank, world)
        self.seed, self.drop_last, self.rank, self.world = seed, drop_last, rank, world
        self.batches = batch_sizes(batch_size, base, sizes)
        self.per_rank = self.order.per_rank
        self.epoch, self.skip = 0, 0
        self._plan = self.schedule(0)

    def schedule(self, epoch: int) -> list[tuple[int, int]]:
        """``[(size, batch), ...]`` for ``epoch``: a resolution drawn uniformly per batch from ``(seed, epoch)``
        (rank-independent), until this rank's ``per_rank`` samples are used up."""
        rng = random.Random(f"edgevit-multiscale-{self.seed}-{epoch}")  # str seeds are stable across runs
        sizes, plan, left = sorted(self.batches), [], self.per_rank
        while left > 0:
            size = rng.choice(sizes)
            b = self.batches[size]
            if b > left and self.drop_last:
                break
            plan.append((size, min(b, left)))
            left -= plan[-1][1]
        return plan

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's permutation and schedule, and how many of its batches to skip."""
        self.epoch, self.skip = epoch, skip
        self.order.set_epoch(epoch)
        self._plan = self.schedule(epoch)

    def size(self, k: int) -> int:
        """The resolution of batch ``k`` (0-based, counting skipped ones) of the current epoch."""
        return self._plan[k][0]

    def offset(self, k: int) -> int:
        """How many of this rank's samples the current epoch's batches before batch ``k`` hold."""
        return sum(b for _, b in self._plan[:k])

    def __iter__(self) -> Iterator[list[int]]:
        idx, start = self.order.indices(), 0
        for k, (_, b) in enumerate(self._plan):
            if k >= self.skip:
                yield idx[start : start + b]
            start += b

    def __len__(self) -> int:
        return len(self._plan) - self.skip


def check_sizes(model: torch.nn.Module, sizes: list[int], base_shape: tuple[int, ...], name: str | None = None) -> None:
    """Check, before training, that ``model`` runs on batches at the smallest and largest of ``sizes``.

    A forward pass of one ``[1, C, s, s]`` image on the meta device (shapes only: no compute, no weights copied,
    no RNG draw, no state changed), in eval mode. ``base_shape`` is the data's ``[C, H, W]``; when the model
    does not run on the meta device even at that size the check cannot tell, and passes.

    Raises:
        EdgeVitError: the model fails at a drawn size (a ViT's position embeddings fit one patch grid), naming
            ``train.multiscale``, the model (``name``, else its class) and the size.
    """
    meta = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}

    def fails(size: int) -> Exception | None:
        x = torch.empty(1, base_shape[0], size, size, device="meta")  # [1, C, s, s]
        try:
            with torch.no_grad():
                functional_call(model, meta, (x,), strict=False)
        except Exception as e:  # noqa: BLE001  (any failure: reported below with the size)
            return e
        return None

    was_training = model.training
    model.eval()
    try:
        if fails(base_shape[-1]) is not None:
            return  # no meta-device forward at all: nothing to learn about the sizes here
        for size in sorted({min(sizes), max(sizes)}):
            err = fails(size)
            if err is None:
                continue
            what = name or type(model).__name__
            pe = getattr(model, "pos_embed", None)
            why = "" if pe is None else f": it has fixed-size position embeddings (pos_embed {list(pe.shape)})"
            first = str(err).splitlines()[0] if str(err) else ""
            raise EdgeVitError(
                f"train.multiscale: {what} fails on {size}-px batches{why} ({type(err).__name__}: {first}); "
                "multiscale needs a model that accepts any input size, such as mobilevit_*: drop train.multiscale "
                "or change model.name"
            )
    finally:
        model.train(was_training)


def resize_batch(x: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, size, size]`` (antialiased when shrinking); the batch itself when already that size."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode=interpolation, align_corners=False, antialias=True)


__all__ = ["MultiScaleBatches", "MultiScaleConfig", "batch_sizes", "check_sizes", "cvnets_sizes", "resize_batch"]
