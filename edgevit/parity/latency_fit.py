"""Calibrated milliseconds: real-device timings of a few artifacts turn estimated cycles into labelled latency.

An estimated cycle bound (:func:`edgevit.targets.cost.estimate_cycles`) is good for ratios on one core, not for
milliseconds: it knows no clock, caches or dependency chains. With timings measured on the real core (e.g. a
Raspberry Pi 5's Cortex-A76 running LiteRT's ``benchmark_model`` or ExecuTorch's ``executor_runner`` on a few
artifacts, one thread), :func:`fit` finds the milliseconds per million estimated cycles of that core (least squares
through the origin: a cycle bound scales with latency or it is of no use) and :func:`apply` labels every counted
artifact with ``calibrated_ms``. The fit says how far it can be trusted: each timing's error as the fit predicts it,
and with three or more timings the leave-one-out error (each timing predicted by a fit on the others), which is
what an artifact outside the file can expect.

The timings file (``edgevit parity RUN --device D --calibrate FILE``) is a CSV with a header::

    artifact,ms[,mcycles][,core]
    executorch_int8.pte,41.8
    tflite_fp32.tflite,96.5
    deit_small_litert_fp32.tflite,380.2,1102.4,cortex-a76

``artifact`` names a file of the run's ``artifacts/`` (its estimated cycles are read from this parity run) or,
with ``mcycles`` (M estimated cycles from another report on the same core), any artifact; ``ms`` is the median
latency per inference on the device; ``core`` (optional) keeps only the rows of the device's core.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from edgevit.utils import EdgeVitError

LABEL = "calibrated ms: estimated cycles x a per-core factor fitted on real timings; an estimate, not a measurement"


def read_timings(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a timings CSV (see the module docstring), checked: ``[{"artifact", "ms", "mcycles" | None,
    "core" | None, "line"}]``.

    Raises:
        EdgeVitError: a missing or unreadable file, a missing ``artifact``/``ms`` column, an unknown column, a
            value that is not a positive number, or no rows.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeVitError(f"--calibrate {path}: cannot read it ({type(e).__name__}: {e})") from e
    lines = enumerate(text.splitlines(), 1)
    kept = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    try:  # blank and comment lines skipped; file line numbers kept
        records = list(csv.reader(line for _, line in kept))
    except csv.Error as e:  # e.g. a field over csv's size limit
        raise EdgeVitError(f"--calibrate {path}: not a CSV file ({e})") from e
    columns = [c.strip() for c in (records[0] if records else [])]
    known = {"artifact", "ms", "mcycles", "core"}
    if not {"artifact", "ms"} <= set(columns) or set(columns) - known:
        raise EdgeVitError(
            f"--calibrate {path}: the header must be artifact,ms with optional mcycles and core columns "
            f"(got {','.join(columns) or 'nothing'})"
        )
    rows = []
    for (n, _), cells in zip(kept[1:], records[1:], strict=True):
        if len(cells) > len(columns):
            raise EdgeVitError(f"--calibrate {path}:{n}: more values than the header's columns ({','.join(columns)})")
        row = {k: v.strip() for k, v in zip(columns, cells, strict=False)}
        if not row.get("artifact"):
            raise EdgeVitError(f"--calibrate {path}:{n}: no artifact name")
        values = {}
        for key in ("ms", "mcycles"):
            if key == "mcycles" and not row.get(key):
                values[key] = None
                continue
            try:
                values[key] = float(row.get(key, ""))
            except ValueError:
                values[key] = math.nan
            if not (math.isfinite(values[key]) and values[key] > 0):
                raise EdgeVitError(f"--calibrate {path}:{n}: {key} must be a positive number, got {row.get(key)!r}")
        rows.append({"artifact": row["artifact"], **values, "core": row.get("core") or None, "line": n})
    if not rows:
        raise EdgeVitError(f"--calibrate {path}: no timings (one row per artifact: artifact,ms)")
    return rows


def fit(points: list[tuple[float, float]]) -> dict[str, Any]:
    """Least squares through the origin of ``ms = k * mcycles`` over ``points`` ``[(mcycles, ms)]``: ``k`` (ms per
    M estimated cycles), the effective clock ``1/k`` GHz, each point's relative error as predicted, their maximum,
    and with >= 3 points the maximum leave-one-out relative error."""
    if not points:
        raise EdgeVitError("calibration needs at least one timing")

    def slope(pts):
        return sum(c * ms for c, ms in pts) / sum(c * c for c, _ in pts)

    k = slope(points)
    errors = [k * c / ms - 1 for c, ms in points]
    loo = None
    if len(points) >= 3:
        loo = max(abs(slope(points[:i] + points[i + 1 :]) * c / ms - 1) for i, (c, ms) in enumerate(points))
    return {
        "ms_per_mcycle": k,
        "effective_ghz": 1 / k,
        "errors": errors,
        "max_error": max(abs(e) for e in errors),
        "loo_max_error": loo,
    }


def apply(report, rows: list[dict[str, Any]], source: str) -> None:
    """Fit the timings ``rows`` (:func:`read_timings`) on the report's core and give every counted artifact a
    ``cost.calibrated_ms``; the fit goes to ``report.cost["calibration"]``.

    Raises:
        EdgeVitError: the report has no cost profile (a device that does not count), no row is for its core, or a
            row names an artifact this run did not count and gives no ``mcycles``.
    """
    cost = getattr(report, "cost", None)
    if not cost:
        raise EdgeVitError(
            "--calibrate needs an ARM cost profile: --device android-arm64 or a profile with an arm64_target "
            "(`edgevit target list`), with parity.cost enabled"
        )
    cpu = cost["cpu"]
    counted = {Path(str(a["path"])).name: a for a in report.artifacts if a.get("cost")}
    mine = [r for r in rows if r["core"] in (None, cpu)]
    if not mine:
        cores = sorted({r["core"] for r in rows})
        raise EdgeVitError(f"--calibrate {source}: no timing for {cpu} (the file has {', '.join(cores)})")
    unknown = [r["artifact"] for r in mine if r["mcycles"] is None and r["artifact"] not in counted]
    if unknown:
        raise EdgeVitError(
            f"--calibrate {source}: {', '.join(unknown)} not counted in this run (counted: "
            f"{', '.join(sorted(counted)) or 'none'}); give its M estimated cycles in an mcycles column"
        )
    points = []
    for r in mine:
        mcycles = r["mcycles"] if r["mcycles"] is not None else counted[r["artifact"]]["cost"]["cycles"]["cycles"] / 1e6
        points.append({"artifact": r["artifact"], "ms": r["ms"], "mcycles": mcycles})
    result = fit([(p["mcycles"], p["ms"]) for p in points])
    for p, e in zip(points, result.pop("errors"), strict=True):
        p["predicted_ms"], p["error"] = result["ms_per_mcycle"] * p["mcycles"], e
    for a in counted.values():
        a["cost"]["calibrated_ms"] = result["ms_per_mcycle"] * a["cost"]["cycles"]["cycles"] / 1e6
    cost["calibration"] = {"source": source, "core": cpu, **result, "points": points, "note": LABEL}


def describe(calibration: dict[str, Any]) -> str:
    """One sentence for reports: the factor, on how many timings, and how far it can be trusted."""
    n = len(calibration["points"])
    loo = calibration.get("loo_max_error")
    trust = f"leave-one-out max error {loo:.0%}" if loo is not None else "no leave-one-out error (needs 3 timings)"
    source = Path(calibration["source"]).name
    return (
        f"Calibrated on {n} real timing{'s' * (n != 1)} from {source} ({calibration['core']}): "
        f"{calibration['ms_per_mcycle']:.4f} ms per M estimated cycles (effective {calibration['effective_ghz']:.2f} "
        f"GHz); fit max error {calibration['max_error']:.0%}, {trust}."
    )


__all__ = ["LABEL", "apply", "describe", "fit", "read_timings"]
