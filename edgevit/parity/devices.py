"""Where parity runs an artifact: a device is how and where its logits are computed.

- ``host`` (default): the artifact's own runtime in this process (``Artifact.load``), with host latency and memory.
- an emulated target (``android-arm64``, see :mod:`edgevit.targets`): the same artifact run by that platform's
  official runtime build under emulation. Its logits are compared with PyTorch *and* with the host run of the
  same artifact (which isolates what the platform's kernels change); latency is not measured, because time
  under emulation says nothing about the device's.
- a device profile (``android-midrange``, ``iphone``, ``raspberry-pi``: ``edgevit/parity/profiles/NAME.yaml``, or
  the path of your own YAML file): runs each artifact the way that device would, on this host or on an emulated
  target: only the backends and precisions the device uses (in order of preference; the first passing artifact
  is the one it would ship), its thread count, its input (8-bit pixels) and its Core ML compute units
  (``MLModel(compute_units=...)`` on macOS; elsewhere the emulator runs fp32 programs in fp16 where the units let
  the GPU/Neural Engine run them). Every artifact is fed the layout it was exported with (NHWC exports channels-last,
  from the manifest); the report says which. Every device says in ``parts`` which parts of it were real and which
  emulated.

``get_device(name)`` returns one; :func:`edgevit.parity.check` takes it.
"""

from __future__ import annotations

import gc
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgevit._config import key_path
from edgevit.backends import NotRunnable, list_backends
from edgevit.backends.coreml.emulator import FP16_COMPUTE_UNITS
from edgevit.export import Artifact
from edgevit.measure import PeakRSS, latency, run_all
from edgevit.parity.config import DEFAULT_TOLERANCES
from edgevit.targets import get_target, list_targets
from edgevit.targets.cost import CORES
from edgevit.targets.cost import measure as measure_cost
from edgevit.utils import EdgeVitError

PROFILES_DIR = Path(__file__).with_name("profiles")


@dataclass
class DeviceRun:
    """What a device returns for one artifact: ``[N, K]`` logits, and where measured, latency and peak memory;
    ``execution`` says what ran it (``native``, an emulator of its runtime, or an emulated device)."""

    logits: np.ndarray
    latency_ms: dict[str, Any] | None
    peak_memory_mb: float | None
    execution: str


class NotForDevice(NotRunnable):
    """The device does not use this artifact (another backend or precision); it is listed, not emulated."""

    final = True


class HostDevice:
    """This machine: each artifact runs in its runtime's host build, in process."""

    name = "host"
    emulated = False
    execution = "native"  # parity.json's per-artifact ``execution``
    description = "this host, each artifact in its runtime's host build"
    note = "Latency is host latency of the runtime named, not phone latency."

    def ensure_ready(self) -> None:
        """Nothing to set up."""

    def run(
        self, art: Artifact, images: np.ndarray, config, progress: bool, compute_units: str | None = None
    ) -> DeviceRun:
        """Logits of ``images`` (in the artifact's layout), with latency and peak memory when the artifact's own
        runtime ran it; an emulator of the runtime (Core ML off macOS) gives logits only, its time not being the
        runtime's. ``compute_units``: Core ML's (``MLModel``, or the emulator's precision).

        Peak memory (:class:`edgevit.measure.PeakRSS`) covers loading the artifact, running it on every image and
        the latency runs; the artifact is loaded once before that (and kept until the end) so the runtime library's
        import is not counted and the measured instance gets memory of its own.

        Raises:
            NotRunnable: nothing can run the artifact here. Any other error is the artifact's failure.
        """
        # a first instance imports the runtime library (and raises NotRunnable) outside the measurement; it stays
        # alive meanwhile so that the measured one cannot reuse the memory it would have freed
        first = art.load(config.threads, compute_units)
        desc = f"{art.backend} {art.precision}"
        if first.execution != "native":  # an emulator: no latency or memory (the emulator's are not the runtime's)
            return DeviceRun(run_all(first, images, f"{desc} (emulated)", progress), None, None, first.execution)
        gc.collect()
        with PeakRSS() as mem:
            runner = art.load(config.threads, compute_units)
            logits = run_all(runner, images, desc, progress)
            lat = latency(runner, images[0], config.warmup, config.runs, config.threads)
        del first
        return DeviceRun(logits, lat, mem.mb, "native")

    def parts(self) -> list[dict[str, str]]:
        """Which parts of this device are real (all of them) for ``device.parts``."""
        return [
            _part("runtimes", "real", f"each artifact in its runtime's host build on this {platform.machine()} CPU"),
            _part("latency and memory", "real", "measured on this host (not phone latency)"),
        ]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "emulated": False, "description": self.description, "parts": self.parts()}


class EmulatedDevice:
    """An emulated target (:mod:`edgevit.targets`) as a parity device: logits and ARM cost profiles, no latency.

    ``cpu``: QEMU's CPU model (default the target's); XNNPACK picks its kernels from that CPU's features.
    """

    emulated = True

    def __init__(self, target, cpu: str | None = None) -> None:
        self.target = target
        self.cpu = cpu or getattr(target, "cpu", None)
        self.name = target.name
        self.execution = f"emulated device {target.name}"
        self.description = target.description
        self.note = (
            f"Logits come from {self.name}'s ARM64 kernels run under QEMU user-mode emulation. Latency under emulation "
            "is not device latency and is not reported; the ARM cost profile counts instructions instead."
        )
        # the core whose instructions are counted (edgevit.parity.cost), when the target can count
        self.cost_cpu = self.cpu if hasattr(target, "counting_qemu") else None

    def ensure_ready(self) -> None:
        """Raise EdgeVitError naming the setup command when the target is not set up."""
        self.target.ensure_ready()

    def run(
        self, art: Artifact, images: np.ndarray, config, progress: bool, compute_units: str | None = None
    ) -> DeviceRun:
        """Logits only: no latency or memory (the emulator's are not the device's); raises NotRunnable (backend not
        on this device) or RunFailed (crash). No Core ML here: ``compute_units`` unused."""
        if reason := self.target.unsupported(art.backend):
            raise NotRunnable(reason)
        logits = self.target.run(art.backend, art.path, images, config.threads, progress, cpu=self.cpu)
        return DeviceRun(logits, None, None, self.execution)

    def cost_profile(self, art: Artifact, image: np.ndarray, progress: bool) -> dict[str, Any]:
        """The per-inference cost of ``art`` on one ``image`` (its layout) on this device's core, one thread
        (:func:`edgevit.targets.cost.measure`); raises RunFailed when the runtime fails under the counter."""
        return measure_cost(self.target, art.backend, art.path, image, self.cost_cpu, progress=progress)

    def parts(self) -> list[dict[str, str]]:
        """Real: the runtimes' ARM64 builds and kernels. Emulated: the CPU (QEMU). Not measured: time."""
        cpu = self.cpu or "an ARM64 CPU"
        parts = [
            _part("runtimes and kernels", "real", "the official aarch64 builds of the runtimes and their NEON kernels"),
            _part("CPU", "emulated", f"QEMU user-mode emulation of {cpu} on this {platform.machine()} host"),
            _part(
                "latency and memory", "emulated", "not measured: time and memory under emulation are not the device's"
            ),
        ]
        versions = self.target.versions() if hasattr(self.target, "versions") else {}
        if versions.get("executorch"):  # the build that runs .pte files here is not the exporter's release
            parts.insert(1, _part("executorch runtime", "real", versions["executorch"]))
        if self.cost_cpu:
            parts.append(
                _part(
                    "cost profile",
                    "real",
                    f"instructions per inference counted exactly on QEMU's {self.cost_cpu} (one thread); estimated "
                    "cycles from a per-core throughput table, not time",
                )
            )
        return parts

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "emulated": True,
            "description": self.description,
            "cpu": self.cpu,
            "versions": self.target.versions() if hasattr(self.target, "versions") else {},
            "note": self.note,
            "parts": self.parts(),
        }


class InputSpec(BaseModel):
    """What the device feeds the model: tensor layout and pixel type."""

    model_config = ConfigDict(extra="forbid")

    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="preferred layout, used where the artifact takes it")
    dtype: Literal["float32", "uint8"] = Field(
        "float32", description="uint8: 8-bit pixels (camera frames), rounded before normalisation"
    )


class DeviceProfile(BaseModel):
    """A named device (``edgevit/parity/profiles/NAME.yaml``): what it runs and how. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    cpu: str | None = None
    backends: list[str] = Field(min_length=1, description="backends the device runs, most preferred first")
    precisions: list[str] = Field(min_length=1, description="precisions it runs, most preferred first")
    threads: int | None = Field(None, ge=1, description="runtime threads (None: the recipe's parity.threads)")
    input: InputSpec = Field(default_factory=InputSpec)
    compute_units: Literal["CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL"] | None = None
    arm64_target: str | None = Field(
        None, description="emulated target to run on when it is set up (else this host, and the report says so)"
    )
    qemu_cpu: str | None = Field(
        None, description="QEMU -cpu model of the device's core on the emulated target (cortex-a55, -a76, -a710)"
    )

    @field_validator("backends", "precisions", "arm64_target", "qemu_cpu")
    @classmethod
    def _one_of_known(cls, v: list[str] | str | None, info) -> list[str] | str | None:
        """Each backend, precision and the emulated target must be one edgevit knows; the error lists them."""
        what, known = {
            "backends": ("backend", list_backends()),
            "precisions": ("precision", list(DEFAULT_TOLERANCES)),
            "arm64_target": ("emulated target", list_targets()),
            "qemu_cpu": ("QEMU CPU with a cycle table", list(CORES)),
        }[info.field_name]
        for x in [v] if isinstance(v, str) else v or []:
            if x not in known:
                raise ValueError(f"unknown {what} {x!r}; choose from {', '.join(known)}")
        return v


def load_profile(path: str | os.PathLike) -> DeviceProfile:
    """Read and validate a device-profile YAML file.

    Raises:
        EdgeVitError: missing or unreadable file, or a bad key/value, named with its path (``input.dtype``).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise EdgeVitError(f"cannot read device profile {path}: {e}") from None
    if not isinstance(raw, dict):
        raise EdgeVitError(f"{path}: a device profile must be a mapping of keys")
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = key_path(err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise EdgeVitError(f"{path}: device profile key '{key}': {msg}{more}") from None


def list_profiles() -> list[str]:
    """Names of the bundled device profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def get_profile(name: str) -> DeviceProfile:
    """The bundled profile ``name``; raises EdgeVitError listing the known ones."""
    if name not in list_profiles():
        raise EdgeVitError(f"unknown device profile {name!r}; choose one of {', '.join(list_profiles())}")
    return load_profile(PROFILES_DIR / f"{name}.yaml")


class ProfileDevice:
    """A device profile as a parity device: the artifacts that device would run, run the way it runs them.

    Runs on its ``arm64_target`` (emulated; logits also compared with the host run) when that target is set up,
    else on this host (with host latency and memory at the profile's thread count).
    """

    def __init__(self, profile: DeviceProfile, cache=None) -> None:
        self.profile = profile
        self.name = profile.name
        self.description = profile.description
        self.threads = profile.threads
        self.compute_units = profile.compute_units  # Core ML's: MLModel on macOS, the emulator's precision elsewhere
        self.fallback: str | None = None  # why the emulated target was not used
        self.inner: HostDevice | EmulatedDevice = HOST
        if profile.arm64_target:
            target = get_target(profile.arm64_target, cache)
            if missing := target.pending():
                self.fallback = (
                    f"{profile.arm64_target} is not set up in {target.cache} (missing: {', '.join(missing)}; "
                    f"`edgevit target setup {profile.arm64_target}`), so this host ran the artifacts"
                )
            else:
                self.inner = EmulatedDevice(target, cpu=profile.qemu_cpu)
        self.emulated = self.inner.emulated
        self.cost_cpu = self.inner.cost_cpu if self.emulated else None  # counted on the profile's core
        self.execution = self.inner.execution  # "native", or the emulated target that ran it
        self._input_note = "float32 images as preprocessed in training"
        self._layouts: dict[str, list[str]] = {}  # layout -> artifacts fed in it (after check ran them)

    def ensure_ready(self) -> None:
        """Nothing to set up: without its emulated target a profile runs on this host (the report says so)."""

    @property
    def note(self) -> str:
        if self.emulated:
            return self.inner.note
        return "Run on this host the way that device runs each artifact; the parts table says what was emulated."

    def prepare(self, images: np.ndarray, normalization: tuple[list[float], list[float]] | None) -> np.ndarray:
        """The device's input: with ``uint8`` input, ``[N, C, H, W]`` images rounded to 8-bit pixels (``x * std +
        mean`` is ``pixel / 255``) and normalised again, as a camera frame would arrive; else unchanged."""
        if self.profile.input.dtype != "uint8":
            return images
        if normalization is None:
            self._input_note = "8-bit pixels NOT applied (the images' mean/std were not given); float32 images"
            return images
        mean = np.asarray(normalization[0], np.float32).reshape(1, -1, 1, 1)  # [C] -> [1, C, 1, 1]
        std = np.asarray(normalization[1], np.float32).reshape(1, -1, 1, 1)
        pixels = np.clip(np.round((images * std + mean) * 255.0), 0, 255)  # uint8 levels, [N, C, H, W]
        out = ((pixels / 255.0 - mean) / std).astype(np.float32)
        self._input_note = (
            f"8-bit pixels: images rounded to uint8 levels before normalisation, for PyTorch and every artifact "
            f"alike (largest change of a normalised input: {float(np.abs(out - images).max()):.2e})"
        )
        return out

    def run(self, art: Artifact, images: np.ndarray, config, progress: bool) -> DeviceRun:
        """As :class:`HostDevice` / :class:`EmulatedDevice`; raises :class:`NotForDevice` for an artifact the device
        would not use."""
        p = self.profile
        if art.backend not in p.backends:
            raise NotForDevice(f"{self.name} runs {', '.join(p.backends)} artifacts, not {art.backend}")
        if art.precision not in p.precisions:
            raise NotForDevice(f"{self.name} runs {', '.join(p.precisions)} precisions, not {art.precision}")
        return self.inner.run(art, images, config, progress, compute_units=p.compute_units)

    def cost_profile(self, art: Artifact, image: np.ndarray, progress: bool) -> dict[str, Any]:
        """The artifact's cost on the profile's core (:meth:`EmulatedDevice.cost_profile`); emulated only."""
        return self.inner.cost_profile(art, image, progress)

    def note_layouts(self, entries: list[dict[str, Any]]) -> None:
        """Record which input layout each artifact that ran was fed (``parts`` reports it)."""
        self._layouts = {}
        for e in entries:
            if e.get("top1") is not None:
                self._layouts.setdefault(e.get("input_layout", "NCHW"), []).append(f"{e['backend']} {e['precision']}")

    def ships(self, entries: list[dict[str, Any]]) -> str | None:
        """The file name of the artifact this device would ship: the first that passed, by backend preference, then
        precision preference (then the order of the run's manifest); None when none passed."""
        for backend in self.profile.backends:
            for precision in self.profile.precisions:
                for e in entries:
                    if (e["backend"], e["precision"], e["passed"]) == (backend, precision, True):
                        return Path(e["path"]).name
        return None

    def parts(self) -> list[dict[str, str]]:
        """What was real and what emulated, part by part."""
        p = self.profile
        # each artifact is fed the layout it was exported with (manifest info.input_layout; Artifact.feed)
        fed = "; ".join(f"{lay} for {', '.join(arts)}" for lay, arts in self._layouts.items())
        layout = f"as each artifact was exported ({fed or 'NCHW unless exported NHWC'})"
        if p.input.layout == "NHWC" and set(self._layouts) != {"NHWC"}:
            layout += "; the profile prefers NHWC: export with layout NHWC to bake the permute into the artifact"
        threads = f"{p.threads} runtime threads, as on the device" if p.threads else "the recipe's parity.threads"
        parts = [
            _part(
                "artifact selection",
                "real",
                f"backends {' > '.join(p.backends)}, precisions {' > '.join(p.precisions)}; others listed as not run",
            ),
            _part("threads", "real", f"{threads} (this host has {os.cpu_count()} cores)"),
            _part("input", "emulated" if "NOT" in self._input_note else "real", f"{self._input_note}; layout {layout}"),
        ]
        if self.emulated:
            return parts + self.inner.parts()
        cpu_backends = [b for b in p.backends if b != "coreml"]
        if cpu_backends:
            note = (
                f"this host's {platform.machine()} CPU and the host builds of {', '.join(cpu_backends)} stand in for "
                f"the device's {p.cpu or 'CPU'}"
            )
            parts.append(_part("CPU and kernels", "emulated", note + (f"; {self.fallback}" if self.fallback else "")))
            parts.append(_part("latency and memory", "emulated", "measured on this host, not on the device"))
        if "coreml" in p.backends:
            units = p.compute_units
            if platform.system() == "Darwin":
                applied = f"compute_units={units}" if units else "Core ML's default compute units (ALL)"
                parts.append(_part("coreml runtime", "real", f"MLModel.predict on this Mac with {applied}"))
            else:
                if units in FP16_COMPUTE_UNITS:
                    precision = (
                        f"compute units {units} let the GPU/Neural Engine run the model, so fp32 programs are "
                        "emulated in fp16 too (their precision there)"
                    )
                elif units:
                    precision = f"compute units {units}: each program in its own precision (fp32 on the CPU)"
                else:
                    precision = "no compute units given: each program in its own precision"
                parts.append(
                    _part(
                        "coreml runtime",
                        "emulated",
                        f"edgevit's NumPy interpreter of the ML Program (per-op fp16 rounding for fp16 programs); "
                        f"{precision}; no Neural Engine or GPU timing, no latency or memory",
                    )
                )
        return parts

    def to_json(self) -> dict[str, Any]:
        doc = self.inner.to_json() if self.emulated else {}
        return doc | {
            "name": self.name,
            "emulated": self.emulated,
            "description": self.description,
            "note": self.note,
            "profile": self.profile.model_dump(),
            "parts": self.parts(),
        }


def _part(what: str, how: str, note: str) -> dict[str, str]:
    """One ``device.parts`` entry."""
    return {"what": what, "how": how, "note": note}


HOST = HostDevice()


def get_device(name: str | None, cache=None):
    """The device ``name``: ``host``, an emulated target (:func:`edgevit.targets.list_targets`), a bundled profile
    (:func:`list_profiles`) or the path of a profile YAML file. ``cache`` is the emulated target's cache directory
    (default: its usual place). Raises EdgeVitError for an unknown name (listing the known ones) or a bad profile."""
    if name in (None, "host"):
        return HOST
    if name in list_targets():
        return EmulatedDevice(get_target(name, cache))
    if name in list_profiles():
        return ProfileDevice(get_profile(name), cache)
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return ProfileDevice(load_profile(name), cache)
    raise EdgeVitError(
        f"unknown device {name!r}; choose host, an emulated target ({', '.join(list_targets())}), a device profile "
        f"({', '.join(list_profiles())}) or a profile .yaml file"
    )


def list_devices() -> list[str]:
    """``host``, every emulated target and every bundled device profile."""
    return ["host", *list_targets(), *list_profiles()]
