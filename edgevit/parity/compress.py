"""The compression report: every variant (a run: baseline, pruned, QAT, ...) × backend × precision side by side.

Accuracy comes from each run's ``parity.json`` (whole validation split, already checked). Latency is measured
again here for every runnable artifact *in one process*, in rounds, so the ratios compare like with like on
a noisy host; absolute times are printed too but are host times, not phone times.

Outputs ``compress_report.md`` (table, Pareto set) and ``compress_report.png`` (top-1 vs latency, marker area
proportional to file size).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.backends import NotRunnable, get_backend
from edgevit.export import Artifact
from edgevit.rundir import artifact_file, input_shape, report_names
from edgevit.utils import EdgeVitError, atomic_path, progress_bar, read_json, require, write_text_atomic


def _rows(run_dirs: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for run in run_dirs:
        parity = run / report_names()[0]
        if not parity.is_file():
            raise EdgeVitError(f"{run} has no parity.json; run `edgevit parity {run}` first")
        doc = read_json(parity, "parity report")
        for a in doc["artifacts"]:
            artifact_file(run, a["path"])
            rows.append(
                {
                    "variant": run.name,
                    "reference_top1": doc["reference"]["top1"],
                    "artifact": Artifact.from_json(
                        {**a, "info": {"input_layout": a.get("input_layout", "NCHW")}}, root=run
                    ),
                    "name": Path(a["path"]).stem,
                    **{k: a.get(k) for k in ("backend", "precision", "top1", "agreement", "size_bytes", "runnable")},
                }
            )
    return rows


def _measure(rows: list[dict[str, Any]], image: np.ndarray, threads: int, runs: int, warmup: int, progress: bool):
    """Median latency (ms) of every runnable artifact, measured in rounds: each round runs every artifact in turn,
    a few untimed calls then a block of timed ones.

    Blocks, not single calls interleaved: each runtime keeps its own thread pool whose workers spin after a call,
    so alternating runtimes call by call measures them fighting each other's spinning threads (measured: an
    ExecuTorch fp32 model at 32 px took 4.5 ms interleaved vs 0.59 ms on its own). Rounds still spread slow
    drifts of a shared host over all artifacts.
    """
    runners = {}
    for i, r in enumerate(rows):
        try:  # the runtime itself, never an emulator of it: its time would not be the runtime's
            runners[i] = r["artifact"].load(threads, emulate=False) if r["runnable"] else None
        except NotRunnable:
            runners[i] = None
    live = {i: f for i, f in runners.items() if f is not None}
    inputs = {i: rows[i]["artifact"].feed(image[None]) for i in live}  # each artifact's own layout (NCHW or NHWC)
    rounds = min(5, runs)
    times: dict[int, list[float]] = {i: [] for i in live}
    with progress_bar(progress) as bars:
        task = bars.add_task("latency (rounds)", total=rounds, info=f"{len(live)} artifacts")
        for k in range(rounds):
            for i, f in live.items():
                x = inputs[i]
                for _ in range(warmup if k == 0 else max(3, warmup // 3)):
                    f(x)
                for _ in range(runs // rounds + (k < runs % rounds)):
                    t0 = time.perf_counter()
                    f(x)
                    times[i].append((time.perf_counter() - t0) * 1e3)
            bars.update(task, advance=1)
    for i, r in enumerate(rows):
        r["latency_ms"] = float(np.median(times[i])) if i in times else None


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on all of top-1 (higher), latency and size (lower) while being strictly better on one."""

    def key(r):
        return (r["top1"], -r["latency_ms"], -r["size_bytes"])

    measured = [r for r in rows if r["latency_ms"] is not None and r["top1"] is not None]
    front = []
    for r in measured:
        dominated = any(
            all(a >= b for a, b in zip(key(o), key(r), strict=True))
            and any(a > b for a, b in zip(key(o), key(r), strict=True))
            for o in measured
            if o is not r
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r["latency_ms"])


def compress_report(
    run_dirs: list[str | Path],
    out_dir: str | Path | None = None,
    threads: int = 2,
    runs: int = 50,
    warmup: int = 10,
    progress: bool = True,
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Compare every artifact of ``run_dirs`` (the first is the baseline) and write the report and the plot.

    Args:
        run_dirs: run directories with ``parity.json``; the first one's fp32 reference is the baseline for
            top-1 drop, and its float artifact per backend the baseline for speed-ups and size ratios.
        out_dir: where ``compress_report.{md,png}`` go (default: the first run directory).
        threads, runs, warmup: latency measurement settings.

    Returns:
        ``(markdown path, png path, rows)``; each row has variant, backend, precision, top1, drop, agreement,
        size_bytes, latency_ms, speedup and size_ratio (vs the baseline's float artifact of that backend),
        and pareto.
    """
    run_dirs = [Path(r) for r in run_dirs]
    for r in run_dirs:
        if not r.is_dir():
            raise EdgeVitError(f"run directory not found: {r}")
    out_dir = Path(out_dir) if out_dir else run_dirs[0]
    rows = _rows(run_dirs)
    if not rows:
        raise EdgeVitError("no artifacts in the given runs' parity reports")
    # any image of the exported input shape: the time of a dense runtime does not depend on the pixels
    image = np.random.default_rng(0).standard_normal(input_shape(run_dirs[0])[1:]).astype(np.float32)
    _measure(rows, image, threads, runs, warmup, progress)

    base_top1 = rows[0]["reference_top1"]
    base = {
        r["backend"]: r
        for r in rows
        if r["variant"] == run_dirs[0].name and r["precision"] == get_backend(r["backend"]).default_precision
    }
    for r in rows:
        b = base.get(r["backend"])
        r["drop"] = None if r["top1"] is None else base_top1 - r["top1"]
        r["size_ratio"] = r["size_bytes"] / b["size_bytes"] if b else None
        both = b and b["latency_ms"] and r["latency_ms"]
        r["speedup"] = b["latency_ms"] / r["latency_ms"] if both else None
    front = {id(r) for r in pareto(rows)}
    for r in rows:
        r["pareto"] = id(r) in front
    md = write_text_atomic(out_dir / "compress_report.md", _markdown(rows, base_top1, threads, runs))
    png = _plot(rows, out_dir / "compress_report.png")
    for r in rows:
        r.pop("artifact")
    return md, png, rows


def _markdown(rows: list[dict[str, Any]], base_top1: float, threads: int, runs: int) -> str:
    def f(v, fmt, suffix=""):
        return "–" if v is None else format(v, fmt) + suffix

    lines = [
        "# Compression report",
        "",
        f"Baseline: `{rows[0]['variant']}` PyTorch fp32, top-1 {base_top1:.2f}%. Latency: batch 1, {threads} threads, "
        f"median of {runs} runs per artifact, measured in rounds in one process (host latency, not phone latency). "
        "Speed-up and size are relative to the baseline's float artifact on the same backend.",
        "",
        "| variant | artifact | backend | precision | top-1 % | drop | agreement | size KiB | size × "
        "| latency ms | speed-up | Pareto |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['name']} | {r['backend']} | {r['precision']} | {f(r['top1'], '.2f')} "
            f"| {f(r['drop'], '+.2f')} | {f(r['agreement'], '.4f')} | {r['size_bytes'] / 1024:.0f} "
            f"| {f(r['size_ratio'], '.2f')} | {f(r['latency_ms'], '.3f')} | {f(r['speedup'], '.2f', '×')} "
            f"| {'★' if r['pareto'] else ''} |"
        )
    front = [r for r in rows if r["pareto"]]
    lines += ["", "## Pareto set (top-1 vs latency vs size)", ""]
    lines += [
        f"- {r['variant']} / {r['name']}: {r['top1']:.2f}%, {r['latency_ms']:.3f} ms, {r['size_bytes'] / 1024:.0f} KiB"
        for r in front
    ]
    lines += ["", "![top-1 vs latency](compress_report.png)", ""]
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Top-1 vs latency; marker area ∝ file size, colour per backend, marker per variant."""
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional package, after choosing the backend

    measured = [r for r in rows if r["latency_ms"] is not None and r["top1"] is not None]
    backends = sorted({r["backend"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    colours = dict(zip(backends, plt.get_cmap("tab10").colors, strict=False))
    markers = dict(zip(variants, "osD^vP*X", strict=False))
    biggest = max(r["size_bytes"] for r in rows)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for r in measured:
        ax.scatter(
            r["latency_ms"],
            r["top1"],
            s=40 + 400 * r["size_bytes"] / biggest,
            color=colours[r["backend"]],
            marker=markers.get(r["variant"], "o"),
            alpha=0.7,
            edgecolors="black" if r["pareto"] else "none",
        )
        ax.annotate(r["precision"], (r["latency_ms"], r["top1"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for b in backends:
        ax.scatter([], [], color=colours[b], label=b)
    for v in variants:
        ax.scatter([], [], color="grey", marker=markers.get(v, "o"), label=v)
    ax.set_xlabel("latency, ms (batch 1, host)")
    ax.set_ylabel("top-1 %")
    ax.set_title("accuracy vs latency (marker area ∝ file size; outlined: Pareto)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


__all__ = ["compress_report", "pareto"]
