"""Timing and memory shared by parity, compress-report and bench: run an artifact over images, time it, and measure
the resident memory it adds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgevit.utils import progress_bar


def run_all(runner: Callable[[np.ndarray], np.ndarray], images: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    """Run ``runner`` on each ``[C, H, W]`` image of ``images`` at batch 1; return ``[N, K]`` logits."""
    out = []
    with progress_bar(progress) as bars:
        task = bars.add_task(desc, total=len(images), info="")
        for img in images:
            out.append(np.asarray(runner(img[None])).reshape(-1))
            bars.update(task, advance=1)
    return np.stack(out).astype(np.float32)


def latency(
    runner: Callable[[np.ndarray], np.ndarray], image: np.ndarray, warmup: int, runs: int, threads: int | None = None
) -> dict[str, Any]:
    """The wall-time distribution (ms) of ``runs`` batch-1 calls of ``runner`` after ``warmup`` untimed ones.

    Returns ``{"median", "p90", "mean", "std", "min", "max", "runs", "warmup", "threads", "samples"}``: ``std`` is
    the population standard deviation, ``samples`` every timed call in order, ``threads`` the runtime's thread
    count as given by the caller (None when unknown).
    """
    x = image[None]
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return distribution(times, runs=runs, warmup=warmup, threads=threads)


def distribution(times_ms, **extra) -> dict[str, Any]:
    """``{"median", "p90", "mean", "std" (population), "min", "max", **extra, "samples"}`` of timings in ms."""
    t = np.asarray(times_ms)
    return {
        "median": float(np.median(t)),
        "p90": float(np.percentile(t, 90)),
        "mean": float(t.mean()),
        "std": float(t.std()),
        "min": float(t.min()),
        "max": float(t.max()),
        **extra,
        "samples": [round(float(v), 6) for v in t],
    }


class PeakRSS:
    """Peak resident memory of this process while a block runs, as the rise above the RSS at its start (MiB).

    Linux only: entering writes ``5`` to ``/proc/self/clear_refs`` (resets the kernel's RSS high-water mark,
    ``VmHWM``, to the current RSS); leaving reads ``VmHWM``. ``mb`` is then ``VmHWM - VmRSS at entry``: the most
    resident memory the block added at any moment (model buffers, runtime arenas, outputs), including pages of
    shared libraries it touched first. It can read low when the block reuses memory an earlier block freed but the
    allocator kept, and it includes anything another thread of this process allocated meanwhile. ``mb`` is None
    where this cannot be measured (not Linux, or ``clear_refs`` not writable).
    """

    def __init__(self) -> None:
        self.mb: float | None = None
        self._start: int | None = None

    def __enter__(self) -> PeakRSS:
        if not sys.platform.startswith("linux"):
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._start = _proc_status_kb("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        if self._start is not None:
            hwm = _proc_status_kb("VmHWM")
            self.mb = None if hwm is None else max(hwm - self._start, 0) / 1024.0


def _proc_status_kb(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmRSS``), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


__all__ = ["PeakRSS", "distribution", "latency", "run_all"]
