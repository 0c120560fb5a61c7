"""Core ML ``.mlpackage`` (ML Program) via coremltools; run by Core ML on macOS, by edgevit's emulator elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.backends.base import Backend, Runner, register_backend


@register_backend
class CoreML(Backend):
    """Core ML: ``ct.convert`` of the ``torch.export`` program (fp16 compute by default; fp32; W8A8 ``int8`` from
    a PT2E graph; ``w8``/``w4``/``w4-lut``/``sparse`` weight compression with ``coremltools.optimize``)."""

    name = "coreml"
    suffix = ".mlpackage"
    precisions = ("fp16", "fp32", "int8", "w8", "w4", "w4-lut", "sparse")  # fp32: float32 compute (no fp16 casts)
    runtime = "Core ML (MLModel.predict, macOS)"

    def quantizer(self, precision: str, qat: bool = False):
        from edgevit.backends.coreml.quantizer import quantizer  # noqa: PLC0415 -- heavy; on first use

        return quantizer(precision, qat)

    def convert(self, model, example, path: Path, precision: str, calib=None, ptq=None) -> dict[str, Any]:
        from edgevit.backends.coreml.convert import convert  # noqa: PLC0415

        return convert(model, example, path, precision, calib, ptq)

    def load(self, path: Path, threads: int, compute_units: str | None = None) -> Runner:
        from edgevit.backends.coreml.runtime import load  # noqa: PLC0415

        return load(path, threads, compute_units)

    def emulate(self, path: Path, compute_units: str | None = None) -> Runner:
        from edgevit.backends.coreml.emulator import emulate_artifact  # noqa: PLC0415

        return emulate_artifact(path, compute_units)

    def unsupported(self, ep) -> list:
        from edgevit.backends.coreml.convert import unsupported  # noqa: PLC0415

        return unsupported(ep)

    def trace(self, path: Path, model, example, **context):
        from edgevit.backends.coreml.trace import trace  # noqa: PLC0415

        return trace(path, model, example, **context)
