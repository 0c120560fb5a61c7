"""Core ML ``.mlpackage`` (ML Program) via coremltools; run by Core ML on macOS, by edgevit's emulator elsewhere."""

from pathlib import Path

from edgevit.backends.base import Backend, Runner, register_backend


@register_backend
class CoreML(Backend):
    """Core ML: ``ct.convert`` of the ``torch.export`` program (fp16 compute by default; fp32; W8A8 ``int8`` from
    a PT2E graph; ``w8``/``w4``/``w4-lut``/``sparse`` weight compression with ``coremltools.optimize``)."""

    name = "coreml"
    suffix = ".mlpackage"
    precisions = ("fp16", "fp32", "int8", "w8", "w4", "w4-lut", "sparse")  # fp32: float32 compute (no fp16 casts)
    runtime = "Core ML (MLModel.predict, macOS)"

    def emulate(self, path: Path, compute_units: str | None = None) -> Runner:
        """edgevit's NumPy interpreter of the ML Program (:mod:`edgevit.backends.coreml.emulator`)."""
        return self._module("emulator").emulate_artifact(path, compute_units)
