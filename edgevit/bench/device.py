"""``edgevit bench --device android-arm64 MODELS...``: zoo models side by side on an emulated ARM core, counted.

Each model (random weights, perturbed away from the initialisation like :func:`edgevit.bench.bench`) is exported to
ExecuTorch, LiteRT and ONNX Runtime at each precision and run under the counting emulator on the device's core
(:func:`edgevit.targets.cost.measure`): instructions per inference, the arithmetic mix and an estimated cycle bound,
one thread. Counts, not time: the numbers are exact and repeat on any host, and the ratios between artifacts are
what they are for (int8 vs fp32 of one backend, one backend vs another on the same kernels); see
``docs/guides/arm-cost.md`` for what they are not.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from edgevit.backends import get_backend
from edgevit.bench import perturb_, resolve_precision
from edgevit.data import calibration_batch, digits
from edgevit.export import Artifact, export
from edgevit.models import create_model
from edgevit.models.profile import profile
from edgevit.parity.devices import get_device
from edgevit.utils import EdgeVitError, path_size, progress_bar

DEVICE_BACKENDS = ("executorch", "tflite", "onnx")


def bench_device(
    models: list[str],
    device: str = "android-arm64",
    img_size: int | None = None,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    backends: tuple[str, ...] = DEVICE_BACKENDS,
    keep: str | Path | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Count registry ``models`` on ``device``'s ARM core, each backend and precision side by side.

    Args:
        models: registry names (random weights; counts do not depend on trained values).
        device: an emulated target (``android-arm64``, its default core) or a device profile with an
            ``arm64_target`` (its ``qemu_cpu``: ``android-a55``, ``android-a76``, ``android-a710``, ``raspberry-pi``).
        img_size: resolution (default: each model's native one).
        precisions: ``fp32`` (each backend's float) and/or quantized ones the backend exports; static int8
            calibrates on 32 digits images at the model's resolution.
        backends: which runtimes.
        keep: a directory to keep the exported artifacts in (``MODEL_BACKEND_PRECISION.ext``; ones already there
            are reused, so a rerun only counts); default a temp dir.
        cache: the emulated target's cache.
        progress: show a progress bar.

    Returns:
        ``{"device", "cpu", "core", "versions", "results": [{"model", "backend", "precision", "macs",
        "input_size", "size_bytes", "instructions", "cycles", "bound_by", "mix", "vs_fp32", "vs_tflite",
        "macs_per_cycle", "functions"}]}``; ``vs_fp32``: estimated cycles / the same backend's fp32 artifact's,
        ``vs_tflite``: / LiteRT's at the same precision (< 1: costs less).

    Raises:
        EdgeVitError: ``device`` cannot count (not an emulated ARM target, or not set up), an unknown model.
    """
    dev = get_device(device, cache)
    if not getattr(dev, "cost_cpu", None):
        raise EdgeVitError(
            f"{device} cannot count instructions: use an emulated ARM target (android-arm64) or a device profile "
            "whose arm64_target is set up (`edgevit target setup android-arm64`)"
        )
    dev.ensure_ready()
    target = dev.inner.target if hasattr(dev, "inner") else dev.target
    jobs = [(b, p) for b in backends for p in precisions if resolve_precision(b, p) is not None]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-arm-") as tmp, progress_bar(progress) as bars:
        out = Path(keep) if keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        task = bars.add_task(f"bench on {device} ({dev.cost_cpu})", total=len(models) * len(jobs), info="")
        for name in models:
            torch.manual_seed(0)
            model = perturb_(create_model(name, **({"img_size": img_size} if img_size else {})).eval())
            prof = profile(model)
            x = torch.randn(1, *prof["input_size"])
            calib = None
            if any(p == "int8" for _, p in jobs):
                cfg = model.default_cfg
                calib = calibration_batch(digits(prof["input_size"][-1], mean=cfg["mean"], std=cfg["std"]).train, 32)
            rows = []
            for backend, precision in jobs:
                precision = resolve_precision(backend, precision)
                path = out / f"{name}_{backend}_{precision}{get_backend(backend).suffix}"
                bars.update(task, info=f"{name} {backend} {precision}: export")
                if keep and path.is_file():  # kept from an earlier run with the same keep directory
                    art = Artifact(backend=backend, precision=precision, path=path)
                else:
                    art = export(model, x, backend, path, precision, calib=calib)
                bars.update(task, info=f"{name} {backend} {precision}: counting on {dev.cost_cpu}")
                cost = dev.cost_profile(art, x[0].numpy(), progress=False)
                rows.append(
                    {
                        "model": name,
                        "backend": backend,
                        "precision": precision,
                        "macs": prof["macs"],
                        "input_size": prof["input_size"],
                        "size_bytes": path_size(path),
                        "instructions": cost["instructions"],
                        "cycles": cost["cycles"]["cycles"],
                        "bound_by": cost["cycles"]["bound_by"],
                        "mix": cost["mix"],
                        "macs_per_cycle": prof["macs"] / cost["cycles"]["cycles"],
                        "functions": cost["functions"][:6],
                    }
                )
                bars.update(task, advance=1)
            for r in rows:
                fp32 = next((o for o in rows if o["backend"] == r["backend"] and o["precision"] == "fp32"), None)
                lite = next((o for o in rows if o["backend"] == "tflite" and o["precision"] == r["precision"]), None)
                r["vs_fp32"] = r["cycles"] / fp32["cycles"] if fp32 else None
                r["vs_tflite"] = r["cycles"] / lite["cycles"] if lite else None
            results += rows
    return {
        "device": device,
        "cpu": dev.cost_cpu,
        "versions": target.versions() if hasattr(target, "versions") else {},
        "results": results,
    }


def render_markdown(doc: dict[str, Any]) -> str:
    """The bench results as Markdown: per model, each artifact's M instructions, M estimated cycles, the bound,
    the main classes of the mix and the ratios."""
    lines = [
        f"# ARM cost on {doc['device']} ({doc['cpu']}), per inference, one thread",
        "",
        "Instructions counted exactly under QEMU; estimated cycles: a throughput bound from the core's pipes "
        "(not latency). vs fp32 / vs LiteRT: estimated-cycle ratios (< 1: cheaper).",
        "",
    ]
    shown = ("fmla/fmul", "sdot/udot", "smmla", "loads", "stores", "branches")
    head = ["model", "backend", "precision", "M MACs", "M instr", "M cycles", "bound", *shown, "vs fp32", "vs LiteRT"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["results"]:
        cells = [
            r["model"],
            r["backend"],
            r["precision"],
            f"{r['macs'] / 1e6:.1f}",
            f"{r['instructions'] / 1e6:.2f}",
            f"{r['cycles'] / 1e6:.2f}",
            r["bound_by"],
            *(f"{r['mix'].get(k, 0) / 1e6:.2f}" for k in shown),
            "–" if r["vs_fp32"] is None else f"{r['vs_fp32']:.3f}",
            "–" if r["vs_tflite"] is None else f"{r['vs_tflite']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    v = doc.get("versions") or {}
    if v:
        lines += ["", f"Runtimes: {', '.join(v.get('runtimes', []))}; {v.get('executorch', '')}."]
        lines += [f"Emulator: {v.get('counting_qemu', '?')}; guest: {v.get('guest', '?')}."]
    return "\n".join(lines) + "\n"


__all__ = ["DEVICE_BACKENDS", "bench_device", "render_markdown"]
