"""The data order of a training run: which samples each process reads, and in which order, every epoch.

The order of an epoch comes from a generator seeded by ``(seed, epoch)`` (:class:`EpochOrder`, as
``DistributedSampler``; :class:`RepeatedOrder`, timm's ``RepeatAugSampler``), so a resumed run skips to its place
in the same order. Each sample's augmentation draws come from its own key, ``(seed, epoch, position in the
epoch)`` (:class:`KeyedOrder` yields the keys, :class:`SeededSamples` seeds from them), not from the process
that loads it: on CPU a resumed run ends with weights bit-identical to an uninterrupted one with any number
of DataLoader workers, and runs with any number of workers end with the same weights.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class EpochOrder(Sampler[int]):
    """This rank's share of a permutation drawn from a generator seeded with ``seed + epoch``.

    The same permutation as ``DistributedSampler(shuffle=True, seed=seed)`` (padded to a multiple of
    ``world``, every ``world``-th index from ``rank``), so 1 and N processes see the same global batches.
    :meth:`set_epoch` with ``skip`` starts the epoch after that many of this rank's samples (resume).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.per_rank = math.ceil(n / world)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's permutation and how many of this rank's samples to skip."""
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        """This rank's whole order for the current epoch."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        order += order[: self.per_rank * self.world - self.n]  # pad as DistributedSampler does
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


class RepeatedOrder(Sampler[int]):
    """Repeated augmentation (DeiT, DeiT III): timm's ``RepeatAugSampler`` behind :class:`EpochOrder`'s interface.

    Each image of a permutation drawn from ``seed + epoch`` is repeated ``repeats`` times in a row and the
    repeated list is dealt round-robin to the ranks, so with ``world >= repeats`` the copies of an image land on
    different processes (each augments its copy differently). timm then truncates: each rank yields
    ``floor(n // 256 * 256 / world)`` indices (``ceil(n / world)`` below 256 images), so an epoch lasts about
    as long as without repeats and covers about ``1 / repeats`` of the distinct images. ``world`` and ``rank``
    are passed explicitly, so one process needs no ``torch.distributed``.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, repeats: int = 3):
        from timm.data.distributed_sampler import RepeatAugSampler  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

        self.sampler = RepeatAugSampler(range(n), num_replicas=world, rank=rank, shuffle=True, num_repeats=repeats)
        self.seed, self.epoch, self.skip = seed, 0, 0
        self.rank, self.world = rank, world
        self.per_rank = len(self.sampler)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order (timm seeds it with ``seed + epoch``) and how many samples to skip."""
        self.sampler.set_epoch(self.seed + epoch)
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        """This rank's whole order for the current epoch."""
        return list(self.sampler)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


# ------------------------------------------------------------------------------------------ per-sample seeding


SampleKey = tuple[int, int, int]
"""``(index, epoch, position)``: a dataset index and where it falls in the epoch's global order."""


class SeededSamples(Dataset):
    """``dataset[index]`` drawn under RNGs seeded from the sample's key, so augmentation does not depend on the
    process that loads it (the main one, or whichever DataLoader worker gets the batch).

    Indexed by a :data:`SampleKey` ``(index, epoch, position)`` (what :class:`KeyedOrder` yields). Python's
    ``random``, NumPy's global RNG and torch's CPU generator (timm's and torchvision's transforms draw from
    these) are seeded from a hash of ``(seed, epoch, position)`` before the sample is made. In the main process
    (``workers: 0``) their states are saved before a batch and restored after it, so dropout, drop-path and
    Mixup/CutMix draw the same numbers whatever the number of workers. The position, not the index, goes into
    the key: repeated augmentation's copies of an image get different draws. A transform that draws from
    another RNG (its own ``np.random.default_rng()``, say) is not covered. Seeding costs some 20-45 us a sample.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed % 2**64

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[SampleKey]) -> list[Any]:
        """A batch's samples (the DataLoader fetches through this): the main process's RNGs saved once a batch."""
        main = torch.utils.data.get_worker_info() is None
        if main:  # NumPy's get/set_state cost ~130 us each: once a batch, not once a sample
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            out = []
            for index, epoch, position in keys:
                digest = hashlib.blake2b(struct.pack("<3Q", self.seed, epoch, position), digest_size=16).digest()
                words = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
                random.seed(words[0])
                np.random.seed(words[1] & 0xFFFFFFFF)
                torch.default_generator.manual_seed(words[1])  # the CPU generator only: CUDA's stays untouched
                out.append(self.dataset[index])
            return out
        finally:
            if main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


class KeyedOrder(Sampler):
    """Wraps an order (:class:`EpochOrder`, :class:`RepeatedOrder` or a multi-scale batch sampler) to yield
    :data:`SampleKey` s for :class:`SeededSamples` instead of bare indices (lists of them for a batch sampler).

    A sample's position is its place in the epoch's global order, ``world * k + rank`` for this rank's ``k``-th
    sample (every order here deals round-robin), so it counts the skipped samples of a resumed epoch, and N
    processes key each sample as one process does.
    """

    def __init__(self, order: Any, batched: bool = False):
        self.order, self.batched = order, batched

    def __iter__(self) -> Iterator[Any]:
        o = self.order
        if not self.batched:
            for k, index in enumerate(o, start=o.skip):
                yield (index, o.epoch, k * o.world + o.rank)
            return
        k = o.offset(o.skip)  # this rank's samples in the skipped batches
        for batch in o:
            yield [(index, o.epoch, (k + j) * o.world + o.rank) for j, index in enumerate(batch)]
            k += len(batch)

    def __len__(self) -> int:
        return len(self.order)


__all__ = ["EpochOrder", "KeyedOrder", "RepeatedOrder", "SampleKey", "SeededSamples"]
