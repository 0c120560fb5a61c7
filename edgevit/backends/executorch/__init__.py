"""ExecuTorch ``.pte`` with the XNNPACK delegate: fp32, static int8 and dynamic int8 (XNNPACK's PT2E quantizer)."""

from edgevit.backends.base import Backend, register_backend


@register_backend
class ExecuTorch(Backend):
    """ExecuTorch: lowered like ``to_edge_transform_and_lower`` + ``XnnpackPartitioner`` (:mod:`.lowering`), run by
    ``executorch.runtime``; quantized with XNNPACK's PT2E quantizer (PTQ and QAT)."""

    name = "executorch"
    suffix = ".pte"
    precisions = ("fp32", "int8", "int8-dynamic")
    qat_label = "XNNPACKQuantizer via QAT"
    fold_quantize = True  # ExecuTorch takes int8 weight constants
    runtime = "ExecuTorch runtime (XNNPACK delegate)"
