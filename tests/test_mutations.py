"""The mutation suite: plant one fault at a time in a real exported artifact (or its manifest) of a digits ViT and
show that the parity gate fails on real digits images and that ``explain`` names the layer the fault is in.

One narrow 2-block ViT is trained once per session (``tiny_digits_run`` in conftest.py, shared with other test
files) and exported to, among others, ONNX fp32, ONNX int8 (ORT QDQ) and LiteRT fp32; each test copies the run
keeping one artifact, edits it the way a broken exporter, converter or app would, and runs ``stage_parity`` (what
``edgevit parity RUN`` runs; it explains failing artifacts by default).

Faults: RGB<->BGR swap baked into the graph, wrong mean/std in the manifest, one layer's weights scaled in the
LiteRT flatbuffer, softmax over the wrong axis in one block's attention (ONNX attribute), one layer's int8 weight
scale doubled (ONNX QDQ initializer). A random-input check (the same random tensor into PyTorch and the artifact)
is run on each too: it passes the wrong mean/std, which never reaches a graph, while digits fail it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgevit.export import Artifact
from edgevit.parity import DEFAULT_TOLERANCES, ParityConfig, check, judge, metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_digits_run):
    """The session's small trained digits run (``tiny_digits_run`` in conftest.py); read-only, tests edit copies."""
    return tiny_digits_run


@pytest.fixture(scope="module")
def model(run):
    from edgevit.models import load_model

    return load_model(run / "model.safetensors")[0].eval()


def _copy(run, tmp_path, artifact: str):
    """A copy of ``run`` whose manifest lists only ``artifact`` (its path under ``artifacts/``)."""
    from conftest import copy_run

    dst = copy_run(run, tmp_path / "run", [artifact])
    manifest = json.loads((dst / "artifacts" / "manifest.json").read_text())
    return dst, Artifact.from_json(manifest["artifacts"][0], root=dst)


def _parity(run_dir, capsys=None) -> dict:
    """``stage_parity`` (explains failures by default): the single artifact's parity.json entry. With ``capsys``,
    also what ``edgevit parity`` prints for it (the per-layer table and the one-line verdict)."""
    from edgevit.cli.pipeline import print_explained
    from edgevit.recipe import stage_parity

    report, _ = stage_parity(run_dir, progress=False)
    doc = json.loads((run_dir / "parity.json").read_text())
    assert doc["passed"] is report.passed
    (entry,) = doc["artifacts"]
    if capsys is not None:
        capsys.readouterr()
        print_explained(report)
        entry["printed"] = capsys.readouterr().err
    return entry


def _random_check(model, art: Artifact, n: int = 64) -> list[str]:
    """Tolerance violations of ``art`` vs ``model`` on ``n`` standard-normal tensors fed straight to both."""
    x = np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)
    runner = art.load(2)
    got = np.concatenate([runner(x[i : i + 1]) for i in range(n)])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    m = metrics(got, ref, ref.argmax(-1))  # labels: the reference's own classes (random images have none)
    return judge(m, m["top1"], DEFAULT_TOLERANCES[art.precision])


def _onnx_edit(path, edit) -> None:
    import onnx

    proto = onnx.load(str(path))
    edit(proto)
    onnx.save(proto, str(path))


def _node_in(proto, op_type: str, module: str):
    """The ``op_type`` node the dynamo exporter traced from ``module`` (its ``name_scopes`` metadata)."""
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = json.loads(meta.get("pkg.torch.onnx.name_scopes", "[]").replace("'", '"'))
        if node.op_type == op_type and module in scopes:
            return node
    raise AssertionError(f"no {op_type} node in {module}")


def test_rgb_bgr_swap_is_invisible_on_grey_digits_and_caught_on_tinted_ones(run, model, tmp_path):
    """scikit-learn's digits are grey (R = G = B), so a channel swap changes nothing on them (asserted below).
    The test therefore also tints each digit with a colour per class, as camera images have colour, and the swap
    is caught there; explain names the first layer, whose input the swap corrupted inside the graph."""
    import onnx
    from onnx import helper, numpy_helper

    from edgevit.parity.explain import explain
    from edgevit.recipe import trained

    _, art = _copy(run, tmp_path, "onnx_fp32.onnx")

    def swap_channels(proto):  # a "BGR -> RGB" step baked in front of the network, as a wrong exporter wrapper does
        image = proto.graph.input[0].name
        for node in proto.graph.node:
            for i, name in enumerate(node.input):
                if name == image:
                    node.input[i] = "image_bgr"
        proto.graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_order"))
        proto.graph.node.insert(0, helper.make_node("Gather", [image, "bgr_order"], ["image_bgr"], axis=1))
        onnx.checker.check_model(proto)

    _onnx_edit(art.path, swap_channels)
    _, _, data, _ = trained(run)
    grey = np.stack([data.val[i][0].numpy() for i in range(len(data.val))])
    labels = np.array([int(data.val[i][1]) for i in range(len(data.val))])
    palette = np.array([[1.0, 0.2, 0.1], [0.1, 0.3, 1.0], [0.9, 0.8, 0.1], [0.2, 1.0, 0.3], [1.0, 0.1, 0.8]])
    tint = palette[labels % len(palette)].astype(np.float32)[:, :, None, None]  # [N, 3] -> [N, 3, 1, 1]
    tinted = (((grey * 0.5 + 0.5) * tint - 0.5) / 0.5).astype(np.float32)  # pixel/255 x colour, normalised again

    def ref(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    cfg = ParityConfig(warmup=0, runs=1)
    on_grey = check([art], grey, labels, ref, cfg, progress=False).artifacts[0]
    assert on_grey["passed"] is True and on_grey["max_abs_err"] < 1e-4, on_grey  # invisible on grey images
    on_colour = check([art], tinted, labels, ref, cfg, progress=False).artifacts[0]
    assert on_colour["passed"] is False, on_colour
    e = explain(model, art, tinted)
    assert e["layers"][0]["module"] == "input" and e["layers"][0]["rel_err"] == 0.0  # fed correctly ...
    assert e["first_divergent"]["module"] == "patch_embed.proj", e["first_divergent"]  # ... swapped in the graph


def test_wrong_mean_std_in_the_manifest_diverges_at_the_input(run, model, tmp_path):
    dst, art = _copy(run, tmp_path, "onnx_fp32.onnx")
    manifest = json.loads((dst / "artifacts" / "manifest.json").read_text())
    manifest["input"].update(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])  # ImageNet's, not the model's
    (dst / "artifacts" / "manifest.json").write_text(json.dumps(manifest))
    entry = _parity(dst)
    assert entry["passed"] is False, entry
    assert entry["explain"]["first_divergent"]["module"] == "input", entry["explain"]["first_divergent"]
    # random tensors go straight into the graph, never through the manifest's preprocessing: they miss it
    assert _random_check(model, art) == []


def test_one_layers_weights_perturbed_in_the_tflite_flatbuffer_are_named(run, model, tmp_path):
    dst, art = _copy(run, tmp_path, "tflite_fp32.tflite")
    # fc2, not fc1: litert-torch folds the LayerNorm affine into the Linear after it (qkv, fc1 weights change)
    weight = model.blocks[1].mlp.fc2.weight.detach().numpy().astype("<f4").tobytes()  # [out, in], as LiteRT stores it
    blob = bytearray(art.path.read_bytes())
    at = blob.find(weight)
    assert at >= 0 and blob.find(weight, at + 1) < 0  # that layer's buffer, exactly once
    bad = np.frombuffer(weight, "<f4") * 1.5
    blob[at : at + len(weight)] = bad.astype("<f4").tobytes()
    art.path.write_bytes(bytes(blob))
    entry = _parity(dst)
    assert entry["passed"] is False, entry
    assert entry["explain"]["first_divergent"]["module"] == "blocks.1.mlp.fc2", entry["explain"]["first_divergent"]
    print("random-input check on the perturbed TFLite weights:", _random_check(model, art) or "passes")


def test_softmax_over_the_wrong_axis_in_one_attention_is_named(run, model, tmp_path, capsys):
    from onnx import helper

    dst, art = _copy(run, tmp_path, "onnx_fp32.onnx")

    def wrong_axis(proto):  # [B*h, N, N] attention weights normalised over the queries instead of the keys
        node = _node_in(proto, "Softmax", "blocks.1.attn")
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("axis", 1))

    _onnx_edit(art.path, wrong_axis)
    entry = _parity(dst, capsys)
    assert entry["passed"] is False, entry
    fd = entry["explain"]["first_divergent"]
    assert fd["module"] == "blocks.1.attn", fd  # attention's own op, not its qkv/proj children
    assert "explain onnx fp32: first divergent layer: blocks.1.attn (Add)" in entry["printed"], entry["printed"]
    assert "◀ first divergent" in entry["printed"] and "blocks.1.attn.qkv" in entry["printed"]
    print("random-input check on the wrong softmax axis:", _random_check(model, art) or "passes")


def test_int8_weight_scale_off_by_two_is_named(run, model, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgevit.backends.onnx.trace import onnx_scopes

    dst, art = _copy(run, tmp_path, "onnx_int8.onnx")
    fp32 = onnx.load(str(run / "artifacts" / "onnx_fp32.onnx"))
    by_node, _ = onnx_scopes(fp32)  # ORT's quantizer keeps the fp32 node names (fusions add "/...")
    target = "blocks.0.mlp.fc1"

    def double_scale(proto):
        inits = {t.name: t for t in proto.graph.initializer}
        producers = {o: n for n in proto.graph.node for o in n.output}
        mm = next(n for n in proto.graph.node if by_node.get(n.name.split("/")[0]) == target and n.op_type != "Add")
        dq = producers[mm.input[1]]  # the weight's DequantizeLinear
        assert dq.op_type == "DequantizeLinear", dq
        scale = inits[dq.input[1]]
        scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 2, scale.name))

    _onnx_edit(art.path, double_scale)
    entry = _parity(dst)
    assert entry["passed"] is False, entry
    assert entry["explain"]["first_divergent"]["module"] == target, entry["explain"]["first_divergent"]
    print("random-input check on the doubled int8 scale:", _random_check(model, art) or "passes")
