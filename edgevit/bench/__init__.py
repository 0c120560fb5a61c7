"""Latency benchmark: each model in eager PyTorch, ExecuTorch, LiteRT and ONNX Runtime, measured in one run.

Every runtime gets the same thread count, the same batch-1 input and the same weights; results are reported as
ratios to LiteRT and as achieved GFLOP/s against this machine's fp32 GEMM peak, measured in the same run
(absolute times on a shared machine are noise; ratios measured side by side are not). The runtimes of one model
are timed in interleaved rounds (a block of calls each, in turn), so a load change on the machine hits all of them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.backends import NotRunnable, get_backend
from edgevit.data import calibration_batch, digits
from edgevit.export import export
from edgevit.measure import distribution, latency
from edgevit.models import create_model
from edgevit.models.profile import profile
from edgevit.utils import path_size, progress_bar

BENCH_BACKENDS = ("eager", "executorch", "tflite", "onnx")


def gemm_peak_gflops(threads: int, n: int = 1024, runs: int = 10) -> float:
    """Best-of-``runs`` fp32 ``n x n`` GEMM throughput of ``torch.mm`` with ``threads`` threads, in GFLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def bench(
    models: list[str],
    img_size: int | None = None,
    threads: int = 2,
    warmup: int = 5,
    runs: int = 20,
    backends: tuple[str, ...] = BENCH_BACKENDS,
    precisions: tuple[str, ...] = ("fp32",),
    progress: bool = True,
    rounds: int = 5,
) -> dict[str, Any]:
    """Benchmark registry ``models`` on ``backends``, timing each model's runtimes in ``rounds`` interleaved rounds.

    Weights are random and perturbed away from the initialisation (``perturb_``): a zero-initialised residual
    branch or an identity LayerNorm affine lets a converter fold work away that a trained model has to do
    (LiteRT drops MobileViT's zero-gamma inverted-residual branches: 1.49 vs 0.09 ms for its first stage).

    Each backend runs every precision of ``precisions`` it exports (``fp32`` stands for the backend's float
    one, e.g. fp16 for Core ML); static int8 calibrates on 32 digits images at the model's resolution.

    Returns:
        ``{"threads", "gemm_peak_gflops", "results": [{"model", "backend", "precision", "latency_ms",
        "vs_litert", "vs_fp32", "size_bytes", "gflops", "peak_fraction", "macs", "input_size", "info"}]}``;
        ``vs_litert`` compares with LiteRT fp32, ``vs_fp32`` with the same backend's float artifact.
    """
    torch.set_num_threads(threads)
    peak = gemm_peak_gflops(threads)
    results = []
    jobs = [
        (b, p)
        for b in backends
        for p in precisions
        if b == "eager" and p == "fp32" or b != "eager" and resolve_precision(b, p) is not None
    ]
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp, progress_bar(progress) as bars:
        task = bars.add_task("bench", total=len(models) * len(jobs), info="")
        for name in models:
            torch.manual_seed(0)
            model = perturb_(create_model(name, **({"img_size": img_size} if img_size else {})).eval())
            prof = profile(model)
            x = torch.randn(1, *prof["input_size"])
            calib = None
            if any(p == "int8" for _, p in jobs):
                cfg = model.default_cfg
                calib = calibration_batch(digits(prof["input_size"][-1], mean=cfg["mean"], std=cfg["std"]).train, 32)
            rows, runners = [], []
            for backend, precision in jobs:
                bars.update(task, info=f"{name} {backend} {precision} export")
                info: dict[str, Any] = {}
                size = None
                if backend == "eager":

                    @torch.no_grad()
                    def runner(a: np.ndarray, m=model) -> np.ndarray:
                        return m(torch.from_numpy(a)).numpy()

                else:
                    precision = resolve_precision(backend, precision)
                    path = Path(tmp) / f"{name}_{precision}{get_backend(backend).suffix}"
                    art = export(model, x, backend, path, precision, calib=calib)
                    size = path_size(path)
                    info = {k: v for k, v in art.info.items() if k in ("partitions", "ops_outside_delegate")}
                    try:
                        runner = art.load(threads, emulate=False)  # an emulator's time is not the runtime's
                    except NotRunnable as e:
                        rows.append(_row(name, backend, precision, None, size, prof, peak, {"not_run": str(e)}))
                        bars.update(task, advance=1)
                        continue
                rows.append(_row(name, backend, precision, None, size, prof, peak, info))
                runners.append((rows[-1], runner))
            bars.update(task, info=f"{name} timing {len(runners)} runtimes in {rounds} rounds")
            torch.set_num_threads(threads)
            lats = interleaved_latency([r for _, r in runners], x[0].numpy(), warmup, runs, rounds)
            for (row, _), lat in zip(runners, lats, strict=True):
                row.update(
                    _row(name, row["backend"], row["precision"], lat, row["size_bytes"], prof, peak, row["info"])
                )
                bars.update(task, advance=1)
            _ratios(rows)
            results += rows
    return {"threads": threads, "gemm_peak_gflops": peak, "results": results}


def perturb_(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Add ``N(0, std)`` noise to every float parameter of ``model``, in place; returns ``model``.

    Random initialisations have exact zeros and ones (a zero BatchNorm gamma closing each residual branch,
    LayerNorm weight 1 and bias 0, zero biases) that a converter may constant-fold; trained weights have none.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def randomize_(model: torch.nn.Module, seed: int = 1, fc: torch.nn.Linear | None = None) -> torch.nn.Module:
    """Random norm statistics/affines and an O(1)-scale classifier, in place.

    Default inits zero the last BN of residual branches and draw tiny heads, which hides most of a network
    from a logit comparison; after this every branch shows in the logits, so lowering tests can fail.
    The classifier is every top-level ``head``/``head_dist``/``classifier`` Linear, or ``fc`` when given.
    """
    nn = torch.nn
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            is_head = m is fc if fc is not None else name.split(".")[0] in ("head", "head_dist", "classifier")
            if isinstance(m, nn.Linear) and is_head:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
    return model


def interleaved_latency(
    runners: list, image: np.ndarray, warmup: int, runs: int, rounds: int = 5
) -> list[dict[str, Any]]:
    """``latency`` of each runner, measured in ``rounds`` rounds that time every runner in turn.

    Each round gives each runner, after a 50 ms pause (the previous runtime's threads stop spinning), untimed
    calls (``warmup`` in the first round, 2 later: its threadpool wakes up) and then about ``runs / rounds`` timed
    calls, so the runtimes share the machine's load changes instead of each meeting its own (calls are not
    interleaved one by one: each runtime's spinning threads would slow the next). Returns one ``latency`` dict per
    runner, over all its samples.
    """
    rounds = max(1, min(rounds, runs))
    per = [runs // rounds + (i < runs % rounds) for i in range(rounds)]
    samples: list[list[float]] = [[] for _ in runners]
    for r, n in enumerate(per):
        for i, run in enumerate(runners):
            time.sleep(0.05)
            samples[i] += latency(run, image, warmup if r == 0 else min(warmup, 2), n)["samples"]
    return [distribution(s, runs=runs, warmup=warmup, rounds=rounds) for s in samples]


def resolve_precision(backend: str, precision: str) -> str | None:
    """``fp32`` means the backend's float precision; ``None`` when the backend does not export ``precision``."""
    b = get_backend(backend)
    precision = b.default_precision if precision == "fp32" else precision
    return precision if precision in b.precisions else None


def _row(name, backend, precision, lat, size, prof, peak, info) -> dict[str, Any]:
    gflops = 2 * prof["macs"] / (lat["median"] / 1e3) / 1e9 if lat else None
    return {
        "model": name,
        "backend": backend,
        "precision": precision,
        "latency_ms": lat,
        "size_bytes": size,
        "gflops": gflops,
        "peak_fraction": gflops / peak if gflops else None,
        "macs": prof["macs"],
        "input_size": prof["input_size"],
        "info": info,
    }


def _ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_litert`` (median / LiteRT fp32 median) and ``vs_fp32`` (median / same backend's float median)."""

    def median(backend: str) -> float | None:
        for r in rows:
            if r["backend"] == backend and r["latency_ms"] and r["precision"] in ("fp32", "fp16"):
                return r["latency_ms"]["median"]
        return None

    litert = median("tflite")
    for r in rows:
        med = r["latency_ms"]["median"] if r["latency_ms"] else None
        base = median(r["backend"])
        r["vs_litert"] = med / litert if med and litert else None
        r["vs_fp32"] = med / base if med and base else None


def render_markdown(doc: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    lines = [
        f"{doc['threads']} threads; fp32 GEMM peak measured in the same run: {doc['gemm_peak_gflops']:.0f} GFLOP/s.",
        "",
        "| model | input | GMACs | backend | precision | median ms | p90 ms | vs LiteRT | vs fp32 | GFLOP/s "
        "| % of peak | size MiB | partitions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}×"

    for r in doc["results"]:
        lat = r["latency_ms"]
        parts = r["info"].get("partitions", "–")
        size = "–" if r["size_bytes"] is None else f"{r['size_bytes'] / 2**20:.1f}"
        head = f"| {r['model']} | {r['input_size'][1]} | {r['macs'] / 1e9:.2f} | {r['backend']} | {r['precision']} "
        if lat is None:
            lines.append(head + f"| not run: {r['info']['not_run']} | | | | | | {size} | {parts} |")
            continue
        lines.append(
            head + f"| {lat['median']:.2f} | {lat['p90']:.2f} | {ratio(r['vs_litert'])} | {ratio(r['vs_fp32'])} "
            f"| {r['gflops']:.1f} | {100 * r['peak_fraction']:.0f}% | {size} | {parts} |"
        )
    return "\n".join(lines) + "\n"
