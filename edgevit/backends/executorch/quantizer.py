"""ExecuTorch's quantizer: XNNPACK's PT2E scheme (static or dynamic int8; fake-quantized for QAT)."""

from __future__ import annotations

from edgevit.backends.pt2e import xnnpack_quantizer


def quantizer(precision: str, qat: bool = False):
    """``XNNPACKQuantizer``: int8 symmetric per-channel weights; activations static (``int8``) or dynamic
    (``int8-dynamic``) int8; ``qat`` gives the QAT configuration of ``int8`` (fake-quantize modules)."""
    return xnnpack_quantizer(dynamic=precision == "int8-dynamic" and not qat, qat=qat)
