"""ExecuTorch ``.pte`` with the XNNPACK delegate: fp32, static int8 and dynamic int8 (XNNPACK's PT2E quantizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.backends.base import Backend, Runner, register_backend


@register_backend
class ExecuTorch(Backend):
    """ExecuTorch: lowered with ``to_edge_transform_and_lower`` + ``XnnpackPartitioner``, run by
    ``executorch.runtime``; quantized with XNNPACK's PT2E quantizer (PTQ and QAT)."""

    name = "executorch"
    suffix = ".pte"
    precisions = ("fp32", "int8", "int8-dynamic")
    qat_label = "XNNPACKQuantizer via QAT"
    fold_quantize = True  # ExecuTorch takes int8 weight constants
    runtime = "ExecuTorch runtime (XNNPACK delegate)"

    def quantizer(self, precision: str, qat: bool = False):
        from edgevit.backends.executorch.quantizer import quantizer  # noqa: PLC0415 -- heavy; on first use

        return quantizer(precision, qat)

    def convert(self, model, example, path: Path, precision: str, calib=None, ptq=None) -> dict[str, Any]:
        from edgevit.backends.executorch.convert import convert  # noqa: PLC0415

        return convert(model, example, path, precision, calib, ptq)

    def load(self, path: Path, threads: int, compute_units: str | None = None) -> Runner:
        from edgevit.backends.executorch.runtime import load  # noqa: PLC0415

        return load(path, threads)

    def unsupported(self, ep) -> list:
        from edgevit.backends.executorch.convert import unsupported  # noqa: PLC0415

        return unsupported(ep)

    def trace(self, path: Path, model, example, **context):
        from edgevit.backends.executorch.trace import trace  # noqa: PLC0415

        return trace(path, model, example, **context)
