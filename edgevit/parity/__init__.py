"""Parity: run every artifact on the whole validation split and compare it with the PyTorch model.

``check(artifacts, images, labels, reference, config)`` returns a :class:`ParityReport`; ``write_report``
writes ``parity.json`` (schema below) and ``report.md``.

``parity.json`` schema (``schema_version`` 2)::

    {
      "schema_version": 2,
      "num_images": int,            # validation images, each run at batch 1
      "threads": int,               # thread count used by every runtime (a device profile sets its own)
      "reference": {"backend": "pytorch", "precision": "fp32", "top1": float, "top5": float,
                    "latency_ms": {...}},
      "passed": bool,               # every runnable artifact met its tolerance
      "artifacts": [{
        "backend": str, "precision": str, "quantizer": str | null, "path": str, "size_bytes": int,
        "runnable": bool, "reason": str | null,            # why it could not run here
        "execution": str | null,    # "native", or how it was emulated, e.g. Core ML off macOS (no latency then)
        "input_layout": "NCHW" | "NHWC",   # the layout the artifact was exported with, and was fed (manifest info)
        "top1": float, "top5": float,                      # percent of images whose label is the top-1 / in the top 5
        "agreement": float,         # fraction of images whose argmax equals the reference's
        "max_abs_err": float, "mean_abs_err": float,       # over all logits, vs reference
        "cosine": float,            # mean over images of the logit-vector cosine similarity
        "psnr_db": float | null,    # PSNR of all logits vs the reference's, peak = reference logit range (max - min);
                                    # null when not run or when the logits are identical (infinite PSNR)
        "kl_div": float,            # mean over images of KL(softmax(reference) || softmax(artifact)), nats
        "latency_ms": {"median", "p90", "mean", "std", "min", "max": float, "runs": int, "warmup": int,
                       "threads": int, "samples": [float]} | null,   # null when not timed (emulated)
        "peak_memory_mb": float | null,   # see :class:`PeakRSS`; null where not measurable (emulated, non-Linux)
        "passed": bool | null,      # null when not runnable
        "failures": [str], "tolerance": {...},
        "vs_host": {...} | null,    # emulated devices only, see below
        "explain": {...} | null,    # only when the divergence finder ran (:mod:`edgevit.parity.explain`):
                                    # {"tolerance", "metric": "rel_l2", "layers": [...], "first_divergent"}
        "explain_error": str        # only when it could not trace the artifact (explain is null then)
      }],
      "device": {"name": str, "emulated": bool, "description": str,
                 "parts": [{"what": str, "how": "real" | "emulated", "note": str}],   # what stood in for the device
                 "profile": {...} | null,   # the device profile (edgevit/parity/profiles/NAME.yaml), if one was named
                 "ships": str | null,       # profiles: the artifact that device would ship (best passing by preference)
                 ...},
      "cost": {...}                 # emulated ARM devices only: the cost profile section, see edgevit.parity.cost
    }

Schema history: 2 added ``top5``, ``psnr_db``, ``kl_div``, ``peak_memory_mb``, the latency distribution and
``device.parts`` / ``device.profile``; version 1 files lack them and the renderer shows ``–``.

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
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgevit._utils import EdgeVitError, path_size, progress_bar, write_json_atomic, write_text_atomic
from edgevit.export.artifact import Artifact, NotRunnable, RunFailed, Runner
from edgevit.parity.cost import CostConfig, add_cost, render_cost_markdown

SCHEMA_VERSION = 2
EMULATORS = {"coreml": "edgevit.parity.coreml"}  # backend -> module whose runner(path) emulates it off-platform


class Tolerance(BaseModel):
    """Pass criteria for one precision."""

    model_config = ConfigDict(extra="forbid")

    min_agreement: float = Field(ge=0, le=1, description="fraction of images with the reference's top-1 class")
    max_top1_drop: float = Field(ge=0, description="allowed top-1 loss vs the reference, in points")
    min_cosine: float = Field(0.0, ge=-1, le=1, description="minimum mean logit cosine similarity")
    min_psnr_db: float | None = Field(None, description="minimum logit PSNR in dB (None: not judged)")
    max_kl_div: float | None = Field(None, ge=0, description="largest mean softmax KL, nats (None: not judged)")


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
    cost: CostConfig = Field(default_factory=CostConfig, description="ARM cost profile gates (edgevit.parity.cost)")

    @field_validator("tolerances", "device_tolerances", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any, info) -> Any:
        """A recipe's ``{int8: {min_agreement: 0.97}}`` overrides only the keys it names; the rest of that
        precision's default stays (so overriding one threshold never silently drops the others)."""
        defaults = DEFAULT_TOLERANCES if info.field_name == "tolerances" else DEFAULT_DEVICE_TOLERANCES
        if not isinstance(value, dict):
            return value
        return {
            p: ({**defaults[p].model_dump(), **t} if isinstance(t, dict) and p in defaults else t)
            for p, t in value.items()
        }

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
    cost: dict[str, Any] | None = None  # emulated ARM devices: how the artifacts were counted (edgevit.parity.cost)

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
            **({"cost": self.cost} if self.cost else {}),
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


def top_k(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Percent of rows of ``[N, K]`` ``logits`` whose label is among the ``k`` largest (ties: lower index first)."""
    k = min(k, logits.shape[-1])
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # [N, K] -> [N, k] class indices
    return float((top == np.asarray(labels)[:, None]).any(-1).mean() * 100.0)


def psnr_db(logits: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of ``logits`` vs ``reference`` over all values: ``10 log10(peak² / MSE)``, ``peak`` the reference's
    range ``max - min`` (logits have no fixed peak; their spread is the scale an error should be read against).
    ``inf`` when they are identical."""
    ref = reference.astype(np.float64)
    mse = float(np.mean((logits.astype(np.float64) - ref) ** 2))
    peak = float(ref.max() - ref.min())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(max(peak, 1e-12) ** 2 / mse)


def kl_div(logits: np.ndarray, reference: np.ndarray) -> float:
    """Mean over rows of ``KL(softmax(reference) || softmax(logits))`` in nats (how much probability mass the
    artifact moves; 0 when the distributions agree), computed in float64 with log-softmax."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(reference), log_softmax(logits)
    return float(np.mean((np.exp(log_p) * (log_p - log_q)).sum(-1)))


def metrics(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Top-1/top-5 (percent), argmax agreement (fraction), abs errors, mean cosine, PSNR (dB; None when the logits
    are identical) and mean softmax KL (nats) of ``[N, K]`` ``logits`` vs ``reference``."""
    err = np.abs(logits.astype(np.float64) - reference.astype(np.float64))
    num = (logits * reference).sum(-1, dtype=np.float64)
    den = np.linalg.norm(logits.astype(np.float64), axis=-1) * np.linalg.norm(reference.astype(np.float64), axis=-1)
    cos = num / np.maximum(den, 1e-12)
    psnr = psnr_db(logits, reference)
    return {
        "top1": float((logits.argmax(-1) == labels).mean() * 100.0),
        "top5": top_k(logits, labels, 5),
        "agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "cosine": float(cos.mean()),
        "psnr_db": None if math.isinf(psnr) else psnr,  # JSON has no infinity
        "kl_div": kl_div(logits, reference),
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


@dataclass(frozen=True)
class Violation:
    """One tolerance bound a metric missed: ``metric`` (``agreement``, ``top1_drop``, ``cosine``, ``psnr_db`` or
    ``kl_div``), its ``value`` and the ``bound``. ``str()`` is the message in ``parity.json``'s ``failures``;
    :attr:`margin` says by how much it missed."""

    metric: str
    value: float
    bound: float

    # metric -> (message label, value format, "<" for a lower bound / ">" for an upper bound, unit)
    _FORMS = {
        "agreement": ("agreement", ".4f", "<", ""),
        "top1_drop": ("top-1 drop", ".2f", ">", " points"),
        "cosine": ("cosine", ".6f", "<", ""),
        "psnr_db": ("PSNR", ".1f", "<", " dB"),
        "kl_div": ("KL divergence", ".2e", ">", ""),
    }

    def __str__(self) -> str:
        label, spec, op, unit = self._FORMS[self.metric]
        return f"{label} {self.value:{spec}}{unit} {op} {self.bound}"

    @property
    def margin(self) -> str:
        """``short by 0.0120`` / ``over by 2.00 points``: how far past its bound the value is."""
        _, spec, op, unit = self._FORMS[self.metric]
        spec = {"cosine": ".2e"}.get(self.metric, spec)
        if op == "<":
            return f"short by {self.bound - self.value:{spec}}{unit}"
        return f"over by {self.value - self.bound:{spec}}{unit}"


def judge(m: dict[str, float], reference_top1: float, tol: Tolerance) -> list[Violation]:
    """The tolerance violations of metrics ``m`` (empty when it passes), as :class:`Violation` s (``str()`` of each
    is the report's failure message)."""
    out = []
    if m["agreement"] < tol.min_agreement:
        out.append(Violation("agreement", m["agreement"], tol.min_agreement))
    drop = reference_top1 - m["top1"]
    if drop > tol.max_top1_drop:
        out.append(Violation("top1_drop", drop, tol.max_top1_drop))
    if m["cosine"] < tol.min_cosine:
        out.append(Violation("cosine", m["cosine"], tol.min_cosine))
    psnr = m.get("psnr_db")  # None: identical logits (infinite PSNR)
    if tol.min_psnr_db is not None and psnr is not None and psnr < tol.min_psnr_db:
        out.append(Violation("psnr_db", psnr, tol.min_psnr_db))
    if tol.max_kl_div is not None and m.get("kl_div") is not None and m["kl_div"] > tol.max_kl_div:
        out.append(Violation("kl_div", m["kl_div"], tol.max_kl_div))
    return out


def judge_vs_host(m: dict[str, float], tol: DeviceTolerance) -> list[str]:
    """The device-vs-host tolerance violations of metrics ``m`` (empty when it passes)."""
    failures = []
    if m["agreement"] < tol.min_agreement:
        failures.append(f"agreement with host run {m['agreement']:.4f} < {tol.min_agreement}")
    if tol.max_abs_err is not None and m["max_abs_err"] > tol.max_abs_err:
        failures.append(f"max abs diff from host run {m['max_abs_err']:.2e} > {tol.max_abs_err:.0e}")
    return failures


# Core ML compute units that let the GPU or the Neural Engine run part of a model. coremltools' "Typed Execution"
# guide (apple.github.io/coremltools/docs-guides/source/typed-execution.html): "The GPU and ANE use float 16 precision,
# and the CPU uses float 32", and "The CPU guarantees float 32 precision, so you can use the .cpuOnly property ... to
# enforce the higher precision". So an fp32 program is guaranteed fp32 only under CPU_ONLY; with the GPU or Neural
# Engine allowed, parts of it may compute in float16 (the guide's typed-execution example says an fp32 ML Program
# "will execute on a combination of the GPU and CPU", and the GPU may accumulate in float16 when the app sets
# MLModelConfiguration.allowLowPrecisionAccumulationOnGPU). The emulator checks the worst case there: fp16 throughout.
FP16_COMPUTE_UNITS = ("ALL", "CPU_AND_GPU", "CPU_AND_NE")


def emulated_runner(art: Artifact, compute_units: str | None = None) -> Runner:
    """A runner for ``art`` in edgevit's emulator of its runtime (Core ML off macOS): the artifact's input layout
    and shape checked (:meth:`Artifact.checked`), with ``execution`` saying how it ran.

    ``compute_units`` (Core ML's, as a device profile gives them): an fp32 program under ``ALL``, ``CPU_AND_GPU`` or
    ``CPU_AND_NE`` is run in float16 (the GPU/Neural Engine's precision, see :data:`FP16_COMPUTE_UNITS`): the
    coremltools ``add_fp16_cast`` pass rewrites the loaded program exactly as an fp16 conversion would. None or
    ``CPU_ONLY``: the program's own precision. An fp16 program is fp16 under any units.

    Raises:
        NotRunnable: no emulator for this backend.
        EdgeVitError: the emulator cannot run the artifact (e.g. an op it lacks).
    """
    if art.backend not in EMULATORS:
        raise NotRunnable(f"{art.backend} artifacts cannot run here and edgevit has no emulator for them")
    if art.backend != "coreml":
        return art.checked(importlib.import_module(EMULATORS[art.backend]).runner(art.path))
    from edgevit.parity import coreml as cm

    em = cm.Emulator(art.path)
    execution = cm.EXECUTION if em.fp16 else cm.EXECUTION.replace("per-op fp16 rounding", "fp32")
    if not em.fp16 and compute_units in FP16_COMPUTE_UNITS:
        from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

        program = cm.load_program(art.path)
        PASS_REGISTRY["common::add_fp16_cast"](program)  # what compute_precision=FLOAT16 does at conversion
        PASS_REGISTRY["common::const_elimination"](program)  # fp16 weights cast once, not per image
        em = cm.Emulator(program)
        execution = cm.EXECUTION.replace(
            ")", f": fp32 program run in fp16, as compute units {compute_units} let the GPU/Neural Engine run it)"
        )
    elif compute_units:
        execution = execution.replace(")", f"; compute units {compute_units})")
    (name,), out = list(em.inputs), em.outputs[0]

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(em({name: x})[out], dtype=np.float32)

    run.execution = execution
    return art.checked(run)


def artifact_runner(art: Artifact, threads: int = 1, compute_units: str | None = None) -> tuple[Runner, str]:
    """``(runner, execution)``: ``art`` in its runtime on this host (``"native"``), or where that runtime cannot run
    here (Core ML off macOS) in edgevit's emulator (:func:`emulated_runner`). The runner takes one image in the
    artifact's layout (:meth:`Artifact.feed`).

    Raises:
        NotRunnable: neither the runtime nor an emulator can run it here.
        EdgeVitError: the artifact is missing, or the emulator cannot run it.
    """
    try:
        return art.load(threads, compute_units), "native"
    except NotRunnable:
        if art.backend not in EMULATORS:
            raise
        runner = emulated_runner(art, compute_units)
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
        A :class:`ParityReport`.
    """
    import torch

    from edgevit.parity.devices import HOST

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
    ref_top1 = report.reference["top1"]
    units = getattr(device, "compute_units", None)  # Core ML's, from a device profile
    for art in artifacts:
        tol = config.tolerance(art.precision)
        art_images = art.feed(images)  # [N, C, H, W], or [N, H, W, C] for an NHWC export (its manifest says)
        entry: dict[str, Any] = {
            "backend": art.backend,
            "precision": art.precision,
            "quantizer": _quantizer_label(art.info),
            "path": str(art.path),
            "size_bytes": path_size(art.path),
            "runnable": True,
            "reason": None,
            "execution": None,
            **dict.fromkeys(_METRIC_KEYS),
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
            logits, entry["latency_ms"], entry["peak_memory_mb"] = device.run(art, art_images, config, progress)
            entry["execution"] = device.execution
        except NotRunnable as e:
            if device.emulated or art.backend not in EMULATORS or getattr(e, "final", False):
                entry.update(runnable=False, reason=str(e))
                report.artifacts.append(entry)
                continue
            try:  # no latency or memory: the emulator's are not the device's
                runner = emulated_runner(art, units)
                logits = run_all(runner, art_images, f"{art.backend} {art.precision} (emulated)", progress)
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
        entry["failures"] = [str(v) for v in judge(entry, ref_top1, tol)]
        if device.emulated:
            entry["vs_host"] = _vs_host(art, logits, art_images, labels, config, progress)
            entry["failures"] += entry["vs_host"]["failures"]
        entry["passed"] = not entry["failures"]
        report.artifacts.append(entry)
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


_METRIC_KEYS = ("top1", "top5", "agreement", "max_abs_err", "mean_abs_err", "cosine", "psnr_db", "kl_div")


def _note_emulated_runtimes(report: ParityReport) -> None:
    """Add a ``device.parts`` entry for each runtime an interpreter stood in for (Core ML off macOS), unless the
    device already describes it."""
    parts = report.device.setdefault("parts", [])
    for a in report.artifacts:
        execution = a.get("execution") or ""
        what = f"{a['backend']} runtime"
        if execution.startswith("emulated (") and not any(p["what"] == what for p in parts):
            parts.append({"what": what, "how": "emulated", "note": execution})


_VS_HOST_KEYS = ("agreement", "max_abs_err", "mean_abs_err", "cosine")


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
    m = {k: v for k, v in metrics(logits, host, labels).items() if k in _VS_HOST_KEYS}
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
    """Write the JSON and Markdown reports (names from :func:`report_names`) into ``out_dir`` atomically, and
    the self-contained HTML page with plots beside the Markdown (``report.html``, :mod:`edgevit.parity.html`)."""
    from edgevit.parity.html import write_html

    out_dir = Path(out_dir)
    doc = report.to_json()
    json_name, md_name = report_names(report.device["name"])
    json_path = write_json_atomic(out_dir / json_name, doc)
    md_path = write_text_atomic(out_dir / md_name, render_markdown(doc))
    write_html(doc, md_path.with_suffix(".html"))
    return json_path, md_path


def fmt(v: Any, spec: str, none: str = "–") -> str:
    """``format(v, spec)``, or ``none`` for a missing value (old or partial ``parity.json`` files, rows not run)."""
    return none if v is None else format(v, spec)


def render_markdown(doc: dict[str, Any]) -> str:
    """``report.md`` from a ``parity.json`` document (any schema version; missing fields show as ``–``).

    One table for every device: each artifact vs PyTorch (top-1/top-5, agreement, errors, cosine, PSNR, KL), with
    latency, its ratio to the reference measured in the same run and peak memory where they were measured, and,
    on an emulated device, the same artifact's run on this host ("ARM64 vs x86"). A device other than the host
    gets a header saying what it is, its profile, and which parts of it were real or emulated.
    """
    dev = doc.get("device") or {"name": "host", "emulated": False}
    ref, arts = doc["reference"], doc["artifacts"]
    emulated = bool(dev.get("emulated"))
    ref_lat = ref.get("latency_ms") or {}
    timed = not emulated or any(a.get("latency_ms") for a in arts)
    on_host = dev.get("name", "host") == "host"
    lines = [f"# Parity report{'' if on_host else ': ' + dev['name']}", ""]
    if not on_host:
        lines += [f"Device: {dev.get('description', dev['name'])}. {dev.get('note', '')}".rstrip(), ""]
        if dev.get("versions"):
            versions = dev["versions"].items()
            lines += [", ".join(f"{k}: {' '.join(v) if isinstance(v, list) else v}" for k, v in versions), ""]
        if dev.get("profile"):
            lines += [_profile_line(dev["profile"]), ""]
    if dev.get("parts"):
        lines += ["| part | how | note |", "|---|---|---|"]
        lines += [f"| {p['what']} | {p['how']} | {p['note']} |" for p in dev["parts"]] + [""]
    ref_ms = ref_lat.get("median")
    lines += [
        f"{doc['num_images']} validation images, batch 1, {doc['threads']} threads. Reference: PyTorch fp32"
        f"{' on this host' if not on_host else ''}, top-1 {ref['top1']:.2f}%, top-5 {fmt(ref.get('top5'), '.2f')}%"
        + (f", latency median {ref_ms:.3f} ms" if ref_ms is not None and timed else "")
        + "."
        + (' "ARM64 vs x86": the same artifact run by the host (x86-64) build of its runtime.' if emulated else ""),
        "",
        f"**Overall: {'PASS' if doc['passed'] else 'FAIL'}**",
        "",
    ]

    def host(key: str, spec: str) -> Callable[[dict], str]:
        return lambda a: fmt((a.get("vs_host") or {}).get(key), spec)

    def col(key: str, spec: str) -> Callable[[dict], str]:
        return lambda a: fmt(a.get(key), spec)

    def lat(key: str) -> Callable[[dict], str]:
        return lambda a: fmt((a.get("latency_ms") or {}).get(key), ".3f")

    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("backend", lambda a: a["backend"]),
        ("precision", lambda a: a["precision"]),
        ("quantizer", lambda a: a.get("quantizer") or "–"),
        ("runs here", _runs_here),
    ]
    if emulated:
        columns += [
            ("ARM64 vs x86: agreement", host("agreement", ".4f")),
            ("max abs diff", host("max_abs_err", ".2e")),
            ("mean abs diff", host("mean_abs_err", ".2e")),
        ]
    columns += [
        ("top-1 %", col("top1", ".2f")),
        ("top-5 %", col("top5", ".2f")),
        ("agreement", col("agreement", ".4f")),
        ("max abs err", col("max_abs_err", ".2e")),
        ("mean abs err", col("mean_abs_err", ".2e")),
        ("cosine", col("cosine", ".6f")),
        ("PSNR dB", _psnr_cell),
        ("KL nats", col("kl_div", ".2e")),
    ]
    if timed:
        columns += [
            ("latency median ms", lat("median")),
            ("p90 ms", lat("p90")),
            ("std ms", lat("std")),
            ("vs PyTorch", lambda a: _speed_ratio(ref_ms, (a.get("latency_ms") or {}).get("median"))),
            ("peak MiB", col("peak_memory_mb", ".1f")),
        ]
    not_run = "not run: " if on_host else "not run on this device: "
    columns += [
        ("size KiB", lambda a: fmt(None if a.get("size_bytes") is None else a["size_bytes"] / 1024, ".0f")),
        ("result", lambda a: _result_cell(a, not_run)),
    ]
    lines += ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(a) for _, cell in columns) + " |" for a in arts]
    lines += [
        "",
        "Agreement: fraction of images whose top-1 class equals PyTorch fp32's. Cosine: mean over images of the "
        "logit-vector cosine similarity. PSNR: of all logits vs PyTorch's, peak = PyTorch's logit range (∞: "
        "identical). KL: mean KL(softmax(PyTorch) ‖ softmax(artifact)) in nats."
        + (
            " Latency is host latency of the runtime named (median, p90 and std over the timed runs), not phone "
            "latency. Peak MiB: the rise of this process's resident memory while loading and running the artifact."
            if timed
            else ""
        ),
        "",
    ]
    if emulated:
        tols = {a["precision"]: a["vs_host"]["tolerance"] for a in arts if a.get("vs_host")}
        tol_text = "; ".join(
            f"{p}: agreement ≥ {t['min_agreement']}"
            + (f", max abs diff ≤ {t['max_abs_err']:.0e}" if t.get("max_abs_err") else "")
            for p, t in tols.items()
        )
        lines += [
            "ARM64 vs x86 thresholds (parity.device_tolerances): " + (tol_text or "–") + ". ARM64 vs PyTorch: "
            "the recipe's usual tolerances.",
            "",
        ]
    emulated_rows = sorted({f"{a['backend']}: {a['execution']}" for a in arts if _runs_here(a) == "emulated"})
    if emulated_rows:  # say which numbers no real runtime produced
        lines += [
            f"Emulated here, not run by the real runtime ({'; '.join(emulated_rows)}): these rows are checked "
            "against their tolerances like the others, but come from edgevit's interpreter of the converted program "
            "(`edgevit.parity.coreml`), not from Core ML on Apple hardware; latency is not reported for them.",
            "",
        ]
    if dev.get("ships"):
        lines += [
            f"{dev['name']} would ship: `{dev['ships']}` (the first passing artifact in the profile's "
            "backend, then precision, preference).",
            "",
        ]
    return "\n".join(lines) + render_cost_markdown(doc)


def _profile_line(profile: dict[str, Any]) -> str:
    """One sentence describing a device profile: backends, precisions, threads, input and compute units."""
    inp = profile.get("input") or {}
    threads = profile.get("threads") or "the recipe's"
    text = (
        f"Profile `{profile['name']}`: backends {' > '.join(profile.get('backends', []))}; precisions "
        f"{' > '.join(profile.get('precisions', []))}; {threads} threads; input "
        f"{inp.get('layout', 'NCHW')} {inp.get('dtype', 'float32')}"
    )
    if profile.get("compute_units"):
        text += f"; Core ML compute units {profile['compute_units']}"
    return text + "."


def _psnr_cell(a: dict[str, Any]) -> str:
    """PSNR in dB; ``∞`` for identical logits (stored as null, with a zero max error)."""
    if a.get("psnr_db") is None and a.get("max_abs_err") == 0:
        return "∞"
    return fmt(a.get("psnr_db"), ".1f")


def _speed_ratio(ref_ms: float | None, ms: float | None) -> str:
    """``2.00× faster`` / ``1.30× slower`` than the reference, or ``–``."""
    if not ref_ms or not ms:
        return "–"
    return f"{ref_ms / ms:.2f}× faster" if ms <= ref_ms else f"{ms / ref_ms:.2f}× slower"


def _result_cell(a: dict[str, Any], not_run: str) -> str:
    """``pass`` / ``FAIL (why)`` / ``{not_run}why``."""
    if not a["runnable"]:
        result = not_run + (a.get("reason") or "")
    else:
        result = "pass" if a["passed"] else "FAIL"
    if a.get("failures"):
        result += " (" + "; ".join(a["failures"]) + ")"
    if (a.get("vs_host") or {}).get("reason"):
        result += f" ({a['vs_host']['reason']})"
    return result


def _runs_here(a: dict[str, Any]) -> str:
    """``yes``, ``no``, or ``emulated`` (an interpreter of the artifact stood in for its runtime)."""
    if not a["runnable"]:
        return "no"
    return "emulated" if (a.get("execution") or "").startswith("emulated (") else "yes"


__all__ = [
    "DEFAULT_DEVICE_TOLERANCES",
    "DEFAULT_TOLERANCES",
    "DeviceTolerance",
    "ParityConfig",
    "ParityReport",
    "Tolerance",
    "PeakRSS",
    "Violation",
    "artifact_runner",
    "check",
    "emulated_runner",
    "fmt",
    "judge",
    "kl_div",
    "latency",
    "metrics",
    "psnr_db",
    "render_markdown",
    "report_names",
    "top_k",
    "write_report",
]
