"""Export time per backend for zoo models (``edgevit bench --export``), beside ExecuTorch's own lowering path.

For each model, every backend's export (capture, quantization when asked, conversion, write) is timed in one process,
wall and CPU, and the ExecuTorch rows also time ExecuTorch's stock path on the same model —
``to_edge_transform_and_lower(torch.export.export(m, (x,)), partitioner=[XnnpackPartitioner()]).to_executorch()`` —
so ``vs_stock`` is a ratio measured side by side (absolute seconds on a shared machine are noise). A tiny model is
lowered first, untimed: the first lowering in a process builds XNNPACK's pattern graphs once.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from edgevit.backends import get_backend, list_backends
from edgevit.bench import perturb_, resolve_precision
from edgevit.data import calibration_batch, digits
from edgevit.export import export
from edgevit.models import create_model
from edgevit.models.profile import profile
from edgevit.utils import progress_bar, require


def _timed(fn, *args, **kwargs) -> dict[str, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def stock_executorch(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """ExecuTorch's own fp32 path: ``to_edge_transform_and_lower`` with ``XnnpackPartitioner``, then the program."""
    require("executorch", "executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: PLC0415
    from executorch.exir import to_edge_transform_and_lower  # noqa: PLC0415

    ep = torch.export.export(model, (example,))
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def bench_export(
    models: list[str],
    img_size: int | None = None,
    backends: tuple[str, ...] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    stock: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Time each export of registry ``models`` (random weights, perturbed off their init).

    Returns:
        ``{"threads", "load_avg", "results": [{"model", "input_size", "nodes", "backend", "precision", "wall_s",
        "cpu_s", "stock_wall_s", "stock_cpu_s", "vs_stock"}]}``; the ``stock_*`` fields and ``vs_stock`` (edgevit's
        wall time / the stock path's) only on ExecuTorch fp32 rows.
    """
    backends = backends or tuple(list_backends())
    jobs = [(b, p) for b in backends for p in precisions if resolve_precision(b, p) is not None]
    results = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-export-") as tmp, progress_bar(progress) as bars:
        if stock and "executorch" in backends:  # the first lowering in a process builds XNNPACK's patterns: untimed
            warm = create_model("vit_tiny_patch16", img_size=16, patch_size=8, depth=1).eval()
            export(warm, torch.randn(1, 3, 16, 16), "executorch", Path(tmp) / "warm.pte")
        task = bars.add_task("bench export", total=len(models) * len(jobs), info="")
        for name in models:
            torch.manual_seed(0)
            model = perturb_(create_model(name, **({"img_size": img_size} if img_size else {})).eval())
            prof = profile(model)
            x = torch.randn(1, *prof["input_size"])
            nodes = sum(1 for n in torch.export.export(model, (x,)).graph.nodes if n.op == "call_function")
            calib = None
            if any(p == "int8" for _, p in jobs):
                cfg = model.default_cfg
                calib = calibration_batch(digits(prof["input_size"][-1], mean=cfg["mean"], std=cfg["std"]).train, 32)
            for backend, precision in jobs:
                precision = resolve_precision(backend, precision)
                bars.update(task, info=f"{name} {backend} {precision}")
                path = Path(tmp) / f"{name}_{precision}{get_backend(backend).suffix}"
                row: dict[str, Any] = {"model": name, "input_size": prof["input_size"], "nodes": nodes}
                row.update(backend=backend, precision=precision)
                row.update(_timed(export, model, x, backend, path, precision, calib=calib))
                if stock and backend == "executorch" and precision == "fp32":
                    t = _timed(stock_executorch, model, x)
                    row.update(stock_wall_s=t["wall_s"], stock_cpu_s=t["cpu_s"], vs_stock=row["wall_s"] / t["wall_s"])
                results.append(row)
                bars.update(task, advance=1)
    return {"threads": torch.get_num_threads(), "load_avg": [load0, os.getloadavg()[0]], "results": results}


def render_markdown(doc: dict[str, Any]) -> str:
    """The export benchmark as a Markdown table."""
    lines = [
        f"Load average {doc['load_avg'][0]:.1f} -> {doc['load_avg'][1]:.1f}; seconds are wall (CPU).",
        "",
        "| model | input | graph nodes | backend | precision | export s | ExecuTorch's own path s | vs own path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        stock = f"{r['stock_wall_s']:.1f} ({r['stock_cpu_s']:.1f})" if "stock_wall_s" in r else "–"
        ratio = f"{r['vs_stock']:.2f}×" if "vs_stock" in r else "–"
        lines.append(
            f"| {r['model']} | {r['input_size'][-1]} | {r['nodes']} | {r['backend']} | {r['precision']} "
            f"| {r['wall_s']:.1f} ({r['cpu_s']:.1f}) | {stock} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["bench_export", "render_markdown", "stock_executorch"]
