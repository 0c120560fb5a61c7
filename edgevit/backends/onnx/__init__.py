"""ONNX ``.onnx`` via the ``torch.onnx`` dynamo exporter, run with ONNX Runtime; int8 is ORT's QDQ quantizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.backends.base import Backend, Runner, qat_backends, register_backend
from edgevit.utils import EdgeVitError


@register_backend
class ONNX(Backend):
    """ONNX: fp32 from ``torch.onnx.export(dynamo=True)``; int8 from ``onnxruntime.quantization.quantize_static``
    (QDQ) on the exported graph, which has no PT2E quantizer and no QAT mode."""

    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "int8")
    runtime = "ONNX Runtime (CPU execution provider)"

    def quantizer(self, precision: str, qat: bool = False):
        why = "ONNX int8 is quantized after export by onnxruntime's quantize_static, which has no QAT mode"
        if qat:
            qat_list = ", ".join(qat_backends())
            raise EdgeVitError(
                f"QAT is not available for onnx: {why}; QAT backends: {qat_list}. Use PTQ for onnx instead"
            )
        raise EdgeVitError("onnx has no PT2E quantizer: its int8 is onnxruntime's quantize_static on the export")

    def convert(self, model, example, path: Path, precision: str, calib=None, ptq=None) -> dict[str, Any]:
        from edgevit.backends.onnx.convert import convert  # noqa: PLC0415 -- heavy; on first use

        return convert(model, example, path, precision, calib, ptq)

    def load(self, path: Path, threads: int, compute_units: str | None = None) -> Runner:
        from edgevit.backends.onnx.runtime import load  # noqa: PLC0415

        return load(path, threads)

    def unsupported(self, ep) -> list:
        from edgevit.backends.onnx.convert import unsupported  # noqa: PLC0415

        return unsupported(ep)

    def trace(self, path: Path, model, example, **context):
        from edgevit.backends.onnx.trace import trace  # noqa: PLC0415

        return trace(path, model, example, **context)
