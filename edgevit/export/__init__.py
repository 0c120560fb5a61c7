"""Export to ExecuTorch, TFLite/LiteRT, Core ML and ONNX; every artifact is an :class:`Artifact`."""

from __future__ import annotations

from pathlib import Path

import torch

from edgevit._utils import EdgeVitError, quiet
from edgevit.export.artifact import BACKENDS, DEFAULT_PRECISION, Artifact, NotRunnable, Runner, backend_module


def export(
    model: torch.nn.Module, example: torch.Tensor, backend: str, path: str | Path, precision: str | None = None
) -> Artifact:
    """Lower ``model`` for ``backend`` at the fixed input shape of ``example`` and write ``path`` atomically.

    Args:
        model: an eval-mode ``nn.Module``; for ``precision="int8"`` the PT2E-quantized module from
            :func:`edgevit.quantize.quantize`.
        example: a ``[1, C, H, W]`` input (its shape is baked into the artifact).
        backend: one of ``executorch``, ``tflite``, ``coreml``, ``onnx``.
        path: output file (``.pte``, ``.tflite``, ``.mlpackage`` directory, ``.onnx``).
        precision: label of the artifact's precision; defaults to the backend's float precision.

    Returns:
        The :class:`Artifact`, with export facts (e.g. delegation coverage) in ``info``.

    Raises:
        EdgeVitError: unknown backend, unsupported precision, a missing backend package, or a failed lowering.
    """
    mod = backend_module(backend)
    precision = precision or DEFAULT_PRECISION[backend]
    if precision not in mod.PRECISIONS:
        raise EdgeVitError(f"{backend} export supports precision {', '.join(mod.PRECISIONS)} today, not {precision!r}")
    path = Path(path)
    if path.suffix != mod.SUFFIX:
        raise EdgeVitError(f"{backend} artifacts end in {mod.SUFFIX}; got {path}")
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.fx.GraphModule):
        model = model.eval()
    try:
        with quiet():
            info = mod.export(model, example, path)
    except EdgeVitError:
        raise
    except Exception as e:  # every backend raises its own types; the user needs the backend and the cause
        raise EdgeVitError(f"{backend} export failed: {type(e).__name__}: {str(e).splitlines()[0][:500]}") from e
    return Artifact(backend, precision, path, info)


__all__ = ["BACKENDS", "Artifact", "NotRunnable", "Runner", "export", "backend_module"]
