"""PTQ with each backend's own quantizer: the artifact holds the quantized ops that backend executes.

Accuracy on a trained model (top-1 drop, agreement) is asserted on the quickstart run (test_quickstart.py);
here the model is a small random-init ViT, so these tests check structure, size and I/O handling.
"""

import functools

import numpy as np
import pytest
import torch

from edgevit.backends import get_backend
from edgevit.backends.tflite.runtime import interpreter_class
from edgevit.data import calibration_batch
from edgevit.export import export
from edgevit.quantize import PTQConfig, calibrate_pt2e, capture
from edgevit.utils import EdgeVitError


@pytest.fixture(scope="module")
def setup():
    from edgevit import create_model
    from edgevit.data import digits

    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=10).eval()
    data = digits(img_size=32)
    calib = calibration_batch(data.train, 32)
    images = torch.stack([data.val[i][0] for i in range(64)])
    with torch.no_grad():
        ref = model(images).numpy()
    return model, calib, images, ref


def _run(art, images):
    run = art.load(2)
    return np.concatenate([run(images[i : i + 1].numpy()) for i in range(len(images))])


def _size(path):
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_xnnpack_graph_has_per_channel_int8_weights_and_static_or_dynamic_activations(setup):
    model, calib, _, _ = setup
    et = get_backend("executorch")
    static = calibrate_pt2e(capture(model, calib[:1]), et.quantizer("int8"), calib, "executorch", progress=False)
    targets = [str(n.target) for n in static.graph.nodes if n.op == "call_function"]
    assert any("quantize_per_tensor.default" in t for t in targets)  # static activation ranges
    assert any("dequantize_per_channel" in t for t in targets)  # per-channel weights
    consts = [functools.reduce(getattr, n.target.split("."), static) for n in static.graph.nodes if n.op == "get_attr"]
    assert sum(isinstance(c, torch.Tensor) and c.dtype == torch.int8 for c in consts) >= 6  # qkv proj fc1 fc2 head conv
    dynamic = calibrate_pt2e(capture(model, calib[:1]), et.quantizer("int8-dynamic"), None, "executorch", False)
    dyn_targets = [str(n.target) for n in dynamic.graph.nodes if n.op == "call_function"]
    assert any("choose_qparams" in t for t in dyn_targets)  # activation scales computed per call
    assert not any("quantize_per_tensor.default" in t for t in dyn_targets)


@pytest.mark.parametrize("precision", ["int8", "int8-dynamic"])
def test_executorch_int8_is_one_xnnpack_partition_smaller_and_close(setup, tmp_path, precision):
    model, calib, images, ref = setup
    fp32 = export(model, calib[:1], "executorch", tmp_path / "f.pte")
    art = export(model, calib[:1], "executorch", tmp_path / "q.pte", precision, calib=calib)
    assert art.info["partitions"] == 1 and art.info["ops_outside_delegate"] == {}
    assert art.info["quantizer"] == "XNNPACKQuantizer"
    assert _size(art.path) < 0.4 * _size(fp32.path)
    out = _run(art, images)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.mean() > 0.95  # flat random-init logits; the trained quickstart model keeps > 99% agreement


def test_tflite_full_integer_int8_io_is_handled_for_the_user(setup, tmp_path):
    model, calib, images, ref = setup
    art = export(model, calib[:1], "tflite", tmp_path / "q.tflite", "int8", calib=calib)
    assert art.info["input_dtype"] == "int8" and art.info["output_dtype"] == "int8"
    interp = interpreter_class()(model_path=str(art.path))
    interp.allocate_tensors()
    inp, outd = interp.get_input_details()[0], interp.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], outd["quantization"]
    assert s_in > 0 and s_out > 0
    # what the runner does must equal quantising by hand with the model's own scale/zero point
    x = images[:1].numpy()
    interp.set_tensor(inp["index"], np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8))
    interp.invoke()
    by_hand = (interp.get_tensor(outd["index"]).astype(np.float32) - z_out) * s_out
    out = _run(art, images)
    np.testing.assert_allclose(out[:1], by_hand, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_tflite_dynamic_range_and_fp16_weights(setup, tmp_path):
    model, calib, images, ref = setup
    fp32 = export(model, calib[:1], "tflite", tmp_path / "f.tflite")
    dyn = export(model, calib[:1], "tflite", tmp_path / "d.tflite", "int8-dynamic")
    half = export(model, calib[:1], "tflite", tmp_path / "h.tflite", "fp16")
    interp_cls = interpreter_class()
    for art, dtype in ((dyn, np.int8), (half, np.float16)):
        assert art.info["input_dtype"] == "float32"
        interp = interp_cls(model_path=str(art.path))
        assert sum(t["dtype"] == dtype for t in interp.get_tensor_details()) >= 5, art.precision  # stored weights
    assert _size(dyn.path) < 0.35 * _size(fp32.path)
    assert 0.4 < _size(half.path) / _size(fp32.path) < 0.6
    np.testing.assert_allclose(_run(half, images), ref, atol=5e-3 * np.abs(ref).max())


def test_coreml_programs_hold_the_compressed_ops(setup, tmp_path):
    model, calib, _, _ = setup
    expected = {
        "int8": "quantize",  # W8A8: activation quantize/dequantize ops
        "w8": "constexpr_affine_dequantize",
        "w4": "constexpr_blockwise_shift_scale",
        "w4-lut": "constexpr_lut_to_dense",
    }
    fp16 = export(model, calib[:1], "coreml", tmp_path / "f.mlpackage")
    assert not set(expected.values()) & set(fp16.info["ops"])
    sizes = {}
    for precision, op in expected.items():
        art = export(model, calib[:1], "coreml", tmp_path / f"{precision}.mlpackage", precision, calib=calib)
        assert art.info["ops"].get(op, 0) >= 4, (precision, art.info["ops"])
        sizes[precision] = _size(art.path) / _size(fp16.path)
    assert sizes["w8"] < 0.65 and sizes["w4"] < sizes["w8"] and sizes["w4-lut"] < sizes["w8"]
    assert art.info["minimum_deployment_target"] == "iOS17"


def test_onnx_int8_is_qdq_and_runs_in_onnxruntime(setup, tmp_path):
    model, calib, images, ref = setup
    fp32 = export(model, calib[:1], "onnx", tmp_path / "f.onnx")
    art = export(model, calib[:1], "onnx", tmp_path / "q.onnx", "int8", calib=calib)
    assert art.info["ops"]["QuantizeLinear"] >= 10 and art.info["ops"]["DequantizeLinear"] >= 10
    assert _size(art.path) < 0.35 * _size(fp32.path)
    out = _run(art, images)
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.8


def test_static_int8_without_calibration_images_is_an_error(setup, tmp_path):
    model, calib, _, _ = setup
    with pytest.raises(EdgeVitError, match="tflite int8 is static quantization: pass calibration images"):
        export(model, calib[:1], "tflite", tmp_path / "q.tflite", "int8")
    assert not (tmp_path / "q.tflite").exists()


def test_nncf_path_quantizes_with_the_same_backend_quantizer(setup, tmp_path):
    model, calib, images, ref = setup
    ptq = PTQConfig(method="nncf", smooth_quant=True)
    art = export(model, calib[:1], "tflite", tmp_path / "n.tflite", "int8", calib=calib, ptq=ptq)
    assert art.info["quantizer"] == "litert_torch PT2EQuantizer" and art.info["method"] == "nncf"
    assert art.info["smooth_quant"] is True and art.info["input_dtype"] == "int8"  # still full-integer
    out = _run(art, images)
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9
    with pytest.raises(EdgeVitError, match="onnx int8 uses onnxruntime's own quantizer"):
        export(model, calib[:1], "onnx", tmp_path / "n.onnx", "int8", calib=calib, ptq=ptq)
    with pytest.raises(ValueError, match="NNCF algorithms: set method: nncf"):
        PTQConfig(smooth_quant=True)
