"""ONNX ``.onnx`` via the ``torch.onnx`` dynamo exporter, run with ONNX Runtime; int8 is ORT's QDQ quantizer."""

from edgevit.backends.base import Backend, qat_backends, register_backend
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
        """None: ONNX int8 is quantized after export (see :mod:`edgevit.backends.onnx.convert`).

        Raises:
            EdgeVitError: always, saying what to use instead.
        """
        why = "ONNX int8 is quantized after export by onnxruntime's quantize_static, which has no QAT mode"
        if qat:
            qat_list = ", ".join(qat_backends())
            raise EdgeVitError(f"QAT is not available for onnx: {why}; QAT backends: {qat_list}. Use PTQ instead")
        raise EdgeVitError("onnx has no PT2E quantizer: its int8 is onnxruntime's quantize_static on the export")
