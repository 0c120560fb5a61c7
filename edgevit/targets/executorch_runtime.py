"""Which ExecuTorch runtime runs ``.pte`` artifacts on the emulated ARM64 target, and why that one.

The official ``executorch`` 1.5.1 aarch64 wheel cannot run there: its Python runtime links libtorch, and PyPI's
aarch64 ``torch`` is a CUDA build that does not import under QEMU user-mode emulation. Two ways remain:

1. ``executorch-numpy-runtime`` (PyPI, third party, Apache-2.0): a torch-free pybind11 wrapper of the ExecuTorch
   1.3.1 runtime with the XNNPACK delegate and the portable/optimized/quantized kernel libraries, published as a
   ``cp312-abi3`` ``manylinux_2_28_aarch64`` wheel (so the guest needs Python >= 3.12: Debian trixie's 3.13).
2. Cross-building ExecuTorch 1.5.1's own runner (``executor_runner`` or the pybindings without torch) for aarch64.

edgevit uses (1). Reasons: it installs like the other runtimes (one pinned wheel, seconds), whereas (2) needs an
aarch64 cross toolchain, ExecuTorch's CMake/buck2 tree with its submodules and a 40-70 min build on a 2-core CI
machine (estimated; CI's whole suite must stay under 25 min), rebuilt for every ExecuTorch bump. What (1) costs:
its kernels are ExecuTorch **1.3.1**'s (with that release's XNNPACK), not the 1.5.1 that exported the ``.pte``.
The ``.pte`` format is forward compatible across these releases for the ops edgevit emits (checked: edgevit's
1.5.1 fp32 and static int8 ``.pte`` files load and match the host's 1.5.1 outputs; ``tests/test_arm_cost.py``),
but a per-instruction cost measures 1.3.1's kernels. Every report therefore names the build that actually ran
(:func:`label`), and the ExecuTorch-vs-LiteRT comparison in ``docs/guides/arm-cost.md`` says so.

The runtime has no thread-count setting: ExecuTorch sizes its threadpool from the CPUs cpuinfo reports, so the
target's sysroot presents one CPU (``/sys/devices/system/cpu/{possible,present,online}`` = ``0``) and ExecuTorch
runs single-threaded there, as the cost profile requires.
"""

from __future__ import annotations

PACKAGE, VERSION = "executorch-numpy-runtime", "1.4.0"
KERNELS = "1.3.1"  # the ExecuTorch release the wheel bundles (its runtime_info()["executorch_version"])
REQUIREMENT = f"{PACKAGE}=={VERSION}"
MIN_PYTHON = (3, 12)  # cp312-abi3 wheel


def label(exported_with: str | None = None) -> str:
    """The runtime build that runs ``.pte`` files on the target, for reports; ``exported_with`` is the host's
    ExecuTorch version when known (the release that wrote the ``.pte``)."""
    if exported_with is None:
        return f"ExecuTorch {KERNELS} runtime and XNNPACK kernels via {PACKAGE} {VERSION}"
    return f"ExecuTorch {KERNELS} runtime and XNNPACK kernels via {PACKAGE} {VERSION} (.pte from {exported_with})"


__all__ = ["KERNELS", "MIN_PYTHON", "PACKAGE", "REQUIREMENT", "VERSION", "label"]
