"""Latency benchmark: each model in eager PyTorch, ExecuTorch, LiteRT and ONNX Runtime, measured in one run.

Every runtime gets the same thread count and the same batch-1 input; results are reported as ratios to
LiteRT and as achieved GFLOP/s against this machine's fp32 GEMM peak, measured in the same run (absolute
times on a shared machine are noise; ratios measured side by side are not).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import progress_bar
from edgevit.export import backend_module, export
from edgevit.models import create_model
from edgevit.models.profile import profile
from edgevit.parity import latency

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
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark registry ``models`` (random weights: latency does not depend on them) on ``backends``.

    Returns:
        ``{"threads", "gemm_peak_gflops", "results": [{"model", "backend", "latency_ms", "vs_litert",
        "gflops", "peak_fraction", "macs", "input_size", "info"}]}``.
    """
    torch.set_num_threads(threads)
    peak = gemm_peak_gflops(threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp, progress_bar(progress) as bars:
        task = bars.add_task("bench", total=len(models) * len(backends), info="")
        for name in models:
            torch.manual_seed(0)
            model = create_model(name, **({"img_size": img_size} if img_size else {})).eval()
            prof = profile(model)
            x = torch.randn(1, *prof["input_size"])
            rows = []
            for backend in backends:
                bars.update(task, info=f"{name} {backend}")
                info: dict[str, Any] = {}
                if backend == "eager":

                    @torch.no_grad()
                    def runner(a: np.ndarray, m=model) -> np.ndarray:
                        return m(torch.from_numpy(a)).numpy()

                else:
                    path = Path(tmp) / f"{name}{backend_module(backend).SUFFIX}"
                    art = export(model, x, backend, path)
                    info = {k: v for k, v in art.info.items() if k in ("partitions", "ops_outside_delegate")}
                    runner = art.load(threads)
                torch.set_num_threads(threads)
                lat = latency(runner, x[0].numpy(), warmup, runs)
                gflops = 2 * prof["macs"] / (lat["median"] / 1e3) / 1e9
                rows.append(
                    {
                        "model": name,
                        "backend": backend,
                        "latency_ms": lat,
                        "gflops": gflops,
                        "peak_fraction": gflops / peak,
                        "macs": prof["macs"],
                        "input_size": prof["input_size"],
                        "info": info,
                    }
                )
                bars.update(task, advance=1)
            ref = next((r["latency_ms"]["median"] for r in rows if r["backend"] == "tflite"), None)
            for r in rows:
                r["vs_litert"] = r["latency_ms"]["median"] / ref if ref else None
            results += rows
    return {"threads": threads, "gemm_peak_gflops": peak, "results": results}


def render_markdown(doc: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    lines = [
        f"{doc['threads']} threads; fp32 GEMM peak measured in the same run: {doc['gemm_peak_gflops']:.0f} GFLOP/s.",
        "",
        "| model | input | GMACs | backend | median ms | p90 ms | vs LiteRT | GFLOP/s | % of peak | partitions |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        lat = r["latency_ms"]
        vs = "–" if r["vs_litert"] is None else f"{r['vs_litert']:.2f}×"
        parts = r["info"].get("partitions", "–")
        lines.append(
            f"| {r['model']} | {r['input_size'][1]} | {r['macs'] / 1e9:.2f} | {r['backend']} | {lat['median']:.2f} "
            f"| {lat['p90']:.2f} | {vs} | {r['gflops']:.1f} | {100 * r['peak_fraction']:.0f}% | {parts} |"
        )
    return "\n".join(lines) + "\n"
