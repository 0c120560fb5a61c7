"""MobileViT v1/v2: paper sizes, timm weight compatibility, the model interface, and clean lowering.

The lowering tests check two things: nothing is left outside the XNNPACK delegate, and every runnable
artifact agrees with PyTorch. The second matters on its own: a 4-D softmax after a conv once lowered fully
but computed the wrong axis.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgevit import EdgeVitError
from edgevit.bench import randomize_
from edgevit.export import export
from edgevit.models import create_model, list_models, model_entrypoint

V1 = ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"]
V2 = [f"mobilevitv2_{w}" for w in ("050", "075", "100", "125", "150", "175", "200")]

# The papers' sizes (MobileViT, Mehta & Rastegari 2022; MobileViTv2, 2023), 1000-class head included.
PAPER_PARAMS_M = {
    "mobilevit_xxs": 1.3,
    "mobilevit_xs": 2.3,
    "mobilevit_s": 5.6,
    "mobilevitv2_050": 1.4,
    "mobilevitv2_075": 2.9,
    "mobilevitv2_100": 4.9,
}

# one inverted-residual block per stage and one transformer layer per MobileViT block: every code path, fast
SHALLOW = dict(depths=(1, 1, 1, 1, 1), transformer_depths=(1, 1, 1))


def test_all_variants_are_registered():
    assert list_models("mobilevit_*") == sorted(V1)
    assert list_models("mobilevitv2_*") == sorted(V2)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_matches_paper_param_count(name):
    with torch.device("meta"):
        m = create_model(name)
    got = sum(p.numel() for p in m.parameters()) / 1e6
    assert round(got, 1) == pytest.approx(PAPER_PARAMS_M[name]), f"{name}: {got:.3f}M vs paper {PAPER_PARAMS_M[name]}M"


@pytest.mark.parametrize("name", V1 + V2)
def test_loads_timm_weights_with_equal_logits(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = randomize_(timm.create_model(name, pretrained=False, num_classes=10)).eval()
    model = create_model(name, num_classes=10).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = model(x), ref(x)
    assert want.abs().max() > 0.5  # the comparison sees real logits, not a near-zero head
    assert (got - want).abs().max() <= 1e-5
    # and back: our state dict is timm's
    assert ref.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_equals_timm_when_feature_maps_do_not_divide_into_patches(name):
    # 96 px: the last stage's map is 3x3, which MobileViT resizes to 4x4 around (v1) or before (v2) its patches
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = randomize_(timm.create_model(name, pretrained=False, num_classes=10)).eval()
    model = create_model(name, num_classes=10).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_interface(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, img_size=64, drop_rate=0.1, drop_path_rate=0.1).eval()
    assert m.default_cfg["input_size"] == (3, 64, 64)
    assert m.default_cfg["mean"] == (0.0, 0.0, 0.0) and m.default_cfg["std"] == (1.0, 1.0, 1.0)
    assert m.default_cfg["num_classes"] == 7
    assert m.no_weight_decay() == set()
    x = torch.randn(2, 3, 64, 64)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features, 2, 2)  # stride 32
    assert m.forward_head(feats).shape == (2, 7)
    assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.default_cfg["num_classes"] == 3
    m.reset_classifier(0)
    assert m(x).shape == (2, m.num_features)


def test_overrides_and_bad_arguments():
    m = create_model("mobilevitv2_050", in_chans=1, num_classes=4, **SHALLOW)
    assert m.stem.conv.in_channels == 1 and m.default_cfg["input_size"] == (1, 256, 256)
    assert m(torch.randn(1, 1, 64, 64)).shape == (1, 4)
    with pytest.raises(TypeError, match="unknown MobileViT arguments"):
        model_entrypoint("mobilevit_xxs")(patch_sise=2)
    with pytest.raises(EdgeVitError, match="does not take"):
        create_model("mobilevit_xxs", depht=3)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_trains_with_stochastic_depth(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=3, drop_rate=0.1, drop_path_rate=0.2, **SHALLOW).train()
    loss = nn.functional.cross_entropy(m(torch.randn(2, 3, 64, 64)), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def _check(art, x, ref) -> None:
    if art.backend == "executorch":
        assert art.info["ops_outside_delegate"] == {}, art.info
        assert art.info["partitions"] == 1, art.info
    if art.backend == "coreml":
        assert (art.path / "Manifest.json").is_file()  # converts; running needs macOS
        return
    got = art.load(2)(x.numpy())
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_every_block_lowers_fully_to_xnnpack(tmp_path):
    # one small graph with every module both families use (stem, residual MV2 block, v1 and v2 MobileViT blocks,
    # head): lowering has a large fixed cost, so the default run lowers this once; whole models are slow tests
    from edgevit.models import mobilevit as mv

    torch.manual_seed(0)
    probe = nn.Sequential(
        mv.ConvNormAct(3, 16, 3, stride=2),
        mv.InvertedResidual(16, 16, expansion=2.0),
        mv.MobileViTBlock(16, transformer_dim=16, transformer_depth=1),
        mv.MobileViTV2Block(16, transformer_dim=8, transformer_depth=1),
        mv.ClassifierHead(16, 10),
    )
    probe = randomize_(probe, fc=probe[-1].fc).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = probe(x).numpy()
    _check(export(probe, x, "executorch", tmp_path / "probe.pte"), x, ref)


# Whole-model lowering on all four backends is in tests/test_lowering.py, parametrized over the registry.
