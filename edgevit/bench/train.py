"""Training throughput: ``edgevit.train.train`` beside a plain PyTorch loop, same model, batch and optimizer.

The plain loop is what a user would write by hand (shuffled DataLoader, AdamW over the same parameter groups,
forward, cross-entropy, backward, step). Both run the same number of optimizer steps on the same images,
interleaved in rounds in one process, and the steady-state img/s (timed from the end of the warm-up steps to
the last step, so imports, validation and the end-of-epoch checkpoint are outside) is compared as a ratio.
The whole ``train()`` call's wall time, validation and checkpoint included, is reported beside it.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from edgevit.data import DataSplits, digits
from edgevit.models import create_model
from edgevit.train import TrainConfig, train
from edgevit.train.optim import param_groups


def _plain_loop(model: nn.Module, dataset, cfg: TrainConfig, warmup: int, steps: int, seed: int) -> float:
    """img/s of a hand-written loop over ``warmup + steps`` batches, timed after the warm-up."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=True)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model.train()
    t0, seen = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            t0, seen = time.perf_counter(), 0
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # as a loop that logs its loss does
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def bench_train(
    model_name: str = "vit_tiny_patch16",
    model_args: dict[str, Any] | None = None,
    img_size: int = 32,
    batch_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    rounds: int = 2,
    threads: int = 2,
    cfg: TrainConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Measure ``edgevit.train.train`` against a plain loop on digits; return img/s of both and their ratio.

    Args:
        model_name, model_args, img_size: the model (default: the quickstart's small ViT, 4 blocks, 8-px patches).
        batch_size: images per step for both.
        steps: timed optimizer steps per run (after ``warmup`` steps).
        rounds: plain/edgevit pairs, interleaved; the best img/s of each is reported (noise on a shared
            machine only slows a run down).
        threads: torch intra-op threads for both.
        cfg: the ``train()`` config (default: AdamW, no EMA/SAM/augmentation, TensorBoard on, as a recipe runs);
            its epochs and batch size are set here.
        progress: show ``train()``'s progress bars (they are part of the machinery; off by default for logs).

    Returns:
        ``{"model", "batch_size", "steps", "threads", "plain_img_s", "edgevit_img_s", "ratio", "overhead_pct",
        "edgevit_call_s", "plain_img_s_rounds", "edgevit_img_s_rounds"}``; ``ratio`` is edgevit / plain (1.0: no
        overhead). On a loaded machine the rounds show the noise: compare them before trusting a ratio.
    """
    torch.set_num_threads(threads)
    args = {"patch_size": 8, "depth": 4} if model_args is None else model_args
    data = digits(img_size=img_size)
    n = (warmup + steps) * batch_size
    if n > len(data.train):
        raise ValueError(f"{warmup + steps} steps of {batch_size} need {n} images; digits has {len(data.train)}")
    subset = DataSplits(Subset(data.train, range(n)), Subset(data.val, range(batch_size)), data.classes)
    base = (cfg or TrainConfig()).model_copy(update={"epochs": 1, "batch_size": batch_size, "threads": threads})

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return create_model(model_name, img_size=img_size, num_classes=10, **args)

    plain, ours, calls = [], [], []
    for _ in range(rounds):
        plain.append(_plain_loop(fresh(), subset.train, base, warmup, steps, seed=0))
        stamps: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train(
                fresh(),
                subset,
                base,
                tmp,
                progress=progress,
                on_step_end=lambda s, loss, stamps=stamps: stamps.append(time.perf_counter()),
            )
            calls.append(time.perf_counter() - t0)
        ours.append(steps * batch_size / (stamps[-1] - stamps[warmup - 1]))
    best_plain, best_ours = max(plain), max(ours)
    return {
        "model": model_name,
        "model_args": args,
        "batch_size": batch_size,
        "steps": steps,
        "threads": threads,
        "plain_img_s": best_plain,
        "edgevit_img_s": best_ours,
        "ratio": best_ours / best_plain,
        "overhead_pct": 100.0 * (1 - best_ours / best_plain),
        "edgevit_call_s": min(calls),
        "plain_img_s_rounds": plain,
        "edgevit_img_s_rounds": ours,
    }


def render(doc: dict[str, Any]) -> str:
    """One markdown table row set for :func:`bench_train`'s result."""
    return "\n".join(
        [
            f"training throughput, {doc['model']} {doc['model_args']}, batch {doc['batch_size']}, "
            f"{doc['threads']} threads, {doc['steps']} timed steps (best of rounds)",
            "",
            "| loop | img/s |",
            "|---|---:|",
            f"| plain PyTorch (AdamW, CE) | {doc['plain_img_s']:.0f} |",
            f"| edgevit train() | {doc['edgevit_img_s']:.0f} |",
            "",
            f"ratio {doc['ratio']:.3f} (machinery overhead {doc['overhead_pct']:+.1f}%); "
            f"whole train() call incl. validation + checkpoint: {doc['edgevit_call_s']:.1f} s",
            "rounds (img/s): plain "
            + ", ".join(f"{v:.0f}" for v in doc["plain_img_s_rounds"])
            + "; edgevit "
            + ", ".join(f"{v:.0f}" for v in doc["edgevit_img_s_rounds"]),
        ]
    )
