"""Deterministic ARM cost profiles: the instructions an artifact executes per inference on an emulated phone core.

An emulator cannot give a phone's time; it can give, exactly and repeatably, *which instructions* each inference
executes in the runtime's real ARM64 kernels (XNNPACK picks its NEON / dot-product / I8MM kernels from the CPU
features QEMU's ``-cpu`` model reports, as it does on the phone). :func:`measure` runs an artifact under the
counting emulator (QEMU user-mode with edgevit's plugin, :mod:`edgevit.targets.qemu_build`), which counts how often
each translation block executes; capstone decodes the blocks into a count per mnemonic.

Per-inference cost: the guest runner runs the model once (warm-up: loading, first-run weight packing), then marks
two counting windows with a marker system call the plugin watches: an empty one (the markers' own cost) and one
around ``runs`` (2) inferences. Per inference = (second window - first window) / runs, counted on the thread that
opened the windows only. Determinism (measured: two runs of a LiteRT or ExecuTorch artifact give identical counts,
``tests/test_arm_cost.py``): the guest gets only a fixed environment (``env -i`` plus ``PYTHONHASHSEED=0``, one
BLAS/OpenMP thread, no bytecode writes), ``-R 16G`` (a fixed guest address space, so every library maps at the same
address), ``-seed 0``, one runtime thread and one CPU in its sysroot (``sys/devices/system/cpu/{possible,present,
online}`` = ``0``, else ExecuTorch's threadpool starts a worker), and fixed file names. The windows are what make it
exact: whole-process counts are not (measured here: ExecuTorch logs lines with a wall-clock timestamp at load, a few
hundred instructions that vary with the time; ONNX Runtime's other threads wake from timed waits, ~3 M instructions
that vary run to run), so the difference of whole 1- and 3-inference processes, as first planned, did not repeat.
ONNX Runtime's window counts still vary by ~0.1 % (a few thousand instructions in glibc's malloc: ``import
onnxruntime`` starts a thread whose timing changes the allocator's state); LiteRT's and ExecuTorch's do not.

What a count is not: latency. The same instructions take different time on different cores, and cache misses,
dependency chains and memory bandwidth are invisible here. :func:`estimate_cycles` turns the mix into a
throughput bound for one core from a per-core table of issue width and pipe counts (:data:`CORES`, sources cited
there): the fewest cycles the core's pipes allow, a first-order estimate for ratios on one core (int8 vs fp32,
one runtime vs another), not milliseconds. Published cycle-approximate simulators reach 7-17 % error only after
calibration on the real core, and basic-block throughput models (llvm-mca style) 9-36 % (see
``docs/guides/arm-cost.md``).
"""

from __future__ import annotations

import bisect
import re
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.backends import RunFailed
from edgevit.utils import EdgeVitError, require

RUNS = 2  # inferences inside the counted window (after one warm-up inference)

# The arithmetic mix: each instruction falls in the first class whose test matches (so the classes sum to the
# total). Mnemonics as capstone prints them.
FP_MAC = {"fmla", "fmls", "fmadd", "fmsub", "fnmadd", "fnmsub", "fmul", "fmulx", "fnmul", "fmlal", "fmlal2"}
FP_MAC |= {"fmlsl", "fmlsl2", "bfmmla", "bfdot", "bfmlalb", "bfmlalt"}
DOT = {"sdot", "udot", "usdot", "sudot"}
MMLA = {"smmla", "ummla", "usmmla"}
WIDEN_MAC = {"smull", "smull2", "umull", "umull2", "smlal", "smlal2", "umlal", "umlal2", "sadalp", "uadalp"}
BRANCHES = {"b", "bl", "br", "blr", "ret", "cbz", "cbnz", "tbz", "tbnz", "braa", "brab", "blraa", "blrab", "retaa"}
BRANCHES |= {"retab", "braaz", "brabz", "blraaz", "blrabz", "eret"}
_VREG = re.compile(r"\b[vqdshb]\d{1,2}\b")  # a SIMD/FP register operand (v0.4s, q1, d2, s3, h4, b5)
CLASSES = (
    "fmla/fmul",  # float multiply(-accumulate): the fp32 GEMM/conv inner loops
    "sdot/udot",  # int8 dot product (Armv8.2 DotProd): the int8 GEMM inner loops on A76/A55
    "smmla",  # int8 matrix multiply-accumulate (Armv8.6 I8MM): int8 GEMM on A710-class cores
    "smull/smlal",  # widening int multiply(-accumulate): int8 GEMM without dot product
    "loads",
    "stores",
    "branches",
    "other SIMD/FP",  # e.g. fadd, fmax, shuffles, requantization, conversions
    "other scalar",  # integer arithmetic, address computation, compares: loop and framework overhead
)


def classify(mnemonic: str, op_str: str) -> str:
    """The :data:`CLASSES` entry of one instruction (capstone's ``mnemonic`` and ``op_str``)."""
    m = mnemonic.lower()
    if m in FP_MAC:
        return "fmla/fmul"
    if m in DOT:
        return "sdot/udot"
    if m in MMLA:
        return "smmla"
    if m in WIDEN_MAC:
        return "smull/smlal"
    if m.startswith("ld"):
        return "loads"
    if m.startswith("st"):
        return "stores"
    if m in BRANCHES or m.startswith(("b.", "bc.")):
        return "branches"
    if _VREG.search(op_str):
        return "other SIMD/FP"
    return "other scalar"


@dataclass(frozen=True)
class Core:
    """Throughput limits of one core (instructions per cycle), for :func:`estimate_cycles`.

    ``simd``: 128-bit (Q-form) FP/ASIMD instructions per cycle (FMLA, SDOT, SMMLA and the rest share these pipes);
    ``loads``/``stores``: per cycle, ``memory``: loads + stores per cycle (shared address pipes); ``branches``;
    ``scalar``: integer ALU instructions; ``issue``: instructions decoded/issued per cycle.
    """

    name: str
    title: str
    issue: float
    simd: float
    loads: float
    stores: float
    memory: float
    branches: float
    scalar: float
    source: str


# Sources (Arm's Software Optimization Guides, "Instruction characteristics" tables and the pipeline overview of
# section 2; cross-checked against LLVM's scheduling models, which encode the same guides):
# - Cortex-A55 SOG (Arm, "Arm Cortex-A55 Software Optimization Guide", v3.0): in-order, dual issue; two 64-bit
#   FP/ASIMD pipes, so a Q-form FMLA/SDOT occupies both (execution throughput 1 per cycle; D-form 2); one load
#   and one store pipe; one branch. LLVM: AArch64SchedA55.td (CortexA55WriteVq uses both FP units).
# - Cortex-A76 SOG (Arm, PJDOC-466751330-7215, v8.0): decode 4 instructions per cycle; FP/ASIMD pipes V0 and V1,
#   each 128-bit (FMLA Q-form throughput 2, SDOT throughput 2); two load/store pipes L0/L1 (2 loads, or stores
#   whose data goes through the store-data pipes, 2 memory operations per cycle in all); one branch pipe B;
#   integer S0, S1, M. LLVM: AArch64SchedNeoverseN1.td (N1 is the A76 microarchitecture).
# - Cortex-A710 SOG (Arm, "Arm Cortex-A710 Core Software Optimization Guide"): decode 5 per cycle; V0, V1
#   128-bit (FMLA, SDOT and SMMLA Q-form throughput 2); load/store L01 x2 plus load-only L2 (3 loads, 2 stores,
#   3 memory operations per cycle); two branch pipes; integer S0, S1, M0, M1. LLVM: AArch64SchedNeoverseN2.td
#   (N2 shares the A710 microarchitecture).
# Raspberry Pi 5's Cortex-A76 uses the A76 row.
CORES = {
    "cortex-a55": Core("cortex-a55", "Arm Cortex-A55", 2, 1, 1, 1, 2, 1, 2, "Cortex-A55 SOG"),
    "cortex-a76": Core("cortex-a76", "Arm Cortex-A76", 4, 2, 2, 2, 2, 1, 3, "Cortex-A76 SOG PJDOC-466751330-7215"),
    "cortex-a710": Core(
        "cortex-a710", "Arm Cortex-A710", 5, 2, 3, 2, 3, 2, 4, "Cortex-A710 Software Optimization Guide"
    ),
}
SIMD_CLASSES = ("fmla/fmul", "sdot/udot", "smmla", "smull/smlal", "other SIMD/FP")


def estimate_cycles(mix: dict[str, float], core: str) -> dict[str, Any]:
    """A throughput bound on the cycles of an instruction ``mix`` (:data:`CLASSES` -> count) on ``core``.

    Returns ``{"cycles", "bound_by", "by_resource": {resource: cycles}, "core", "source"}``: each resource's
    cycles are its instructions divided by its per-cycle rate (:class:`Core`); the bound is the largest (the pipe
    the mix saturates first). A lower bound for a perfectly scheduled, cache-resident run: latency chains, cache
    misses and branch mispredictions only add to it. Raises EdgeVitError for a core not in :data:`CORES`.
    """
    if core not in CORES:
        raise EdgeVitError(f"no cycle table for CPU {core!r}; known: {', '.join(CORES)}")
    c = CORES[core]
    total = sum(mix.values())
    simd = sum(mix.get(k, 0) for k in SIMD_CLASSES)
    loads, stores = mix.get("loads", 0), mix.get("stores", 0)
    by = {
        "issue": total / c.issue,
        "SIMD pipes": simd / c.simd,
        "loads": loads / c.loads,
        "stores": stores / c.stores,
        "load/store pipes": (loads + stores) / c.memory,
        "branches": mix.get("branches", 0) / c.branches,
        "integer pipes": mix.get("other scalar", 0) / c.scalar,
    }
    bound = max(by, key=by.get)
    return {"cycles": by[bound], "bound_by": bound, "by_resource": by, "core": core, "source": c.source}


# --- counting ----------------------------------------------------------------------------------------------------


def measure(
    target, backend: str, model: str | Path, image: np.ndarray, cpu: str, top: int = 12, progress: bool = True
) -> dict[str, Any]:
    """The per-inference cost profile of ``model`` (a ``backend`` artifact) on ``image`` (``[C, H, W]`` or
    ``[H, W, C]``, as the artifact takes it) on QEMU's ``cpu`` model, one runtime thread.

    Returns ``{"cpu", "instructions", "mix": {class: count}, "mnemonics": {top mnemonics}, "cycles":
    estimate_cycles(...), "libraries": {library: instructions}, "functions": [{"function", "library",
    "instructions", "mix"}] (the ``top`` costliest), "runs": RUNS, "window_instructions": {"markers", "inferences"},
    "process_instructions"}``, counts per inference (floats: a window of RUNS inferences divided by RUNS).
    ``process_instructions`` (the whole process, all threads: start-up, loading) is informative and not exact.

    Raises:
        EdgeVitError: the counting emulator is not set up, or capstone is not installed.
        RunFailed: the runtime failed under the counting emulator.
    """
    require("capstone", "arm")
    ((blocks, maps),) = count_blocks(target, backend, model, image, cpu)
    return profile(blocks, maps, cpu, top)


def count_blocks(
    target, backend: str, model: str | Path, image: np.ndarray, cpu: str, copies: int = 1, runs: int = RUNS
) -> list[tuple[dict[tuple[int, str], tuple[int, ...]], list[tuple[int, int, int, str]]]]:
    """Run ``copies`` counting processes (in parallel) of ``model`` on ``image``: one warm-up inference, an empty
    window, a window of ``runs`` inferences. For each process: the executed blocks ``{(guest address, code hex):
    (total, window 0, window 1)}`` (:func:`read_blocks`) and its memory map (:func:`read_maps`).

    Raises EdgeVitError (not set up) or RunFailed (the runtime failed, or the windows were not marked).
    """
    target.ensure_ready()
    with tempfile.TemporaryDirectory(prefix="edgevit-count-") as tmp:
        work = Path(tmp)
        name = "model" + Path(model).suffix
        shutil.copyfile(model, work / name)
        np.save(work / "image.npy", np.ascontiguousarray(image, dtype=np.float32))

        def one(i: int):
            d = work / f"run{i}"  # every process in a directory of the same name length: the same guest work
            d.mkdir()
            (d / name).symlink_to(work / name)
            (d / "image.npy").symlink_to(work / "image.npy")
            args = ["count", backend, name, "image.npy", str(runs), "maps.txt"]
            proc = target.guest(args, d, cpu=cpu, plugin_out="blocks.txt", progress=False)
            target.raise_failed(proc, backend, d / "blocks.txt")
            blocks = read_blocks(d / "blocks.txt")
            if any(len(c) != 3 for c in list(blocks.values())[:1]):
                raise RunFailed(f"{backend} on {target.name}: the counting windows were not marked")
            return blocks, read_maps(d / "maps.txt")

        with ThreadPoolExecutor(copies) as pool:  # independent processes: use the host's cores
            return list(pool.map(one, range(copies)))


def read_blocks(path: Path) -> dict[tuple[int, str], tuple[int, ...]]:
    """The counting plugin's output: ``{(guest address, code hex): (total executions, window 0, window 1, ...)}``."""
    out: dict[tuple[int, str], tuple[int, ...]] = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            addr, *counts, code = line.split()
            key = (int(addr, 16), code)
            old = out.get(key)
            new = tuple(int(c) for c in counts)
            out[key] = new if old is None else tuple(a + b for a, b in zip(old, new, strict=True))
    return out


def read_maps(path: Path) -> list[tuple[int, int, int, str]]:
    """``[(start, end, file offset, path)]`` of the file-backed mappings in a guest ``/proc/self/maps``."""
    out = []
    for line in Path(path).read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end, int(parts[2], 16), parts[5]))
    return sorted(out)


@lru_cache(maxsize=200_000)
def decode(code: str, addr: int) -> tuple[tuple[str, str], ...]:
    """``((mnemonic, class), ...)`` of the A64 machine code ``code`` (hex) at ``addr`` (capstone)."""
    md = _disassembler()
    out = []
    raw = bytes.fromhex(code)
    for i in range(0, len(raw), 4):  # A64 instructions are 4 bytes; decode one at a time so one unknown costs one
        insn = next(md.disasm(raw[i : i + 4], addr + i), None)
        if insn is None:
            out.append(("(unknown)", "other scalar"))
        else:
            out.append((insn.mnemonic, classify(insn.mnemonic, insn.op_str)))
    return tuple(out)


@lru_cache(maxsize=1)
def _disassembler():
    import capstone  # noqa: PLC0415 -- optional package (edgevit[arm])

    return capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def profile(
    blocks: dict[tuple[int, str], tuple[int, ...]],
    maps: list[tuple[int, int, int, str]],
    cpu: str,
    top: int = 12,
    runs: int = RUNS,
) -> dict[str, Any]:
    """The per-inference profile from one counting process's blocks (see :func:`measure`): window 1 (``runs``
    inferences) minus window 0 (the markers alone), divided by ``runs``."""
    mix: Counter[str] = Counter()
    mnemonics: Counter[str] = Counter()
    by_function: dict[tuple[str, str], Counter[str]] = {}
    starts = [m[0] for m in maps]
    n_insns = {key: len(key[1]) // 8 for key in blocks}  # A64: 4 bytes = 8 hex digits an instruction
    process = sum(c[0] * n_insns[k] for k, c in blocks.items())
    windows = [sum(c[w] * n_insns[k] for k, c in blocks.items()) for w in (1, 2)]
    unnamed: dict[str, list] = {}  # library -> [(start, end, mix, ends with ret)] of blocks no symbol covers
    for key, counts in blocks.items():
        diff = counts[2] - counts[1]
        if diff == 0:
            continue
        addr, code = key
        insns = decode(code, addr)
        lib, name, offset = _locate(addr, maps, starts)
        block: Counter[str] = Counter()
        for mnemonic, cls in insns:
            mix[cls] += diff
            mnemonics[mnemonic] += diff
            block[cls] += diff
        if name is None:
            unnamed.setdefault(lib, []).append((offset, offset + len(code) // 2, block, insns[-1][0] == "ret"))
        else:
            by_function.setdefault((lib, name), Counter()).update(block)
    for lib, spans in unnamed.items():  # stripped code: a function is a run of nearby blocks up to a `ret`
        spans.sort(key=lambda s: s[0])
        region_start, region_end, acc, returned = spans[0][0], spans[0][1], Counter(), False
        for start, end, block, ret in spans:
            if acc and (returned or start - region_end >= 64):
                by_function.setdefault((lib, f"{lib}+{region_start:#x}"), Counter()).update(acc)
                region_start, acc = start, Counter()
            region_end, returned = max(region_end, end), ret
            acc.update(block)
        by_function.setdefault((lib, f"{lib}+{region_start:#x}"), Counter()).update(acc)
    half = runs
    per = {k: mix.get(k, 0) / half for k in CLASSES}
    instructions = (windows[1] - windows[0]) / half
    libraries: Counter[str] = Counter()
    for (lib, _), c in by_function.items():
        libraries[lib] += sum(c.values()) / half
    functions = sorted(by_function.items(), key=lambda kv: -sum(kv[1].values()))[:top]
    return {
        "cpu": cpu,
        "instructions": instructions,
        "mix": per,
        "mnemonics": {m: c / half for m, c in mnemonics.most_common(20)},
        "cycles": estimate_cycles(per, cpu),
        "libraries": {k: v for k, v in libraries.most_common(8)},
        "functions": [
            {
                "function": name,
                "library": lib,
                "instructions": sum(c.values()) / half,
                "mix": {k: c[k] / half for k in CLASSES if c.get(k)},
            }
            for (lib, name), c in functions
        ],
        "runs": runs,
        "window_instructions": {"markers": windows[0], "inferences": windows[1]},
        "process_instructions": process,
    }


def _locate(addr: int, maps: list[tuple[int, int, int, str]], starts: list[int]) -> tuple[str, str | None, int]:
    """``(library file name, function or None, file offset)`` of a guest address: the mapping it lies in and the
    ELF symbol that covers it (``.symtab``, else ``.dynsym``; None where none does: stripped code)."""
    i = bisect.bisect_right(starts, addr) - 1
    if i < 0 or addr >= maps[i][1]:
        return "(anonymous)", "(generated code)", addr
    start, _, offset, path = maps[i]
    file_offset = addr - start + offset
    return Path(path).name, _symbol(path, file_offset), file_offset


@lru_cache(maxsize=256)
def _symbols(path: str) -> tuple[list[int], list[tuple[int, int, str]], list[tuple[int, int, int]]]:
    """A file's function symbols sorted by address (``[(addr, size, name)]``) and its PT_LOAD segments
    (``[(file offset, vaddr, filesz)]``), read with pyelftools; empty when it is missing or not ELF."""
    try:
        from elftools.elf.elffile import ELFFile  # noqa: PLC0415 -- optional package (edgevit[arm])
    except ImportError:  # optional: without it, costs are attributed to libraries only
        return [], [], []
    syms: dict[int, tuple[int, str]] = {}
    segments = []
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    segments.append((seg["p_offset"], seg["p_vaddr"], seg["p_filesz"]))
            for section_name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(section_name)
                if sec is None:
                    continue
                for s in sec.iter_symbols():
                    if s["st_info"]["type"] == "STT_FUNC" and s["st_value"] and s.name:
                        syms.setdefault(s["st_value"], (s["st_size"], s.name))
    except (OSError, Exception):  # noqa: BLE001 (any malformed file: no symbols, never a failed profile)
        return [], [], []
    table = sorted((a, size, name) for a, (size, name) in syms.items())
    return [t[0] for t in table], table, segments


def _symbol(path: str, file_offset: int) -> str | None:
    addrs, table, segments = _symbols(path)
    vaddr = next((v + file_offset - o for o, v, n in segments if o <= file_offset < o + n), None)
    if vaddr is None or not addrs:
        return None
    i = bisect.bisect_right(addrs, vaddr) - 1
    if i >= 0:
        a, size, name = table[i]
        if vaddr < a + max(size, 1):
            return _demangle_short(name)
    return None


def _demangle_short(name: str) -> str:
    """The symbol as it is (C++ names stay mangled: short and unique), cut to 90 characters."""
    return name if len(name) <= 90 else name[:87] + "..."


def core_table() -> dict[str, dict[str, Any]]:
    """:data:`CORES` as plain data (for reports)."""
    return {k: asdict(v) for k, v in CORES.items()}


__all__ = ["CLASSES", "CORES", "Core", "classify", "core_table", "estimate_cycles", "measure", "profile"]
