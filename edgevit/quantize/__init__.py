"""Post-training quantization: ``quantize(model, PTQConfig(...), calib_images, example)``.

Today: static int8 with PT2E and ExecuTorch's XNNPACK quantizer (per-channel symmetric int8 weights,
per-tensor asymmetric int8 activations), the graph XNNPACK executes.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from edgevit._utils import EdgeVitError, progress_bar, require


class PTQConfig(BaseModel):
    """Post-training quantization settings (the ``quantize:`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["pt2e"] = "pt2e"
    quantizer: Literal["xnnpack"] = "xnnpack"
    per_channel: bool = True
    calib_images: int = Field(256, ge=1, description="training images used to calibrate activation ranges")


def quantize(
    model: torch.nn.Module, config: PTQConfig, calib: torch.Tensor, example: torch.Tensor, progress: bool = True
) -> torch.fx.GraphModule:
    """Quantize ``model`` to static int8 with PT2E.

    Args:
        model: a float model (not modified).
        config: the PTQ settings.
        calib: ``[N, C, H, W]`` calibration images (from the training split), fed one at a time.
        example: a ``[1, C, H, W]`` input fixing the exported shape.
        progress: show a progress bar over calibration images.

    Returns:
        The converted ``GraphModule`` with quantize/dequantize nodes; runs in PyTorch (simulating int8)
        and lowers to XNNPACK int8 kernels with :func:`edgevit.export.export`; save it with
        ``export(q, example, "pytorch", "model.pt2", "int8")``.
    """
    require("executorch", "executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=config.per_channel))
    try:
        graph = torch.export.export(model.eval(), (example,)).module()
    except Exception as e:
        raise EdgeVitError(f"torch.export could not capture the model for quantization: {e}") from e
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad(), progress_bar(progress) as bars:
        task = bars.add_task("calibrate", total=len(calib), info="")
        for i in range(len(calib)):
            prepared(calib[i : i + 1])
            bars.update(task, advance=1)
    return convert_pt2e(prepared)


__all__ = ["PTQConfig", "quantize"]
