"""Runs inside the emulated aarch64 Python (numpy + ai-edge-litert / onnxruntime only, no torch, no edgevit).

usage: _arm64_runner.py BACKEND MODEL IMAGES.npy OUT.npy THREADS

Runs MODEL on every ``[C, H, W]`` image of IMAGES at batch 1 and saves ``[N, K]`` float32 logits to OUT,
printing ``done I`` after each image. The LiteRT branch mirrors ``edgevit.export.tflite.load`` (int8 input and
output tensors quantised with their own scale and zero point), the ONNX one ``edgevit.export.onnx.load``.
"""

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
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def main():
    backend, model, images, out, threads = sys.argv[1:6]
    run = {"tflite": tflite, "onnx": onnx}[backend](model, int(threads))
    images = np.load(images)
    logits = []
    for i, img in enumerate(images):
        logits.append(np.asarray(run(img[None]), dtype=np.float32).reshape(-1))
        print(f"done {i + 1}", flush=True)
    np.save(out, np.stack(logits))


if __name__ == "__main__":
    main()
