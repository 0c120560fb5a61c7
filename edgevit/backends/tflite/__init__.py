"""TFLite / LiteRT ``.tflite`` via litert-torch, run with the LiteRT interpreter (XNNPACK delegate)."""

from pathlib import Path

from edgevit.backends.base import Backend, TensorIO, register_backend


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

    def io_tensors(self, path: Path) -> tuple[TensorIO, TensorIO]:
        """From the interpreter: full-integer int8 files take and return int8 with the tensors' own scale."""
        return self._module("runtime").io_tensors(path)
