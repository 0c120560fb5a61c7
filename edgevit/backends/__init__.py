"""One package per backend behind one contract (:class:`Backend`) and registry (:func:`get_backend`).

Importing this package registers every backend; the order here is the order users see them in.
"""

# Each import registers its Backend; this order is the order users see (phone runtimes first).
# isort: off
from edgevit.backends import executorch  # noqa: F401
from edgevit.backends import tflite  # noqa: F401
from edgevit.backends import coreml  # noqa: F401
from edgevit.backends import onnx  # noqa: F401

# isort: on
from edgevit.backends.base import (
    COMPUTE_UNITS,
    LAYOUTS,
    Backend,
    NotRunnable,
    RunFailed,
    Runner,
    TensorIO,
    TraceGraph,
    TraceNode,
    all_precisions,
    get_backend,
    list_backends,
    qat_backends,
    register_backend,
    to_layout,
)

__all__ = [
    "COMPUTE_UNITS",
    "LAYOUTS",
    "Backend",
    "NotRunnable",
    "RunFailed",
    "Runner",
    "TraceGraph",
    "TensorIO",
    "TraceNode",
    "all_precisions",
    "get_backend",
    "list_backends",
    "qat_backends",
    "register_backend",
    "to_layout",
]
