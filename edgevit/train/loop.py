"""The training loop: AdamW/SGD/LAMB (+ SAM), warm-up + cosine schedule, EMA, bf16 autocast, gradient accumulation
(the step: :mod:`edgevit.train.step`), DDP under ``torchrun`` (:mod:`edgevit.train.distributed`), exact resume, rich
progress, metrics CSV and TensorBoard (:mod:`edgevit.train.log`).

A run directory gets ``checkpoints/`` (``last.*`` every epoch and every ``ckpt_every_steps`` optimizer steps,
plus ``config.json``: the resolved config), ``metrics.csv`` (one row per epoch) and ``tb/`` (TensorBoard
events, when the ``tensorboard`` package is installed). ``resume=True`` continues from the last complete
checkpoint, mid-epoch included: checkpoints hold the model, optimizer, EMA, schedule position, every RNG
(:mod:`edgevit.train.rng`: Python, NumPy, torch: dropout, drop-path and Mixup/CutMix draws) and the position in
the epoch's data order (:mod:`edgevit.train.sampling`), which comes from a generator seeded by ``(seed, epoch)``.
Each training sample's augmentation draws come from its own key, ``(seed, epoch, position in the epoch)``
(:class:`~edgevit.train.sampling.SeededSamples`), so on CPU a resumed run ends with weights bit-identical to an
uninterrupted one with any number of DataLoader ``workers``, and runs with any number of workers end with the
same weights (tested: 0 and 2). ``repeated_aug`` (:class:`~edgevit.train.sampling.RepeatedOrder`) and
``multiscale`` (:mod:`edgevit.train.multiscale`) replace the plain order and keep that resume.

:func:`train` builds a run's parts (:class:`_Run`) and walks the epochs: :func:`_run_epoch` trains one,
:func:`_end_epoch` validates (:func:`_validate`), logs and checkpoints (:func:`_checkpoint`); :class:`_Position` is
where the run stands, what a checkpoint saves.
timm (a dependency) is imported where it is used, as elsewhere in edgevit: it would add much to the import time of
``edgevit.train``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from edgevit.data import DataSplits
from edgevit.train.checkpoint import jsonable, load_checkpoint, load_part, save_checkpoint
from edgevit.train.config import LossFn, TrainConfig, TrainResult
from edgevit.train.distributed import DistContext, setup_distributed
from edgevit.train.log import MetricsLog
from edgevit.train.multiscale import MultiScaleBatches, check_sizes, resize_batch
from edgevit.train.rng import rng_state, seed_everything, set_rng_state
from edgevit.train.sampling import EpochOrder, KeyedOrder, RepeatedOrder, SeededSamples
from edgevit.train.step import build_loss, build_optimizer, optimizer_step
from edgevit.utils import EdgeVitError, progress_bar, write_json_atomic


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
            a ``loss_fn`` then receives as ``labels``) or DeiT III's binary cross-entropy
            (:class:`~edgevit.train.config.LossConfig`). Validation is always top-1.
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
    out_dir = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    criterion, mixup = build_loss(model, cfg, len(data.classes), loss_fn, teacher)
    if cfg.multiscale:  # a fixed-size model (a ViT's position embeddings) fails here, not at its first step
        check_sizes(model, cfg.multiscale.sizes, tuple(data.val[0][0].shape))
    dist = setup_distributed(cfg.device)
    try:
        seed_everything(seed + dist.rank)
        model.to(dist.device)
        net = model
        if dist.world > 1:
            net = DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None)
        optimizer = build_optimizer(model, cfg)
        order, loader, micro = _data_order(data, cfg, seed, dist, drop_last=mixup is not None)
        if micro[0] == 0:
            raise EdgeVitError(f"train.batch_size {cfg.batch_size} is larger than the {order.per_rank} training images")
        steps = [math.ceil(m / cfg.accum_steps) for m in micro]  # per epoch: the schedule counts optimizer steps
        scheduler = _scheduler(optimizer, cfg, steps)
        ema = None
        if cfg.ema_decay is not None:
            from timm.utils import ModelEmaV3  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

            ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
        ckpt_dir = out_dir / "checkpoints"
        pos = _resume(ckpt_dir, model, optimizer, ema, dist, steps) if resume else _Position()
        if dist.main:
            _write_run_config(ckpt_dir, cfg, seed, dist, steps)
        log = MetricsLog(out_dir, dist.main, cfg.tensorboard)
        amp = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
        run = _Run(
            cfg=cfg,
            dist=dist,
            model=model,
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            ema=ema,
            criterion=criterion,
            mixup=mixup,
            amp=amp,
            order=order,
            loader=loader,
            micro=micro,
            ckpt_dir=ckpt_dir,
            log=log,
        )
        with progress_bar(progress and dist.main) as bars:
            run_task = bars.add_task("train", total=cfg.epochs, completed=pos.epoch, info="")
            for epoch in range(pos.epoch, cfg.epochs):
                t0 = time.perf_counter()
                desc = f"epoch {epoch + 1}/{cfg.epochs}"
                task = bars.add_task(desc, total=micro[epoch], completed=pos.batch, info="")
                _run_epoch(run, pos, epoch, t0, bars, task, on_epoch_start, on_step_end)
                final = _end_epoch(run, pos, epoch, t0, data.val)
                bars.remove_task(task)
                bars.update(run_task, advance=1, info=f"val top-1 {final:.2f}% (best {pos.best:.2f}%)")
        log.close()
    finally:
        model.cpu()
        if hasattr(model, "distilled_training"):
            model.distilled_training = False
        if dist.owns_group:
            torch.distributed.destroy_process_group()
    final = pos.rows[-1]["val_top1"] if pos.rows else 0.0
    final_raw = pos.rows[-1].get("val_top1_raw", final) if pos.rows else 0.0
    ema_model = ema.module.cpu() if ema is not None else None
    return TrainResult(pos.best, final, len(pos.rows), out_dir, final_raw, ema_model)


@dataclass
class _Run:
    """The parts of one run that :func:`train` builds once and its steps share."""

    cfg: TrainConfig
    dist: DistContext
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any  # timm's CosineLRScheduler
    ema: Any  # timm's ModelEmaV3, or None
    criterion: LossFn
    mixup: Callable | None
    amp: contextlib.AbstractContextManager
    order: Any  # EpochOrder, RepeatedOrder or MultiScaleBatches
    loader: DataLoader
    micro: list[int]  # micro-batches per epoch
    ckpt_dir: Path
    log: MetricsLog


@dataclass
class _Position:
    """Where a run stands: what a checkpoint saves besides the model, optimizer and EMA weights."""

    epoch: int = 0  # the epoch in progress (the next one at an epoch's end)
    batch: int = 0  # micro-batches of that epoch done on this rank
    step: int = 0  # optimizer steps done
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv so far
    best: float = 0.0  # the best validation top-1 so far
    running: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, correct, seen: epoch, rank


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: list[int]) -> Any:
    """timm's warm-up + cosine schedule over all optimizer steps (``steps``: per epoch), updated every step."""
    from timm.scheduler import CosineLRScheduler  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

    return CosineLRScheduler(
        optimizer,
        t_initial=sum(steps),
        lr_min=cfg.min_lr,
        warmup_t=int(cfg.warmup_epochs * _steps_per_epoch(steps)),
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def _steps_per_epoch(steps: list[int]) -> int | float:
    """Optimizer steps per epoch: a whole number unless multiscale varies it by epoch."""
    per_epoch = sum(steps) / len(steps)
    return int(per_epoch) if per_epoch.is_integer() else per_epoch


def _resume(
    ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any, dist: DistContext, steps: list[int]
) -> _Position:
    """Load ``ckpt_dir/last.*`` into the model, optimizer (SAM: its base optimizer's state), EMA and this rank's RNGs.

    Returns:
        The position saved with it.

    Raises:
        EdgeVitError: no checkpoint in ``ckpt_dir``, or a mid-epoch one from another number of processes.
    """
    if not (ckpt_dir / "last.json").is_file():
        raise EdgeVitError(f"--resume: no checkpoint found in {ckpt_dir}")
    state = load_checkpoint(ckpt_dir, model, optimizer)
    epoch = state["epoch"]
    pos = _Position(
        epoch, state.get("batch", 0), state.get("step", sum(steps[:epoch])), state["metrics"], state["best_val_top1"]
    )
    if state.get("batch") and state.get("world_size", 1) != dist.world:
        raise EdgeVitError(
            f"--resume: the checkpoint in {ckpt_dir} is mid-epoch from {state['world_size']} processes; "
            f"resume it with the same number of processes (not {dist.world})"
        )
    pos.running = state.get("running", pos.running)
    if ema is not None:
        ema_sd = load_part(ckpt_dir, "ema")
        ema.module.load_state_dict(ema_sd if ema_sd is not None else model.state_dict())
    if "rng" in state and len(state["rng"]) == dist.world:
        set_rng_state(state["rng"][dist.rank], dist.device)
    elif "torch_rng" in state:  # checkpoints before mid-epoch resume
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return pos


def _write_run_config(ckpt_dir: Path, cfg: TrainConfig, seed: int, dist: DistContext, steps: list[int]) -> None:
    """``checkpoints/config.json``: the resolved config and what it comes to (batch, steps) on this many processes."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        ckpt_dir / "config.json",
        {
            "train": cfg.model_dump(mode="json"),
            "seed": seed,
            "world_size": dist.world,
            "device": str(dist.device),
            "effective_batch": cfg.batch_size * cfg.accum_steps * dist.world,
            "steps_per_epoch": _steps_per_epoch(steps),
            "total_steps": sum(steps),
        },
    )


def _run_epoch(
    run: _Run,
    pos: _Position,
    epoch: int,
    t0: float,
    bars: Any,
    task: Any,
    on_epoch_start: Callable[[int], None] | None,
    on_step_end: Callable[[int, float], None] | None,
) -> None:
    """Train ``epoch`` from micro-batch ``pos.batch`` on (a resumed epoch), moving ``pos`` with every step.

    Checkpoints every ``ckpt_every_steps`` optimizer steps before the epoch's end; ``t0`` is the epoch's start
    (for img/s), ``bars``/``task`` its progress bar.

    Raises:
        EdgeVitError: a non-finite loss (divergence).
    """
    cfg, dist, total = run.cfg, run.dist, run.micro[epoch]
    if pos.batch == 0:
        pos.running = [0.0, 0.0, 0.0]
    run.order.set_epoch(epoch, skip=pos.batch if cfg.multiscale else pos.batch * cfg.batch_size)
    run.model.train()
    if on_epoch_start is not None:
        on_epoch_start(epoch)
    batches, i, seen0 = iter(run.loader), pos.batch, pos.running[2]
    while i < total:
        group = [next(batches) for _ in range(min(cfg.accum_steps, total - i))]
        group = [(x.to(dist.device, non_blocking=True), y.to(dist.device)) for x, y in group]
        if cfg.multiscale:  # the batch-level resize to each micro-batch's drawn resolution
            mode = cfg.aug.interpolation
            group = [(resize_batch(x, run.order.size(i + j), mode), y) for j, (x, y) in enumerate(group)]
        if run.mixup is not None:
            group = [run.mixup(x, y) for x, y in group]
        run.scheduler.step_update(pos.step)
        loss_sum, correct = optimizer_step(run.net, run.model, run.optimizer, group, run.criterion, cfg, run.amp)
        i += len(group)
        pos.batch, pos.step = i, pos.step + 1
        if run.ema is not None:
            run.ema.update(run.model, step=pos.step if cfg.ema_warmup else None)
        n = sum(len(y) for _, y in group)
        pos.running = [pos.running[0] + loss_sum, pos.running[1] + correct, pos.running[2] + n]
        if not math.isfinite(loss_sum):
            raise EdgeVitError(
                f"training diverged: loss is {loss_sum / n} at epoch {epoch + 1} step {pos.step}; "
                "lower train.lr or set train.grad_clip"
            )
        lr = max(g["lr"] for g in run.optimizer.param_groups)
        rate = (pos.running[2] - seen0) * dist.world / (time.perf_counter() - t0)
        running_loss = pos.running[0] / pos.running[2]
        bars.update(task, completed=i, info=f"loss {running_loss:.3f} lr {lr:.2e} {rate:.0f} img/s")
        run.log.scalars(pos.step, **{"train/loss": loss_sum / n, "train/lr": lr, "train/img_per_s": rate})
        if cfg.ckpt_every_steps and pos.step % cfg.ckpt_every_steps == 0 and i < total:
            _checkpoint(run, pos)
        if on_step_end is not None:
            on_step_end(pos.step, loss_sum / n)


def _end_epoch(run: _Run, pos: _Position, epoch: int, t0: float, val: Dataset) -> float:
    """Validate after ``epoch``, add its row to ``metrics.csv`` and TensorBoard, move ``pos`` to the next epoch and
    checkpoint there; return the epoch's validation top-1 (the EMA model's, with EMA)."""
    loss_total, correct_total, seen_total = run.dist.sum(pos.running)
    raw, ema_top1 = _validate(run, val)
    final = ema_top1 if run.ema is not None else raw
    pos.best = max(pos.best, final)
    pos.rows.append(
        {
            "epoch": epoch + 1,
            "lr": max(g["lr"] for g in run.optimizer.param_groups),
            "train_loss": loss_total / seen_total,
            "train_top1": 100.0 * correct_total / seen_total,
            "val_top1": final,
            **({"val_top1_raw": raw} if run.ema is not None else {}),
            "seconds": time.perf_counter() - t0,
        }
    )
    run.log.epoch(pos.rows, pos.step)
    pos.epoch, pos.batch = epoch + 1, 0
    _checkpoint(run, pos)
    return final


def _validate(run: _Run, val: Dataset) -> tuple[float, float | None]:
    """Validation top-1 of the model and of its EMA (``None`` without one): computed on rank 0, returned on all."""
    raw, ema = None, None
    if run.dist.main:
        raw = top1(*predict(run.model, val))
        ema = top1(*predict(run.ema.module, val)) if run.ema is not None else None
    return run.dist.broadcast((raw, ema))


def _checkpoint(run: _Run, pos: _Position) -> None:
    """Save ``checkpoints/last.*`` at ``pos`` (rank 0 writes; every rank's RNG states go in), then sync the ranks."""
    rngs = run.dist.gather(rng_state(run.dist.device))  # every rank's: each resumes its own streams
    if run.dist.main:
        parts = {"ema": run.ema.module.state_dict()} if run.ema is not None else None
        state = {
            "epoch": pos.epoch,
            "batch": pos.batch,
            "step": pos.step,
            "world_size": run.dist.world,
            "best_val_top1": pos.best,
            "metrics": pos.rows,
            "running": pos.running,
            "scheduler": jsonable(run.scheduler.state_dict()),
            "rng": rngs,
        }
        save_checkpoint(run.ckpt_dir, run.model, run.optimizer, state, parts=parts)
    run.dist.barrier()


def _data_order(
    data: DataSplits, cfg: TrainConfig, seed: int, dist: DistContext, drop_last: bool
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


__all__ = ["predict", "top1", "train"]
