"""Fine-tuning from a trained run: FixRes (position embeddings resampled to a larger grid), transfer to new
classes with a new head, frozen-backbone linear probing, and the recover section's composed train settings.

One narrow digits ViT is pretrained once (classes 0-4 at 32 px, about 10 s on one thread); every test starts
from that run, as a user's fine-tuning recipe would.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from edgevit import create_model
from edgevit.data import digits, select_classes
from edgevit.models import load_model, save_model
from edgevit.recipe import Recipe, build_model_and_data, stage_sparsify, stage_train
from edgevit.train import TrainConfig, predict, top1, train
from edgevit.train.finetune import freeze_backbone_, frozen_to_eval_, head_names, load_pretrained_
from edgevit.utils import EdgeVitError

ARGS = {"patch_size": 8, "depth": 2, "embed_dim": 64, "mlp_dim": 128, "num_heads": 2}
FAST = {"batch_size": 32, "warmup_epochs": 0.2, "threads": 1, "tensorboard": False}
LOW, HIGH = list("01234"), list("56789")


def _recipe(**sections) -> Recipe:
    return Recipe.from_dict({"seed": 0, "model": {"name": "vit_tiny_patch16"}, **sections})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A narrow ViT trained on digits 0-4 at 32 px (4x4 patch grid): the run every fine-tune starts from."""
    run = tmp_path_factory.mktemp("finetune") / "src"
    recipe = Recipe.from_dict(
        {
            "seed": 0,
            "data": {"img_size": 32, "classes": LOW},
            "model": {"name": "vit_tiny_patch16", "args": ARGS},
            "train": {"epochs": 15, "lr": 2e-3, **FAST},
        }
    )
    assert stage_train(recipe, run, progress=False) > 90.0  # 97.8% on an Intel Xeon host, 93.9% on an AMD EPYC one
    return run


def _pil_bicubic(grid: torch.Tensor, size: int) -> torch.Tensor:
    """``[g*g, D]`` -> ``[size*size, D]``: every channel resized as a float image by PIL's bicubic filter."""
    g, d = round(grid.shape[0] ** 0.5), grid.shape[1]
    img = grid.reshape(g, g, d).numpy()  # [g*g, D] -> [g, g, D]
    out = [np.asarray(Image.fromarray(img[..., c], mode="F").resize((size, size), Image.BICUBIC)) for c in range(d)]
    return torch.from_numpy(np.stack(out, -1)).reshape(size * size, d)  # [s, s, D] -> [s*s, D]


def test_select_classes_keeps_and_renumbers_the_named_classes():
    data = select_classes(digits(img_size=8), HIGH)
    labels = [int(data.val[i][1]) for i in range(len(data.val))]
    assert data.classes == HIGH and sorted(set(labels)) == [0, 1, 2, 3, 4]
    assert len(data.train) + len(data.val) == 1797 - 178 - 182 - 177 - 183 - 181  # digits 0-4 are gone
    with pytest.raises(EdgeVitError, match=r"data.classes: unknown \['x'\]"):
        select_classes(digits(img_size=8), ["5", "x"])


def test_fixres_resamples_pos_embed_bicubically_and_same_grid_is_identity(source, digits32):
    src, meta = load_model(source)
    data32 = select_classes(digits32, LOW)

    same = create_model("vit_tiny_patch16", **meta["args"]).eval()
    report = load_pretrained_(same, source, classes=LOW)
    assert report.resampled == {} and report.reinitialised == []
    x = torch.stack([data32.val[i][0] for i in range(64)])
    with torch.no_grad():
        assert torch.equal(same(x), src(x))  # resampling to the same grid is the identity

    hi = create_model("vit_tiny_patch16", **{**meta["args"], "img_size": 48}).eval()
    report = load_pretrained_(hi, source, classes=LOW)
    assert report.resampled == {"pos_embed": [4, 6]}
    pe, old = hi.pos_embed.detach(), src.pos_embed.detach()  # [1, 1 + 36, D], [1, 1 + 16, D]
    assert torch.equal(pe[:, :1], old[:, :1])  # the class token's row is untouched
    torch.testing.assert_close(pe[0, 1:], _pil_bicubic(old[0, 1:], 6), atol=1e-5, rtol=0)

    # FixRes: the 32-px model with resampled embeddings already reads 48-px digits (chance: 20%)
    data48 = select_classes(digits(img_size=48), LOW)
    assert top1(*predict(hi, data48.val)) > 30.0  # 43.3% here


def test_distilled_prefix_rows_stay_and_grid_resamples():
    torch.manual_seed(0)
    args = {"img_size": 32, "distilled": True, **ARGS}
    src = create_model("vit_tiny_patch16", **args)
    dst = create_model("vit_tiny_patch16", **{**args, "img_size": 64})
    dst.load_state_dict(src.state_dict())  # ViT's own load_state_dict resamples too
    pe, old = dst.pos_embed.detach(), src.pos_embed.detach()
    assert pe.shape == (1, 2 + 64, 64) and torch.equal(pe[:, :2], old[:, :2])
    torch.testing.assert_close(pe[0, 2:], _pil_bicubic(old[0, 2:], 8), atol=1e-5, rtol=0)
    assert head_names(dst) == ["head", "head_dist"]


def test_fixres_recipe_finetunes_at_48px(source, tmp_path):
    out = tmp_path / "fix48"
    recipe = _recipe(
        data={"img_size": 48, "classes": LOW},
        train={"epochs": 2, "lr": 3e-4, **FAST},
        finetune={"from": str(source)},
    )
    top = stage_train(recipe, out, progress=False)
    meta = json.loads((out / "model.json").read_text())
    ft = meta["finetune"]
    assert ft["from"] == str(source) and ft["resampled"] == {"pos_embed": [4, 6]} and ft["reinitialised"] == []
    assert top > ft["val_top1_before"] + 20  # 43.3% -> 86.7% after two epochs at 48 px
    saved = Recipe.load(out / "recipe.yaml")  # the source's architecture, inherited, is written out
    assert saved.model.args == ARGS and saved.finetune.source == str(source)
    model, _ = load_model(out)
    assert model.patch_embed.grid_size == 6 and meta["args"]["img_size"] == 48


def test_transfer_to_new_classes_reinitialises_the_head_and_beats_scratch(source, tmp_path):
    # the source's own learning rate. At 1e-3 whether transfer won in 3 epochs depended on the host's float kernels
    # (67.8 vs 55.0% on an Intel Xeon host, 52.8 vs 55.0% on an AMD EPYC one); at 2e-3 it wins by 9.4 points on the
    # EPYC host (and by 6.7 at 5 epochs)
    train_cfg = {"epochs": 3, "lr": 2e-3, **FAST}
    transfer = _recipe(data={"classes": HIGH}, train=train_cfg, finetune={"from": str(source)})
    top = stage_train(transfer, tmp_path / "transfer", progress=False)
    ft = json.loads((tmp_path / "transfer" / "model.json").read_text())["finetune"]
    assert ft["reinitialised"] == ["head.weight", "head.bias"]
    assert ft["reason"] == "classes ['0', '1', '2', '3', '4'] -> ['5', '6', '7', '8', '9']"
    src = load_model(source)[0].state_dict()
    new = load_model(tmp_path / "transfer")[0].state_dict()
    assert not torch.equal(new["blocks.0.attn.qkv.weight"], src["blocks.0.attn.qkv.weight"])  # fine-tuned

    scratch = _recipe(model={"name": "vit_tiny_patch16", "args": ARGS}, data={"classes": HIGH}, train=train_cfg)
    from_scratch = stage_train(scratch, tmp_path / "scratch", progress=False)
    assert top > from_scratch + 5  # 61.1% vs 51.7% after the same 3 epochs (AMD EPYC host)

    # 0-9: the head changes shape; layer-wise LR decay for the backbone
    ten = _recipe(
        train={**train_cfg, "optimizer": {"layer_decay": 0.75}},
        finetune={"from": str(source / "model.safetensors")},
    )
    assert stage_train(ten, tmp_path / "ten", progress=False) > 40.0  # chance: 10%
    ft = json.loads((tmp_path / "ten" / "model.json").read_text())["finetune"]
    assert ft["reason"] == "classifier shape [5, 64] -> [10, 64]"


def test_linear_probe_trains_only_the_head(source, tmp_path):
    recipe = _recipe(
        data={"classes": HIGH},
        train={"epochs": 3, "lr": 1e-2, "weight_decay": 0.0, **FAST},
        finetune={"from": str(source), "linear_probe": True},
    )
    top = stage_train(recipe, tmp_path / "probe", progress=False)
    saved = Recipe.load(tmp_path / "probe" / "recipe.yaml")
    init_head = build_model_and_data(saved, augment=True)[0].head.weight  # the same seed: the fresh head
    src = load_model(source)[0].state_dict()
    probe = load_model(tmp_path / "probe")[0].state_dict()
    for k, v in src.items():
        if not k.startswith("head."):
            assert torch.equal(probe[k], v), k  # bit-identical backbone
    assert not torch.equal(probe["head.weight"], init_head.detach())
    assert top > 35.0  # frozen 0-4 features read 5-9 (chance 20%); 49.4% here


def test_linear_probe_freezes_batchnorm_statistics_at_a_new_size(tmp_path, one_thread):
    """MobileViT has BN and no position embedding: a 32-px model loads at 48 px as is; probing moves only the head."""
    torch.manual_seed(0)
    src = create_model("mobilevit_xxs", img_size=32, num_classes=10)
    with torch.no_grad():  # non-trivial statistics, so a BN update would show
        src.train()(torch.randn(8, 3, 32, 32))
    save_model(src, "mobilevit_xxs", {"img_size": 32, "num_classes": 10}, tmp_path / "src" / "model.safetensors")
    model = create_model("mobilevit_xxs", img_size=48, num_classes=5)
    report = load_pretrained_(model, tmp_path / "src", classes=HIGH)
    assert report.resampled == {} and report.reinitialised == ["head.fc.weight", "head.fc.bias"]
    assert freeze_backbone_(model) == ["head.fc.weight", "head.fc.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = select_classes(digits(img_size=48, mean=(0.0,) * 3, std=(1.0,) * 3), HIGH)
    data.train.indices = data.train.indices[:64]
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-2, warmup_epochs=0, threads=1, tensorboard=False)
    train(model, data, cfg, tmp_path / "probe", progress=False, on_epoch_start=lambda e: frozen_to_eval_(model))
    after = model.state_dict()
    assert [k for k in after if not torch.equal(after[k], before[k])] == ["head.fc.weight", "head.fc.bias"]


class _NotTensors:
    """Any pickled object: ``weights_only=True`` refuses to build it."""


def test_a_wrong_or_incompatible_source_is_named(source, tmp_path):
    with pytest.raises(EdgeVitError, match="finetune.from: .*nowhere not found"):
        load_pretrained_(create_model("vit_tiny_patch16", img_size=32, **ARGS), tmp_path / "nowhere")
    deeper = create_model("vit_tiny_patch16", img_size=32, num_classes=5, **{**ARGS, "depth": 3})
    with pytest.raises(EdgeVitError, match=r"src/model.safetensors does not fit .*missing keys \['blocks.2.norm1"):
        load_pretrained_(deeper, source)
    wider = create_model("vit_tiny_patch16", img_size=32, num_classes=5, **{**ARGS, "mlp_dim": 256})
    with pytest.raises(EdgeVitError, match=r"shape mismatch .* blocks.0.mlp.fc1.weight \[128, 64\] vs \[256, 64\]"):
        load_pretrained_(wider, source)
    ten = create_model("vit_tiny_patch16", img_size=32, num_classes=10, **ARGS)
    with pytest.raises(EdgeVitError, match=r"reset_head is false .* head.weight \[5, 64\] vs \[10, 64\]"):
        load_pretrained_(ten, source, reset_head=False)
    # a bare .pth state dict loads with weights_only=True; a pickled object is refused, naming the file
    torch.save(load_model(source)[0].state_dict(), tmp_path / "w.pth")
    bare = create_model("vit_tiny_patch16", img_size=32, num_classes=5, **ARGS)
    report = load_pretrained_(bare, tmp_path / "w.pth")
    assert report.source_classes is None and report.reinitialised == [] and report.loaded == len(bare.state_dict())
    torch.save({"model": _NotTensors()}, tmp_path / "evil.pth")
    with pytest.raises(EdgeVitError, match="evil.pth is corrupt or not a PyTorch state dict"):
        load_pretrained_(ten, tmp_path / "evil.pth")
    other = _recipe(model={"name": "deit_tiny"}, finetune={"from": str(source)})
    with pytest.raises(EdgeVitError, match="holds a vit_tiny_patch16 model but the recipe's model.name is deit_tiny"):
        stage_train(other, tmp_path / "other", progress=False)


def test_recover_section_composes_train_settings_and_recovers(source, tmp_path):
    """``recover:`` stays one flat YAML section; its bool ``distill`` never reaches DeiT distillation."""
    r = _recipe(recover={"epochs": 1, "distill": True, "temperature": 3.0, "threads": 1, "tensorboard": False})
    assert r.recover.train.epochs == 1 and r.recover.train.lr == 5e-4 and r.recover.train.distill is None
    assert r.recover.distill is True and r.recover.temperature == 3.0
    dumped = r.model_dump(mode="json")["recover"]
    assert "train" not in dumped and dumped["epochs"] == 1 and dumped["distill"] is True
    assert Recipe.from_dict(r.model_dump(mode="json")) == r
    assert _recipe().recover.train.epochs == 10  # recovery's own defaults
    with pytest.raises(EdgeVitError, match="recipe key 'recover.epoch': unknown key"):
        _recipe(recover={"epoch": 3})

    res = stage_sparsify(source, tmp_path / "sparse", progress=False, epochs=1)  # KD from the dense model
    assert res["val_top1"] > 80.0


def test_no_embed_class_resamples_the_whole_grid(tmp_path):
    # DeiT III's layout: pos_embed is the patch grid only, so every row is resampled (no prefix row kept)
    torch.manual_seed(0)
    args = {"img_size": 32, "no_embed_class": True, **ARGS}
    src = create_model("vit_tiny_patch16", **args)
    save_model(src, "vit_tiny_patch16", args, tmp_path / "model.safetensors")
    dst = create_model("vit_tiny_patch16", **{**args, "img_size": 48})
    report = load_pretrained_(dst, tmp_path / "model.safetensors")
    assert report.resampled == {"pos_embed": [4, 6]} and dst.pos_embed.shape == (1, 36, 64)
    torch.testing.assert_close(dst.pos_embed[0].detach(), _pil_bicubic(src.pos_embed[0].detach(), 6), atol=1e-5, rtol=0)
    again = create_model("vit_tiny_patch16", **{**args, "img_size": 64})
    again.load_state_dict(src.state_dict())  # ViT's own load_state_dict too
    torch.testing.assert_close(
        again.pos_embed[0].detach(), _pil_bicubic(src.pos_embed[0].detach(), 8), atol=1e-5, rtol=0
    )
    assert dst(torch.randn(1, 3, 48, 48)).shape == (1, 1000)
