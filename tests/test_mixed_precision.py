"""Accuracy-controlled mixed precision: the sensitivity plan finds the layer int8 breaks, keeps it float on every
backend, and is deterministic."""

import json

import numpy as np
import pytest
import torch

from edgevit.data import calibration_batch
from edgevit.export import export
from edgevit.quantize import PTQConfig, calibrate_pt2e, capture
from edgevit.quantize.mixed import MixedPrecisionPlan, layer_groups, module_paths, plan_mixed_precision


def _quantized_linears(graph: torch.fx.GraphModule) -> dict[str, bool]:
    """For each linear in a converted PT2E graph: its module path -> whether its weight is int8 (dequantized)."""
    out = {}
    for n in graph.graph.nodes:
        if n.op == "call_function" and n.target == torch.ops.aten.linear.default:
            path = max(module_paths(n), key=len)
            out[path] = "dequantize" in str(getattr(n.args[1], "target", ""))
    return out


def test_keep_float_modules_stay_float_in_the_xnnpack_graph(tiny_vit, digits32):
    from edgevit.backends.executorch.quantizer import quantizer

    calib = calibration_batch(digits32.train, 4)
    cfg = PTQConfig(keep_float=["blocks.0.mlp"])
    graph = calibrate_pt2e(capture(tiny_vit, calib[:1]), quantizer("int8"), calib, "executorch", False, config=cfg)
    linears = _quantized_linears(graph)
    assert linears == {
        "blocks.0.attn.qkv": True,
        "blocks.0.attn.proj": True,
        "blocks.0.mlp.fc1": False,
        "blocks.0.mlp.fc2": False,
        "head": True,
    }


def test_keep_float_modules_stay_float_in_onnx_qdq(tiny_vit, digits32, tmp_path):
    import onnx

    calib = calibration_batch(digits32.train, 4)

    def int8_weight_matmuls(path):
        g = onnx.load(str(path)).graph
        deq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
        return sum(1 for n in g.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in deq)

    full = export(tiny_vit, calib[:1], "onnx", tmp_path / "a.onnx", "int8", calib=calib)
    mixed = export(
        tiny_vit,
        calib[:1],
        "onnx",
        tmp_path / "b.onnx",
        "int8",
        calib=calib,
        ptq=PTQConfig(keep_float=["blocks.0.mlp"]),
    )
    assert int8_weight_matmuls(full.path) - int8_weight_matmuls(mixed.path) == 2  # fc1 and fc2
    assert mixed.info["float_modules"] == ["blocks.0.mlp"]


def test_layer_groups_follow_the_model_structure(tiny_vit):
    assert layer_groups(tiny_vit) == ["patch_embed", "blocks.0.attn", "blocks.0.mlp", "head"]


def test_sensitivity_plan_is_deterministic(tiny_vit, digits32):
    from edgevit.backends.executorch.quantizer import quantizer

    calib = calibration_batch(digits32.train, 4)
    images = torch.stack([digits32.val[i][0] for i in range(40)])
    labels = np.array([int(digits32.val[i][1]) for i in range(40)])

    groups = ["blocks.0.attn", "head"]

    def plan():
        return plan_mixed_precision(
            tiny_vit, quantizer("int8"), calib, images, labels, 100.0, groups=groups, progress=False
        )

    first = plan()
    assert [s.group for s in first.sensitivity] == groups
    assert all(s.logit_error > 0 for s in first.sensitivity)
    assert plan() == first


def _with_layernorm_outlier(model, block=1, channel=7, scale=1000.0):
    """The ViT int8 failure mode: one LayerNorm output channel 1000x larger than the rest (function-preserving:
    the next linear's input column is divided by the same factor), which per-tensor int8 activations cannot
    represent without flattening every other channel."""
    with torch.no_grad():
        b = model.blocks[block]
        b.norm1.weight[channel] *= scale
        b.norm1.bias[channel] *= scale
        b.attn.qkv.weight[:, channel] /= scale
    return model


@pytest.mark.slow
def test_plan_meets_max_drop_where_plain_int8_does_not_on_every_backend(quickstart_run, tmp_path):
    """A trained model whose block-1 attention int8 breaks: the plan finds it, keeps it float, and the ExecuTorch,
    TFLite and ONNX int8 artifacts with that plan stay within max_drop on real digits."""
    from edgevit.backends.executorch.quantizer import quantizer
    from edgevit.data import digits
    from edgevit.models import load_model

    model, meta = load_model(quickstart_run)
    model = _with_layernorm_outlier(model)
    data = digits(img_size=32, seed=0, mean=meta["mean"], std=meta["std"])
    calib = calibration_batch(data.train, 16)
    images = torch.stack([data.val[i][0] for i in range(len(data.val))])
    labels = np.array([int(data.val[i][1]) for i in range(len(data.val))])
    groups = ["blocks.0.attn", "blocks.1.attn", "blocks.1.mlp", "head"]  # a subset keeps the test short
    plan = plan_mixed_precision(model, quantizer("int8"), calib, images, labels, 0.5, groups=groups, progress=False)
    assert plan.fp32_top1 - plan.int8_top1 > 3.0  # plain int8 fails max_drop
    assert plan.float_modules == ["blocks.1.attn"] and plan.met
    assert max(plan.sensitivity, key=lambda s: s.logit_error).group == "blocks.1.attn"
    assert plan.fp32_top1 - plan.final_top1 <= 0.5
    assert "int8 alone costs" in plan.reasons["blocks.1.attn"]

    assert MixedPrecisionPlan.load(plan.save(tmp_path / "plan.json")) == plan
    assert json.loads((tmp_path / "plan.json").read_text())["float_modules"] == ["blocks.1.attn"]

    ptq = PTQConfig(keep_float=plan.float_modules)
    for backend, suffix in [("executorch", ".pte"), ("tflite", ".tflite"), ("onnx", ".onnx")]:
        art = export(model, images[:1], backend, tmp_path / f"m{suffix}", "int8", calib=calib, ptq=ptq)
        run = art.load(2)
        logits = np.concatenate([run(images[i : i + 1].numpy()) for i in range(len(images))])
        top1 = float((logits.argmax(-1) == labels).mean() * 100)
        assert plan.fp32_top1 - top1 <= 0.5 + 0.3, (backend, top1)  # 0.3: one image of 360 either way


def test_recipe_max_drop_writes_the_plan_and_applies_it_to_each_target(tmp_path):
    """The recipe path: ``quantize.keep_float`` by hand plus the ``max_drop`` plan reach every quantized artifact."""
    from edgevit.recipe import Recipe, Target, plan_path, stage_export, stage_train

    recipe = Recipe.from_dict(
        {
            "model": {"name": "vit_tiny_patch16", "args": {"patch_size": 8, "depth": 1}},
            "train": {"epochs": 1, "threads": 2},
            "quantize": {"calib_images": 4, "accuracy_images": 40, "max_drop": 100.0, "keep_float": ["head"]},
        }
    )
    run = tmp_path / "run"
    stage_train(recipe, run, progress=False)
    targets = [Target(backend="executorch", precision="int8"), Target(backend="onnx", precision="int8")]
    arts = stage_export(run, targets, progress=False)
    plan = MixedPrecisionPlan.load(plan_path(run))
    assert [s.group for s in plan.sensitivity] == ["patch_embed", "blocks.0.attn", "blocks.0.mlp", "head"]
    assert plan.images == 40 and plan.calib_images == 4 and plan.float_modules == []  # max_drop 100: nothing needed
    manifest = json.loads((run / "artifacts" / "manifest.json").read_text())
    assert [a["info"]["float_modules"] for a in manifest["artifacts"]] == [["head"], ["head"]]
    assert {a.backend for a in arts} == {"executorch", "onnx"}
