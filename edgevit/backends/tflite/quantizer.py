"""LiteRT's quantizer: litert-torch's PT2E quantizer (static or dynamic int8; fake-quantized for QAT)."""

from __future__ import annotations

import torch.nn as nn

from edgevit.utils import require


def quantizer(precision: str, qat: bool = False):
    """litert-torch's ``PT2EQuantizer``: int8 symmetric per-channel weights, static or dynamic int8 activations;
    ``qat`` gives the QAT configuration of ``int8``."""
    require("litert_torch", "tflite")
    from litert_torch.quantize.pt2e_quantizer import (  # noqa: PLC0415 -- optional package
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    if qat:
        _wrap_litert_pattern_capture()
    dynamic = precision == "int8-dynamic" and not qat
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic, is_qat=qat)
    return PT2EQuantizer().set_global(config)


def _wrap_litert_pattern_capture() -> None:
    """Let litert-torch's QAT annotation capture its conv-BN patterns with torchao 0.18.

    litert-torch (0.10) hands plain functions to torchao's ``_get_aten_graph_module_for_pattern``, which now
    ``torch.export``s them and so takes modules only (``ValueError: Expected mod to be an instance of
    torch.nn.Module``); torchao's own callers wrap theirs in ``WrapperModule``, and so does this shim.
    """
    import litert_torch.quantize.pt2e_quantizer_utils as utils  # noqa: PLC0415 -- optional package
    from torchao.quantization.pt2e import WrapperModule  # noqa: PLC0415

    capture = utils._get_aten_graph_module_for_pattern
    if getattr(capture, "_edgevit_wrapped", False):
        return

    def wrapped(pattern, *args, **kwargs):
        return capture(pattern if isinstance(pattern, nn.Module) else WrapperModule(pattern), *args, **kwargs)

    wrapped._edgevit_wrapped = True
    utils._get_aten_graph_module_for_pattern = wrapped
