"""A plain, correct training loop: AdamW, warm-up + cosine schedule, label smoothing, checkpoints, CSV.

Every epoch writes ``checkpoints/last.{safetensors,optim.safetensors,json}`` and rewrites ``metrics.csv``;
``resume=True`` continues from the last complete checkpoint.
"""

from __future__ import annotations

import csv
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset

from edgevit._utils import EdgeVitError, progress_bar, write_text_atomic
from edgevit.data import DataSplits
from edgevit.train.checkpoint import load_checkpoint, save_checkpoint

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, labels, images) -> scalar loss``: a training objective other than cross-entropy."""


class TrainConfig(BaseModel):
    """Training hyperparameters (the ``train:`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_epochs: float = Field(2.0, ge=0)
    warmup_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None keeps torch's default")


@dataclass
class TrainResult:
    """What a run produced: the best and final validation top-1 (percent) and the run directory."""

    best_val_top1: float
    final_val_top1: float
    epochs_run: int
    out_dir: Path


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay for biases, norm weights (any 1-D tensor) and ``model.no_weight_decay()`` names."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode over ``dataset``; return ``(logits [N, K] float32, labels [N] int64)``."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(model(x).float())
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
) -> TrainResult:
    """Train ``model`` on ``data.train``, validating on ``data.val`` each epoch.

    Args:
        model: any classifier ``[B, C, H, W] -> [B, K]``; trained in place.
        data: the dataset splits.
        cfg: hyperparameters.
        out_dir: run directory; gets ``checkpoints/`` and ``metrics.csv``.
        seed: seeds weights' data order and dropout.
        resume: continue from ``out_dir/checkpoints/last.json`` if it exists.
        progress: show rich progress bars.
        loss_fn: the training loss (e.g. knowledge distillation); default cross-entropy with
            ``cfg.label_smoothing``. Validation is always top-1.
        on_epoch_start: called with the 0-based epoch index after ``model.train()``, before the epoch's first
            step (also for the first epoch after a resume); e.g. to freeze QAT observers from some epoch on.

    Returns:
        A :class:`TrainResult`.
    """
    from timm.scheduler import CosineLRScheduler

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(seed)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=False)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=total_steps,
        lr_min=cfg.min_lr,
        warmup_t=int(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    cross_entropy = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    criterion = loss_fn or (lambda logits, labels, images: cross_entropy(logits, labels))

    start_epoch, rows, best = 0, [], 0.0
    if resume and (ckpt_dir / "last.json").is_file():
        state = load_checkpoint(ckpt_dir, model, optimizer)
        start_epoch, rows, best = state["epoch"], state["metrics"], state["best_val_top1"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    elif resume:
        raise EdgeVitError(f"--resume: no checkpoint found in {ckpt_dir}")

    final = rows[-1]["val_top1"] if rows else 0.0
    with progress_bar(progress) as bars:
        run_task = bars.add_task("train", total=cfg.epochs, completed=start_epoch, info="")
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            epoch_task = bars.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info="")
            model.train()
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            loss_sum, correct, seen = 0.0, 0, 0
            for i, (x, y) in enumerate(loader):
                step = epoch * steps_per_epoch + i
                scheduler.step_update(step)
                logits = model(x)
                loss = criterion(logits, y, x)
                if not torch.isfinite(loss):
                    raise EdgeVitError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1} step {i}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(-1) == y).sum().item()
                seen += len(y)
                rate = seen / (time.perf_counter() - t0)
                lr = optimizer.param_groups[0]["lr"]
                bars.update(epoch_task, advance=1, info=f"loss {loss_sum / seen:.3f} lr {lr:.2e} {rate:.0f} img/s")
            val_logits, val_labels = predict(model, data.val)
            final = top1(val_logits, val_labels)
            best = max(best, final)
            rows.append(
                {
                    "epoch": epoch + 1,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": loss_sum / seen,
                    "train_top1": 100.0 * correct / seen,
                    "val_top1": final,
                    "seconds": time.perf_counter() - t0,
                }
            )
            _write_csv(out_dir / "metrics.csv", rows)
            save_checkpoint(
                ckpt_dir,
                model,
                optimizer,
                {
                    "epoch": epoch + 1,
                    "best_val_top1": best,
                    "metrics": rows,
                    "torch_rng": torch.get_rng_state().tolist(),
                },
            )
            bars.remove_task(epoch_task)
            bars.update(run_task, advance=1, info=f"val top-1 {final:.2f}% (best {best:.2f}%)")
    return TrainResult(best, final, len(rows), out_dir)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
