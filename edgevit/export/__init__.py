"""Export to ExecuTorch, TFLite/LiteRT, Core ML and ONNX; every artifact is an :class:`Artifact`."""

from __future__ import annotations

from pathlib import Path

import torch

from edgevit._utils import EdgeVitError, quiet
from edgevit.export.artifact import BACKENDS, DEFAULT_PRECISION, Artifact, NotRunnable, Runner, backend_module
from edgevit.export.opcheck import UnsupportedOp, check_ops, unsupported_ops
from edgevit.quantize import CALIBRATED_PRECISIONS, PTQConfig, is_quantized


def export(
    model: torch.nn.Module,
    example: torch.Tensor,
    backend: str,
    path: str | Path,
    precision: str | None = None,
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
) -> Artifact:
    """Quantize (if ``precision`` asks) and lower ``model`` for ``backend`` at ``example``'s shape; write ``path``.

    Args:
        model: an eval-mode float ``nn.Module`` (or, for executorch, an already PT2E-converted graph).
        example: a ``[1, C, H, W]`` input (its shape is baked into the artifact).
        backend: one of ``executorch``, ``tflite``, ``coreml``, ``onnx``.
        path: output file (``.pte``, ``.tflite``, ``.mlpackage`` directory, ``.onnx``), written atomically.
        precision: one of the backend's ``PRECISIONS`` (see :mod:`edgevit.quantize` for what each means);
            defaults to the backend's float precision.
        calib: ``[N, C, H, W]`` training images for static quantization (``int8``); ignored otherwise.
        ptq: the PTQ method (plain PT2E calibration or NNCF) and its options; default plain PT2E.

    Returns:
        The :class:`Artifact`, with export facts (delegation coverage, quantizer, ops) in ``info``.

    Raises:
        EdgeVitError: unknown backend, unsupported precision, missing calibration images, a missing backend
            package, an op the backend cannot take (named with its module path; checked before calibration for
            quantized precisions), or a failed lowering.
    """
    mod = backend_module(backend)
    precision = precision or DEFAULT_PRECISION[backend]
    if precision not in mod.PRECISIONS:
        raise EdgeVitError(f"{backend} export supports precision {', '.join(mod.PRECISIONS)}, not {precision!r}")
    if precision in CALIBRATED_PRECISIONS and calib is None and not is_quantized(model):
        raise EdgeVitError(f"{backend} {precision} is static quantization: pass calibration images (calib=...)")
    calib = calib if precision in CALIBRATED_PRECISIONS else None  # dynamic and weight-only need no images
    path = Path(path)
    if path.suffix != mod.SUFFIX:
        raise EdgeVitError(f"{backend} artifacts end in {mod.SUFFIX}; got {path}")
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.fx.GraphModule):
        model = model.eval()
    float_model = not isinstance(model, torch.fx.GraphModule)
    if precision != DEFAULT_PRECISION[backend] and float_model:
        check_ops(model, example, backend, precision)  # before minutes of calibration, not after
    try:
        with quiet():
            info = mod.export(model, example, path, precision, calib, ptq)
    except EdgeVitError:
        raise
    except Exception as e:  # every backend raises its own types; the user needs the backend and the cause
        if float_model:  # name the op and the module it comes from, where the converter only names a node
            check_ops(model, example, backend, precision)
        raise EdgeVitError(f"{backend} export failed: {type(e).__name__}: {str(e).splitlines()[0][:500]}") from e
    return Artifact(backend, precision, path, info)


__all__ = [
    "BACKENDS",
    "Artifact",
    "NotRunnable",
    "Runner",
    "export",
    "backend_module",
    "UnsupportedOp",
    "check_ops",
    "unsupported_ops",
]
