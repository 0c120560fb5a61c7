"""What a run logs: ``metrics.csv`` (one row per epoch) and TensorBoard scalars under ``tb/`` (when the optional
``tensorboard`` package is installed), both written by rank 0 only."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from edgevit.utils import write_text_atomic


class MetricsLog:
    """Rank 0's metrics CSV (one row per epoch) and TensorBoard scalars; a no-op on other ranks.

    Args:
        out_dir: the run directory; gets ``metrics.csv`` and ``tb/``.
        enabled: write anything at all (rank 0).
        tensorboard: also write TensorBoard events; without the ``tensorboard`` package, warn once and skip them.
    """

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool):
        self.path, self.enabled, self.tb = out_dir / "metrics.csv", enabled, None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 -- optional package (edgevit[train])
            except ImportError:
                warnings.warn(
                    "TensorBoard events skipped: install `tensorboard` (pip install 'edgevit[train]')", stacklevel=3
                )
            else:
                self.tb = SummaryWriter(str(out_dir / "tb"))

    def scalars(self, step: int, **values: float) -> None:
        """TensorBoard scalars ``{tag: value}`` at optimizer step ``step``."""
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def epoch(self, rows: list[dict[str, Any]], step: int) -> None:
        """Rewrite ``metrics.csv`` with ``rows`` (atomically) and log the last row as ``epoch/<column>`` scalars."""
        if not self.enabled:
            return
        _write_csv(self.path, rows)
        self.scalars(step, **{f"epoch/{k}": v for k, v in rows[-1].items() if k != "epoch" and v is not None})
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.tb is not None:
            self.tb.close()


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


__all__ = ["MetricsLog"]
