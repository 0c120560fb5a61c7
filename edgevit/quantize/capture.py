"""Capturing a model with ``torch.export`` (once per model and example inside :func:`shared_capture`: the fp32,
int8 and NNCF variants of one run share it), and telling a quantized graph from a float one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from edgevit.utils import EdgeVitError


def capture(model: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> torch.fx.GraphModule:
    """``torch.export`` the eval-mode ``model`` at ``example``'s shape (any batch size with ``dynamic_batch``);
    the graph PT2E quantizers annotate: a fresh ``.module()`` (shared capture inside :func:`shared_capture`)."""
    try:
        if not dynamic_batch:
            return export_program(model.eval(), example).module()
        dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},)
        return torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic).module()
    except Exception as e:
        raise EdgeVitError(f"torch.export could not capture the model for quantization: {e}") from e


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a PT2E-converted graph (has quantize/dequantize nodes)."""
    if not isinstance(model, torch.fx.GraphModule):
        return False
    return any(n.op == "call_function" and "quantize_per" in str(n.target) for n in model.graph.nodes)


# (model, example, parameter versions) -> ExportedProgram, while a shared_capture() block is open
_captures: list[dict] = []


def _capture_key(model: torch.nn.Module, example: torch.Tensor) -> tuple:
    versions = tuple(t._version for t in model.state_dict(keep_vars=True).values())
    return id(model), id(example), example._version, tuple(example.shape), model.training, versions


@contextlib.contextmanager
def shared_capture() -> Iterator[None]:
    """Within the block, :func:`export_program` captures each (model, example) once: the fp32, int8, NNCF and
    dynamic int8 ExecuTorch exports of one model (and their op checks) share one ``torch.export``; int8 quantizes a
    fresh ``.module()`` of it, and nothing modifies the shared program. A model or example changed in place is
    captured anew. Other backends capture their own (litert-torch edits its program in place).

    How a run uses it (:func:`edgevit.recipe.stage_export`)::

        with shared_capture():
            for t in targets:
                export(model, example, t.backend, path, precision, calib=calib, ptq=t_ptq, layout=t.layout)
    """
    _captures.append({})
    try:
        yield
    finally:
        _captures.pop()


def export_program(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export.export(model, (example,))``; inside :func:`shared_capture`, once per model and example.

    Raises:
        Whatever ``torch.export`` raises for a model it cannot capture.
    """
    if not _captures:
        return torch.export.export(model, (example,))
    cache, key = _captures[-1], _capture_key(model, example)
    hit = cache.get(key)
    if hit is None or hit[0] is not model or hit[1] is not example:
        hit = cache[key] = (model, example, torch.export.export(model, (example,)))
    return hit[2]
