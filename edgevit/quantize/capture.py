"""Capturing a model for PT2E quantization, and telling a quantized graph from a float one."""

from __future__ import annotations

import torch

from edgevit._utils import EdgeVitError


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
