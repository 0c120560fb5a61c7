"""Parity's check: run the reference and every artifact on the validation images and judge each against its
tolerance.

Every artifact gets a row, whatever happens to it: metrics and a verdict when it ran; ``runnable: false`` with the
reason when nothing can run it here; ``passed: false`` naming the file and the runtime's message when it failed to
load or crashed (a corrupt file must fail the gate, never stop the check of the others).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.backends import NotRunnable, Runner
from edgevit.export import Artifact
from edgevit.measure import latency, run_all
from edgevit.parity.config import ParityConfig
from edgevit.parity.cost import add_cost
from edgevit.parity.devices import HOST
from edgevit.parity.metrics import judge, judge_vs_host, metrics, top_k
from edgevit.parity.report import ParityReport
from edgevit.utils import path_size

METRIC_KEYS = ("top1", "top5", "agreement", "max_abs_err", "mean_abs_err", "cosine", "psnr_db", "kl_div")
_VS_HOST_KEYS = ("agreement", "max_abs_err", "mean_abs_err", "cosine")


def artifact_runner(art: Artifact, threads: int = 1, compute_units: str | None = None) -> tuple[Runner, str]:
    """``(runner, execution)``: ``art`` in its runtime on this host (``"native"``), or where that runtime cannot run
    here (Core ML off macOS) in edgevit's emulator of it (:meth:`Artifact.load`). The runner takes one image in the
    artifact's layout (:meth:`Artifact.feed`).

    Raises:
        NotRunnable: neither the runtime nor an emulator can run it here.
        EdgeVitError: the artifact is missing, or its runtime (or the emulator) cannot load it.
    """
    runner = art.load(threads, compute_units)
    return runner, runner.execution


def check(
    artifacts: list[Artifact],
    images: np.ndarray,
    labels: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    config: ParityConfig,
    progress: bool = True,
    device=None,
    normalization: tuple[list[float], list[float]] | None = None,
) -> ParityReport:
    """Run the reference and every artifact over ``images`` (batch 1) and judge each against its tolerance.

    Args:
        artifacts: what to check.
        images: ``[N, C, H, W]`` float32 validation images, preprocessed as in training; each artifact is fed them
            in its own input layout (``Artifact.feed``: ``[N, H, W, C]`` for an NHWC export).
        labels: ``[N]`` class indices.
        reference: the fp32 PyTorch model as a runner (``[1, C, H, W] -> [1, K]``).
        config: threads, latency runs and tolerances.
        progress: show progress bars.
        device: where the artifacts run (:func:`edgevit.parity.devices.get_device`); default this host. On an
            emulated device each artifact is also run on the host, and the two runs are compared. A device
            profile sets the thread count and may change the input (8-bit pixels), for the reference too.
        normalization: the images' ``(mean, std)`` per channel, which a profile with 8-bit input needs to
            recover pixels (``x * std + mean``).

    Returns:
        A :class:`ParityReport` with one row per artifact.
    """
    device = device or HOST
    if getattr(device, "threads", None):
        config = config.model_copy(update={"threads": device.threads})
    if hasattr(device, "prepare"):  # the device's input path (e.g. 8-bit camera pixels), for every model alike
        images = device.prepare(images, normalization)

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # PyTorch runs the reference with the runtimes' thread count
    try:
        ref_logits = run_all(reference, images, "pytorch fp32 (reference)", progress)
        ref_latency = latency(reference, images[0], config.warmup, config.runs, config.threads)
    finally:
        torch.set_num_threads(prev_threads)  # a profile's 4 threads must not outlive this check
    report = ParityReport(
        num_images=len(images),
        threads=config.threads,
        reference={
            "backend": "pytorch",
            "precision": "fp32",
            "top1": float((ref_logits.argmax(-1) == labels).mean() * 100.0),
            "top5": top_k(ref_logits, labels, 5),
            "latency_ms": ref_latency,
        },
        device=device.to_json(),
    )
    for art in artifacts:
        ref_top1 = report.reference["top1"]
        report.artifacts.append(_check_one(art, images, labels, ref_logits, ref_top1, config, device, progress))
    if getattr(device, "cost_cpu", None):  # instructions per inference on the device's ARM core, and their gates
        first = {str(a.path): a.feed(images[:1])[0] for a in artifacts}
        add_cost(report, artifacts, first, device, config.cost, progress)
    if hasattr(device, "note_layouts"):  # the device's parts say which layout each artifact was fed
        device.note_layouts(report.artifacts)
        report.device["parts"] = device.to_json()["parts"]
    _note_emulated_runtimes(report)
    if hasattr(device, "ships"):
        report.device["ships"] = device.ships(report.artifacts)
    return report


def _check_one(art: Artifact, images, labels, ref_logits, ref_top1: float, config: ParityConfig, device, progress):
    """One artifact's ``parity.json`` row (see :mod:`edgevit.parity.report`)."""
    tol = config.tolerance(art.precision)
    entry: dict[str, Any] = {
        "backend": art.backend,
        "precision": art.precision,
        "quantizer": quantizer_label(art.info),
        "path": str(art.path),
        "size_bytes": path_size(art.path) if Path(art.path).exists() else None,
        "runnable": True,
        "reason": None,
        "execution": None,
        **dict.fromkeys(METRIC_KEYS),
        "latency_ms": None,
        "peak_memory_mb": None,
        "passed": None,
        "failures": [],
        "tolerance": tol.model_dump(),
        "input_layout": art.layout,
    }
    if device.emulated:
        entry["vs_host"] = None
    try:
        art_images = art.feed(images)  # [N, C, H, W], or [N, H, W, C] for an NHWC export (its manifest says)
        run = device.run(art, art_images, config, progress)
    except NotRunnable as e:
        return entry | {"runnable": False, "reason": str(e)}
    except Exception as e:  # a corrupt file, a runtime crash, an op the emulator lacks: this artifact fails
        return entry | {"passed": False, "failures": [failure_message(art, e)]}
    entry.update(execution=run.execution, latency_ms=run.latency_ms, peak_memory_mb=run.peak_memory_mb)
    entry.update(metrics(run.logits, ref_logits, labels))
    entry["failures"] = [str(v) for v in judge(entry, ref_top1, tol)]
    if device.emulated:
        entry["vs_host"] = _vs_host(art, run.logits, art_images, labels, config, progress)
        entry["failures"] += entry["vs_host"]["failures"]
    entry["passed"] = not entry["failures"]
    return entry


def failure_message(art: Artifact, error: BaseException) -> str:
    """``could not run executorch fp32 artifact PATH: RuntimeError: ...``: the file and the runtime's own words."""
    text = str(error).strip().splitlines()[0][:500] if str(error).strip() else ""
    cause = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return f"could not load or run {art.backend} {art.precision} artifact {art.path}: {cause}"


def _note_emulated_runtimes(report: ParityReport) -> None:
    """Add a ``device.parts`` entry for each runtime an interpreter stood in for (Core ML off macOS), unless the
    device already describes it."""
    parts = report.device.setdefault("parts", [])
    for a in report.artifacts:
        execution = a.get("execution") or ""
        what = f"{a['backend']} runtime"
        if execution.startswith("emulated (") and not any(p["what"] == what for p in parts):
            parts.append({"what": what, "how": "emulated", "note": execution})


def _vs_host(art: Artifact, logits, images, labels, config: ParityConfig, progress: bool) -> dict[str, Any]:
    """The device's ``logits`` vs the same artifact run on this host, judged by the device tolerance."""
    tol = config.device_tolerance(art.precision)
    out: dict[str, Any] = {"tolerance": tol.model_dump()}
    try:
        runner = art.load(config.threads, emulate=False)
        host = run_all(runner, images, f"{art.backend} {art.precision} (host)", progress)
    except NotRunnable as e:
        return out | dict.fromkeys(_VS_HOST_KEYS) | {"passed": None, "failures": [], "reason": f"no host run: {e}"}
    m = {k: v for k, v in metrics(logits, host, labels).items() if k in _VS_HOST_KEYS}
    failures = judge_vs_host(m, tol)
    return out | m | {"passed": not failures, "failures": failures}


def quantizer_label(info: dict[str, Any]) -> str | None:
    """e.g. ``XNNPACKQuantizer`` or ``XNNPACKQuantizer via NNCF (SmoothQuant, full bias correction)``."""
    if "quantizer" not in info:
        return None
    if info.get("method") != "nncf":
        return info["quantizer"]
    opts = ["SmoothQuant"] if info.get("smooth_quant") else []
    opts.append(f"{info.get('bias_correction', 'fast')} bias correction")
    return f"{info['quantizer']} via NNCF ({', '.join(opts)})"


def app_inputs(images: np.ndarray, model_norm, manifest_input: dict | None):
    """``images`` as an app that follows the manifest feeds them, and the map back to the model's normalisation.

    Args:
        images: ``[N, C, H, W]`` images normalised with the model's own ``(mean, std)`` (``model_norm``).
        model_norm: ``(mean, std)`` the model was trained with (``model.json``), or None.
        manifest_input: the manifest's ``input`` section (``mean``, ``std``), or None.

    Returns:
        ``(app_images, to_model, app_norm)``: the images normalised as the manifest says, a function mapping such
        images back to the model's normalisation (the PyTorch reference sees what training saw), and the manifest's
        ``(mean, std)``. When both agree (or one is missing) the images are returned unchanged.
    """
    same = (images, lambda x: x, model_norm)
    if not manifest_input or model_norm is None or "mean" not in manifest_input or "std" not in manifest_input:
        return same
    m_mean, m_std = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in model_norm)  # [C] -> [1, C, 1, 1]
    a_mean = np.asarray(manifest_input["mean"], np.float32).reshape(1, -1, 1, 1)
    a_std = np.asarray(manifest_input["std"], np.float32).reshape(1, -1, 1, 1)
    if np.array_equal(m_mean, a_mean) and np.array_equal(m_std, a_std):
        return same
    app = ((images * m_std + m_mean - a_mean) / a_std).astype(np.float32)  # pixel/255, normalised per manifest

    def to_model(x: np.ndarray) -> np.ndarray:
        return ((x * a_std + a_mean - m_mean) / m_std).astype(np.float32)

    return app, to_model, (list(manifest_input["mean"]), list(manifest_input["std"]))
