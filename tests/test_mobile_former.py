"""Mobile-Former: paper parameter counts, the official checkpoint layout, the model interface, and lowering.

Lowering a whole variant to ExecuTorch takes minutes on 2 cores (ExecuTorch's passes cost about 0.1 s per
graph node and a variant has 1,200-1,800), so the default run lowers a 2-block model (``MINI``) with every op
type the variants have; the named variants are lowered, and TFLite, ONNX and Core ML converted, in ``slow``
tests.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from edgevit import EdgeVitError, create_model, list_models
from edgevit.bench import randomize_
from edgevit.models.mobile_former import (
    _CONFIGS,
    MobileFormer,
    convert_official_state_dict,
    create_mobile_former,
    to_official_state_dict,
)

# Parameters (M) at 1000 classes, as in the paper and the released code's README table.
PAPER_PARAMS_M = {
    "mobile_former_26m": 3.2,
    "mobile_former_52m": 3.5,
    "mobile_former_96m": 4.6,
    "mobile_former_151m": 7.6,
    "mobile_former_214m": 9.4,
    "mobile_former_294m": 11.4,
    "mobile_former_508m": 14.0,
}

# mobile_former_26m cut to its stem block and one downsampling Mobile-Former block: every op type of every
# variant (an "ib" block adds no new ones), a sixth of the graph
MINI = replace(_CONFIGS["mobile_former_26m"], blocks=(("lite", 3, 12, 2, 0), ("down", 6, 24, 2, 4)), num_classes=10)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(cfg_or_name, seed: int = 0) -> MobileFormer:
    torch.manual_seed(seed)
    m = MobileFormer(cfg_or_name) if not isinstance(cfg_or_name, str) else create_model(cfg_or_name)
    return randomize_(m, seed).eval()


def test_registry_has_all_variants():
    assert list_models("mobile_former_*") == sorted(PAPER_PARAMS_M)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_param_count_matches_paper(name):
    with torch.device("meta"):
        m = create_model(name)
    got = sum(p.numel() for p in m.parameters()) / 1e6
    assert round(got, 1) == PAPER_PARAMS_M[name], f"{name}: {got:.3f}M vs paper {PAPER_PARAMS_M[name]}M"


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_macs_are_close_to_the_name(name):
    from edgevit import profile

    with torch.device("meta"):
        m = create_model(name)
    macs = profile(m)["macs"] / 1e6
    named = int(name.split("_")[-1][:-1])
    # FlopCounterMode counts convs, linears and matmuls only: 2-10% below the names. Adding the dynamic ReLUs'
    # two multiplies per element (1.6M in 26m, 7.9M in 508m) comes within 3% of every name.
    assert 0.9 * named <= macs <= named, f"{name}: {macs:.1f}M MACs"


# --- the official checkpoint layout --------------------------------------------------------------------------
# Written from the released code's module tree (AAboys/MobileFormer, mobile_former.py and dna_blocks.py), not
# from edgevit's tables: which submodules each block type holds and the parameters/buffers each module has.

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LIN = ("weight", "bias")


def _keys(prefix: str, modules: dict[str, tuple[str, ...]]) -> set[str]:
    return {f"{prefix}{name}.{p}" for name, params in modules.items() for p in params}


_OFFICIAL_BRIDGES = {  # Local2Global (attn, dynamic), GlobalBlock (attn, ffn), Global2Local (attn)
    "local_global.alpha.0": _LIN,
    "local_global.q": _LIN,
    "local_global.proj": _LIN,
    "local_global.layer_norm": _LIN,
    "global_block.ffn.0": _LIN,
    "global_block.ffn.2": _LIN,
    "global_block.ffn_norm": _LIN,
    "global_block.q": _LIN,
    "global_block.channel_mlp": _LIN,
    "global_block.layer_norm": _LIN,
    "global_local.k": _LIN,
    "global_local.proj": _LIN,
}
_OFFICIAL_BLOCK = {
    "DnaBlock3 e2=0": {"conv.0": ("weight",), "conv.1": _BN, "conv.4": ("weight",), "conv.5": _BN},
    "DnaBlock3": {
        "conv1.0": ("weight",),
        "conv1.1": _BN,
        "hyper1.hyper.0": _LIN,
        "hyper1.hyper.2": _LIN,
        "conv2.0": ("weight",),
        "conv2.1": _BN,
        "conv3.0": ("weight",),
        "conv3.1": _BN,
        "hyper3.hyper.0": _LIN,
        "hyper3.hyper.2": _LIN,
        "conv4.0": ("weight",),
        "conv4.1": _BN,
        **_OFFICIAL_BRIDGES,
    },
    "DnaBlock": {
        "conv1.0": ("weight",),
        "conv1.1": _BN,
        "hyper1.hyper.0": _LIN,
        "hyper1.hyper.2": _LIN,
        "conv2.0": ("weight",),
        "conv2.1": _BN,
        "hyper2.hyper.0": _LIN,
        "hyper2.hyper.2": _LIN,
        "conv3.0": ("weight",),
        "conv3.1": _BN,
        **_OFFICIAL_BRIDGES,
    },
}
_OFFICIAL_TOP = {
    "stem.0": ("weight",),
    "stem.1": _BN,
    "local_global.alpha.0": _LIN,
    "local_global.q": _LIN,
    "local_global.proj": _LIN,
    "local_global.layer_norm": _LIN,
    "classifier.conv.1": ("weight",),
    "classifier.conv.2": _BN,
    "classifier.fc.0": _LIN,
    "classifier.fc.1": _BN,
    "classifier.classifier.1": _LIN,
}
# the block types in the released code's tables (b column; "e2=0" rows are conv-only)
_L, _D3, _D = "DnaBlock3 e2=0", "DnaBlock3", "DnaBlock"
_OFFICIAL_TABLES = {
    "mobile_former_26m": [_L, _D, _D3, _D, _D3, _D, _D, _D3, _D],
    "mobile_former_96m": [_L, _D3, _D3, _D, _D3, _D, _D, _D3, _D],
}
# a few shapes of mobile_former_26m, worked out by hand from the released code (groups=4 pointwise convs)
_OFFICIAL_26M_SHAPES = {
    "tokens.weight": (3, 128),  # nn.Embedding(token_num, token_dim)
    "stem.0.weight": (8, 3, 3, 3),
    "features.0.conv.0.weight": (24, 1, 3, 3),  # depthwise, channel multiplier 3
    "features.0.conv.4.weight": (12, 6, 1, 1),  # 24 -> 12 in 4 groups
    "features.1.conv1.0.weight": (36, 3, 1, 1),
    "features.1.hyper1.hyper.0.weight": (32, 128),
    "features.1.hyper2.hyper.2.weight": (72, 32),  # 2 slopes per channel
    "features.1.global_local.proj.weight": (12, 128),
    "features.2.conv1.0.weight": (72, 1, 3, 3),
    "features.2.conv2.0.weight": (24, 18, 1, 1),
    "features.2.conv3.0.weight": (96, 1, 3, 3),
    "features.2.hyper3.hyper.2.weight": (192, 32),
    "features.2.conv4.0.weight": (24, 24, 1, 1),
    "features.2.local_global.q.weight": (12, 128),
    "features.2.global_block.ffn.0.weight": (256, 128),  # FFN ratio 2
    "local_global.alpha.0.weight": (96, 128),
    "classifier.conv.1.weight": (576, 24, 1, 1),
    "classifier.fc.0.weight": (1024, 576 + 128),  # pooled map ++ token 0
    "classifier.classifier.1.weight": (1000, 1024),
}


@pytest.mark.parametrize("name", sorted(_OFFICIAL_TABLES))
def test_official_layout_has_the_released_codes_keys(name):
    with torch.device("meta"):
        m = create_model(name)
    official = to_official_state_dict(m.state_dict())
    want = {"tokens.weight"} | _keys("", _OFFICIAL_TOP)
    for i, kind in enumerate(_OFFICIAL_TABLES[name]):
        want |= _keys(f"features.{i}.", _OFFICIAL_BLOCK[kind])
    assert set(official) == want
    if name == "mobile_former_26m":
        assert {k: tuple(official[k].shape) for k in _OFFICIAL_26M_SHAPES} == _OFFICIAL_26M_SHAPES
    back = convert_official_state_dict(official)
    assert list(back) == list(m.state_dict())  # a bijection, in the model's order


def test_official_checkpoint_loads_with_equal_logits(tmp_path):
    src = _model(replace(_CONFIGS["mobile_former_26m"], num_classes=10), seed=0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = src(x)
    # as a DataParallel training run saves it: "module." prefix, keys in another order, wrapped
    official = {f"module.{k}": v.clone() for k, v in reversed(to_official_state_dict(src.state_dict()).items())}
    assert "module.features.2.conv4.0.weight" in official and "module.tokens.weight" in official

    dst = _model(src.cfg, seed=1)
    with torch.no_grad():
        assert not torch.allclose(dst(x), want)
    dst.load_state_dict(convert_official_state_dict(official), strict=True)
    with torch.no_grad():
        assert torch.equal(dst(x), want)

    dst = _model(src.cfg, seed=2)
    dst.load_state_dict(official)  # official keys are recognised and converted
    with torch.no_grad():
        assert torch.equal(dst(x), want)

    torch.save({"state_dict": official, "epoch": 450}, tmp_path / "mobile-former-26m.pth")
    loaded = create_model("mobile_former_26m", num_classes=10, weights=tmp_path / "mobile-former-26m.pth").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), want)


def test_unknown_official_key_is_named():
    with torch.device("meta"):
        official = to_official_state_dict(create_model("mobile_former_52m").state_dict())
    official["features.3.global_block.k.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="global_block.k.weight"):
        convert_official_state_dict(official)


# --- the model interface -------------------------------------------------------------------------------------


def test_interface_shapes_and_reset_classifier():
    m = _model("mobile_former_52m")
    assert m.default_cfg == {
        "input_size": (3, 224, 224),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    assert m.num_classes == 1000
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap, tokens = m.forward_features(x)
        assert fmap.shape == (2, 96, 2, 2) and tokens.shape == (2, 3, 128)
        assert m.forward_head((fmap, tokens)).shape == (2, 1000)
        assert m.forward_head((fmap, tokens), pre_logits=True).shape == (2, 1024)
        m.reset_classifier(7)
        assert m.num_classes == 7 and m(x).shape == (2, 7)
        m.reset_classifier(0)
        assert m(x).shape == (2, 1024)
    names = dict(m.named_parameters())
    assert "tokens" in m.no_weight_decay() and m.no_weight_decay() <= set(names)


def test_overrides_and_bad_arguments():
    m = create_model("mobile_former_96m", num_classes=10, img_size=160, drop_rate=0.2, drop_path_rate=0.1)
    assert m.default_cfg["input_size"] == (3, 160, 160) and m.num_classes == 10 and m.head.out_features == 10
    assert m.head_drop.p == 0.2 and m.blocks[-1].former.drop_path.p == pytest.approx(0.1)
    with pytest.raises(TypeError, match="unknown Mobile-Former arguments"):
        create_mobile_former(_CONFIGS["mobile_former_96m"], depth=3)
    with pytest.raises(EdgeVitError, match="does not take"):
        create_model("mobile_former_96m", token_num=3)


def test_eval_is_deterministic_and_batch_independent():
    m = _model(MINI)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = m(x), m(x)
        single = m(x[1:2])  # batch 1 uses the tokens without expand
    assert torch.equal(a, b)
    torch.testing.assert_close(single, a[1:2], rtol=1e-5, atol=1e-6)


def test_trains_with_drop_path_and_reaches_the_tokens():
    torch.manual_seed(0)
    m = MobileFormer(replace(MINI, drop_path_rate=0.2, drop_rate=0.1)).train()
    m(torch.randn(4, 3, 64, 64)).logsumexp(-1).mean().backward()
    assert m.tokens.grad is not None and m.tokens.grad.abs().sum() > 0


# --- lowering -------------------------------------------------------------------------------------------------


def _check_backend(model, size, backend, path, rtol=1e-4):
    from edgevit.export import export

    x = torch.randn(1, 3, size, size)
    art = export(model, x, backend, path)
    with torch.no_grad():
        want = model(x).numpy()
    got = art.load(2)(x.numpy())
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= rtol, f"{backend}: max error {err:.2e} of the largest logit"
    return art


def test_mini_lowers_to_one_xnnpack_partition(tmp_path):
    art = _check_backend(_model(MINI), 64, "executorch", tmp_path / "m.pte")
    assert art.info["ops_outside_delegate"] == {}
    assert art.info["partitions"] == 1


# Whole-variant lowering on all four backends is in tests/test_lowering.py (parametrized over the registry).
