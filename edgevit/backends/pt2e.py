"""PT2E quantizer set-ups that more than one backend uses, defined once.

XNNPACK's int8 scheme (int8 symmetric per-channel weights, int8 per-tensor activations) is ExecuTorch's, and also
what edgevit quantizes Core ML's W8A8 with (see :mod:`edgevit.backends.coreml.quantizer`), so it lives here rather
than in either backend package (backend packages never import each other).
"""

from __future__ import annotations

from edgevit.utils import require


def xnnpack_quantizer(dynamic: bool = False, qat: bool = False, extra: str = "executorch"):
    """ExecuTorch's ``XNNPACKQuantizer`` with int8 symmetric per-channel weights and int8 activations: static,
    ``dynamic`` (quantized per call) or, with ``qat``, fake-quantized for training.

    For PTQ the conv-BN[-ReLU] patterns are dropped: they are QAT-only (``prepare_pt2e`` folds batch norm into the
    conv before annotating) and matching them re-exports 12 pattern graphs on every call, several seconds of each
    PTQ run for nothing (see docs/design-notes.md).

    Raises:
        EdgeVitError: executorch is not installed (naming the pip extra ``extra`` that brings it).
    """
    require("executorch", extra)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (  # noqa: PLC0415 -- optional package
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic, is_qat=qat)
    if qat:
        return XNNPACKQuantizer().set_global(config)

    class PTQXNNPACKQuantizer(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]

    return PTQXNNPACKQuantizer().set_global(config)
