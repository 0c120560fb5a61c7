"""Which ops of a model a backend cannot take, and where they come from — found before any calibration.

Every converter fails on an op it has no lowering for, but only after tracing (and, for int8, after minutes
of calibration), and its message names a graph node, not the layer a user wrote. Here the model is captured
once and run through the same decompositions the backend's converter runs, and every remaining op is looked
up in that converter's own registry:

==========  ===========================================================================================
executorch  ExecuTorch's ATen-dialect verifier (core ATen opset) after its default decompositions
tflite      litert-torch's lowering registry after its pre-convert and pre-lower decompositions
coreml      coremltools' torch-frontend op registry (``_TORCH_OPS_REGISTRY``)
onnx        ``torch.onnx``'s torchlib registry after its ONNX-friendly decompositions
==========  ===========================================================================================

Each backend provides ``unsupported(ep) -> list[torch.fx.Node]`` (:class:`edgevit.backends.Backend`); this module
maps the nodes back to
the module path and class (``nn_module_stack``) and the source line they were traced from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from edgevit.backends import get_backend
from edgevit.quantize.capture import export_program
from edgevit.utils import EdgeVitError, quiet


@dataclass(frozen=True)
class UnsupportedOp:
    """One op a backend cannot convert: the ATen op, the module that calls it, the source line."""

    op: str
    module_path: str
    module_type: str
    source: str

    def __str__(self) -> str:
        where = f"module '{self.module_path}' ({self.module_type})" if self.module_path else "the model's forward"
        return f"{self.op} in {where}" + (f", at {self.source}" if self.source else "")


def _origin(node: torch.fx.Node) -> tuple[str, str, str]:
    """``(module path, module class, last source line)`` a traced node came from."""
    stack = node.meta.get("nn_module_stack") or {}
    path, typ = "", ""
    if stack:
        path, typ = list(stack.values())[-1]
        path = path.removeprefix("L['self'].").removeprefix("L__self__.")
        typ = typ.rsplit(".", 1)[-1] if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    frames = [ln.strip() for ln in (node.meta.get("stack_trace") or "").splitlines() if ln.strip().startswith("File")]
    frames = [f for f in frames if f"{os.sep}torch{os.sep}" not in f]  # the user's line, not torch.nn's
    source = frames[-1].removeprefix("File ") if frames else ""
    return path, typ, source


def unsupported_ops(model: torch.nn.Module, example: torch.Tensor, backend: str) -> list[UnsupportedOp]:
    """The ops of ``model`` (traced at ``example``'s shape) that ``backend``'s converter has no lowering for.

    One entry per (op, module path); empty when the whole model converts.

    Raises:
        EdgeVitError: ``torch.export`` cannot capture the model (the message says why).
    """
    b = get_backend(backend)
    try:
        with quiet():
            ep = export_program(model.eval(), example)  # shared with the export inside shared_capture()
    except Exception as e:
        raise EdgeVitError(f"torch.export could not capture the model for {backend}: {e}") from e
    found: dict[tuple[str, str], UnsupportedOp] = {}
    with quiet():
        nodes = b.unsupported(ep)
    for node in nodes:
        op = str(getattr(node.target, "_name", None) or node.target).replace("::", ".")
        path, typ, source = _origin(node)
        found.setdefault((op, path), UnsupportedOp(op, path, typ, source))
    return list(found.values())


def check_ops(model: torch.nn.Module, example: torch.Tensor, backend: str, precision: str) -> None:
    """Raise before any calibration if ``backend`` cannot take every op of ``model``.

    Raises:
        EdgeVitError: naming each unsupported op with its module path and source line.
    """
    bad = unsupported_ops(model, example, backend)
    if bad:
        listed = "; ".join(str(b) for b in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise EdgeVitError(
            f"{backend} {precision}: the {backend} converter cannot handle {listed}. "
            "Replace the op in that module or export to another backend (nothing was calibrated or written)."
        )


__all__ = ["UnsupportedOp", "check_ops", "unsupported_ops"]
