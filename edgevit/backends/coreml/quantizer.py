"""Core ML's W8A8 quantizer: XNNPACK's PT2E scheme, which coremltools converts into Core ML quantize/dequantize ops.

coremltools' own ``CoreMLQuantizer`` imports ``torch.ao.quantization.quantizer``, which torch 2.14 removed, so it
cannot run with the torch edgevit pins. Its default scheme (int8 symmetric per-channel weights, int8 per-tensor
activations) is what XNNPACK's PT2E quantizer produces, and coremltools converts those quantize/dequantize nodes
into Core ML's ``quantize``/``dequantize`` ops (iOS 17+).
"""

from __future__ import annotations

from edgevit.backends.base import qat_backends
from edgevit.backends.pt2e import xnnpack_quantizer
from edgevit.utils import EdgeVitError

NO_QAT = "edgevit quantizes Core ML after training (PT2E W8A8, precision int8) only"


def quantizer(precision: str, qat: bool = False):
    """The PT2E quantizer for Core ML's ``int8`` (W8A8); weight-only precisions (``w8``, ``w4``, ``w4-lut``) are
    compressed after conversion by ``coremltools.optimize`` and take none.

    Raises:
        EdgeVitError: ``qat`` (Core ML has no QAT path here), or executorch (which brings the quantizer) is missing.
    """
    if qat:
        raise EdgeVitError(
            f"QAT is not available for coreml: {NO_QAT}; QAT backends: {', '.join(qat_backends())}. "
            "Use PTQ for coreml instead"
        )
    return xnnpack_quantizer(extra="executorch")
