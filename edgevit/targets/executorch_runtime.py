"""The ExecuTorch runtime that runs ``.pte`` artifacts on the emulated ARM64 target: ExecuTorch's own aarch64 build,
at the host's version, so the ARM kernels that run are the release's that wrote the ``.pte``.

The official ``executorch`` aarch64 wheel cannot be used as a Python package there: its Python bindings link
libtorch, and PyPI's aarch64 ``torch`` is a CUDA build that does not import under QEMU user-mode emulation. But the
wheel also ships ExecuTorch's C++ runtime as torch-free shared libraries (``executorch/lib/``: the runtime with
its Module and data-loader extensions, the XNNPACK delegate, the threadpool, the optimized and quantized kernel
libraries; they need only libc, libm and libstdc++) and their headers (``executorch/include/``). Setup therefore
downloads that wheel for ``manylinux_2_28_aarch64`` at the host's ExecuTorch version, keeps those libraries and
compiles :data:`SHIM` — a C entry point of ~100 lines over ``executorch::extension::module::Module`` — with an
aarch64 cross compiler (:data:`CXX`, Debian/Ubuntu package :data:`CXX_PACKAGE`) against its headers. The guest's
Python calls it with ``ctypes`` (``edgevit/targets/_arm64_runner.py``).

Alternatives, and why not: building ExecuTorch from source for aarch64 gives the same libraries after a 40-70 min
build of its CMake tree and submodules on a 2-core machine (the wheel's are ExecuTorch's release build);
``executorch-numpy-runtime`` (a third-party torch-free wrapper, used by edgevit before) bundles ExecuTorch 1.3.1, so
its per-instruction cost measured an older release's XNNPACK kernels than the ``.pte``'s.

The runtime has no thread-count setting: ExecuTorch sizes its threadpool from the CPUs cpuinfo reports, so the
target's sysroot presents one CPU (``/sys/devices/system/cpu/{possible,present,online}`` = ``0``) and ExecuTorch
runs single-threaded there, as the cost profile requires.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from edgevit.utils import EdgeVitError

PACKAGE = "executorch"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
# The runtime libraries the shim links (and so the guest loads): the core runtime (with the Module, data loader and
# tensor extensions), the XNNPACK delegate (registers itself when loaded), its threadpool, and the kernel libraries
# for any op outside the delegate (they register themselves too).
LIBS = (
    "libexecutorch.so",
    "libexecutorch_backend_xnnpack.so",
    "libexecutorch_threadpool.so",
    "libexecutorch_kernels_optimized.so",
    "libexecutorch_kernels_quantized.so",
)
SHIM = Path(__file__).with_name("plugins") / "executorch_shim.cpp"
SHIM_LIB = "libedgevit_executorch.so"
CXX, CXX_PACKAGE = "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"
# ExecuTorch's headers expect its build's defines: c10's generated macros are replaced by defaults (as ExecuTorch's
# own CMake does) and its portable c10 copy is an include root.
CXXFLAGS = ("-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-DC10_USING_CUSTOM_GENERATED_MACROS")


def host_version() -> str | None:
    """The host's installed ExecuTorch version (the release that exports ``.pte`` files), or None."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


NOT_INSTALLED = (
    "executorch is not installed on this host; the emulated target runs .pte files in the same ExecuTorch release's "
    "aarch64 runtime: `pip install 'edgevit[executorch]'`"
)


def key(version: str) -> dict[str, str]:
    """What the runtime step is built from: the ExecuTorch version, the wheel platform and the shim's source."""
    return {
        "executorch": version,
        "platform": WHEEL_PLATFORM,
        "libs": ",".join(LIBS),
        "shim_sha256": hashlib.sha256(SHIM.read_bytes()).hexdigest(),
        "cxx": CXX,
    }


def check_prerequisites() -> None:
    """Raise EdgeVitError naming the cross compiler (and its package) when it is missing."""
    if shutil.which(CXX) is None:
        raise EdgeVitError(
            f"`{CXX}` not found: the emulated target compiles a small ExecuTorch entry point for aarch64; install the "
            f"cross compiler (`sudo apt-get install {CXX_PACKAGE}` on Debian/Ubuntu)"
        )


def build(out: Path, version: str, run: Callable[..., subprocess.CompletedProcess]) -> None:
    """Fill ``out/lib`` with ExecuTorch ``version``'s aarch64 runtime libraries and the compiled shim
    (:data:`SHIM_LIB`), and write ``out/VERSION``.

    ``run(cmd, what, hint, **kw)`` runs a command and raises EdgeVitError on failure.

    Raises:
        EdgeVitError: no cross compiler, a refused download, a wheel without the runtime libraries, or a failed
            compile (with the compiler's output).
    """
    check_prerequisites()
    download = out / "download"
    download.mkdir()
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            WHEEL_PLATFORM,
            "--python-version",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            "--implementation",
            "cp",
            "-d",
            str(download),
            f"{PACKAGE}=={version}",
        ],
        f"downloading the aarch64 wheel of {PACKAGE}=={version}",
        f"check access to PyPI (pip config, PIP_INDEX_URL) and that this version publishes a {WHEEL_PLATFORM} wheel",
    )
    (wheel,) = download.glob("*.whl")
    lib, include = out / "lib", out / "include"
    lib.mkdir()
    _extract(wheel, lib, include)
    run(
        [CXX, *CXXFLAGS, "-o", str(lib / SHIM_LIB), str(SHIM)]
        + ["-isystem", str(include), "-isystem", str(include / "executorch/runtime/core/portable_type/c10")]
        + ["-L", str(lib), "-Wl,--no-as-needed", *(f"-l{n[3:-3]}" for n in LIBS), "-Wl,--as-needed"]
        + ["-Wl,-rpath,$ORIGIN"],
        f"compiling {SHIM.name} for aarch64",
        f"it must build against the headers of the {PACKAGE} {version} wheel",
    )
    (out / "VERSION").write_text(f"{PACKAGE} {version}\n{wheel.name}\n")
    shutil.rmtree(download)
    shutil.rmtree(include)


def _extract(wheel: Path, lib: Path, include: Path) -> None:
    """Copy :data:`LIBS` from ``wheel`` into ``lib`` and its headers into ``include`` (members are matched by
    name, never written by their archive path)."""
    found = set()
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith("executorch/lib/") and member.rsplit("/", 1)[-1] in LIBS:
                dest = lib / member.rsplit("/", 1)[-1]
                found.add(dest.name)
            elif member.startswith("executorch/include/") and member.endswith(".h") and ".." not in member:
                dest = include / member[len("executorch/include/") :]
                dest.parent.mkdir(parents=True, exist_ok=True)
            else:
                continue
            with z.open(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if missing := sorted(set(LIBS) - found):
        raise EdgeVitError(f"{wheel.name} has no {', '.join(missing)} under executorch/lib/; edgevit needs them")


def label(version: str) -> str:
    """The runtime build that runs ``.pte`` files on the target, for reports."""
    return f"ExecuTorch {version} runtime and XNNPACK kernels (the {PACKAGE} {version} aarch64 wheel's libraries)"


__all__ = [
    "CXX",
    "CXX_PACKAGE",
    "LIBS",
    "NOT_INSTALLED",
    "SHIM",
    "SHIM_LIB",
    "build",
    "check_prerequisites",
    "host_version",
    "key",
    "label",
]
