import pytest
import torch

from edgevit import EdgeVitError, create_model, list_models, profile
from edgevit.models import model_entrypoint

# Scaling-ViT (Zhai et al. 2022) table: params without head and class token, pos-embed for 224 px.
PAPER_BACKBONE_PARAMS_M = {
    "vit_large_patch16": 303,
    "vit_giant_patch14": 1011,
    "vit_gigantic_patch14": 1843,
    "vit_mini_patch28": 5.4,
    "vit_mini_patch16": 5.0,
    "vit_tiny_patch16": 5.5,
    "vit_small_patch32": 22,
    "vit_small_patch16": 22,
    "vit_base_patch32": 87,
    "vit_base_patch28": 87,
    "vit_base_patch16": 86,
}


@pytest.mark.parametrize("name", sorted(PAPER_BACKBONE_PARAMS_M))
def test_vit_matches_paper_param_count(name):
    with torch.device("meta"):  # no memory or init time, even for ViT-G/14
        m = create_model(name)
    got = profile(m)["backbone_params"] / 1e6
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


def test_model_entrypoint_is_the_registered_builder():
    """The entry point builds what create_model builds; an unknown name fails like create_model's."""
    entry = model_entrypoint("vit_tiny_patch16")
    assert entry.__name__ == "vit_tiny_patch16"
    with torch.device("meta"):
        built, made = entry(depth=2), create_model("vit_tiny_patch16", depth=2)
    assert type(built) is type(made) and len(built.blocks) == 2
    assert [(n, p.shape) for n, p in built.named_parameters()] == [(n, p.shape) for n, p in made.named_parameters()]
    with pytest.raises(EdgeVitError, match="did you mean vit_tiny_patch16"):
        model_entrypoint("vit_tiny_patch61")


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


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("vit_tiny_patch16", "vit_tiny_patch16_224"),
        ("vit_small_patch32", "vit_small_patch32_224"),
        ("deit_tiny", "deit_tiny_patch16_224"),
        ("deit_tiny_distilled", "deit_tiny_distilled_patch16_224"),
        ("deit_small_distilled", "deit_small_distilled_patch16_224"),
    ],
)
def test_loads_timm_weights_with_equal_logits(ours, theirs, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(theirs, pretrained=False, num_classes=10, img_size=64).eval()
    # a timm checkpoint file as users have them, loaded through create_model(weights=...)
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    model = create_model(ours, num_classes=10, img_size=64, weights=tmp_path / "timm.pth").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-5
    # and back: edgevit weights load into timm's model unchanged
    assert ref.load_state_dict(model.state_dict(), strict=True)


def test_deit_distilled_heads():
    torch.manual_seed(0)
    m = create_model("deit_tiny_distilled", img_size=32, patch_size=8, depth=1, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    feats = m.forward_features(x)
    assert feats.shape == (2, 2 + 16, 192)  # class + distillation token + patches
    with torch.no_grad():
        both = (m.head(feats[:, 0]) + m.head_dist(feats[:, 1])) / 2
        assert torch.allclose(m(x), both, atol=1e-6)
    m.train()
    m.distilled_training = True
    cls, dist = m(x)  # training with distillation sees both heads
    assert cls.shape == dist.shape == (2, 4)
    m.reset_classifier(7)
    assert m.head.out_features == m.head_dist.out_features == 7
    assert {"cls_token", "dist_token", "pos_embed"} <= m.no_weight_decay()


def test_any_timm_model_by_name():
    m = create_model("timm/resnet18", num_classes=10).eval()
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert m.default_cfg["input_size"] == (3, 224, 224)
    p = profile(m)
    assert round(p["macs"] / 1e9, 1) == 1.8  # ResNet-18's well-known ~1.8 GMACs
    with pytest.raises(EdgeVitError, match="did you mean timm/resnet18"):
        create_model("timm/resnet181")


def test_profile_counts_every_matmul_exactly():
    """ViT-Ti/16 at 224 px: MACs by hand equal the counter's, attention matmuls included."""
    with torch.device("meta"):
        m = create_model("vit_tiny_patch16")
    n, d, depth = 197, 192, 12
    per_block = 12 * n * d * d + 2 * n * n * d  # qkv 3d^2 + proj d^2 + MLP 8d^2 per token; q@k^T and attn@v
    expected = depth * per_block + 196 * (3 * 16 * 16) * d + d * 1000  # + patch embedding + head
    p = profile(m)
    assert p["macs"] == expected and p["flops"] == 2 * expected
    with torch.device("meta"):
        big = create_model("vit_tiny_patch16", img_size=448)  # position embeddings are built per size
    assert profile(big)["macs"] > 4 * p["macs"]  # 4x the patches, attention grows quadratically


def test_layer_scale_loads_timm_weights_with_equal_logits():
    # DeiT III's ViT-S (2 of its blocks): timm's vit_small_patch16_224 with LayerScale (init_values=1e-4)
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=10, img_size=32, depth=2, init_values=1e-4
    )
    with torch.no_grad():  # O(1) scales, so a missing or misplaced LayerScale changes the logits
        for name, p in ref.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(0.5 + torch.rand_like(p))
    ref.eval()
    model = create_model("vit_small_patch16", num_classes=10, img_size=32, depth=2, init_values=1e-4).eval()
    assert model.blocks[0].ls1.gamma.detach().eq(1e-4).all()  # started at init_values
    assert model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-5
        without = create_model("vit_small_patch16", num_classes=10, img_size=32, depth=2).eval()
        without.load_state_dict({k: v for k, v in ref.state_dict().items() if ".ls" not in k})
        assert (without(x) - ref(x)).abs().max() > 1e-2  # the scales matter
    assert "blocks.1.ls2.gamma" in model.state_dict()
    assert "blocks.0.ls1.gamma" not in without.state_dict()  # no LayerScale by default: old checkpoints still load


def test_deit3_layout_loads_timm_deit3_with_equal_logits():
    # timm's deit3_small_patch16_224 (2 of its blocks): no_embed_class=True, init_values=1e-6 (timm's defaults)
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("deit3_small_patch16_224", pretrained=False, num_classes=10, img_size=32, depth=2)
    assert ref.no_embed_class and ref.pos_embed.shape == (1, 4, 384)  # no class-token row
    with torch.no_grad():  # O(1) scales and embeddings: a class token given a position row changes the logits
        for name, p in ref.named_parameters():
            if name.endswith(".gamma") or name in ("pos_embed", "cls_token"):
                p.copy_(0.5 + torch.rand_like(p))
    ref.eval()
    args = {"num_classes": 10, "img_size": 32, "depth": 2, "init_values": 1e-6, "no_embed_class": True}
    model = create_model("deit_small", **args).eval()
    assert model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="not square"):  # timm's default layout cannot take it: a row short
        create_model("deit_small", **{**args, "no_embed_class": False}).load_state_dict(ref.state_dict())
    assert ref.load_state_dict(model.state_dict(), strict=True)  # and back


@pytest.mark.parametrize("uniform", [False, True])
def test_drop_path_is_a_linear_ramp_or_deit3s_uniform_rate(uniform):
    with torch.device("meta"):
        m = create_model("vit_tiny_patch16", depth=4, drop_path_rate=0.3, drop_path_uniform=uniform)
    rates = [round(b.drop_path1.p, 6) for b in m.blocks]
    assert rates == ([0.3] * 4 if uniform else [0.0, 0.1, 0.2, 0.3])
