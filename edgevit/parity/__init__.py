"""Parity: run every artifact on the whole validation split and compare it with the PyTorch model.

``check(artifacts, images, labels, reference, config)`` returns a :class:`ParityReport`; ``write_report`` writes
``parity.json`` (schema: :mod:`edgevit.parity.report`, docs/reference/parity-json.md), ``report.md`` and
``report.html``. The package's modules, by job: :mod:`~edgevit.parity.config` (tolerances, the recipe's ``parity:``
section), :mod:`~edgevit.parity.metrics` (metrics and verdicts), :mod:`~edgevit.parity.check` (the check),
:mod:`~edgevit.parity.report` (the schema and Markdown), :mod:`~edgevit.parity.html`, :mod:`~edgevit.parity.devices`
(where artifacts run), :mod:`~edgevit.parity.explain` (the divergence finder), :mod:`~edgevit.parity.compress`
(compress-report). Timing and memory are :mod:`edgevit.measure`'s.
"""

from edgevit.measure import PeakRSS, distribution, latency, run_all
from edgevit.parity.check import app_inputs, artifact_runner, check, failure_message, quantizer_label
from edgevit.parity.config import (
    DEFAULT_DEVICE_TOLERANCES,
    DEFAULT_TOLERANCES,
    DeviceTolerance,
    ParityConfig,
    Tolerance,
)
from edgevit.parity.metrics import Violation, judge, judge_vs_host, kl_div, metrics, psnr_db, top_k
from edgevit.parity.report import SCHEMA_VERSION, ParityReport, fmt, render_markdown, write_report
from edgevit.rundir import report_names

__all__ = [
    # configuration
    "DEFAULT_DEVICE_TOLERANCES",
    "DEFAULT_TOLERANCES",
    "DeviceTolerance",
    "ParityConfig",
    "Tolerance",
    # the check
    "app_inputs",
    "artifact_runner",
    "check",
    "failure_message",
    "quantizer_label",
    # metrics and verdicts
    "Violation",
    "judge",
    "judge_vs_host",
    "kl_div",
    "metrics",
    "psnr_db",
    "top_k",
    # the report
    "SCHEMA_VERSION",
    "ParityReport",
    "fmt",
    "render_markdown",
    "report_names",
    "write_report",
    # timing and memory (edgevit.measure)
    "PeakRSS",
    "distribution",
    "latency",
    "run_all",
]
