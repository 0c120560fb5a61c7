"""Where parity runs an artifact: a device is how and where its logits are computed.

- ``host`` (default): the artifact's own runtime in this process (``Artifact.load``), with host latency.
- an emulated target (``android-arm64``, see :mod:`edgevit.targets`): the same artifact run by that platform's
  official runtime build under emulation. Its logits are compared with PyTorch *and* with the host run of the
  same artifact (which isolates what the platform's kernels change); latency is not measured, because time
  under emulation says nothing about the device's.

``get_device(name)`` returns one; :func:`edgevit.parity.check` takes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevit._utils import EdgeVitError
from edgevit.export.artifact import Artifact, NotRunnable


class HostDevice:
    """This machine: each artifact runs in its runtime's host build, in process."""

    name = "host"
    emulated = False
    description = "this host, each artifact in its runtime's host build"
    note = "Latency is host latency of the runtime named, not phone latency."

    def ensure_ready(self) -> None:
        """Nothing to set up."""

    def run(self, art: Artifact, images: np.ndarray, config, progress: bool) -> tuple[np.ndarray, dict | None]:
        """``([N, K] logits, latency)``; raises :class:`NotRunnable` when the runtime cannot run here."""
        from edgevit.parity import latency, run_all

        runner = art.load(config.threads)
        logits = run_all(runner, images, f"{art.backend} {art.precision}", progress)
        return logits, latency(runner, images[0], config.warmup, config.runs)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "emulated": False, "description": self.description}


class EmulatedDevice:
    """An emulated target (:mod:`edgevit.targets`) as a parity device: logits only, no latency."""

    emulated = True

    def __init__(self, target) -> None:
        self.target = target
        self.name = target.name
        self.description = target.description
        self.note = (
            f"Logits come from {self.name}'s ARM64 kernels run under QEMU user-mode emulation. Latency under emulation "
            "is not device latency and is not reported."
        )

    def ensure_ready(self) -> None:
        """Raise EdgeVitError naming the setup command when the target is not set up."""
        self.target.ensure_ready()

    def run(self, art: Artifact, images: np.ndarray, config, progress: bool) -> tuple[np.ndarray, None]:
        """``([N, K] logits, None)``; raises NotRunnable (backend not on this device) or RunFailed (crash)."""
        if reason := self.target.unsupported(art.backend):
            raise NotRunnable(reason)
        return self.target.run(art.backend, art.path, images, config.threads, progress), None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "emulated": True,
            "description": self.description,
            "cpu": getattr(self.target, "cpu", None),
            "versions": self.target.versions() if hasattr(self.target, "versions") else {},
            "note": self.note,
        }


HOST = HostDevice()


def get_device(name: str | None, cache=None):
    """The device ``name`` (``host`` or a target of :func:`edgevit.targets.list_targets`); ``cache`` is the
    target's cache directory (default: its usual place). Raises EdgeVitError for an unknown name."""
    from edgevit.targets import get_target, list_targets

    if name in (None, "host"):
        return HOST
    if name not in list_targets():
        raise EdgeVitError(f"unknown device {name!r}; choose host or one of {', '.join(list_targets())}")
    return EmulatedDevice(get_target(name, cache))


def list_devices() -> list[str]:
    """``host`` and every emulated target."""
    from edgevit.targets import list_targets

    return ["host", *list_targets()]
