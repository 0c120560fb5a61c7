"""The backend contract and registry: everything edgevit knows about a runtime sits behind one :class:`Backend`.

A backend package (``edgevit/backends/<name>/``) defines a :class:`Backend` subclass (its facts: name, suffix,
precisions, ...) and registers it with :func:`register_backend`; its modules own that runtime's PT2E quantizer
(``quantizer.py``: ``quantizer(precision, qat)``), conversion (``convert.py``: ``convert(...)``,
``unsupported(ep)``), runtime (``runtime.py``: ``load(path, threads, compute_units)``) and per-layer tracer for
``explain`` (``trace.py``: ``trace(path, model, example, **context)``); :class:`Backend` loads each module on first
use, so a backend overrides only what differs (an emulator, quantized I/O, a missing PT2E quantizer). Generic code
(``edgevit.export``, ``edgevit.parity``, the recipe, the CLI) asks the registry and never names a backend. Adding a
backend is adding one folder and one import in ``edgevit/backends/__init__.py``.

The heavy third-party library of a backend is imported lazily inside its package (``edgevit.utils.require``), so
listing backends or building the CLI costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.utils import EdgeVitError

LAYOUTS = ("NCHW", "NHWC")  # input layouts an export can take
COMPUTE_UNITS = ("ALL", "CPU_AND_GPU", "CPU_AND_NE", "CPU_ONLY")  # Core ML's (coremltools.ComputeUnit names)

Runner = Callable[[np.ndarray], np.ndarray]


class NotRunnable(Exception):
    """The artifact is valid but cannot execute here (e.g. Core ML off macOS, with no emulator for it)."""


class RunFailed(Exception):
    """The artifact's runtime crashed or failed while running it (e.g. on an emulated device); a parity failure."""


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """``[N, C, H, W]`` images in ``layout``: unchanged for ``NCHW``, ``[N, H, W, C]`` (contiguous) for ``NHWC``."""
    if layout not in LAYOUTS:
        raise EdgeVitError(f"unknown input layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "NCHW":
        return images
    return np.ascontiguousarray(np.moveaxis(np.asarray(images), 1, -1))  # [N, C, H, W] -> [N, H, W, C]


# ------------------------------------------------------------------------------------------------ trace graphs

INPUT, OUTPUT = "input", "output"  # explain's rows for the artifact's input and its logits
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QUANTIZE", "DEQUANTIZE", "quantize", "dequantize", "cast"})


@dataclass
class TraceNode:
    """One op of an artifact's graph, in execution order, and the module it was traced from (None: unknown)."""

    op: str
    inputs: list[str]
    outputs: list[str]
    module: str | None = None


@dataclass
class TraceGraph:
    """An artifact seen as a graph by a backend's tracer: nodes in execution order, its output tensor, and a way to
    read tensors (``make_runner(wanted names)`` -> ``run(image in the artifact's layout)`` -> ``{name: array}``)."""

    nodes: list[TraceNode]
    output: str
    make_runner: Callable[[list[str]], Callable[[np.ndarray], dict[str, np.ndarray]]]
    note: str | None = None
    producers: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific facts merged into explain's result
    takes_nchw: bool = False  # the runner takes NCHW images whatever the artifact's layout (a re-lowering)

    def __post_init__(self) -> None:
        self.producers = {t: i for i, n in enumerate(self.nodes) for t in n.outputs}

    def inherit_modules(self) -> None:
        """Unattributed quantize/dequantize/cast nodes belong to the node whose output they carry."""
        for n in self.nodes:
            if n.module is None and n.op in QDQ_OPS and n.inputs and n.inputs[0] in self.producers:
                n.module = self.nodes[self.producers[n.inputs[0]]].module


def fx_modules(model, example, decompose: Callable | None = None) -> dict[str, str]:
    """``torch.export`` node name -> the module path that traced it (deepest ``nn_module_stack`` entry)."""
    import torch  # noqa: PLC0415 -- keeps this module (and so the CLI's start-up) free of torch

    ep = torch.export.export(model, (example,))
    ep = decompose(ep) if decompose else ep.run_decompositions({})
    names = {}
    for node in ep.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and stack:
            names[node.name] = list(stack.values())[-1][0]
    return names


@dataclass(frozen=True)
class TensorIO:
    """An artifact's input or output tensor as an app feeds or reads it: element type and, for an integer tensor,
    its quantization (``real = (q - zero_point) * scale``)."""

    dtype: str = "float32"
    scale: float | None = None
    zero_point: int | None = None


# ------------------------------------------------------------------------------------------------ the contract


class Backend:
    """One runtime edgevit exports to. Subclasses set the class attributes; the methods call the package's modules
    (``edgevit.backends.<name>.quantizer``, ``convert``, ``runtime``, ``trace``), imported on first use.

    Attributes:
        name: the registry name (``executorch``).
        suffix: the artifact's file (or package directory) suffix (``.pte``).
        precisions: the precisions it exports, float first (quantized ones with the backend's own quantizer).
        qat_label: the quantizer named in the manifest for a QAT artifact; None when the backend has no QAT.
        fold_quantize: how PT2E's ``convert_pt2e`` should store weights for this converter (int8 constants, or
            float weights behind quantize nodes).
        runtime: the runtime that executes artifacts on a host, for reports.
    """

    name: str
    suffix: str
    precisions: tuple[str, ...]
    qat_label: str | None = None
    fold_quantize: bool = True
    runtime: str = ""

    @property
    def default_precision(self) -> str:
        """The backend's float precision (the first of :attr:`precisions`)."""
        return self.precisions[0]

    def _module(self, name: str):
        """``edgevit.backends.<self.name>.<name>``, imported on first use (it imports torch and its converter)."""
        return importlib.import_module(f"edgevit.backends.{self.name}.{name}")

    def quantizer(self, precision: str, qat: bool = False):
        """The backend's own PT2E quantizer for ``precision`` (``qat``: with fake-quantize modules for training).

        Raises:
            EdgeVitError: the backend quantizes without PT2E (or has no QAT), or its package is missing.
        """
        return self._module("quantizer").quantizer(precision, qat)

    def convert(self, model, example, path: Path, precision: str, calib=None, ptq=None) -> dict[str, Any]:
        """Quantize ``model`` if ``precision`` asks for it (calibrating on ``calib`` when static), lower it at
        ``example``'s shape and write ``path`` atomically; return export facts for the manifest."""
        return self._module("convert").convert(model, example, path, precision, calib, ptq)

    def load(self, path: Path, threads: int, compute_units: str | None = None) -> Runner:
        """A runner mapping one float32 image in the artifact's layout to ``[1, K]`` float32 logits.

        Raises:
            NotRunnable: the runtime cannot run on this host (then :meth:`emulate` may).
        """
        return self._module("runtime").load(path, threads, compute_units)

    def unsupported(self, ep) -> list:
        """The FX nodes of ``ep`` (an ``ExportedProgram``) this backend's converter has no lowering for."""
        return self._module("convert").unsupported(ep)

    def trace(self, path: Path, model, example, **context) -> TraceGraph:
        """The artifact as a :class:`TraceGraph` whose tensors map to ``model``'s modules (for ``explain``);
        ``context``: ``precision``, ``info`` (the manifest's), ``layout``, ``calib``, ``ptq``."""
        return self._module("trace").trace(path, model, example, **context)

    def io_tensors(self, path: Path) -> tuple[TensorIO, TensorIO]:
        """The artifact's ``(input, output)`` element types as an app sees them: float32 unless the runtime's
        tensors themselves are quantized (a quantized ExecuTorch or Core ML graph quantizes inside)."""
        return TensorIO(), TensorIO()

    def emulate(self, path: Path, compute_units: str | None = None) -> Runner | None:
        """A runner from edgevit's emulator of this runtime (with an ``execution`` attribute saying how it runs),
        for hosts the runtime cannot run on; None when there is no emulator."""
        return None


_BACKENDS: dict[str, Backend] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: add an instance of ``cls`` to the registry under ``cls.name``."""
    _BACKENDS[cls.name] = cls()
    return cls


def list_backends() -> list[str]:
    """Names of the registered backends, in registration order (the phone-facing ones first)."""
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The registered backend ``name``.

    Raises:
        EdgeVitError: an unknown name (the message lists the known ones).
    """
    try:
        return _BACKENDS[name]
    except KeyError:
        raise EdgeVitError(f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}") from None


def qat_backends() -> list[str]:
    """The backends with a QAT quantizer (``method: qat`` targets, ``edgevit train --qat``)."""
    return [n for n, b in _BACKENDS.items() if b.qat_label]


def all_precisions() -> list[str]:
    """Every precision some backend exports, in a stable order (float first)."""
    out: dict[str, None] = {}
    for b in _BACKENDS.values():
        out.update(dict.fromkeys(b.precisions))
    order = ("fp32", "fp16")
    return sorted(out, key=lambda p: (p not in order, order.index(p) if p in order else 0))
