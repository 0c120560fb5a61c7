"""The divergence finder (``edgevit.parity.explain``): module-by-module comparison of an artifact's intermediate
tensors with PyTorch's, per runtime, on real digits images.

A faulty artifact here is the export of a copy of the model with one layer's weights scaled by 1.5 (the mutation
suite, ``test_mutations.py``, edits the artifacts themselves). The model is a narrow 2-block ViT with random
norm affines (``randomize_``) so every layer shows in its output.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgevit import create_model
from edgevit.backends import get_backend
from edgevit.bench import randomize_
from edgevit.export import Artifact
from edgevit.parity import app_inputs
from edgevit.parity.explain import compare, explain, first_divergent, layouts, reference_outputs
from edgevit.quantize import PTQConfig

LEAVES = [
    "patch_embed.proj",
    "blocks.0.norm1",
    "blocks.0.attn.qkv",
    "blocks.0.attn.proj",
    "blocks.0.mlp.fc1",
    "blocks.0.mlp.act",
    "blocks.0.mlp.fc2",
    "blocks.1.attn",
    "norm",
    "head",
]


@pytest.fixture(scope="module")
def small_vit():
    torch.manual_seed(0)
    model = create_model(
        "vit_tiny_patch16", img_size=32, patch_size=8, depth=2, embed_dim=64, mlp_dim=128, num_heads=2, num_classes=10
    )
    return randomize_(model).eval()


@pytest.fixture(scope="module")
def val8(digits32):
    return np.stack([digits32.val[i][0].numpy() for i in range(8)])


def _faulty(model, module: str, scale: float = 1.5):
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.get_submodule(module).weight.mul_(scale)
    return bad.eval()


def _export(model, images, backend, path, precision=None):
    precision = precision or get_backend(backend).default_precision
    get_backend(backend).convert(model, torch.from_numpy(images[:1]), path, precision)
    return Artifact(backend, precision, path)


def test_layouts_match_nhwc_and_split_heads():
    ref = np.arange(2 * 8 * 3 * 5, dtype=np.float64).reshape(2, 8, 3, 5)  # [n, C, H, W]
    nhwc = ref.transpose(0, 2, 3, 1)  # what LiteRT stores around a conv
    assert any(np.array_equal(c, ref) for c in layouts(nhwc, ref.shape[1:]))
    tokens = np.arange(2 * 17 * 6, dtype=np.float64).reshape(2, 1, 17, 6)
    split = tokens.reshape(2, 1, 17, 2, 3)  # [B, N, h, d] vs [B, N, C]: same memory order
    assert any(np.array_equal(c, tokens[:, 0]) for c in layouts(split, (17, 6)))
    assert layouts(np.zeros((2, 5)), (3,)) == []  # sizes differ: no arrangement


def test_reference_keeps_patches_folded_into_the_batch_per_image():
    """MobileViT's transformer runs on ``[B*P, N, C]``: per image its hooks see a batch of P, not 1, and the
    stacked reference must stay ``[images, P, N, C]`` to line up with an artifact's per-image tensors."""

    class Folded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):  # [1, 4, 2, 8] -> [4, 2, 8] (patches as batch) -> fc -> [1, 64]
            return self.fc(x.reshape(4, 2, 8)).reshape(1, -1)

    x = np.random.default_rng(0).standard_normal((3, 4, 2, 8)).astype(np.float32)
    names, outs, ins = reference_outputs(Folded().eval(), x)
    assert outs["fc"].shape == (3, 4, 2, 8) and ins["fc"].shape == (3, 4, 2, 8) and outs[""].shape == (3, 64)
    row = compare("fc", "linear", "t", outs["fc"], [o.reshape(4, 16) for o in outs["fc"]])
    assert row is not None and row["rel_err"] == 0.0


def test_first_divergent_needs_the_error_carried_on():
    rows = [{"module": m, "rel_err": e} for m, e in [("a", 1e-7), ("ln", 2e-2), ("b", 1e-7), ("c", 0.5), ("d", 0.4)]]
    first = first_divergent(rows, 1e-3)
    assert first["module"] == "c" and rows[1]["carried"] is False  # ln: over, but the next layer is fine again
    assert first_divergent(rows[:3], 1e-3) is None
    assert first_divergent([{"module": "out", "rel_err": 1.0}], 1e-3)["module"] == "out"  # the last row counts


def test_app_inputs_follow_the_manifest_and_map_back(val8):
    same, to_model, norm = app_inputs(val8, ([0.5] * 3, [0.5] * 3), {"mean": [0.5] * 3, "std": [0.5] * 3})
    assert same is val8 and to_model(val8) is val8
    app, to_model, norm = app_inputs(val8, ([0.5] * 3, [0.5] * 3), {"mean": [0.485, 0.456, 0.406], "std": [0.2] * 3})
    assert norm == ([0.485, 0.456, 0.406], [0.2] * 3) and not np.allclose(app, val8)
    np.testing.assert_allclose(to_model(app), val8, atol=1e-5)


def test_onnx_clean_matches_and_a_perturbed_layer_is_named(small_vit, val8, tmp_path):
    good = _export(small_vit, val8, "onnx", tmp_path / "good.onnx")
    e = explain(small_vit, good, val8)
    modules = [r["module"] for r in e["layers"]]
    assert modules[0] == "input" and modules[-1] == "output" and set(LEAVES) <= set(modules), modules
    assert e["first_divergent"] is None and e["metric"] == "rel_l2" and e["tolerance"] == 1e-3
    assert max(r["rel_err"] for r in e["layers"]) < 1e-5 and e["unmapped"] == []
    assert next(r for r in e["layers"] if r["module"] == "blocks.0.mlp.act")["op"] == "Gelu"

    bad = _export(_faulty(small_vit, "blocks.1.mlp.fc1"), val8, "onnx", tmp_path / "bad.onnx")
    e = explain(small_vit, bad, val8)
    fd = e["first_divergent"]
    assert fd["module"] == "blocks.1.mlp.fc1" and fd["rel_err"] > 0.1, fd
    before = e["layers"][: e["layers"].index(fd)]
    assert before and all(r["rel_err"] < 1e-5 for r in before)  # the error starts there
    assert e["layers"][-1]["rel_err"] > 1e-3  # and reaches the logits


def test_tflite_names_the_perturbed_layer_through_nhwc_and_folded_norms(small_vit, val8, tmp_path):
    bad = _export(_faulty(small_vit, "blocks.0.attn.qkv"), val8, "tflite", tmp_path / "bad.tflite")
    e = explain(small_vit, bad, val8)
    assert e["first_divergent"]["module"] == "blocks.0.attn.qkv", e["first_divergent"]
    assert e["first_divergent"]["op"] == "FULLY_CONNECTED" and "built-in kernels" in e["note"]
    rows = {r["module"]: r for r in e["layers"]}
    assert rows["patch_embed.proj"]["rel_err"] < 1e-5  # NHWC conv output matched to PyTorch's NCHW
    # LiteRT folds LayerNorm's affine into the next FULLY_CONNECTED: that row is off, flagged, and not the cause
    assert rows["blocks.0.norm1"].get("carried") is False or rows["blocks.0.norm1"]["rel_err"] < 1e-3


def test_nhwc_exports_are_fed_channels_last_and_explained_like_nchw(small_vit, val8, tmp_path):
    """An artifact exported with ``layout="NHWC"`` takes [1, H, W, C]: explain feeds it so (the shipped .pte too)
    and still names the layer; the ExecuTorch re-lowering (NCHW, from the model) matches the NHWC file."""
    from edgevit.export import export

    example = torch.from_numpy(val8[:1])
    bad = export(_faulty(small_vit, "blocks.0.attn.qkv"), example, "tflite", tmp_path / "bad.tflite", layout="NHWC")
    assert bad.layout == "NHWC"
    e = explain(small_vit, bad, val8[:4])
    assert e["first_divergent"]["module"] == "blocks.0.attn.qkv", e["first_divergent"]
    assert {r["module"]: r for r in e["layers"]}["patch_embed.proj"]["rel_err"] < 1e-5
    pte = export(small_vit, example, "executorch", tmp_path / "ok.pte", layout="NHWC")
    e = explain(small_vit, pte, val8[:4])
    assert e["first_divergent"] is None and e["relowering"]["max_abs_diff_vs_shipped"] <= 1e-5, e["relowering"]


def test_coreml_emulator_per_op_outputs_name_the_perturbed_layer(small_vit, val8, tmp_path):
    bad = _export(_faulty(small_vit, "blocks.1.attn.proj"), val8, "coreml", tmp_path / "bad.mlpackage")
    e = explain(small_vit, bad, val8[:4])
    fd = e["first_divergent"]
    assert fd["module"] == "blocks.1.attn.proj" and fd["op"] == "linear", fd
    before = e["layers"][: e["layers"].index(fd)]
    assert len(before) > 8 and all(r["rel_err"] < 1e-2 for r in before)  # fp16: close, not equal
    assert any(r["rel_err"] > 1e-5 for r in before)


@pytest.mark.slow
def test_executorch_quickstart_fp32_is_explained_per_layer_int8_at_the_boundary(quickstart_run, digits32):
    """On the quickstart run's ``.pte`` files (the session's shared run; no export of its own)."""
    from edgevit.models import load_model

    model, _ = load_model(quickstart_run / "model.safetensors")
    images = np.stack([digits32.val[i][0].numpy() for i in range(4)])
    fp32 = Artifact("executorch", "fp32", quickstart_run / "artifacts" / "executorch_fp32.pte")
    e = explain(model.eval(), fp32, images)
    assert (
        e["unmapped"] == [] and e["first_divergent"] is None and "blocks.3.attn" in [r["module"] for r in e["layers"]]
    )
    assert max(r["rel_err"] for r in e["layers"]) < 1e-5 and e["relowering"]["max_abs_diff_vs_shipped"] <= 1e-5
    int8 = Artifact("executorch", "int8", quickstart_run / "artifacts" / "executorch_int8.pte")
    e = explain(model.eval(), int8, images)
    assert [r["module"] for r in e["layers"]] == ["input", "output"] and e["layers"][1]["rel_err"] < 0.3
    assert "boundary" in e["note"] and "blocks.0.attn" in e["unmapped"]


# ------------------------------------------------------------------------------------------------- ExecuTorch


@pytest.fixture(scope="module")
def pte_fp32(small_vit, val8, tmp_path_factory):
    return _export(small_vit, val8, "executorch", tmp_path_factory.mktemp("pte") / "good.pte")


def test_executorch_relowering_maps_every_layer_and_matches_the_shipped_pte(small_vit, val8, pte_fp32):
    e = explain(small_vit, pte_fp32, val8[:4])
    modules = [r["module"] for r in e["layers"]]
    assert modules[0] == "input" and modules[-1] == "output" and set(LEAVES) <= set(modules), modules
    assert e["unmapped"] == [] and e["first_divergent"] is None
    assert max(r["rel_err"] for r in e["layers"]) < 1e-5, e["layers"]  # XNNPACK fp32 kernels vs PyTorch
    rows = {r["module"]: r for r in e["layers"]}
    assert rows["blocks.0.attn.qkv"]["op"] == "linear" and rows["output"]["op"] == "executorch_call_delegate"
    rl = e["relowering"]  # the tapped re-lowering computes what the shipped file computes
    assert rl["images"] == 4 and rl["max_abs_diff_vs_shipped"] <= 1e-5 and rl["partitions"] == 1, rl
    assert "re-lowering" in e["note"] and "(faithful)" in e["note"]


def test_executorch_fault_in_the_lowering_is_named_at_its_layer(small_vit, val8, tmp_path, monkeypatch):
    """A wrong XNNPACK-friendly LayerNorm decomposition (uncentred variance) ships in the .pte; explain names the
    first LayerNorm, the re-lowering reproduces the shipped program (the fault is in the pipeline, not the file)."""
    from edgevit.backends.executorch import convert as et

    def bad_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        x4 = x.reshape(1, -1, 1, x.shape[-1])  # [..., C] -> [1, M, 1, C], as the real one
        mu = x4.mean((2, 3), keepdim=True)
        rstd = torch.rsqrt((x4 * x4).mean((2, 3), keepdim=True) + eps)  # E[x^2], not E[(x - mean)^2]
        y = ((x4 - mu) * rstd).reshape(x.shape) * weight + bias
        stat = (*x.shape[:-1], 1)
        return y, mu.reshape(stat), rstd.reshape(stat)

    monkeypatch.setitem(et.XNNPACK_FRIENDLY_DECOMPOSITIONS, torch.ops.aten.native_layer_norm.default, bad_layer_norm)
    monkeypatch.setitem(
        et.XNNPACK_FRIENDLY_DECOMPOSITIONS,
        torch.ops.aten.layer_norm.default,
        lambda x, s, w, b, eps=1e-5, *_: bad_layer_norm(x, s, w, b, eps)[0],
    )
    bad = _export(small_vit, val8, "executorch", tmp_path / "bad.pte")
    e = explain(small_vit, bad, val8[:4])
    fd = e["first_divergent"]
    assert fd["module"] == "blocks.0.norm1" and fd["rel_err"] > 1e-2, fd
    before = e["layers"][: e["layers"].index(fd)]
    assert [r["module"] for r in before] == ["input", "patch_embed.proj", "patch_embed"]
    assert all(r["rel_err"] < 1e-5 for r in before)
    assert e["layers"][-1]["rel_err"] > 1e-3 and e["relowering"]["max_abs_diff_vs_shipped"] <= 1e-5


def test_executorch_a_pte_from_other_weights_shows_at_output_and_says_not_faithful(small_vit, val8, pte_fp32):
    """The re-lowering follows the model it is given: a file built from other weights (here: the reference has
    ``blocks.1.mlp.fc2`` x1.5, the file not) cannot be localised, and the result says so instead of guessing."""
    e = explain(_faulty(small_vit, "blocks.1.mlp.fc2"), pte_fp32, val8[:4])
    assert e["first_divergent"]["module"] == "output", e["first_divergent"]
    inner = [r for r in e["layers"] if r["module"] not in ("input", "output")]
    assert inner and all(r["rel_err"] < 1e-5 for r in inner)
    assert e["relowering"]["max_abs_diff_vs_shipped"] > 1e-3 and "NOT faithful" in e["note"]


def test_executorch_int8_is_requantized_and_explained_per_layer(small_vit, val8, tmp_path):
    """A static int8 .pte (XNNPACK PT2E, calibrated on ``val8``): explain re-quantizes the model with the same
    quantizer and images, reads each module's output after its dequantize, and reproduces the shipped logits
    exactly (measured: max abs diff 0.0). The int8 conv's 4-D output cannot be tapped (XNNPACK's channels-last
    pass) and is listed as unmapped."""
    calib = torch.from_numpy(val8)
    get_backend("executorch").convert(small_vit, calib[:1], tmp_path / "int8.pte", "int8", calib=calib)
    art = Artifact("executorch", "int8", tmp_path / "int8.pte", {"method": "pt2e"})
    e = explain(small_vit, art, val8[:4], calib=calib, ptq=PTQConfig())
    modules = [r["module"] for r in e["layers"]]
    assert modules[0] == "input" and modules[-1] == "output", modules
    assert set(LEAVES) - {"patch_embed.proj"} <= set(modules) and e["unmapped"] == ["patch_embed.proj"], modules
    assert e["untapped"] and e["tolerance"] == 0.3
    inner = [r for r in e["layers"] if r["module"] not in ("input", "output", "head")]
    assert all(r["rel_err"] < 0.15 for r in inner), inner  # measured <= 0.096 (blocks.1.mlp.fc2)
    rows = {r["module"]: r for r in e["layers"]}
    assert rows["blocks.0.attn.qkv"]["op"] == "linear" and rows["blocks.0.mlp.act"]["op"] == "gelu"
    rl = e["relowering"]
    assert rl["partitions"] == 1 and rl["max_abs_diff_vs_shipped"] <= 1e-5, rl
    assert "int8: re-quantized" in e["note"] and "(faithful)" in e["note"]
    qat = Artifact("executorch", "int8", art.path, {"method": "qat"})  # QAT: the converted graph is not at hand
    e = explain(small_vit, qat, val8[:2], calib=calib, ptq=PTQConfig())
    assert [r["module"] for r in e["layers"]] == ["input", "output"] and "QAT" in e["note"]


def test_executorch_int8_without_calibration_is_compared_at_the_delegate_boundary(small_vit, pte_fp32, val8):
    art = Artifact("executorch", "int8", pte_fp32.path)  # the tracer trusts the precision; no int8 export needed
    e = explain(small_vit, art, val8[:2])
    assert [r["module"] for r in e["layers"]] == ["input", "output"] and "blocks.0.attn" in e["unmapped"]
    assert "boundary" in e["note"] and "calibration" in e["note"] and "relowering" not in e


def test_coreml_rescaled_residual_add_is_read_in_real_units():
    """coremltools computes a W8A8 residual add in units of one operand's scale (that operand's ``dequantize`` gets
    scale 1, so it holds int8 values like +-28); explain reads such tensors back in real units."""
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb

    from edgevit.backends.coreml.emulator import Emulator
    from edgevit.backends.coreml.trace import mil_qparams, mil_units

    s_a, s_b, s_out = 0.02, 0.0025, 0.03

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 8)), mb.TensorSpec(shape=(2, 8))], opset_version=ct.target.iOS17)
    def prog(a, b):  # add(dq(a, s_a), dq(b, s_b)) as coremltools rewrites it: in units of s_b
        qa = mb.quantize(input=a, scale=s_a, zero_point=np.int8(0), output_dtype="int8", name="qa")
        qb = mb.quantize(input=b, scale=s_b, zero_point=np.int8(0), output_dtype="int8", name="qb")
        da = mb.dequantize(input=qa, scale=s_a / s_b, zero_point=np.int8(0), name="da")
        db = mb.dequantize(input=qb, scale=1.0, zero_point=np.int8(0), name="db")
        total = mb.add(x=da, y=db, name="total")
        q = mb.quantize(input=total, scale=s_out / s_b, zero_point=np.int8(0), output_dtype="int8", name="q")
        return mb.dequantize(input=q, scale=s_out, zero_point=np.int8(0), name="out")

    em = Emulator(prog)
    units = mil_units(em, mil_qparams(em))
    assert {k: round(v, 6) for k, v in units.items()} == {"da": s_b, "db": s_b, "total": s_b, "q": s_b}, units
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-2, 2, (2, 8)).astype(np.float32), rng.uniform(-0.3, 0.3, (2, 8)).astype(np.float32)
    env = em.trace({"a": a, "b": b})
    assert np.abs(env["db"]).max() > 20  # int8 values as they are, scale 1
    np.testing.assert_allclose(env["db"] * units["db"], b, atol=s_b)  # back in real units
    np.testing.assert_allclose(env["total"] * units["total"], a + b, atol=s_a)
    np.testing.assert_allclose(env["out"], a + b, atol=s_a + s_out)  # the program itself was right all along
