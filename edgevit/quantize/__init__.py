"""Post-training quantization with each backend's own quantizer.

The quantized graph must be the one the backend executes, so every backend quantizes with its own tool
(see the backend modules in :mod:`edgevit.export`):

============  ===============  ============================================================================
backend       precision        how
============  ===============  ============================================================================
executorch    ``int8``         PT2E + ``XNNPACKQuantizer``: int8 per-channel weights, static int8 activations
executorch    ``int8-dynamic`` PT2E + ``XNNPACKQuantizer(is_dynamic=True)``: activations quantized per call
tflite        ``int8``         PT2E + litert-torch's ``PT2EQuantizer``: full-integer, int8 input and output
tflite        ``int8-dynamic`` litert-torch dynamic-range (int8 weights, float activations between ops)
tflite        ``fp16``         ai-edge-quantizer float casting: fp16 weights, fp32 compute
coreml        ``int8``         PT2E + coremltools' ``CoreMLQuantizer`` (W8A8), then ``ct.convert``
coreml        ``w8`` / ``w4``  ``coremltools.optimize.coreml.linear_quantize_weights`` (int8 per-channel /
                               int4 per-block of 32), fp16 compute
coreml        ``w4-lut``       ``coremltools.optimize.coreml.palettize_weights``: 4-bit k-means LUT
coreml        ``sparse``       ``coremltools.optimize.coreml.prune_weights``: sparse storage of a sparsified model
onnx          ``int8``         ``onnxruntime.quantization.quantize_static``: QDQ, int8 per-channel weights
============  ===============  ============================================================================

Any of them can keep chosen modules float (``keep_float``), by hand or from an accuracy-controlled plan
(``max_drop``, see :mod:`edgevit.quantize.mixed`).

This module holds the part they share: capturing the model and calibrating it with the backend's PT2E
quantizer, either by plain observer calibration (``method: pt2e``) or with NNCF's algorithms
(``method: nncf``: ``nncf.experimental.torch.fx.quantize_pt2e`` with the same quantizer, optionally
SmoothQuant and fast or full bias correction), so both paths produce the same kind of artifact.
"""

from edgevit.quantize.capture import capture, export_program, is_quantized, shared_capture
from edgevit.quantize.ptq import CALIBRATED_PRECISIONS, PTQConfig, calibrate_pt2e

__all__ = [
    "CALIBRATED_PRECISIONS",
    "PTQConfig",
    "calibrate_pt2e",
    "capture",
    "export_program",
    "is_quantized",
    "shared_capture",
]
