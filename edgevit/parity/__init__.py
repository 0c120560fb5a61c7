"""Parity: run every artifact on the whole validation split and compare it with the PyTorch model.

``check(artifacts, images, labels, reference, config)`` returns a :class:`ParityReport`; ``write_report``
writes ``parity.json`` (schema below) and ``report.md``.

``parity.json`` schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "num_images": int,            # validation images, each run at batch 1
      "threads": int,               # thread count used by every runtime
      "reference": {"backend": "pytorch", "precision": "fp32", "top1": float, "latency_ms": {...}},
      "passed": bool,               # every runnable artifact met its tolerance
      "artifacts": [{
        "backend": str, "precision": str, "quantizer": str | null, "path": str, "size_bytes": int,
        "runnable": bool, "reason": str | null,            # why it could not run here
        "top1": float,              # percent
        "agreement": float,         # fraction of images whose argmax equals the reference's
        "max_abs_err": float, "mean_abs_err": float,       # over all logits, vs reference
        "cosine": float,            # mean over images of the logit-vector cosine similarity
        "latency_ms": {"median": float, "p90": float, "runs": int, "warmup": int},
        "passed": bool | null,      # null when not runnable
        "failures": [str], "tolerance": {...}
      }]
    }

Metrics are null for an artifact that cannot run on this host; it is listed, never dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgevit._utils import path_size, progress_bar, write_json_atomic, write_text_atomic
from edgevit.export.artifact import Artifact, NotRunnable

SCHEMA_VERSION = 1


class Tolerance(BaseModel):
    """Pass criteria for one precision."""

    model_config = ConfigDict(extra="forbid")

    min_agreement: float = Field(ge=0, le=1, description="fraction of images with the reference's top-1 class")
    max_top1_drop: float = Field(ge=0, description="allowed top-1 loss vs the reference, in points")
    min_cosine: float = Field(0.0, ge=-1, le=1, description="minimum mean logit cosine similarity")


DEFAULT_TOLERANCES = {
    "fp32": Tolerance(min_agreement=0.995, max_top1_drop=0.5, min_cosine=0.9999),
    "fp16": Tolerance(min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.999),
    "int8": Tolerance(min_agreement=0.98, max_top1_drop=1.0, min_cosine=0.98),
    "int8-dynamic": Tolerance(min_agreement=0.98, max_top1_drop=1.0, min_cosine=0.98),
    "w8": Tolerance(min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.995),
    "w4": Tolerance(min_agreement=0.95, max_top1_drop=2.0, min_cosine=0.95),
    "w4-lut": Tolerance(min_agreement=0.95, max_top1_drop=2.0, min_cosine=0.95),
    "sparse": Tolerance(min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.999),  # lossless storage of fp16
}


class ParityConfig(BaseModel):
    """How parity runs (the ``parity:`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(2, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(50, ge=1, description="timed runs for the latency distribution")
    tolerances: dict[str, Tolerance] = Field(default_factory=lambda: dict(DEFAULT_TOLERANCES))

    def tolerance(self, precision: str) -> Tolerance:
        """The tolerance for ``precision``, falling back to the defaults."""
        return self.tolerances.get(precision) or DEFAULT_TOLERANCES[precision]


@dataclass
class ParityReport:
    """The outcome of :func:`check`; ``to_json()`` is the ``parity.json`` document."""

    num_images: int
    threads: int
    reference: dict[str, Any]
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every runnable artifact met its tolerance."""
        return all(a["passed"] is not False for a in self.artifacts)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "num_images": self.num_images,
            "threads": self.threads,
            "reference": self.reference,
            "passed": self.passed,
            "artifacts": self.artifacts,
        }


def run_all(runner: Callable[[np.ndarray], np.ndarray], images: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    """Run ``runner`` on each ``[C, H, W]`` image of ``images`` at batch 1; return ``[N, K]`` logits."""
    out = []
    with progress_bar(progress) as bars:
        task = bars.add_task(desc, total=len(images), info="")
        for img in images:
            out.append(np.asarray(runner(img[None])).reshape(-1))
            bars.update(task, advance=1)
    return np.stack(out).astype(np.float32)


def latency(runner: Callable[[np.ndarray], np.ndarray], image: np.ndarray, warmup: int, runs: int) -> dict[str, Any]:
    """Median and p90 wall time in ms of ``runs`` batch-1 calls after ``warmup`` untimed ones."""
    x = image[None]
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median": float(np.median(times)),
        "p90": float(np.percentile(times, 90)),
        "runs": runs,
        "warmup": warmup,
    }


def metrics(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 (percent), argmax agreement (fraction), abs errors and mean cosine of ``logits`` vs ``reference``."""
    err = np.abs(logits.astype(np.float64) - reference.astype(np.float64))
    num = (logits * reference).sum(-1, dtype=np.float64)
    den = np.linalg.norm(logits.astype(np.float64), axis=-1) * np.linalg.norm(reference.astype(np.float64), axis=-1)
    cos = num / np.maximum(den, 1e-12)
    return {
        "top1": float((logits.argmax(-1) == labels).mean() * 100.0),
        "agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "cosine": float(cos.mean()),
    }


def judge(m: dict[str, float], reference_top1: float, tol: Tolerance) -> list[str]:
    """The tolerance violations of metrics ``m`` (empty when it passes)."""
    failures = []
    if m["agreement"] < tol.min_agreement:
        failures.append(f"agreement {m['agreement']:.4f} < {tol.min_agreement}")
    drop = reference_top1 - m["top1"]
    if drop > tol.max_top1_drop:
        failures.append(f"top-1 drop {drop:.2f} points > {tol.max_top1_drop}")
    if m["cosine"] < tol.min_cosine:
        failures.append(f"cosine {m['cosine']:.6f} < {tol.min_cosine}")
    return failures


def check(
    artifacts: list[Artifact],
    images: np.ndarray,
    labels: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    config: ParityConfig,
    progress: bool = True,
) -> ParityReport:
    """Run the reference and every artifact over ``images`` (batch 1) and judge each against its tolerance.

    Args:
        artifacts: what to check.
        images: ``[N, C, H, W]`` float32 validation images, preprocessed as in training.
        labels: ``[N]`` class indices.
        reference: the fp32 PyTorch model as a runner (``[1, C, H, W] -> [1, K]``).
        config: threads, latency runs and tolerances.
        progress: show progress bars.

    Returns:
        A :class:`ParityReport`.
    """
    import torch

    torch.set_num_threads(config.threads)
    ref_logits = run_all(reference, images, "pytorch fp32 (reference)", progress)
    ref_top1 = float((ref_logits.argmax(-1) == labels).mean() * 100.0)
    report = ParityReport(
        num_images=len(images),
        threads=config.threads,
        reference={
            "backend": "pytorch",
            "precision": "fp32",
            "top1": ref_top1,
            "latency_ms": latency(reference, images[0], config.warmup, config.runs),
        },
    )
    for art in artifacts:
        tol = config.tolerance(art.precision)
        entry: dict[str, Any] = {
            "backend": art.backend,
            "precision": art.precision,
            "quantizer": _quantizer_label(art.info),
            "path": str(art.path),
            "size_bytes": path_size(art.path),
            "runnable": True,
            "reason": None,
            "top1": None,
            "agreement": None,
            "max_abs_err": None,
            "mean_abs_err": None,
            "cosine": None,
            "latency_ms": None,
            "passed": None,
            "failures": [],
            "tolerance": tol.model_dump(),
        }
        try:
            runner = art.load(config.threads)
        except NotRunnable as e:
            entry.update(runnable=False, reason=str(e))
            report.artifacts.append(entry)
            continue
        logits = run_all(runner, images, f"{art.backend} {art.precision}", progress)
        entry.update(metrics(logits, ref_logits, labels))
        entry["latency_ms"] = latency(runner, images[0], config.warmup, config.runs)
        entry["failures"] = judge(entry, ref_top1, tol)
        entry["passed"] = not entry["failures"]
        report.artifacts.append(entry)
    return report


def _quantizer_label(info: dict[str, Any]) -> str | None:
    """e.g. ``XNNPACKQuantizer`` or ``XNNPACKQuantizer via NNCF (SmoothQuant, full bias correction)``."""
    if "quantizer" not in info:
        return None
    if info.get("method") != "nncf":
        return info["quantizer"]
    opts = ["SmoothQuant"] if info.get("smooth_quant") else []
    opts.append(f"{info.get('bias_correction', 'fast')} bias correction")
    return f"{info['quantizer']} via NNCF ({', '.join(opts)})"


def write_report(report: ParityReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``parity.json`` and ``report.md`` into ``out_dir`` atomically; return both paths."""
    out_dir = Path(out_dir)
    doc = report.to_json()
    json_path = write_json_atomic(out_dir / "parity.json", doc)
    md_path = write_text_atomic(out_dir / "report.md", render_markdown(doc))
    return json_path, md_path


def render_markdown(doc: dict[str, Any]) -> str:
    """The parity table as Markdown, latency as a ratio to the PyTorch reference measured in the same run."""
    ref = doc["reference"]
    ref_ms = ref["latency_ms"]["median"]
    lines = [
        "# Parity report",
        "",
        f"{doc['num_images']} validation images, batch 1, {doc['threads']} threads. Reference: PyTorch fp32, "
        f"top-1 {ref['top1']:.2f}%, latency median {ref_ms:.3f} ms.",
        "",
        f"**Overall: {'PASS' if doc['passed'] else 'FAIL'}**",
        "",
        "| backend | precision | quantizer | runs here | top-1 % | agreement | max abs err | mean abs err | cosine "
        "| latency median ms | p90 ms | vs PyTorch | size KiB | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    for a in doc["artifacts"]:
        lat = a["latency_ms"] or {}
        ratio = f"{ref_ms / lat['median']:.2f}× faster" if lat else "–"
        if lat and lat["median"] > ref_ms:
            ratio = f"{lat['median'] / ref_ms:.2f}× slower"
        result = "not run: " + a["reason"] if not a["runnable"] else ("pass" if a["passed"] else "FAIL")
        if a["failures"]:
            result += " (" + "; ".join(a["failures"]) + ")"
        lines.append(
            f"| {a['backend']} | {a['precision']} | {a.get('quantizer') or '–'} | {'yes' if a['runnable'] else 'no'} "
            f"| {f(a['top1'], '.2f')} "
            f"| {f(a['agreement'], '.4f')} | {f(a['max_abs_err'], '.2e')} | {f(a['mean_abs_err'], '.2e')} "
            f"| {f(a['cosine'], '.6f')} | {f(lat.get('median'), '.3f')} | {f(lat.get('p90'), '.3f')} | {ratio} "
            f"| {a['size_bytes'] / 1024:.0f} | {result} |"
        )
    lines += [
        "",
        "Agreement: fraction of images whose top-1 class equals PyTorch fp32's. Cosine: mean over images of the "
        "logit-vector cosine similarity. Latency is host latency of the runtime named, not phone latency.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["DEFAULT_TOLERANCES", "ParityConfig", "ParityReport", "Tolerance", "check", "metrics", "write_report"]
