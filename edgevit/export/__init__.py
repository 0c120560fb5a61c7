"""Export to ExecuTorch, TFLite/LiteRT, Core ML and ONNX; every artifact is an :class:`Artifact`."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from edgevit.backends import LAYOUTS, NotRunnable, Runner, get_backend, list_backends, to_layout
from edgevit.export.artifact import Artifact
from edgevit.export.opcheck import UnsupportedOp, check_ops, unsupported_ops
from edgevit.quantize import CALIBRATED_PRECISIONS, PTQConfig, is_quantized
from edgevit.utils import EdgeVitError, quiet


def export(
    model: torch.nn.Module,
    example: torch.Tensor,
    backend: str,
    path: str | Path,
    precision: str | None = None,
    calib: torch.Tensor | None = None,
    ptq: PTQConfig | None = None,
    layout: str = "NCHW",
) -> Artifact:
    """Quantize (if ``precision`` asks) and lower ``model`` for ``backend`` at ``example``'s shape; write ``path``.

    Args:
        model: an eval-mode float ``nn.Module`` (or, for executorch, an already PT2E-converted graph).
        example: a ``[1, C, H, W]`` input (its shape is baked into the artifact).
        backend: a registered backend (:func:`edgevit.backends.list_backends`: executorch, tflite, coreml, onnx).
        path: output file (``.pte``, ``.tflite``, ``.mlpackage`` directory, ``.onnx``), written atomically.
        precision: one of the backend's ``precisions`` (see :mod:`edgevit.quantize` for what each means);
            defaults to the backend's float precision.
        calib: ``[N, C, H, W]`` training images for static quantization (``int8``); ignored otherwise.
        ptq: the PTQ method (plain PT2E calibration or NNCF) and its options; default plain PT2E.
        layout: the artifact's input layout. ``NCHW`` (default) as in PyTorch; ``NHWC`` bakes an NCHW <- NHWC
            permute into the graph's input (:func:`channels_last_input`), so the artifact takes ``[1, H, W, C]``
            images (camera frames, LiteRT's layout). Recorded in ``info["input_layout"]`` (with
            ``info["input_shape"]``); every edgevit runner feeds it accordingly (:meth:`Artifact.feed`).

    Returns:
        The :class:`Artifact`, with export facts (delegation coverage, quantizer, ops) in ``info``.

    Raises:
        EdgeVitError: unknown backend or layout, unsupported precision, missing calibration images, a missing backend
            package, an op the backend cannot take (named with its module path; checked before calibration for
            quantized precisions), or a failed lowering.
    """
    b = get_backend(backend)
    precision = precision or b.default_precision
    if precision not in b.precisions:
        raise EdgeVitError(f"{backend} export supports precision {', '.join(b.precisions)}, not {precision!r}")
    if precision in CALIBRATED_PRECISIONS and calib is None and not is_quantized(model):
        raise EdgeVitError(f"{backend} {precision} is static quantization: pass calibration images (calib=...)")
    calib = calib if precision in CALIBRATED_PRECISIONS else None  # dynamic and weight-only need no images
    path = Path(path)
    if path.suffix != b.suffix:
        raise EdgeVitError(f"{backend} artifacts end in {b.suffix}; got {path}")
    if layout not in LAYOUTS:
        raise EdgeVitError(f"unknown input layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.fx.GraphModule):
        model = model.eval()
    float_model = not isinstance(model, torch.fx.GraphModule)
    if precision != b.default_precision and float_model:
        check_ops(model, example, backend, precision)  # before minutes of calibration, not after
    graph, graph_example, graph_calib = model, example, calib
    if layout == "NHWC":
        if not float_model:
            raise EdgeVitError("layout NHWC needs the float model (it wraps it before capture); got a converted graph")
        graph = channels_last_input(model)
        graph_example = example.permute(0, 2, 3, 1).contiguous()  # [1, C, H, W] -> [1, H, W, C]
        graph_calib = None if calib is None else calib.permute(0, 2, 3, 1).contiguous()
    try:
        with quiet():
            info = b.convert(graph, graph_example, path, precision, graph_calib, ptq)
    except EdgeVitError:
        raise
    except Exception as e:  # every backend raises its own types; the user needs the backend and the cause
        if float_model:  # name the op and the module it comes from, where the converter only names a node
            check_ops(model, example, backend, precision)
        raise EdgeVitError(f"{backend} export failed: {type(e).__name__}: {str(e).splitlines()[0][:500]}") from e
    info.update(input_layout=layout, input_shape=list(graph_example.shape))
    return Artifact(backend, precision, path, info)


def channels_last_input(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` taking ``[N, H, W, C]`` images: its forward permutes them to ``[N, C, H, W]`` first.

    A thin wrapper sharing ``model``'s parameters and submodules. It is a subclass of the model's class (a shallow
    copy whose ``forward`` permutes, then runs the original forward), not a parent module holding ``model``, so
    every module keeps its name (``blocks.0.mlp.fc1``, not ``model.blocks.0.mlp.fc1``): quantization's
    ``keep_float`` lists, op-support messages and ``explain``'s layer mapping still match. The permute is one graph
    op at the input, which XNNPACK delegates and LiteRT's converter folds into its own NCHW -> NHWC transpose.
    """
    base = type(model)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        return base.forward(self, x.permute(0, 3, 1, 2), *args, **kwargs)  # [N, H, W, C] -> [N, C, H, W]

    cls = type(f"{base.__name__}ChannelsLastInput", (base,), {"forward": forward, "__module__": base.__module__})
    wrapped = copy.copy(model)  # shallow: the same parameter and submodule objects
    wrapped.__class__ = cls
    return wrapped


BACKENDS = tuple(list_backends())  # the phone-facing targets (kept for ``from edgevit.export import BACKENDS``)
DEFAULT_PRECISION = {name: get_backend(name).default_precision for name in BACKENDS}

__all__ = [
    "BACKENDS",
    "DEFAULT_PRECISION",
    "Artifact",
    "NotRunnable",
    "Runner",
    "LAYOUTS",
    "channels_last_input",
    "export",
    "to_layout",
    "UnsupportedOp",
    "check_ops",
    "unsupported_ops",
]
