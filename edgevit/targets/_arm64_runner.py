"""Runs inside the emulated aarch64 Python (numpy and the runtimes only: no torch, no edgevit).

usage: _arm64_runner.py logits BACKEND MODEL IMAGES.npy OUT.npy THREADS
       _arm64_runner.py count BACKEND MODEL IMAGE.npy RUNS MAPS.txt

``logits`` runs MODEL on every ``[C, H, W]`` image of IMAGES at batch 1 and saves ``[N, K]`` float32 logits to OUT,
printing ``done I`` after each image. ``count`` runs MODEL once on the one image of IMAGE.npy (warm-up), then
marks an empty counting window and a window around RUNS more runs, on one thread (the counting plugin counts what
executes in them; see :mod:`edgevit.targets.cost`), then writes the process's memory map (``/proc/self/maps``,
as QEMU presents it to the guest) to MAPS, which attributes each counted block to the
library it lies in. The LiteRT branch mirrors ``edgevit.export.tflite.load`` (int8 input and output tensors
quantised with their own scale and zero point), the ONNX one ``edgevit.export.onnx.load``, the ExecuTorch one
``edgevit.export.executorch.load`` (on ExecuTorch's own aarch64 runtime: see :mod:`edgevit.targets.executorch_runtime`).
"""

import os
import sys

import numpy as np


def tflite(path, threads):
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 -- runs on the emulated device, not on this host

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def run(x):
        if np.issubdtype(inp["dtype"], np.integer):
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max)
        interp.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            return (y.astype(np.float32) - out_zero) * out_scale
        return y.astype(np.float32)

    return run


def onnx(path, threads):
    import onnxruntime as ort  # noqa: PLC0415 -- runs on the emulated device, not on this host

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no spin-waiting worker: a spinning thread executes a timing-dependent number of instructions
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def executorch(path, threads):
    # ExecuTorch's own aarch64 runtime through edgevit's C entry point (plugins/executorch_shim.cpp), whose path the
    # host passes in EDGEVIT_EXECUTORCH_LIB. No thread setting: ExecuTorch sizes its threadpool from the CPUs the
    # sysroot presents (one).
    import ctypes  # noqa: PLC0415 -- only this runtime needs it

    lib = ctypes.CDLL(os.environ["EDGEVIT_EXECUTORCH_LIB"])
    ptr, err_args = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_size_t]
    lib.edgevit_et_load.restype, lib.edgevit_et_load.argtypes = ptr, [ctypes.c_char_p, *err_args]
    lib.edgevit_et_output_numel.restype, lib.edgevit_et_output_numel.argtypes = ctypes.c_int64, [ptr, *err_args]
    lib.edgevit_et_forward.restype = ctypes.c_int64
    lib.edgevit_et_forward.argtypes = [ptr, ptr, ptr, ctypes.c_int, ptr, ctypes.c_int64, *err_args]
    err = ctypes.create_string_buffer(1024)
    handle = lib.edgevit_et_load(os.fsencode(path), err, len(err))
    numel = lib.edgevit_et_output_numel(handle, err, len(err)) if handle else -1
    if numel < 0:
        raise RuntimeError(err.value.decode(errors="replace"))

    # what an app keeps between inferences: the output buffer and the input's shape array (made once per shape), so
    # the counted window holds the inference and its copies in and out, not the wrapping of numpy arrays for ctypes
    forward, out, shapes = lib.edgevit_et_forward, np.empty(numel, dtype=np.float32), {}
    out_ptr, err_len = out.ctypes.data, len(err)

    def run(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape not in shapes:
            shape = np.asarray(x.shape, dtype=np.int64)
            shapes[x.shape] = (shape, shape.ctypes.data)  # the array kept alive with its address
        n = forward(handle, x.ctypes.data, shapes[x.shape][1], x.ndim, out_ptr, numel, err, err_len)
        if n < 0:
            raise RuntimeError(err.value.decode(errors="replace"))
        return out[:n].copy()

    return run


RUNTIMES = {"tflite": tflite, "onnx": onnx, "executorch": executorch}
# The counting plugin (plugins/count.c) watches write(MARK_FD, buf, 1 or 2): open or close a counting window on this
# thread. Nothing is open at that descriptor, so the call only fails with EBADF.
MARK_FD, OPEN, CLOSE = 0x7FFFFFF0, b"o", b"cc"


def mark(what):
    try:
        os.write(MARK_FD, what)
    except OSError:
        pass


def main():
    mode, backend, model = sys.argv[1:4]
    if mode == "logits":
        images, out, threads = sys.argv[4:7]
        run = RUNTIMES[backend](model, int(threads))
        logits = []
        for i, img in enumerate(np.load(images)):
            logits.append(np.asarray(run(img[None]), dtype=np.float32).reshape(-1))
            print(f"done {i + 1}", flush=True)
        np.save(out, np.stack(logits))
    elif mode == "count":
        image, runs, maps = sys.argv[4:7]
        run = RUNTIMES[backend](model, 1)
        x = np.load(image)[None]
        run(x)  # warm-up: the first inference packs weights and plans memory
        mark(OPEN)
        mark(CLOSE)  # window 0: the markers' own cost
        mark(OPEN)
        for _ in range(int(runs)):
            run(x)
        mark(CLOSE)  # window 1: the inferences
        with open("/proc/self/maps") as src, open(maps, "w") as dst:
            dst.write(src.read())
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
