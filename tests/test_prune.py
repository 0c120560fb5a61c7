"""Structured pruning makes models physically smaller and keeps them exportable; sparsity keeps its zeros."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgevit import EdgeVitError, create_model
from edgevit.models.layers import Attention
from edgevit.prune import (
    PruneConfig,
    SparsityConfig,
    make_sparsity_permanent_,
    prune_,
    sparsify_,
    sparsity,
)

VIT = dict(img_size=32, patch_size=8, depth=2, num_classes=10)


def _vit(seed=0):
    torch.manual_seed(seed)
    return create_model("vit_tiny_patch16", **VIT).eval()


def _images(data, n=8):
    return torch.stack([data.val[i][0] for i in range(n)])


def _bytes_on_disk(path):
    """A file's size, or the total size of the files under a directory (an .mlpackage)."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _check_attention(model):
    for m in model.modules():
        if isinstance(m, Attention):
            inner = m.num_heads * m.head_dim
            assert inner == m.qkv.out_features // 3 == m.proj.in_features


def test_vit_prune_removes_whole_heads_and_shrinks(digits32):
    model = _vit()
    heads_before = {n: m.num_heads for n, m in model.named_modules() if isinstance(m, Attention)}
    result = prune_(model, PruneConfig(ratio=0.3), _images(digits32, 1))
    assert result.params_after < 0.75 * result.params_before  # MLP, heads and token width all cut by ~30%
    assert result.macs_after < 0.75 * result.macs_before
    assert result.param_ratio == result.params_after / result.params_before
    for name, m in model.named_modules():
        if isinstance(m, Attention):
            assert m.head_dim == 64  # whole heads go; the head width stays
            assert m.num_heads == heads_before[name] - 1 == result.heads[name][1]  # round(0.3 * 3) = 1 head
    _check_attention(model)
    assert model.head.out_features == 10  # the classifier's outputs are never pruned
    for batch in (1, 4):
        assert model(_images(digits32, batch)).shape == (batch, 10)
    assert model.pruning["params_after"] == result.params_after


def test_removing_dead_heads_keeps_logits_exactly(digits32):
    """The head torch-pruning drops from the fused qkv is the same head in q, k, v and proj."""
    model = _vit()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Attention):  # kill head 1: its q, k, v rows and proj columns
                d = m.head_dim
                for part in range(3):
                    rows = slice(part * m.num_heads * d + d, part * m.num_heads * d + 2 * d)
                    m.qkv.weight[rows] = 0
                    m.qkv.bias[rows] = 0
                m.proj.weight[:, d : 2 * d] = 0
    x = _images(digits32)
    ref = model(x)
    # only heads: the token width and the MLP hidden groups are kept whole by ignoring a layer of each
    ignore = ["patch_embed.proj", *[f"blocks.{i}.mlp.fc1" for i in range(2)]]
    result = prune_(model, PruneConfig(ratio=0.3, ignore=ignore), x[:1])
    assert set(result.heads.values()) == {(3, 2)} and not result.widths.keys() - {
        "blocks.0.attn.qkv",
        "blocks.1.attn.qkv",
    }
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_global_pruning_and_round_to(digits32):
    model = _vit()
    result = prune_(model, {"ratio": 0.3, "global_pruning": True, "round_to": 8}, _images(digits32, 1))
    assert result.params_after < result.params_before
    _check_attention(model)
    for name, (_, after) in result.widths.items():
        if name.endswith("mlp.fc1"):
            assert after % 8 == 0
    assert model(_images(digits32, 2)).shape == (2, 10)


def test_taylor_importance_uses_labelled_batches(digits32):
    model = _vit()
    with pytest.raises(EdgeVitError, match="taylor importance needs labelled images"):
        prune_(model, PruneConfig(importance="taylor"), _images(digits32, 1))
    result = prune_(
        model, PruneConfig(importance="taylor", calib_batches=2), _images(digits32, 1), calib=digits32.train
    )
    assert result.params_after < result.params_before
    assert all(p.grad is None for p in model.parameters())  # the gradients used for ranking are dropped
    _check_attention(model)


@pytest.mark.parametrize("backend", ["executorch", "tflite", "onnx"])
def test_pruned_vit_exports_and_matches_eager(backend, digits32, tmp_path):
    from edgevit.backends import get_backend
    from edgevit.export import export

    model = _vit()
    prune_(model, PruneConfig(ratio=0.3), _images(digits32, 1))
    x = _images(digits32)
    art = export(model, x[:1], backend, tmp_path / f"m{get_backend(backend).suffix}")
    run = art.load(threads=2)
    with torch.no_grad():
        ref = model(x).numpy()
    got = np.concatenate([run(img[None].numpy()) for img in x])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    if backend == "executorch":
        assert art.info["ops_outside_delegate"] == {}  # still one XNNPACK graph


def test_pruned_mobilevit_prunes_convs():
    from edgevit.data import digits

    data = digits(img_size=64)
    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", img_size=64, num_classes=10).eval()
    x = _images(data, 4)
    result = prune_(model, PruneConfig(ratio=0.3), x[:1])
    assert result.params_after < 0.7 * result.params_before and result.macs_after < 0.7 * result.macs_before
    assert result.widths["stages.1.1.conv1_1x1.conv"] == (48, 33)  # inverted-residual expansion: int(0.7 * 48)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    dw = convs["stages.1.1.conv2_kxk.conv"]
    assert dw.groups == dw.in_channels == dw.out_channels == 33  # the depthwise conv follows its expansion
    assert set(result.heads.values()) == {(4, 3)}  # round(0.3 * 4) = 1 head per attention
    _check_attention(model)
    assert model.head.fc.out_features == 10
    for batch in (1, 4):
        assert model(x[:batch]).shape == (batch, 10)


def test_pruned_mobilevit_exports_to_executorch(tmp_path):
    from edgevit.data import digits
    from edgevit.export import export

    data = digits(img_size=64)
    torch.manual_seed(0)
    model = create_model(
        "mobilevit_xxs", img_size=64, num_classes=10, depths=(1, 1, 1, 1, 1), transformer_depths=(1, 1, 1)
    )
    x = _images(data, 4)
    prune_(model.eval(), PruneConfig(ratio=0.3), x[:1])
    art = export(model, x[:1], "executorch", tmp_path / "m.pte")
    assert art.info["ops_outside_delegate"] == {}
    with torch.no_grad():
        ref = model(x).numpy()
    got = np.concatenate([art.load(threads=2)(img[None].numpy()) for img in x])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_mobile_former_prunes_expansions_exactly():
    """Dead expansion channels of Mobile-Former's inverted bottlenecks (dynamic ReLU included) go exactly."""
    from edgevit.models.mobile_former import InvertedBottleneck

    torch.manual_seed(0)
    model = create_model("mobile_former_52m", img_size=64, num_classes=10).eval()
    keep, ignore = set(), []
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, InvertedBottleneck):
                C = m.conv_pw.out_channels
                dead = torch.arange(C - int(0.7 * C))  # exactly the channels a 0.3 ratio removes
                for layer in (m.conv_pw, m.conv_dw, m.bn1, m.bn2):
                    layer.weight[dead] = 0
                for bn in (m.bn1, m.bn2):
                    bn.bias[dead] = 0
                for act in (m.act1, m.act2):
                    act.fc2.weight[dead] = 0
                    act.fc2.weight[dead + C] = 0
                m.conv_pwl.weight[:, dead] = 0
                keep |= {f"{name}.{k}" for k in ("conv_pw", "conv_dw", "act1.fc2", "act2.fc2")}
        ignore = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and n not in keep]
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    result = prune_(model, PruneConfig(ratio=0.3, ignore=ignore), x[:1])
    assert result.params_after < result.params_before
    blk = model.blocks[1].mobile
    assert blk.act1.channels == blk.conv_pw.out_channels == blk.act1.fc2.out_features // 2
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)


def test_pruned_model_save_load_round_trip(digits32, tmp_path):
    from edgevit.models import load_model, save_model

    model = _vit()
    prune_(model, PruneConfig(ratio=0.3), _images(digits32, 1))
    path = save_model(model, "vit_tiny_patch16", VIT, tmp_path / "model.safetensors")
    loaded, meta = load_model(path)
    assert meta["pruned"]["params_after"] == sum(p.numel() for p in loaded.parameters())
    x = _images(digits32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [m.num_heads for m in loaded.modules() if isinstance(m, Attention)] == [2, 2]


PRUNABLE = {  # one small model per family that caches widths (each class's sync_widths_ hook)
    "vit_tiny_patch16": VIT,
    "mobilevitv2_050": dict(img_size=64, num_classes=10, depths=(1, 1, 1, 1, 1), transformer_depths=(1, 1, 1)),
    "mobile_former_52m": dict(img_size=64, num_classes=10),
}


@pytest.mark.parametrize("name", PRUNABLE)
def test_pruned_model_reloads_and_takes_a_new_classifier(name, tmp_path):
    """load_model resizes every family to its pruned widths; reset_classifier then builds a head that fits."""
    from edgevit.models import load_model, save_model

    kw = PRUNABLE[name]
    torch.manual_seed(0)
    model = create_model(name, **kw).eval()
    x = torch.randn(2, 3, kw["img_size"], kw["img_size"])
    prune_(model, PruneConfig(ratio=0.3), x[:1])
    loaded, _ = load_model(save_model(model, name, kw, tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        for m in (model, loaded):
            m.reset_classifier(3)  # its input width is the pruned feature width
            assert m(x).shape == (2, 3)


def test_pruned_timm_model_takes_a_new_classifier():
    """A timm model has no sync_widths_ hook: its num_features follows its classifier's input width."""
    torch.manual_seed(0)
    model = create_model("timm/resnet10t", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    prune_(model, PruneConfig(ratio=0.3), x[:1])
    assert model.num_features == model.get_classifier().in_features < 512
    model.reset_classifier(5)
    with torch.no_grad():
        assert model(x).shape == (2, 5)


def test_bad_prune_input_is_a_clear_error(digits32):
    model, x = _vit(), _images(digits32, 1)
    with pytest.raises(EdgeVitError, match="'ratio'.*less than 1"):
        prune_(model, {"ratio": 1.5}, x)
    with pytest.raises(EdgeVitError, match="'ratio'.*greater than 0"):
        prune_(model, {"ratio": 0.0}, x)
    with pytest.raises(EdgeVitError, match="'importance'"):
        prune_(model, {"importance": "random"}, x)
    with pytest.raises(EdgeVitError, match="no module named 'blocks.9.mlp'"):
        prune_(model, {"ignore": ["blocks.9.mlp"]}, x)
    with pytest.raises(EdgeVitError, match="'sparsity'"):
        sparsify_(model, {"sparsity": 1.0})
    with pytest.raises(EdgeVitError, match="channel shuffle"):
        prune_(create_model("mobile_former_26m", img_size=64, num_classes=10), {}, torch.randn(1, 3, 64, 64))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in _vit().parameters())  # untouched


def test_pruned_and_recovered_vit_stays_close(digits32, tmp_path):
    """30% of a trained ViT's channels and heads go (half its parameters); 4 epochs recover most of the accuracy."""
    from edgevit.train import TrainConfig, predict, top1, train

    model = _vit()
    threads = torch.get_num_threads()
    try:  # one thread: deterministic, and on a shared 2-core machine 2 threads can be 20x slower
        cfg = TrainConfig(epochs=12, batch_size=64, lr=2e-3, warmup_epochs=1, threads=1)
        train(model, digits32, cfg, tmp_path / "dense", progress=False)
        dense = top1(*predict(model, digits32.val))
        result = prune_(model, PruneConfig(ratio=0.3), _images(digits32, 1))
        pruned = top1(*predict(model, digits32.val))
        recover = TrainConfig(epochs=4, batch_size=64, lr=5e-4, warmup_epochs=0, threads=1)
        train(model, digits32, recover, tmp_path / "recover", progress=False)
        recovered = top1(*predict(model, digits32.val))
    finally:
        torch.set_num_threads(threads)
    print(f"dense {dense:.2f}% pruned {pruned:.2f}% recovered {recovered:.2f}% params x{result.param_ratio:.2f}")
    assert dense > 90 and result.param_ratio < 0.6
    # Recovery wins back most of what pruning lost. How close it ends to dense depends on the host's float kernels
    # (training trajectories differ): 96.39 -> 72.22 -> 93.61% on an AMD EPYC (AVX2) host, where 6 epochs or twice
    # the learning rate give 93.1-93.3%; within 2 points on an Intel Xeon (AVX-512) one.
    assert recovered >= dense - 4.0 and recovered - pruned >= 0.8 * (dense - pruned)


def test_sparsify_hits_the_target_and_masks_survive_training(digits32):
    model = _vit()
    result = sparsify_(model, SparsityConfig(sparsity=0.5))
    assert abs(result.sparsity - 0.5) < 0.01
    assert "head" not in result.layers  # the classifier stays dense
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in result.layers}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = _images(digits32, 8), torch.arange(8) % 10
    for _ in range(2):
        loss = nn.functional.cross_entropy(model.train()(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()(x)  # the masks re-apply in the forward pre-hook
    for n, m in model.named_modules():
        if n in before:
            dead = before[n] == 0
            assert torch.all(m.weight[dead] == 0)  # zeros stay zeros
            assert not torch.equal(m.weight[~dead], before[n][~dead])  # the rest trained
    make_sparsity_permanent_(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert abs(sparsity(model).sparsity - 0.5) < 0.01
    per_layer = sparsify_(_vit(), {"sparsity": 0.5, "scope": "layer"})
    assert all(abs(s - 0.5) < 0.01 for s in per_layer.layers.values())


def test_coreml_sparse_package_is_smaller(digits32, tmp_path):
    from edgevit.export import export

    model = _vit()
    sparsify_(model, SparsityConfig(sparsity=0.5))
    make_sparsity_permanent_(model)
    dense = export(model, _images(digits32, 1), "coreml", tmp_path / "dense.mlpackage")
    sparse = export(model, _images(digits32, 1), "coreml", tmp_path / "sparse.mlpackage", "sparse")
    # qkv, proj, fc1, fc2 of both blocks (global ranking: all above 30% zeros)
    assert sparse.info["ops"].get("constexpr_sparse_to_dense", 0) >= 8
    assert _bytes_on_disk(sparse.path) < 0.7 * _bytes_on_disk(dense.path)


def test_deepcopy_of_pruned_model_still_runs(digits32):
    model = _vit()
    prune_(model, PruneConfig(ratio=0.5), _images(digits32, 1))
    twin = copy.deepcopy(model)
    x = _images(digits32, 2)
    torch.testing.assert_close(twin(x), model(x))
