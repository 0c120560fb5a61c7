"""Every backend lowers a ViT and its runner agrees with PyTorch on real digits images."""

import math

import numpy as np
import pytest
import torch

from edgevit import EdgeVitError
from edgevit.backends import get_backend
from edgevit.export import Artifact, NotRunnable, export

RUNNABLE_HERE = ["executorch", "tflite", "onnx"]


def _images(digits32, n=16):
    return np.stack([digits32.val[i][0].numpy() for i in range(n)])


@pytest.mark.parametrize("backend", RUNNABLE_HERE)
def test_fp32_artifact_matches_pytorch(backend, tiny_vit, digits32, tmp_path):
    images = _images(digits32)
    example = torch.from_numpy(images[:1])
    art = export(tiny_vit, example, backend, tmp_path / f"m{get_backend(backend).suffix}")
    assert art.path.is_file() and art.precision == "fp32"
    run = art.load(threads=2)
    with torch.no_grad():
        ref = tiny_vit(torch.from_numpy(images)).numpy()
    got = np.concatenate([run(img[None]) for img in images])
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_executorch_reports_delegation(tiny_vit, digits32, tmp_path):
    art = export(tiny_vit, digits32.val[0][0][None].clone(), "executorch", tmp_path / "m.pte")
    assert art.info["delegate"] == "XnnpackBackend"
    # the whole ViT (LayerNorm and attention included) is one XNNPACK partition: nothing on portable kernels
    assert art.info["ops_outside_delegate"] == {}
    assert art.info["partitions"] == 1 and art.info["delegated_nodes"] > 20


@pytest.mark.parametrize("normalized_shape", [(6,), (7, 6)])
@pytest.mark.parametrize("affine", [True, False])
def test_xnnpack_friendly_layer_norm_equals_aten(normalized_shape, affine):
    from edgevit.backends.executorch.convert import layer_norm_via_mean

    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 6) * 3 + 1
    w = torch.randn(normalized_shape) if affine else None
    b = torch.randn(normalized_shape) if affine else None
    got = layer_norm_via_mean(x, normalized_shape, w, b, 1e-6)
    want = torch.ops.aten.native_layer_norm(x, normalized_shape, w, b, 1e-6)
    for g, r in zip(got, want, strict=True):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_layer_norm_needs_one_layout_transpose_in_xnnpack(monkeypatch):
    """ExecuTorch's XNNPACK reduces only as channels-last global average pooling, so LayerNorm's statistics need
    ``x`` transposed once; the normalisation reads ``x`` in its own layout (a second full-size transpose, back,
    cost 39 k instructions per 197x192 LayerNorm on the emulated Cortex-A76: docs/guides/arm-cost.md)."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgevit.backends.executorch.convert import prepare

    graphs, real = [], xnnpack_preprocess.serialize_xnnpack_binary
    monkeypatch.setattr(
        xnnpack_preprocess, "serialize_xnnpack_binary", lambda graph, data: graphs.append(graph) or real(graph, data)
    )
    model = torch.nn.Sequential(torch.nn.LayerNorm(48), torch.nn.Linear(48, 8)).eval()
    to_edge_transform_and_lower(prepare(model, torch.randn(1, 17, 48)), partitioner=[XnnpackPartitioner()])
    (graph,) = graphs
    values = [getattr(v.xvalue_union, "tensor_value", v.xvalue_union) for v in graph.xvalues]
    numel = {v.id_out: math.prod(v.dims) for v in values}
    transposes = [n.xnode_union for n in graph.xnodes if type(n.xnode_union).__name__ == "XNNStaticTranspose"]
    assert [numel[t.input_id] for t in transposes if numel[t.input_id] > 17] == [17 * 48]


def test_coreml_package_converts_and_says_it_cannot_run_here(tiny_vit, digits32, tmp_path):
    import platform

    art = export(tiny_vit, digits32.val[0][0][None].clone(), "coreml", tmp_path / "m.mlpackage")
    assert (art.path / "Manifest.json").is_file() and art.precision == "fp16"
    import coremltools as ct

    spec = ct.utils.load_spec(str(art.path))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["image"]
    assert [o.name for o in spec.description.output] == ["logits"]
    if platform.system() != "Darwin":
        with pytest.raises(NotRunnable, match="macOS"):
            art.load(emulate=False)
        assert art.load().execution.startswith("emulated (NumPy MIL interpreter")  # the fallback: the emulator


def test_failed_export_leaves_previous_artifact_intact(tiny_vit, digits32, tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous good artifact")
    onnx = get_backend("onnx")

    def crash(model, example, path, precision, calib, ptq):
        from edgevit.utils import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half written")
            raise RuntimeError("killed mid-write")

    monkeypatch.setattr(onnx, "convert", crash)
    with pytest.raises(EdgeVitError, match="onnx export failed.*killed mid-write"):
        export(tiny_vit, digits32.val[0][0][None].clone(), "onnx", target)
    assert target.read_bytes() == b"previous good artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp leftovers


def test_bad_export_requests_are_clear_errors(tiny_vit, tmp_path):
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(EdgeVitError, match="unknown backend 'tensorrt'"):
        export(tiny_vit, x, "tensorrt", tmp_path / "m.plan")
    with pytest.raises(EdgeVitError, match="onnx export supports precision fp32, int8, not 'w4'"):
        export(tiny_vit, x, "onnx", tmp_path / "m.onnx", "w4")
    with pytest.raises(EdgeVitError, match=r"end in \.pte"):
        export(tiny_vit, x, "executorch", tmp_path / "m.onnx")


def test_artifact_json_roundtrip(tmp_path):
    a = Artifact("tflite", "fp32", tmp_path / "artifacts" / "m.tflite", {"k": 1})
    d = a.to_json(root=tmp_path)
    assert d["path"] == "artifacts/m.tflite"
    assert Artifact.from_json(d, root=tmp_path) == a


class _CumulativePool(torch.nn.Module):
    """A token mixer built on ``logcumsumexp``: core ATen has no kernel for it, litert-torch no lowering."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logcumsumexp(x, dim=1)


def _model_with_op_gap(tiny_vit):
    tiny_vit.blocks[0].mlp.act = _CumulativePool()
    return tiny_vit.eval()


@pytest.mark.parametrize("backend", ["executorch", "tflite"])
def test_unsupported_op_is_named_with_module_path_before_calibration(
    backend, tiny_vit, digits32, tmp_path, monkeypatch
):
    import edgevit.quantize as q

    model = _model_with_op_gap(tiny_vit)
    calibrated = []
    monkeypatch.setattr(q, "calibrate_pt2e", lambda *a, **k: calibrated.append(1))
    calib = torch.stack([digits32.train[i][0] for i in range(8)])
    path = tmp_path / f"m{get_backend(backend).suffix}"
    with pytest.raises(EdgeVitError) as err:
        export(model, calib[:1], backend, path, "int8", calib=calib)
    msg = str(err.value)
    assert "aten.logcumsumexp" in msg and "module 'blocks.0.mlp.act' (_CumulativePool)" in msg
    assert "test_export.py" in msg  # the source line the op was traced from
    assert not calibrated and not path.exists()


def test_unsupported_op_check_matches_what_each_converter_does(tiny_vit, tmp_path):
    from edgevit.export import unsupported_ops

    x = torch.zeros(1, 3, 32, 32)
    assert all(unsupported_ops(tiny_vit, x, b) == [] for b in ("executorch", "tflite", "coreml", "onnx"))
    model = _model_with_op_gap(tiny_vit)
    # Core ML and ONNX do convert logcumsumexp: no false alarm there, and the float export still succeeds
    assert unsupported_ops(model, x, "coreml") == [] and unsupported_ops(model, x, "onnx") == []
    export(model, x, "onnx", tmp_path / "m.onnx")
    # the float tflite converter fails too; the error names the op and the module, not a graph node
    with pytest.raises(EdgeVitError, match=r"aten.logcumsumexp in module 'blocks.0.mlp.act'"):
        export(model, x, "tflite", tmp_path / "m.tflite")


@pytest.mark.parametrize("backend", RUNNABLE_HERE)
def test_nhwc_export_takes_channels_last_images_and_names_a_wrong_layout(backend, tiny_vit, digits32, tmp_path):
    """``layout="NHWC"`` bakes the NCHW <- NHWC permute into the graph: fed the same digits channels-last, the
    artifact gives the NCHW export's logits; fed NCHW, it is a clear error naming both shapes. The permute stays
    inside ExecuTorch's single XNNPACK partition and LiteRT folds it into its own input transpose."""
    images = _images(digits32)
    example = torch.from_numpy(images[:1])
    suffix = get_backend(backend).suffix
    nchw = export(tiny_vit, example, backend, tmp_path / f"nchw{suffix}")
    nhwc = export(tiny_vit, example, backend, tmp_path / f"nhwc{suffix}", layout="NHWC")
    assert (nchw.layout, nchw.info["input_shape"]) == ("NCHW", [1, 3, 32, 32])
    assert (nhwc.layout, nhwc.info["input_shape"]) == ("NHWC", [1, 32, 32, 3])
    channels_last = nhwc.feed(images)
    assert channels_last.shape == (16, 32, 32, 3) and np.array_equal(channels_last[3, 5, 7], images[3, :, 5, 7])
    run_nchw, run_nhwc = nchw.load(threads=2), nhwc.load(threads=2)
    want = np.concatenate([run_nchw(img[None]) for img in images])
    got = np.concatenate([run_nhwc(img[None]) for img in channels_last])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    with torch.no_grad():
        ref = tiny_vit(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(EdgeVitError, match=r"takes NHWC input of shape \[1, 32, 32, 3\]; got shape \[1, 3, 32, 32\]"):
        run_nhwc(images[:1])  # NCHW into the NHWC artifact
    with pytest.raises(EdgeVitError, match=r"takes NCHW input of shape \[1, 3, 32, 32\]; got shape \[1, 32, 32, 3\]"):
        run_nchw(channels_last[:1])
    # the manifest record carries the layout, so a runner built from it feeds the right one
    again = Artifact.from_json(nhwc.to_json(root=tmp_path), root=tmp_path)
    assert again.layout == "NHWC" and again.feed(images).shape == (16, 32, 32, 3)
    if backend == "executorch":
        assert nhwc.info["partitions"] == 1 and nhwc.info["ops_outside_delegate"] == {}
        assert nhwc.info["delegated_nodes"] == nchw.info["delegated_nodes"] + 1  # the permute, delegated
    if backend == "tflite":
        from edgevit.backends.tflite.runtime import interpreter_class

        def transposes(art):
            interp = interpreter_class()(model_path=str(art.path))
            return [op["op_name"] for op in interp._get_ops_details()].count("TRANSPOSE")

        assert transposes(nhwc) == transposes(nchw) - 1  # the converter's NCHW -> NHWC input transpose is gone


def test_bad_layout_is_a_clear_error(tiny_vit, tmp_path):
    with pytest.raises(EdgeVitError, match=r"unknown input layout 'nhwc'; choose one of NCHW, NHWC"):
        export(tiny_vit, torch.zeros(1, 3, 32, 32), "onnx", tmp_path / "m.onnx", layout="nhwc")
