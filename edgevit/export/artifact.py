"""The exported artifact as an object: which backend and precision a file is for, and how to run it.

Every edgevit runner takes one float32 image in the artifact's input layout (``[1, C, H, W]``, or
``[1, H, W, C]`` for an NHWC export) and returns ``[1, K]`` float32 logits. The layout is the exporter's choice
(``export(..., layout="NHWC")`` bakes an NCHW <- NHWC permute into the graph); it is recorded in
``info["input_layout"]`` with ``info["input_shape"]``, so whoever runs the artifact feeds it the right layout
(:meth:`Artifact.feed`) and a wrong one is a clear error (:meth:`Artifact.load`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.backends import COMPUTE_UNITS, NotRunnable, Runner, get_backend, to_layout
from edgevit.utils import EdgeVitError


@dataclass
class Artifact:
    """One exported model file: which backend and precision it is for, and where it lives."""

    backend: str
    precision: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        """The input layout baked into the artifact: ``NCHW`` (the default), or ``NHWC``."""
        return self.info.get("input_layout", "NCHW")

    def feed(self, images: np.ndarray) -> np.ndarray:
        """``[N, C, H, W]`` images as this artifact takes them (``[N, H, W, C]`` for an NHWC artifact)."""
        return to_layout(images, self.layout)

    def load(self, threads: int = 1, compute_units: str | None = None, emulate: bool = True) -> Runner:
        """A callable ``image -> [1, K] float32`` taking one image in the artifact's layout (:attr:`layout`;
        :meth:`feed` converts). Its ``execution`` attribute is ``"native"`` when the backend's own runtime runs it,
        or says how edgevit's emulator of that runtime does (Core ML off macOS; with ``emulate``).

        ``compute_units`` (Core ML only: ``ALL``, ``CPU_AND_GPU``, ``CPU_AND_NE``, ``CPU_ONLY``) is passed to
        ``MLModel`` (or sets the emulator's precision); None keeps Core ML's default. The runner raises EdgeVitError
        when an image's shape is not the exported input shape (naming both and the layout), instead of the runtime's
        own error or, worse, a silent reshape.

        Raises:
            NotRunnable: neither the runtime nor an emulator can run it here.
            EdgeVitError: a missing file, unknown compute units, or an artifact its runtime cannot load.
        """
        if not Path(self.path).exists():
            raise EdgeVitError(f"artifact not found: {self.path}")
        if compute_units is not None and compute_units not in COMPUTE_UNITS:
            raise EdgeVitError(
                f"unknown Core ML compute units {compute_units!r}; choose one of {', '.join(COMPUTE_UNITS)}"
            )
        backend = get_backend(self.backend)
        try:
            runner = backend.load(Path(self.path), threads, compute_units)
            execution = "native"
        except NotRunnable:
            runner = backend.emulate(Path(self.path), compute_units) if emulate else None
            if runner is None:
                raise
            execution = runner.execution
        checked = self.checked(runner)
        checked.execution = execution
        return checked

    def checked(self, runner: Runner) -> Runner:
        """``runner`` with its input checked against the exported input shape (when the manifest records it)."""
        shape = self.info.get("input_shape")
        want, layout, what = tuple(shape or ()), self.layout, f"{self.backend} {self.precision} artifact {self.path}"

        def run(x: np.ndarray) -> np.ndarray:
            if shape and tuple(np.shape(x)) != want:
                hint = ""
                if layout == "NHWC" and np.ndim(x) == 4 and np.shape(x)[1] == want[3]:
                    hint = "; this looks like NCHW: feed Artifact.feed(images) ([N, C, H, W] -> [N, H, W, C])"
                elif layout == "NCHW" and np.ndim(x) == 4 and np.shape(x)[3] == want[1]:
                    hint = "; this looks like NHWC: this artifact takes NCHW"
                raise EdgeVitError(
                    f"{what} takes {layout} input of shape {list(want)}; got shape {list(np.shape(x))}{hint}"
                )
            return runner(x)

        return run

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """A JSON-able record; ``path`` relative to ``root`` when given."""
        d = asdict(self)
        d["path"] = str(Path(self.path).relative_to(root)) if root else str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], root: Path | None = None) -> Artifact:
        """Inverse of :meth:`to_json`."""
        path = Path(d["path"])
        return cls(d["backend"], d["precision"], root / path if root else path, d.get("info", {}))
