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
        "execution": str | null,    # "native", or how it was emulated, e.g. Core ML off macOS (no latency then)
        "top1": float,              # percent
        "agreement": float,         # fraction of images whose argmax equals the reference's
        "max_abs_err": float, "mean_abs_err": float,       # over all logits, vs reference
        "cosine": float,            # mean over images of the logit-vector cosine similarity
        "latency_ms": {"median": float, "p90": float, "runs": int, "warmup": int},
        "passed": bool | null,      # null when not runnable
        "failures": [str], "tolerance": {...},
        "vs_host": {...} | null     # emulated devices only, see below
      }],
      "device": {"name": str, "emulated": bool, "description": str, ...}
    }

Metrics are null for an artifact that cannot run on this device; it is listed, never dropped.

On an emulated device (``check(..., device=get_device("android-arm64"))``, see :mod:`edgevit.parity.devices`)
the metrics above compare the device's logits with PyTorch as usual, ``latency_ms`` is null (time under
emulation is not device time), and ``vs_host`` compares them with the same artifact run on this host:
``{"agreement", "max_abs_err", "mean_abs_err", "cosine", "passed", "failures", "tolerance"}``, judged by the
device tolerances (:data:`DEFAULT_DEVICE_TOLERANCES`, overridable as ``parity.device_tolerances``). An
artifact passes when both comparisons pass; a runtime crash on the device is a failure, not a skip.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgevit._utils import EdgeVitError, path_size, progress_bar, write_json_atomic, write_text_atomic
from edgevit.export.artifact import Artifact, NotRunnable, RunFailed

SCHEMA_VERSION = 1
EMULATORS = {"coreml": "edgevit.parity.coreml"}  # backend -> module whose runner(path) emulates it off-platform


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


class DeviceTolerance(BaseModel):
    """Pass criteria for a device's logits vs the host run of the same artifact (same graph, other kernels)."""

    model_config = ConfigDict(extra="forbid")

    min_agreement: float = Field(ge=0, le=1, description="fraction of images with the host run's top-1 class")
    max_abs_err: float | None = Field(None, ge=0, description="largest allowed |logit difference| (None: no limit)")


# fp32: the same fp32 graph on NEON instead of AVX kernels differs only by accumulation order and FMA contraction
# (measured ~1e-6 on the quickstart ViT); quantized graphs can round an int8 activation differently and flip
# a near-tied image, so they are judged by argmax agreement only.
DEFAULT_DEVICE_TOLERANCES = {
    "fp32": DeviceTolerance(min_agreement=1.0, max_abs_err=1e-4),
    "fp16": DeviceTolerance(min_agreement=0.99),
    "int8": DeviceTolerance(min_agreement=0.99),
    "int8-dynamic": DeviceTolerance(min_agreement=0.99),
}


class ParityConfig(BaseModel):
    """How parity runs (the ``parity:`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(2, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(50, ge=1, description="timed runs for the latency distribution")
    tolerances: dict[str, Tolerance] = Field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    device_tolerances: dict[str, DeviceTolerance] = Field(
        default_factory=lambda: dict(DEFAULT_DEVICE_TOLERANCES),
        description="an emulated device's logits vs the host run of the same artifact, per precision",
    )

    def tolerance(self, precision: str) -> Tolerance:
        """The tolerance for ``precision``, falling back to the defaults."""
        return self.tolerances.get(precision) or DEFAULT_TOLERANCES[precision]

    def device_tolerance(self, precision: str) -> DeviceTolerance:
        """The device-vs-host tolerance for ``precision`` (defaults: fp32 near-identical, else 99% agreement)."""
        tol = self.device_tolerances.get(precision) or DEFAULT_DEVICE_TOLERANCES.get(precision)
        return tol or DeviceTolerance(min_agreement=0.99)


@dataclass
class ParityReport:
    """The outcome of :func:`check`; ``to_json()`` is the ``parity.json`` document."""

    num_images: int
    threads: int
    reference: dict[str, Any]
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=lambda: {"name": "host", "emulated": False})

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
            "device": self.device,
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


def judge_vs_host(m: dict[str, float], tol: DeviceTolerance) -> list[str]:
    """The device-vs-host tolerance violations of metrics ``m`` (empty when it passes)."""
    failures = []
    if m["agreement"] < tol.min_agreement:
        failures.append(f"agreement with host run {m['agreement']:.4f} < {tol.min_agreement}")
    if tol.max_abs_err is not None and m["max_abs_err"] > tol.max_abs_err:
        failures.append(f"max abs diff from host run {m['max_abs_err']:.2e} > {tol.max_abs_err:.0e}")
    return failures


def check(
    artifacts: list[Artifact],
    images: np.ndarray,
    labels: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    config: ParityConfig,
    progress: bool = True,
    device=None,
) -> ParityReport:
    """Run the reference and every artifact over ``images`` (batch 1) and judge each against its tolerance.

    Args:
        artifacts: what to check.
        images: ``[N, C, H, W]`` float32 validation images, preprocessed as in training.
        labels: ``[N]`` class indices.
        reference: the fp32 PyTorch model as a runner (``[1, C, H, W] -> [1, K]``).
        config: threads, latency runs and tolerances.
        progress: show progress bars.
        device: where the artifacts run (:func:`edgevit.parity.devices.get_device`); default this host. On an
            emulated device each artifact is also run on the host, and the two runs are compared.

    Returns:
        A :class:`ParityReport`.
    """
    import torch

    from edgevit.parity.devices import HOST

    device = device or HOST

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
        device=device.to_json(),
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
            "execution": None,
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
        if device.emulated:
            entry["vs_host"] = None
        try:
            logits, entry["latency_ms"] = device.run(art, images, config, progress)
            entry["execution"] = f"emulated device {device.name}" if device.emulated else "native"
        except NotRunnable as e:
            if device.emulated or art.backend not in EMULATORS:
                entry.update(runnable=False, reason=str(e))
                report.artifacts.append(entry)
                continue
            try:  # no latency: the emulator's speed is not the device's
                runner = importlib.import_module(EMULATORS[art.backend]).runner(art.path)
                logits = run_all(runner, images, f"{art.backend} {art.precision} (emulated)", progress)
            except EdgeVitError as err:  # e.g. an op the emulator lacks: this artifact fails, the others still run
                entry.update(passed=False, failures=[f"emulation failed: {err}"], reason=f"not runnable natively: {e}")
                report.artifacts.append(entry)
                continue
            entry["execution"] = runner.execution
        except RunFailed as e:  # a crash on the device is what this check exists to find
            entry.update(passed=False, failures=[str(e)])
            report.artifacts.append(entry)
            continue
        entry.update(metrics(logits, ref_logits, labels))
        entry["failures"] = judge(entry, ref_top1, tol)
        if device.emulated:
            entry["vs_host"] = _vs_host(art, logits, images, labels, config, progress)
            entry["failures"] += entry["vs_host"]["failures"]
        entry["passed"] = not entry["failures"]
        report.artifacts.append(entry)
    return report


def _vs_host(art: Artifact, logits, images, labels, config: ParityConfig, progress: bool) -> dict[str, Any]:
    """The device's ``logits`` vs the same artifact run on this host, judged by the device tolerance."""
    tol = config.device_tolerance(art.precision)
    out: dict[str, Any] = {"tolerance": tol.model_dump()}
    try:
        host = run_all(art.load(config.threads), images, f"{art.backend} {art.precision} (host)", progress)
    except NotRunnable as e:
        return out | {
            "agreement": None,
            "max_abs_err": None,
            "mean_abs_err": None,
            "cosine": None,
            "passed": None,
            "failures": [],
            "reason": f"no host run to compare with: {e}",
        }
    m = {k: v for k, v in metrics(logits, host, labels).items() if k != "top1"}
    failures = judge_vs_host(m, tol)
    return out | m | {"passed": not failures, "failures": failures}


def _quantizer_label(info: dict[str, Any]) -> str | None:
    """e.g. ``XNNPACKQuantizer`` or ``XNNPACKQuantizer via NNCF (SmoothQuant, full bias correction)``."""
    if "quantizer" not in info:
        return None
    if info.get("method") != "nncf":
        return info["quantizer"]
    opts = ["SmoothQuant"] if info.get("smooth_quant") else []
    opts.append(f"{info.get('bias_correction', 'fast')} bias correction")
    return f"{info['quantizer']} via NNCF ({', '.join(opts)})"


def report_names(device: str = "host") -> tuple[str, str]:
    """``(parity.json, report.md)`` for the host; ``(parity-DEVICE.json, report-DEVICE.md)`` for another device,
    so a device check never overwrites the host report (and its latency, which ``compress-report`` reads)."""
    return ("parity.json", "report.md") if device == "host" else (f"parity-{device}.json", f"report-{device}.md")


def write_report(report: ParityReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write the JSON and Markdown reports (names from :func:`report_names`) into ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    doc = report.to_json()
    json_name, md_name = report_names(report.device["name"])
    json_path = write_json_atomic(out_dir / json_name, doc)
    md_path = write_text_atomic(out_dir / md_name, render_markdown(doc))
    return json_path, md_path


def render_markdown(doc: dict[str, Any]) -> str:
    """The parity table as Markdown, latency as a ratio to the PyTorch reference measured in the same run."""
    if (doc.get("device") or {}).get("emulated"):
        return _render_device_markdown(doc)
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
            f"| {a['backend']} | {a['precision']} | {a.get('quantizer') or '–'} | {_runs_here(a)} "
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
    emulated = sorted({f"{a['backend']}: {a['execution']}" for a in doc["artifacts"] if _runs_here(a) == "emulated"})
    if emulated:  # say which numbers no real runtime produced
        lines += [
            f"Emulated here, not run by the real runtime ({'; '.join(emulated)}): these rows are checked against "
            "their tolerances like the others, but come from edgevit's interpreter of the converted program "
            "(`edgevit.parity.coreml`), not from Core ML on Apple hardware; latency is not reported for them.",
            "",
        ]
    return "\n".join(lines)


def _runs_here(a: dict[str, Any]) -> str:
    """``yes``, ``no``, or ``emulated`` (an interpreter of the artifact stood in for its runtime)."""
    if not a["runnable"]:
        return "no"
    return "emulated" if (a.get("execution") or "").startswith("emulated (") else "yes"


def _render_device_markdown(doc: dict[str, Any]) -> str:
    """The report of an emulated device: each artifact vs PyTorch and vs its own host run; no latency."""
    dev, ref = doc["device"], doc["reference"]
    lines = [
        f"# Parity report: {dev['name']}",
        "",
        f"Device: {dev['description']}. {dev['note']}",
        "",
        *(
            [", ".join(f"{k}: {' '.join(v) if isinstance(v, list) else v}" for k, v in dev["versions"].items()), ""]
            if dev.get("versions")
            else []
        ),
        f"{doc['num_images']} validation images, batch 1, {doc['threads']} threads. Reference: PyTorch fp32 on "
        f'this host, top-1 {ref["top1"]:.2f}%. "ARM64 vs x86": the same artifact run by the host (x86-64) build '
        "of its runtime.",
        "",
        f"**Overall: {'PASS' if doc['passed'] else 'FAIL'}**",
        "",
        "| backend | precision | quantizer | runs here | ARM64 vs x86: agreement | max abs diff | mean abs diff "
        "| ARM64 vs PyTorch: top-1 % | agreement | max abs err | cosine | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    for a in doc["artifacts"]:
        host = a.get("vs_host") or {}
        result = "not run on this device: " + a["reason"] if not a["runnable"] else ("pass" if a["passed"] else "FAIL")
        if a["failures"]:
            result += " (" + "; ".join(a["failures"]) + ")"
        if host.get("reason"):
            result += f" ({host['reason']})"
        lines.append(
            f"| {a['backend']} | {a['precision']} | {a.get('quantizer') or '–'} | {'yes' if a['runnable'] else 'no'} "
            f"| {f(host.get('agreement'), '.4f')} | {f(host.get('max_abs_err'), '.2e')} "
            f"| {f(host.get('mean_abs_err'), '.2e')} | {f(a['top1'], '.2f')} | {f(a['agreement'], '.4f')} "
            f"| {f(a['max_abs_err'], '.2e')} | {f(a['cosine'], '.6f')} | {result} |"
        )
    tols = {
        p: t for a in doc["artifacts"] if a.get("vs_host") for p, t in [(a["precision"], a["vs_host"]["tolerance"])]
    }
    tol_text = "; ".join(
        f"{p}: agreement ≥ {t['min_agreement']}"
        + (f", max abs diff ≤ {t['max_abs_err']:.0e}" if t["max_abs_err"] else "")
        for p, t in tols.items()
    )
    lines += [
        "",
        "ARM64 vs x86 thresholds (parity.device_tolerances): " + (tol_text or "–") + ". ARM64 vs PyTorch: the "
        "recipe's usual tolerances. Agreement: fraction of images with the same top-1 class.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_DEVICE_TOLERANCES",
    "DEFAULT_TOLERANCES",
    "DeviceTolerance",
    "ParityConfig",
    "ParityReport",
    "Tolerance",
    "check",
    "metrics",
    "report_names",
    "write_report",
]
