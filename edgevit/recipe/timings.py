"""Where a run's time goes: each stage's wall time, kept in ``RUN/timings.json`` and printed as a table by ``edgevit
run`` / ``train`` / ``export`` / ``parity``.

A stage's row is replaced when it runs again (``edgevit export RUN`` after ``edgevit run``: the export rows are the
new ones, the training row stays), so the file always says what the run's current files took to make.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from edgevit.rundir import timings_path
from edgevit.utils import read_json, write_json_atomic


def read_timings(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's stage rows ``{"stage", "seconds", "finished"}`` in the order they last ran (``[]`` if none)."""
    path = timings_path(run_dir)
    if not path.is_file():
        return []
    doc = read_json(path, "stage timings")
    return list(doc.get("stages", [])) if isinstance(doc, dict) else []


def record(run_dir: str | Path, stage: str, seconds: float, within: str | None = None) -> None:
    """Set ``stage``'s row (replacing an older one) in ``RUN/timings.json``, atomically. ``within`` names the stage
    whose wall time this row's overlaps (exports run in parallel processes): it is listed, not added to the total."""
    rows = [r for r in read_timings(run_dir) if r.get("stage") != stage]
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    row = {"stage": stage, "seconds": round(seconds, 3), "finished": finished}
    rows.append(row | ({"within": within} if within else {}))
    write_json_atomic(timings_path(run_dir), {"stages": rows})


@contextlib.contextmanager
def timed(run_dir: str | Path, stage: str) -> Iterator[None]:
    """Record the block's wall time as ``stage`` when it finishes without an error (under ``torchrun``, rank 0
    records)."""
    t0 = time.perf_counter()
    yield
    if int(os.environ.get("RANK", "0")) == 0:
        record(run_dir, stage, time.perf_counter() - t0)


def table(rows: list[dict[str, Any]], title: str = "where the time went") -> Table:
    """A rich table of stage rows: seconds and share of the total wall time (rows ``within`` another, which ran in
    parallel inside it, are shown indented without a share)."""
    total = sum(r["seconds"] for r in rows if not r.get("within")) or 1.0
    t = Table(title=title)
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    t.add_column("share", justify="right")
    for r in rows:
        if r.get("within"):
            t.add_row(f"  {r['stage']}", f"{r['seconds']:.1f}", "", style="dim")
        else:
            t.add_row(r["stage"], f"{r['seconds']:.1f}", f"{100 * r['seconds'] / total:.0f}%")
    t.add_row("total", f"{total:.1f}", "100%", style="bold")
    return t


__all__ = ["read_timings", "record", "table", "timed"]
