"""A Core ML emulator: run a converted ML Program (MIL) with NumPy on any OS.

``emulate(model, inputs)`` mirrors ``MLModel.predict``: ``model`` is an ``MLModel``, a ``.mlpackage`` path or a
MIL ``Program``; ``inputs`` maps input names to arrays; the result maps output names to arrays. ``Emulator`` loads
the program once (constant and compressed weights decompressed once) for repeated runs, and ``trace`` returns every
op's output for layer-by-layer comparison.

Precision: every MIL value carries a dtype, and the emulator honours it. Each op computes in float32 from its
inputs (fp16 inputs and weights are exact in float32) and its outputs are rounded to the dtype the program
declares (round-to-nearest-even to float16 for ``fp16`` outputs, overflow to inf), so a program converted with
fp16 compute (``cast`` to fp16 at the input, fp16 weights, ``cast`` back at the output) is rounded to float16
after every op, as Core ML stores fp16 activations between ops; an fp32 program computes in float32 throughout.
What this does not model: accumulation inside one op in fp16 (the GPU and Neural Engine may accumulate in
lower precision than float32), op fusion the runtime performs, and the Neural Engine's own activation
approximations. Emulated fp16 numbers are therefore close to, not bit-identical with, an iPhone's.

Ops are a registry, ``OPS: op type -> function(**inputs) -> array | tuple``; an op not in it is an
:class:`~edgevit.utils.EdgeVitError` naming the op type, the op and its output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.backends.coreml.mil_ops import OPS, dequantize
from edgevit.utils import EdgeVitError, require

EXECUTION = "emulated (NumPy MIL interpreter, per-op fp16 rounding)"


_NP_DTYPE = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "int16": np.int16,
    "uint16": np.uint16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int4": np.int8,
    "uint4": np.uint8,
    "uint1": np.uint8,
    "bool": np.bool_,
}


def _dtype_name(var) -> str | None:
    from coremltools.converters.mil.mil import types  # noqa: PLC0415 -- optional package (edgevit[coreml])

    t = var.sym_type
    elem = t.get_primitive() if types.is_tensor(t) else t
    try:
        return types.builtin_to_string(elem)
    except Exception:  # strings, lists, states
        return None


def _to_dtype(value, name: str | None):
    """``value`` rounded/cast to MIL dtype ``name`` (float16 rounding is round-to-nearest-even)."""
    if name is None or name not in _NP_DTYPE or isinstance(value, str):
        return value
    return np.asarray(value).astype(_NP_DTYPE[name], copy=False)


def _compute(value):
    """What an op computes on: float16 -> float32 (exact), everything else as is."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    if isinstance(value, np.float16):
        return np.float32(value)
    return value


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (scanning them once costs milliseconds)."""
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415 -- scans the loaded BLAS libraries on import

    return ThreadpoolController()


def load_program(model):
    """The MIL ``Program`` of ``model``: an ``MLModel``, a ``.mlpackage`` path, or a ``Program`` (returned as is).

    A saved package is read back from its protobuf spec and weight file, i.e. exactly what ships.

    Raises:
        EdgeVitError: the path does not exist, or the model is not an ML Program.
    """
    ct = require("coremltools", "coreml")
    from coremltools.converters.mil.mil import Program  # noqa: PLC0415 -- optional package (edgevit[coreml])

    if isinstance(model, Program):
        return model
    if isinstance(model, (str, Path)):
        if not Path(model).exists():
            raise EdgeVitError(f"Core ML model not found: {model}")
        model = ct.models.MLModel(str(model), skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        if getattr(model, "_mil_program", None) is not None:
            return model._mil_program
        raise EdgeVitError(
            f"the Core ML emulator runs ML Programs (convert_to='mlprogram'); this model is {spec.WhichOneof('Type')}"
        )
    from coremltools.converters.mil.frontend.milproto.load import load  # noqa: PLC0415 -- optional package (edgevit[coreml])

    return load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)


class Emulator:
    """A loaded ML Program, ready to run: ``Emulator(model)(inputs) -> {output name: array}``.

    Args:
        model: an ``MLModel``, a ``.mlpackage`` path, or a MIL ``Program``.
        function: the program function to run (``main`` by default).

    Raises:
        EdgeVitError: the model cannot be loaded, or it holds an op the emulator does not implement (named, with
            the op and the variable it produces).
    """

    def __init__(self, model, function: str = "main"):
        program = load_program(model)
        if function not in program.functions:
            raise EdgeVitError(f"ML Program has no function {function!r}; it has {', '.join(program.functions)}")
        fn = program.functions[function]
        self.inputs = {name: (tuple(v.shape), _dtype_name(v)) for name, v in fn.inputs.items()}
        self.outputs = [v.name for v in fn.outputs]
        self._consts: dict[str, Any] = {}  # var name -> value in its MIL dtype
        self._plan: list[tuple[Any, Callable, dict[str, Any]]] = []
        unsupported = []
        for op in fn.operations:
            if op.blocks:
                unsupported.append(op)
                continue
            if op.op_type == "const":
                self._consts[op.outputs[0].name] = _to_dtype(op.outputs[0].val, _dtype_name(op.outputs[0]))
                continue
            if op.op_type not in OPS:
                unsupported.append(op)
                continue
            args = {
                k: (tuple(x.name for x in v) if isinstance(v, (list, tuple)) else v.name) for k, v in op.inputs.items()
            }
            for v in op.inputs.values():  # constants the loader inlined (no const op in the block)
                for x in v if isinstance(v, (list, tuple)) else (v,):
                    if x.op is None and x.val is not None and x.name not in self._consts:
                        self._consts[x.name] = _to_dtype(x.val, _dtype_name(x))
            self._plan.append((op, OPS[op.op_type], args))
        if unsupported:
            first = unsupported[0]
            kinds = sorted({o.op_type for o in unsupported})
            raise EdgeVitError(
                f"Core ML emulator does not implement MIL op {first.op_type!r} (op {first.name!r} -> "
                f"%{first.outputs[0].name if first.outputs else '?'}); unsupported here: {', '.join(kinds)}. "
                "Add it to edgevit.backends.coreml.mil_ops.OPS"
            )
        self._fold_constexpr()
        self.fp16 = any(_dtype_name(o) == "fp16" for op, _, _ in self._plan for o in op.outputs)
        # float32 copies of fp16 constants, made once: ops compute in float32
        self._compute_consts = {k: _compute(v) for k, v in self._consts.items()}

    def _fold_constexpr(self) -> None:
        """Decompress weights once: ``constexpr_*`` ops (and anything computed only from constants) run at load."""
        rest = []
        for op, f, args in self._plan:
            names = [n for a in args.values() for n in (a if isinstance(a, tuple) else (a,))]
            if op.op_type.startswith("constexpr_") and all(n in self._consts for n in names):
                outs = self._run_op(op, f, args, lambda n: _compute(self._consts[n]))
                self._consts.update(outs)
            else:
                rest.append((op, f, args))
        self._plan = rest

    @staticmethod
    def _run_op(op, f, args, get):
        kwargs = {k: [get(n) for n in a] if isinstance(a, tuple) else get(a) for k, a in args.items()}
        try:
            out = f(**kwargs)
        except EdgeVitError:
            raise
        except Exception as e:
            raise EdgeVitError(
                f"Core ML emulator failed at op {op.name!r} ({op.op_type} -> %{op.outputs[0].name}): "
                f"{type(e).__name__}: {e}"
            ) from e
        outs = out if isinstance(out, tuple) else (out,)
        return {v.name: _to_dtype(o, _dtype_name(v)) for v, o in zip(op.outputs, outs, strict=True)}

    def _bind(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        missing = [n for n in self.inputs if n not in inputs]
        extra = [n for n in inputs if n not in self.inputs]
        if missing or extra:
            raise EdgeVitError(f"Core ML model inputs are {', '.join(self.inputs)}; got {', '.join(inputs) or 'none'}")
        env: dict[str, Any] = {}
        for name, (shape, dtype) in self.inputs.items():
            x = np.asarray(inputs[name])
            ok = len(shape) == x.ndim and all(
                not isinstance(s, int) or s == d for s, d in zip(shape, x.shape, strict=True)
            )
            if not ok:
                raise EdgeVitError(f"Core ML input {name!r} has shape {shape}; got {x.shape}")
            env[name] = _to_dtype(x, dtype)
        return env

    def trace(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every op output (and the inputs), by MIL variable name in program order, in their MIL dtypes."""
        env = self._bind(inputs)
        consts = self._compute_consts

        def get(name):  # activations are stored in their MIL dtype; constants were converted once
            return _compute(env[name]) if name in env else consts[name]

        # one BLAS thread: batch-1 matrices are small, and a multi-threaded BLAS on a busy host spins (measured:
        # 16 ms vs 490 ms per image for the quickstart ViT on 2 shared cores)
        with _blas_controller().limit(limits=1, user_api="blas"):
            for op, f, args in self._plan:
                env.update(self._run_op(op, f, args, get))
        return env

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the program; ``{output name: array}`` in the outputs' declared dtypes, as ``MLModel.predict``."""
        env = self.trace(inputs)
        return {name: env[name] for name in self.outputs}


def emulate(model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a Core ML ML Program with NumPy, as ``MLModel.predict(inputs)`` would on a device.

    Args:
        model: an ``MLModel``, a ``.mlpackage`` path, or a MIL ``Program``.
        inputs: input name -> array (cast to the input's declared dtype; shapes must match).

    Returns:
        Output name -> array, in the outputs' declared dtypes. fp16 programs are rounded to float16 after every op
        (see the module docstring for what is and is not emulated).

    Raises:
        EdgeVitError: unloadable model, an op the emulator does not implement (named), or wrong inputs.
    """
    return Emulator(model)(inputs)


# Core ML compute units that let the GPU or the Neural Engine run part of a model. coremltools' "Typed Execution"
# guide (apple.github.io/coremltools/docs-guides/source/typed-execution.html): "The GPU and ANE use float 16 precision,
# and the CPU uses float 32", and "The CPU guarantees float 32 precision, so you can use the .cpuOnly property ... to
# enforce the higher precision". So an fp32 program is guaranteed fp32 only under CPU_ONLY; with the GPU or Neural
# Engine allowed, parts of it may compute in float16 (the guide's typed-execution example says an fp32 ML Program
# "will execute on a combination of the GPU and CPU", and the GPU may accumulate in float16 when the app sets
# MLModelConfiguration.allowLowPrecisionAccumulationOnGPU). The emulator checks the worst case there: fp16 throughout.
FP16_COMPUTE_UNITS = ("ALL", "CPU_AND_GPU", "CPU_AND_NE")


def emulate_artifact(path: str | Path, compute_units: str | None = None):
    """A parity runner for a ``.mlpackage`` in the emulator, as the device's compute units would run it; its
    ``execution`` attribute says how.

    ``compute_units`` (Core ML's, as a device profile gives them): an fp32 program under ``ALL``, ``CPU_AND_GPU`` or
    ``CPU_AND_NE`` is run in float16 (the GPU/Neural Engine's precision, see :data:`FP16_COMPUTE_UNITS`): the
    coremltools ``add_fp16_cast`` pass rewrites the loaded program exactly as an fp16 conversion would. None or
    ``CPU_ONLY``: the program's own precision. An fp16 program is fp16 under any units.

    Raises:
        EdgeVitError: the package cannot be read, or holds an op the emulator lacks.
    """
    em = Emulator(path)
    execution = EXECUTION if em.fp16 else EXECUTION.replace("per-op fp16 rounding", "fp32")
    if not em.fp16 and compute_units in FP16_COMPUTE_UNITS:
        from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY  # noqa: PLC0415 -- optional

        program = load_program(path)
        PASS_REGISTRY["common::add_fp16_cast"](program)  # what compute_precision=FLOAT16 does at conversion
        PASS_REGISTRY["common::const_elimination"](program)  # fp16 weights cast once, not per image
        em = Emulator(program)
        execution = EXECUTION.replace(
            ")", f": fp32 program run in fp16, as compute units {compute_units} let the GPU/Neural Engine run it)"
        )
    elif compute_units:
        execution = execution.replace(")", f"; compute units {compute_units})")
    if len(em.inputs) != 1 or len(em.outputs) != 1:
        raise EdgeVitError(f"{path}: parity runs single-input, single-output models; this has {list(em.inputs)}")
    (name,), out = list(em.inputs), em.outputs[0]

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(em({name: x})[out], dtype=np.float32)

    run.execution = execution
    return run


__all__ = [
    "EXECUTION",
    "FP16_COMPUTE_UNITS",
    "OPS",
    "Emulator",
    "dequantize",
    "emulate",
    "emulate_artifact",
    "load_program",
]
