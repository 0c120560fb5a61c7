"""TFLite / LiteRT ``.tflite`` via litert-torch, run with the LiteRT interpreter (XNNPACK delegate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.backends.base import Backend, Runner, TensorIO, register_backend


@register_backend
class TFLite(Backend):
    """LiteRT: converted with ``litert_torch.convert``, quantized with litert-torch's PT2E quantizer (PTQ and QAT;
    int8 is full-integer with int8 input and output), fp16 weights with ai-edge-quantizer."""

    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8", "int8-dynamic")
    qat_label = "litert_torch PT2EQuantizer via QAT"
    fold_quantize = False  # litert-torch's converter wants float weights behind quantize nodes
    runtime = "LiteRT interpreter (ai-edge-litert, XNNPACK delegate)"

    def quantizer(self, precision: str, qat: bool = False):
        from edgevit.backends.tflite.quantizer import quantizer  # noqa: PLC0415 -- heavy; on first use

        return quantizer(precision, qat)

    def convert(self, model, example, path: Path, precision: str, calib=None, ptq=None) -> dict[str, Any]:
        from edgevit.backends.tflite.convert import convert  # noqa: PLC0415

        return convert(model, example, path, precision, calib, ptq)

    def load(self, path: Path, threads: int, compute_units: str | None = None) -> Runner:
        from edgevit.backends.tflite.runtime import load  # noqa: PLC0415

        return load(path, threads)

    def io_tensors(self, path: Path) -> tuple[TensorIO, TensorIO]:
        """From the interpreter: full-integer int8 files take and return int8 with the tensors' own scale."""
        from edgevit.backends.tflite.runtime import io_tensors  # noqa: PLC0415

        return io_tensors(path)

    def unsupported(self, ep) -> list:
        from edgevit.backends.tflite.convert import unsupported  # noqa: PLC0415

        return unsupported(ep)

    def trace(self, path: Path, model, example, **context):
        from edgevit.backends.tflite.trace import trace  # noqa: PLC0415

        return trace(path, model, example, **context)
