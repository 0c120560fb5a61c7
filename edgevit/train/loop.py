"""The training loop: AdamW/SGD/LAMB (+ SAM), warm-up + cosine schedule, EMA, bf16 autocast, gradient accumulation,
DDP under ``torchrun``, exact resume, rich progress, metrics CSV and TensorBoard.

A run directory gets ``checkpoints/`` (``last.*`` every epoch and every ``ckpt_every_steps`` optimizer steps,
plus ``config.json``: the resolved config), ``metrics.csv`` (one row per epoch) and ``tb/`` (TensorBoard
events, when the ``tensorboard`` package is installed). ``resume=True`` continues from the last complete
checkpoint, mid-epoch included: checkpoints hold the model, optimizer, EMA, schedule position, every RNG
(Python, NumPy, torch: dropout, drop-path and Mixup/CutMix draws) and the position in the epoch's data order,
which comes from a generator seeded by ``(seed, epoch)``. Each training sample's augmentation draws come from
its own key, ``(seed, epoch, position in the epoch)`` (:class:`SeededSamples`), not from the process that loads
it, so on CPU a resumed run ends with weights bit-identical to an uninterrupted one with any number of
DataLoader ``workers``, and runs with any number of workers end with the same weights (tested: 0 and 2).
``repeated_aug`` (timm's ``RepeatAugSampler``, :class:`RepeatedOrder`; an image's copies sit at different
positions, so they get different augmentations) and ``multiscale`` (:mod:`edgevit.train.multiscale`) replace
the plain order and keep that resume.

Under ``torchrun --nproc_per_node N`` the loop wraps the model in DistributedDataParallel (gloo on CPU, nccl on
GPU); each rank reads its share of the same seeded order (``batch_size`` is per rank, so the effective batch
is ``batch_size * accum_steps * N``), draws dropout and drop-path with seed ``seed + rank`` and augments each
sample from its position in the global order (the same draws as one process), and only rank 0 logs, shows
progress, validates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
import os
import random
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import DataLoader, Dataset, Sampler

from edgevit._utils import EdgeVitError, progress_bar, write_json_atomic, write_text_atomic
from edgevit.data import DataSplits
from edgevit.data.transforms import AugConfig, build_criterion, build_mixup
from edgevit.train.checkpoint import load_checkpoint, load_part, save_checkpoint
from edgevit.train.multiscale import MultiScaleBatches, MultiScaleConfig, check_sizes, resize_batch
from edgevit.train.optim import create_optimizer, param_groups  # noqa: F401  (param_groups: re-exported)

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, labels, images) -> scalar loss``: a training objective other than cross-entropy."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SAMConfig(_Strict):
    """Sharpness-Aware Minimisation (Foret et al. 2021): a second forward/backward per step at w + rho*g/|g|."""

    rho: float = Field(0.05, gt=0, description="radius of the ascent step")
    adaptive: bool = Field(False, description="ASAM: scale the ascent by |w| (use a larger rho, e.g. 2.0)")


class OptimizerConfig(_Strict):
    """The optimizer (the ``train.optimizer:`` section)."""

    name: Literal["adamw", "sgd", "lamb"] = Field("adamw", description="lamb: timm.optim.Lamb (DeiT III)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    sam: SAMConfig | None = Field(None, description="wrap the optimizer in SAM (batch norm stats skip its 2nd pass)")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise LR decay (fine-tuning)")


class LossConfig(_Strict):
    """The training loss (the ``train.loss:`` section; ``loss: bce`` is short for ``loss: {kind: bce}``).

    ``ce``: cross-entropy with ``train.label_smoothing`` (soft-target cross-entropy under Mixup/CutMix).
    ``bce``: DeiT III's binary cross-entropy, one sigmoid per class, through ``timm.loss.BinaryCrossEntropy``
    (mean over batch and classes): integer labels become one-hot targets smoothed by ``train.label_smoothing``
    (on ``1 - s + s/K``, off ``s/K``); Mixup/CutMix targets come mixed and smoothed already. With
    ``target_threshold`` every target above it becomes 1 and the rest 0: DeiT III binarises the mixed
    targets with ``targets.gt(0.0)`` (facebookresearch/deit engine.py, ``--bce-loss``), i.e. 0.0 here.
    """

    kind: Literal["ce", "bce"] = "ce"
    target_threshold: float | None = Field(None, ge=0, lt=1, description="bce only: binarise targets above it")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _threshold_is_bce(self) -> LossConfig:
        if self.target_threshold is not None and self.kind != "bce":
            raise ValueError("target_threshold is a bce setting; set kind: bce or drop it")
        return self


class DistillConfig(_Strict):
    """DeiT distillation through the student's distillation token (the ``train.distill:`` section).

    The student must be a distilled ViT/DeiT (``deit_*_distilled``, or ``model.args: {distilled: true}``).
    """

    teacher: str = Field(description="run directory (or model.safetensors) of a trained edgevit model")
    kind: Literal["hard", "soft"] = "hard"
    tau: float = Field(1.0, gt=0, description="soft distillation's temperature")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term")


class TrainConfig(_Strict):
    """Training hyperparameters (the ``train:`` section of a recipe)."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1, description="per process and micro-step")
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_epochs: float = Field(2.0, ge=0)
    warmup_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    loss: LossConfig = Field(default_factory=LossConfig, description="ce (default) or DeiT III's bce")
    grad_clip: float | None = Field(None, gt=0)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None keeps torch's default")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="keep an EMA of the weights (e.g. 0.9998); the EMA model is the one saved"
    )
    ema_warmup: bool = Field(
        False, description="ramp the EMA decay as 1 - (1 + step)^(-2/3) up to ema_decay (timm; for short runs)"
    )
    amp: Literal["none", "bf16"] = Field("none", description="bf16 autocast for forward and loss")
    accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    ckpt_every_steps: int | None = Field(None, ge=1, description="also checkpoint every N optimizer steps")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="auto: cuda when available")
    workers: int = Field(
        0, ge=0, description="DataLoader workers; any number keeps exact resume (augmentation is seeded per sample)"
    )
    tensorboard: bool = Field(True, description="write TensorBoard events to RUN/tb (needs `tensorboard`)")
    drop_path: float | None = Field(
        None, ge=0, lt=1, description="stochastic depth rate, passed to the model as drop_path_rate"
    )
    aug: AugConfig = Field(default_factory=AugConfig, description="per-image augmentation and Mixup/CutMix")
    repeated_aug: int | None = Field(
        None, ge=2, description="repeated augmentation: each drawn image this many times (DeiT: 3); see RepeatedOrder"
    )
    multiscale: MultiScaleConfig | None = Field(
        None, description="MobileViT's multi-scale sampler: a resolution per batch, pixels per batch constant"
    )
    distill: DistillConfig | None = Field(None, description="DeiT distillation from a trained teacher")

    @model_validator(mode="after")
    def _even_batch_for_mixup(self) -> TrainConfig:
        if self.aug.mixes and self.batch_size % 2:
            raise ValueError(f"batch_size must be even with Mixup/CutMix (they pair images), got {self.batch_size}")
        if self.multiscale and self.repeated_aug:
            raise ValueError("multiscale and repeated_aug are two samplers; set only one")
        return self


@dataclass
class TrainResult:
    """What a run produced: the best and final validation top-1 (percent) and the run directory.

    With EMA, the top-1 numbers are the EMA model's and ``ema_model`` holds its weights (the raw model's
    final top-1 is ``final_val_top1_raw``).
    """

    best_val_top1: float
    final_val_top1: float
    epochs_run: int
    out_dir: Path
    final_val_top1_raw: float | None = None
    ema_model: nn.Module | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode over ``dataset``; return ``(logits [N, K] float32, labels [N] int64)``."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    logits, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float((logits.argmax(-1) == labels).mean() * 100.0)


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
        from timm.data.distributed_sampler import RepeatAugSampler

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


# ------------------------------------------------------------------------------------------ distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (the values themselves on one process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def _setup_distributed(device: str) -> _Dist:
    """Join the ``torchrun`` process group (``WORLD_SIZE`` > 1 in the environment) and pick the device."""
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise EdgeVitError("train.device is cuda but torch sees no CUDA device; use device: cpu or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if world == 1:
        return _Dist(device=dev)
    dist = torch.distributed
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=dev if cuda else None)
    return _Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


# ------------------------------------------------------------------------------------------ RNG state


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python, NumPy and torch (CPU and the CUDA device) RNG states, JSON-able."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *(x.item() if hasattr(x, "item") else x for x in np_state[2:])],
        "torch": torch.get_rng_state().tolist(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)


# ------------------------------------------------------------------------------------------ logging


class _Log:
    """Rank 0's metrics CSV (one row per epoch) and TensorBoard scalars; a no-op on other ranks."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool):
        self.path, self.enabled, self.tb = out_dir / "metrics.csv", enabled, None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "TensorBoard events skipped: install `tensorboard` (pip install 'edgevit[train]')", stacklevel=3
                )
            else:
                self.tb = SummaryWriter(str(out_dir / "tb"))

    def scalars(self, step: int, **values: float) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def epoch(self, rows: list[dict[str, Any]], step: int) -> None:
        if not self.enabled:
            return
        _write_csv(self.path, rows)
        self.scalars(step, **{f"epoch/{k}": v for k, v in rows[-1].items() if k != "epoch" and v is not None})
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ------------------------------------------------------------------------------------------ the loop


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optimizer`` (see :func:`edgevit.train.optim.create_optimizer`)."""
    o = cfg.optimizer
    return create_optimizer(
        model,
        o.name,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        momentum=o.momentum,
        layer_decay=o.layer_decay,
        sam=o.sam.model_dump() if o.sam is not None else None,
    )


def train(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    out_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_step_end: Callable[[int, float], None] | None = None,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.train``, validating on ``data.val`` each epoch.

    Args:
        model: any classifier ``[B, C, H, W] -> [B, K]``; trained in place (and left on the CPU).
        data: the dataset splits.
        cfg: hyperparameters.
        out_dir: run directory; gets ``checkpoints/``, ``metrics.csv`` and ``tb/``.
        seed: seeds the data order, and (plus the rank) dropout, drop-path and augmentation.
        resume: continue from ``out_dir/checkpoints/last.json``, mid-epoch included.
        progress: show rich progress bars (rank 0).
        loss_fn: the training loss (e.g. knowledge distillation); default ``cfg.loss``: cross-entropy with
            ``cfg.label_smoothing`` (soft-target cross-entropy with Mixup/CutMix, whose mixed targets ``[B, K]``
            a ``loss_fn`` then receives as ``labels``) or DeiT III's binary cross-entropy (:class:`LossConfig`).
            Validation is always top-1.
        on_epoch_start: called with the 0-based epoch index after ``model.train()``, before the epoch's first
            step (also for the first epoch after a resume); e.g. to freeze QAT observers from some epoch on.
        on_step_end: called with the optimizer step count (from 1) and this process's loss after each
            optimizer step, after any checkpoint of that step.
        teacher: the trained teacher for ``cfg.distill`` (the recipe loads it from ``cfg.distill.teacher``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        EdgeVitError: ``cfg.multiscale`` with a model that does not run at its smallest or largest size (checked
            before training, :func:`~edgevit.train.multiscale.check_sizes`), ``resume`` without a checkpoint (or
            a mid-epoch one from another number of processes),
            divergence (a non-finite loss), an impossible device, ``cfg.distill`` without a ``teacher`` or a
            distilled student, or with a ``loss_fn``.
    """
    from timm.scheduler import CosineLRScheduler

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    criterion, mixup = _criterion(model, cfg, len(data.classes), loss_fn, teacher)
    if cfg.multiscale:  # a fixed-size model (a ViT's position embeddings) fails here, not at its first step
        check_sizes(model, cfg.multiscale.sizes, tuple(data.val[0][0].shape))
    dist = _setup_distributed(cfg.device)
    try:
        seed_everything(seed + dist.rank)
        model.to(dist.device)
        net = model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None)
        optimizer = build_optimizer(model, cfg)
        order, loader, micro = _data_order(data, cfg, seed, dist, drop_last=mixup is not None)
        if micro[0] == 0:
            raise EdgeVitError(f"train.batch_size {cfg.batch_size} is larger than the {order.per_rank} training images")
        steps = [math.ceil(m / cfg.accum_steps) for m in micro]  # per epoch: the schedule counts optimizer steps
        steps_per_epoch = sum(steps) / cfg.epochs  # a whole number unless multiscale varies it by epoch
        steps_per_epoch = int(steps_per_epoch) if steps_per_epoch.is_integer() else steps_per_epoch
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=sum(steps),
            lr_min=cfg.min_lr,
            warmup_t=int(cfg.warmup_epochs * steps_per_epoch),
            warmup_lr_init=cfg.warmup_lr,
            warmup_prefix=True,
            t_in_epochs=False,
        )
        ema = None
        if cfg.ema_decay is not None:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
        start_epoch, start_batch, step, rows, best = 0, 0, 0, [], 0.0
        running = [0.0, 0.0, 0.0]  # loss sum, correct, seen: this epoch so far, this rank
        if resume and (ckpt_dir / "last.json").is_file():
            state = load_checkpoint(ckpt_dir, model, optimizer)  # SAM: its base optimizer's state
            start_epoch, rows, best = state["epoch"], state["metrics"], state["best_val_top1"]
            start_batch, step = state.get("batch", 0), state.get("step", sum(steps[:start_epoch]))
            if state.get("batch") and state.get("world_size", 1) != dist.world:
                raise EdgeVitError(
                    f"--resume: the checkpoint in {ckpt_dir} is mid-epoch from {state['world_size']} processes; "
                    f"resume it with the same number of processes (not {dist.world})"
                )
            running = state.get("running", running)
            if ema is not None:
                ema_sd = load_part(ckpt_dir, "ema")
                ema.module.load_state_dict(ema_sd if ema_sd is not None else model.state_dict())
            if "rng" in state and len(state["rng"]) == dist.world:
                set_rng_state(state["rng"][dist.rank], dist.device)
            elif "torch_rng" in state:  # checkpoints before mid-epoch resume
                torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        elif resume:
            raise EdgeVitError(f"--resume: no checkpoint found in {ckpt_dir}")

        if dist.main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(
                ckpt_dir / "config.json",
                {
                    "train": cfg.model_dump(mode="json"),
                    "seed": seed,
                    "world_size": dist.world,
                    "device": str(dist.device),
                    "effective_batch": cfg.batch_size * cfg.accum_steps * dist.world,
                    "steps_per_epoch": steps_per_epoch,
                    "total_steps": sum(steps),
                },
            )
        log = _Log(out_dir, dist.main, cfg.tensorboard)

        def checkpoint(epoch: int, batch: int) -> None:
            rngs = dist.gather(rng_state(dist.device))  # every rank's: each resumes its own streams
            if dist.main:
                parts = {"ema": ema.module.state_dict()} if ema is not None else None
                state = {
                    "epoch": epoch,
                    "batch": batch,
                    "step": step,
                    "world_size": dist.world,
                    "best_val_top1": best,
                    "metrics": rows,
                    "running": running,
                    "scheduler": _jsonable(scheduler.state_dict()),
                    "rng": rngs,
                }
                save_checkpoint(ckpt_dir, model, optimizer, state, parts=parts)
            dist.barrier()

        amp = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
        final = rows[-1]["val_top1"] if rows else 0.0
        final_raw = rows[-1].get("val_top1_raw", final) if rows else 0.0
        with progress_bar(progress and dist.main) as bars:
            run_task = bars.add_task("train", total=cfg.epochs, completed=start_epoch, info="")
            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                first = start_batch if epoch == start_epoch else 0
                if first == 0:
                    running = [0.0, 0.0, 0.0]
                micro_per_epoch = micro[epoch]
                order.set_epoch(epoch, skip=first if cfg.multiscale else first * cfg.batch_size)
                epoch_task = bars.add_task(
                    f"epoch {epoch + 1}/{cfg.epochs}", total=micro_per_epoch, completed=first, info=""
                )
                model.train()
                if on_epoch_start is not None:
                    on_epoch_start(epoch)
                batches, i, seen0 = iter(loader), first, running[2]
                while i < micro_per_epoch:
                    group = [next(batches) for _ in range(min(cfg.accum_steps, micro_per_epoch - i))]
                    group = [(x.to(dist.device, non_blocking=True), y.to(dist.device)) for x, y in group]
                    if cfg.multiscale:  # the batch-level resize to each micro-batch's drawn resolution
                        mode = cfg.aug.interpolation
                        group = [(resize_batch(x, order.size(i + j), mode), y) for j, (x, y) in enumerate(group)]
                    if mixup is not None:
                        group = [mixup(x, y) for x, y in group]
                    scheduler.step_update(step)
                    loss_sum, correct = _optimizer_step(net, model, optimizer, group, criterion, cfg, amp)
                    i += len(group)
                    step += 1
                    if ema is not None:
                        ema.update(model, step=step if cfg.ema_warmup else None)
                    n = sum(len(y) for _, y in group)
                    running = [running[0] + loss_sum, running[1] + correct, running[2] + n]
                    if not math.isfinite(loss_sum):
                        raise EdgeVitError(
                            f"training diverged: loss is {loss_sum / n} at epoch {epoch + 1} step {step}; "
                            "lower train.lr or set train.grad_clip"
                        )
                    lr = max(g["lr"] for g in optimizer.param_groups)
                    rate = (running[2] - seen0) * dist.world / (time.perf_counter() - t0)
                    bars.update(
                        epoch_task,
                        completed=i,
                        info=f"loss {running[0] / running[2]:.3f} lr {lr:.2e} {rate:.0f} img/s",
                    )
                    log.scalars(step, **{"train/loss": loss_sum / n, "train/lr": lr, "train/img_per_s": rate})
                    if cfg.ckpt_every_steps and step % cfg.ckpt_every_steps == 0 and i < micro_per_epoch:
                        checkpoint(epoch, i)
                    if on_step_end is not None:
                        on_step_end(step, loss_sum / n)
                loss_total, correct_total, seen_total = dist.sum(running)
                final_raw, final_ema = None, None
                if dist.main:
                    final_raw = top1(*predict(model, data.val))
                    final_ema = top1(*predict(ema.module, data.val)) if ema is not None else None
                final_raw, final_ema = dist.broadcast((final_raw, final_ema))
                final = final_ema if ema is not None else final_raw
                best = max(best, final)
                rows.append(
                    {
                        "epoch": epoch + 1,
                        "lr": max(g["lr"] for g in optimizer.param_groups),
                        "train_loss": loss_total / seen_total,
                        "train_top1": 100.0 * correct_total / seen_total,
                        "val_top1": final,
                        **({"val_top1_raw": final_raw} if ema is not None else {}),
                        "seconds": time.perf_counter() - t0,
                    }
                )
                log.epoch(rows, step)
                checkpoint(epoch + 1, 0)
                bars.remove_task(epoch_task)
                bars.update(run_task, advance=1, info=f"val top-1 {final:.2f}% (best {best:.2f}%)")
        log.close()
    finally:
        model.cpu()
        if hasattr(model, "distilled_training"):
            model.distilled_training = False
        if dist.owns_group:
            torch.distributed.destroy_process_group()
    ema_model = ema.module.cpu() if ema is not None else None
    return TrainResult(best, final, len(rows), out_dir, final_raw, ema_model)


def _data_order(
    data: DataSplits, cfg: TrainConfig, seed: int, dist: _Dist, drop_last: bool
) -> tuple[Any, DataLoader, list[int]]:
    """This rank's sampler (:class:`EpochOrder`, :class:`RepeatedOrder` or a multi-scale batch sampler), its
    loader, and the number of micro-batches of each epoch (the same every epoch, except with multiscale)."""
    common = {
        "num_workers": cfg.workers,
        "generator": torch.Generator(),  # its seed draw must not advance the global RNG (exact resume)
        "pin_memory": dist.device.type == "cuda",
    }
    n = len(data.train)
    if cfg.multiscale:
        base = data.val[0][0].shape[-1]  # the data's image size (val: a deterministic transform, no RNG draw)
        order = MultiScaleBatches(
            n, seed, cfg.batch_size, base, cfg.multiscale.sizes, dist.rank, dist.world, drop_last=drop_last
        )
        micro = [len(order.schedule(e)) for e in range(cfg.epochs)]
        loader = DataLoader(SeededSamples(data.train, seed), batch_sampler=KeyedOrder(order, batched=True), **common)
        return order, loader, micro
    if cfg.repeated_aug:
        order = RepeatedOrder(n, seed, dist.rank, dist.world, cfg.repeated_aug)
    else:
        order = EpochOrder(n, seed, dist.rank, dist.world)
    # drop_last: Mixup/CutMix pair images, every batch must be even
    samples, keys = SeededSamples(data.train, seed), KeyedOrder(order)
    loader = DataLoader(samples, batch_size=cfg.batch_size, sampler=keys, drop_last=drop_last, **common)
    micro = (math.floor if drop_last else math.ceil)(order.per_rank / cfg.batch_size)
    return order, loader, [micro] * cfg.epochs


def _criterion(
    model: nn.Module, cfg: TrainConfig, num_classes: int, loss_fn: LossFn | None, teacher: nn.Module | None
) -> tuple[LossFn, Callable | None]:
    """The training loss ``(outputs, targets, images)`` and the batch mixer (Mixup/CutMix) or ``None``."""
    mixup = build_mixup(cfg.aug, num_classes, cfg.label_smoothing)
    base = build_criterion(mixup, cfg.label_smoothing)
    if cfg.loss.kind == "bce":
        from timm.loss import BinaryCrossEntropy

        smoothing = 0.0 if mixup is not None else cfg.label_smoothing  # Mixup folds the smoothing in already
        base = BinaryCrossEntropy(smoothing=smoothing, target_threshold=cfg.loss.target_threshold)
    if cfg.distill is None:
        return loss_fn or (lambda outputs, targets, images: base(outputs, targets)), mixup
    from edgevit.train.distill import deit_distillation_loss

    if loss_fn is not None:
        raise EdgeVitError("train.distill and a loss_fn are two training objectives; use one")
    if teacher is None:
        raise EdgeVitError("train.distill needs the teacher model: pass train(teacher=...)")
    if getattr(model, "dist_token", None) is None:
        raise EdgeVitError(
            "train.distill: the student has no distillation token; use a distilled model "
            "(deit_tiny_distilled, or model.args: {distilled: true} on a ViT)"
        )
    model.distilled_training = True  # (cls_logits, dist_logits) in train mode; eval averages the two heads
    d = cfg.distill
    return deit_distillation_loss(teacher, d.kind, d.tau, d.alpha, base_criterion=base), mixup


def _optimizer_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    group: list[tuple[torch.Tensor, torch.Tensor]],
    criterion: LossFn,
    cfg: TrainConfig,
    amp: contextlib.AbstractContextManager,
) -> tuple[float, float]:
    """One optimizer step over the micro-batches of ``group`` (SAM: two passes); returns (loss sum, correct)."""
    total = sum(len(y) for _, y in group)

    def accumulate() -> tuple[float, float]:
        loss_sum, correct = 0.0, 0.0
        for j, (x, y) in enumerate(group):
            last = j == len(group) - 1
            sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
            with sync:
                with amp:
                    out = net(x)
                    loss = criterion(out, y, x)
                (loss * (len(y) / total)).backward()  # the group's mean loss, micro-batches of any size
            logits = out[0] if isinstance(out, tuple) else out
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(-1) == (y if y.ndim == 1 else y.argmax(-1))).sum().item()
        return loss_sum, correct

    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct = accumulate()
    if cfg.optimizer.sam is not None:
        from edgevit.train.sam import disable_running_stats

        optimizer.first_step(zero_grad=True)
        with disable_running_stats(model):
            accumulate()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if cfg.optimizer.sam is not None:
        optimizer.second_step(zero_grad=True)
    else:
        optimizer.step()
    return loss_sum, correct


def _jsonable(obj: Any) -> Any:
    """``obj`` with what JSON cannot hold (tensors, generators) dropped."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if _jsonable(v) is not _DROP}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return _DROP


_DROP = object()


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
