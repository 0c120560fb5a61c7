import pytest
import torch

from edgevit import EdgeVitError, create_model, list_models

# Scaling-ViT (Zhai et al. 2022) table: params without head and class token, pos-embed for 224 px.
PAPER_BACKBONE_PARAMS_M = {
    "vit_mini_patch28": 5.4,
    "vit_mini_patch16": 5.0,
    "vit_tiny_patch16": 5.5,
    "vit_small_patch32": 22,
    "vit_small_patch16": 22,
    "vit_base_patch32": 87,
    "vit_base_patch28": 87,
    "vit_base_patch16": 86,
}


def backbone_params(model) -> int:
    head = sum(p.numel() for p in model.head.parameters())
    return sum(p.numel() for p in model.parameters()) - head - model.cls_token.numel()


@pytest.mark.parametrize("name", sorted(PAPER_BACKBONE_PARAMS_M))
def test_vit_matches_paper_param_count(name):
    m = create_model(name)
    got = backbone_params(m) / 1e6
    want = PAPER_BACKBONE_PARAMS_M[name]
    digits = 1 if want < 10 else 0  # the table rounds to 0.1M below 10M, to 1M above
    assert round(got, digits) == pytest.approx(want), f"{name}: {got:.2f}M vs paper {want}M"


def test_registry_lists_and_filters():
    vits = list_models("vit_*")
    assert "vit_tiny_patch16" in vits and vits == sorted(vits)
    assert list_models("nope*") == []


def test_unknown_model_suggests_closest():
    with pytest.raises(EdgeVitError, match="did you mean vit_tiny_patch16"):
        create_model("vit_tiny_patch61")


def test_bad_override_is_a_clear_error():
    with pytest.raises(EdgeVitError, match="does not take"):
        create_model("vit_tiny_patch16", depht=3)


def test_overrides_and_interface(tiny_vit):
    x = torch.randn(2, 3, 32, 32)
    feats = tiny_vit.forward_features(x)
    assert feats.shape == (2, 1 + 16, 192)
    assert tiny_vit.forward_head(feats).shape == (2, 10)
    assert tiny_vit.forward_head(feats, pre_logits=True).shape == (2, 192)
    assert tiny_vit.default_cfg["input_size"] == (3, 32, 32)
    tiny_vit.reset_classifier(3)
    assert tiny_vit(x).shape == (2, 3)


def test_loads_timm_vit_weights_with_equal_logits():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64).eval()
    ours = create_model("vit_tiny_patch16", num_classes=10, img_size=64).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5, rtol=0)


def test_pos_embed_is_resampled_for_another_resolution():
    src = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1)
    dst = create_model("vit_tiny_patch16", img_size=64, patch_size=8, depth=1)
    dst.load_state_dict(src.state_dict())
    assert dst.pos_embed.shape == (1, 1 + 64, 192)
    assert torch.equal(dst.pos_embed[:, 0], src.pos_embed[:, 0])  # class-token slot copied as is
