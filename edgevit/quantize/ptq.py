"""Post-training quantization shared by the backends: PTQ settings, and calibrating a captured graph with a
backend's PT2E quantizer, by plain observer calibration or with NNCF's algorithms."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgevit.quantize.mixed import skip_modules
from edgevit.utils import EdgeVitError, progress_bar, require

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
