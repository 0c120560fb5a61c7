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

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgevit._utils import EdgeVitError, progress_bar

# precisions with static activation ranges: they need calibration images (dynamic and weight-only ones do not)
CALIBRATED_PRECISIONS = frozenset({"int8"})


class PTQConfig(BaseModel):
    """Post-training quantization settings (the ``quantize:`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["pt2e", "nncf"] = "pt2e"
    calib_images: int = Field(256, ge=1, description="training images used to calibrate activation ranges")
    smooth_quant: bool = Field(False, description="nncf only: migrate activation outliers into the weights")
    bias_correction: Literal["fast", "full", "none"] = Field("fast", description="nncf only")
    max_drop: float | None = Field(
        None, ge=0, description="accuracy control: keep the most int8-sensitive layers float until top-1 drops <= this"
    )
    accuracy_images: int = Field(300, ge=10, description="validation images the max_drop plan is measured on")
    keep_float: list[str] = Field(default_factory=list, description="module paths that stay float (e.g. blocks.0.attn)")

    @model_validator(mode="after")
    def _nncf_options_need_nncf(self) -> PTQConfig:
        if self.method == "pt2e" and (self.smooth_quant or self.bias_correction != "fast"):
            raise ValueError("smooth_quant and bias_correction are NNCF algorithms: set method: nncf")
        return self

    def describe(self) -> dict[str, Any]:
        """What the artifact manifest records about how it was quantized."""
        out: dict[str, Any] = {"method": self.method}
        if self.method == "nncf":
            out.update(smooth_quant=self.smooth_quant, bias_correction=self.bias_correction)
        if self.keep_float:
            out["float_modules"] = list(self.keep_float)
        return out


def capture(model: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> torch.fx.GraphModule:
    """``torch.export`` the eval-mode ``model`` at ``example``'s shape (any batch size with ``dynamic_batch``);
    the graph PT2E quantizers annotate."""
    dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    try:
        return torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic).module()
    except Exception as e:
        raise EdgeVitError(f"torch.export could not capture the model for quantization: {e}") from e


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a PT2E-converted graph (has quantize/dequantize nodes)."""
    if not isinstance(model, torch.fx.GraphModule):
        return False
    return any(n.op == "call_function" and "quantize_per" in str(n.target) for n in model.graph.nodes)


def calibrate_pt2e(
    graph: torch.fx.GraphModule,
    quantizer,
    calib: torch.Tensor | None,
    backend: str,
    progress: bool = True,
    fold_quantize: bool = True,
    config: PTQConfig | None = None,
) -> torch.fx.GraphModule:
    """``prepare_pt2e`` with ``quantizer``, run ``calib`` images one at a time, ``convert_pt2e``; or, with
    ``config.method == "nncf"``, NNCF's ``quantize_pt2e`` with the same quantizer and images.

    Args:
        graph: from :func:`capture`.
        quantizer: a PT2E ``Quantizer`` (XNNPACK, litert-torch or Core ML).
        calib: ``[N, C, H, W]`` training images; ``None`` for dynamic quantization (one pass of zeros
            settles the placeholders).
        backend: for error messages.
        progress: a progress bar over calibration images.
        fold_quantize: store weights as int8 constants (``True``, what ExecuTorch and coremltools take) or keep
            float weights behind quantize nodes (``False``, what litert-torch's converter expects).
        config: the PTQ method and NNCF options (default: plain PT2E calibration).

    Returns:
        The converted graph with quantize/dequantize nodes around the ops the quantizer annotated.

    Raises:
        EdgeVitError: the quantizer annotated nothing (the model would silently stay float).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: PLC0415 -- optional package (edgevit[executorch])

    if config is not None and config.keep_float:  # accuracy control: these modules stay float
        from edgevit.quantize.mixed import skip_modules

        quantizer = skip_modules(quantizer, keep_float=config.keep_float)
    if calib is None:  # weight observers still need one pass (per-channel scales come from it)
        calib = torch.zeros(next(n for n in graph.graph.nodes if n.op == "placeholder").meta["val"].shape)
    if config is not None and config.method == "nncf":
        return _nncf_quantize(graph, quantizer, calib, config, fold_quantize)
    prepared = prepare_pt2e(graph, quantizer)
    observed = [n for n in prepared.graph.nodes if n.op == "call_module" and "activation_post_process" in n.target]
    if not observed:
        raise EdgeVitError(f"the {backend} quantizer found nothing to quantize in this model")
    with torch.no_grad(), progress_bar(progress) as bars:
        task = bars.add_task(f"calibrate {backend}", total=len(calib), info="")
        for i in range(len(calib)):
            prepared(calib[i : i + 1])
            bars.update(task, advance=1)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


def _nncf_quantize(graph, quantizer, calib: torch.Tensor, config: PTQConfig, fold_quantize: bool):
    """NNCF's PT2E entry point: its range estimators, SmoothQuant and bias correction on the quantizer's setup."""
    from edgevit._utils import require

    nncf = require("nncf", "nncf")
    from nncf.experimental.torch.fx import quantize_pt2e  # noqa: PLC0415 -- optional package (edgevit[nncf])

    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    bias = {"fast": True, "full": False, "none": None}[config.bias_correction]
    try:
        with torch.no_grad():
            return quantize_pt2e(
                graph,
                quantizer,
                dataset,
                subset_size=len(calib),
                fast_bias_correction=bias,
                smooth_quant=config.smooth_quant,
                fold_quantize=fold_quantize,
            )
    except Exception as e:  # NNCF's graph passes fail on some quantizers' graphs (full bias correction on litert's)
        raise EdgeVitError(
            f"NNCF quantize_pt2e failed ({config.describe()}): {type(e).__name__}: {e}; "
            "try bias_correction: fast, or method: pt2e"
        ) from e


__all__ = ["CALIBRATED_PRECISIONS", "PTQConfig", "calibrate_pt2e", "capture", "is_quantized"]
