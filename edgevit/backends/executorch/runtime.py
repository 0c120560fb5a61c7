"""Running a ``.pte`` with ``executorch.runtime`` (XNNPACK delegate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgevit.backends.base import Runner
from edgevit.utils import require


def load(path: Path, threads: int, compute_units: str | None = None) -> Runner:
    """Load a ``.pte`` into ``executorch.runtime`` with an XNNPACK threadpool of ``threads``.

    Outputs are copied out with numpy, not cloned by the bindings: their ``clone_outputs=True`` copies with
    ``torch``, whose OpenMP workers then spin against XNNPACK's threadpool (measured in docs/design-notes.md).
    """
    require("executorch", "executorch")
    from executorch.extension.pybindings import portable_lib  # noqa: PLC0415 -- optional package
    from executorch.runtime import Runtime  # noqa: PLC0415

    portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(Path(path)).load_method("forward")
    call = method._method.call  # the bindings' method: ``execute`` takes no clone_outputs

    def run(x: np.ndarray) -> np.ndarray:
        # the outputs alias the method's planned memory until the next call: copy them out now
        out = call([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))], clone_outputs=False)
        return out[0].numpy().copy()

    return run
