"""The published-recipe YAMLs (recipes/*.yaml) and their digits variants (recipes/digits/*.yaml).

Fast: parse + validate every recipe, build every model with its arguments, and check that (a) each ImageNet
recipe carries the paper's numbers it cites and (b) each digits variant keeps its recipe's character (same
optimizer kind, SAM, distillation kind, augmentation family). The digits runs themselves are in the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgevit.models import create_model
from edgevit.recipe import Recipe
from edgevit.recipe.study import ARMS, arm_recipe, render
from edgevit.train.multiscale import batch_sizes

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ["mobilevit", "deit_distilled", "deit3", "vit_sam", "augreg"]
DIGITS = sorted(f"recipes/digits/{p.name}" for p in (ROOT / "recipes/digits").glob("*.yaml"))
ALL = [f"recipes/{n}.yaml" for n in PUBLISHED] + DIGITS

# The numbers each ImageNet recipe cites (see the comment at the top of each YAML for the source).
# ``effective_batch`` is batch_size x 8 processes, the launch command in every YAML.
PAPER = {
    "mobilevit": {  # Mehta & Rastegari 2022, Sec. 4.1; apple/ml-cvnets mobilevit_small.yaml
        "model.name": "mobilevit_s",
        "data.img_size": 256,
        "train.epochs": 300,
        "effective_batch": 1024,
        "train.lr": 0.002,
        "train.min_lr": 0.0002,
        "train.warmup_lr": 0.0002,
        "warmup_steps": 3000,
        "train.multiscale.sizes": [160, 192, 256, 288, 320],
        "train.weight_decay": 0.01,
        "train.label_smoothing": 0.1,
        "train.ema_decay": 0.9995,
        "train.optimizer.name": "adamw",
        "train.aug.crop": "rrc",
        "train.aug.hflip": 0.5,
    },
    "deit_distilled": {  # Touvron et al. 2021; facebookresearch/deit main.py defaults
        "model.name": "deit_tiny_distilled",
        "data.img_size": 224,
        "train.epochs": 300,
        "effective_batch": 1024,
        "train.lr": 5e-4 * 1024 / 512,
        "train.min_lr": 1e-5,
        "train.warmup_epochs": 5,
        "train.warmup_lr": 1e-6,
        "train.weight_decay": 0.05,
        "train.label_smoothing": 0.1,
        "train.drop_path": 0.1,
        "train.ema_decay": 0.99996,
        "train.aug.rand_augment": "rand-m9-mstd0.5-inc1",
        "train.aug.mixup": 0.8,
        "train.aug.cutmix": 1.0,
        "train.aug.random_erasing": 0.25,
        "train.aug.interpolation": "bicubic",
        "train.distill.kind": "hard",
        "train.distill.alpha": 0.5,
        "train.distill.tau": 1.0,
        "train.repeated_aug": 3,
    },
    "deit3": {  # Touvron et al. 2022; facebookresearch/deit README_revenge.md, ImageNet-1k ViT-S command
        "model.name": "deit_small",
        "model.args.init_values": 1e-4,
        "model.args.no_embed_class": True,  # models_v2.py: pos_embed on the patch tokens only
        "model.args.drop_path_uniform": True,  # models_v2.py: dpr = [drop_path_rate for i in range(depth)]
        "train.optimizer.name": "lamb",
        "train.loss.kind": "bce",
        "train.loss.target_threshold": 0.0,
        "train.repeated_aug": 3,
        "train.aug.crop": "rrc",
        "data.img_size": 224,
        "train.epochs": 800,
        "effective_batch": 2048,
        "train.lr": 4e-3,
        "train.warmup_epochs": 5,
        "train.warmup_lr": 1e-6,
        "train.weight_decay": 0.05,
        "train.label_smoothing": 0.0,
        "train.drop_path": 0.05,
        "train.aug.three_augment": True,
        "train.aug.color_jitter": 0.3,
        "train.aug.mixup": 0.8,
        "train.aug.cutmix": 1.0,
        "train.aug.random_erasing": 0.0,
    },
    "vit_sam": {  # Chen et al. 2022 on the ViT paper's ImageNet schedule (Dosovitskiy et al. 2021, Table 3)
        "model.name": "vit_small_patch16",
        "data.img_size": 224,
        "train.epochs": 300,
        "effective_batch": 4096,
        "train.lr": 3e-3,
        "train.weight_decay": 0.3,
        "train.grad_clip": 1.0,
        "model.args.drop_rate": 0.1,
        "warmup_steps": 10_000,
        "train.label_smoothing": 0.0,
        "train.optimizer.sam.rho": 0.1,
        "train.aug.rand_augment": None,
        "train.aug.mixup": 0.0,
        "train.aug.cutmix": 0.0,
    },
    "augreg": {  # Steiner et al. 2022; big_vision configs/vit_i1k.py, Ti_16-i1k-...-aug_light1-wd_0.1-do_0.0-sd_0.0
        "model.name": "vit_tiny_patch16",
        "data.img_size": 224,
        "train.epochs": 300,
        "effective_batch": 4096,
        "train.lr": 1e-3,
        "train.min_lr": 0.0,
        "train.weight_decay": 0.1,
        "train.grad_clip": 1.0,
        "warmup_steps": 10_000,
        "train.aug.rand_augment": "rand-n2-m0",
        "train.aug.mixup": 0.0,
        "train.drop_path": None,
        "train.label_smoothing": 0.0,
    },
}
IMAGENET_TRAIN_IMAGES = 1_281_167


def _get(recipe: Recipe, dotted: str):
    node = recipe.model_dump()
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("path", ALL)
def test_recipe_loads_and_its_model_builds(path, one_thread):
    recipe = Recipe.load(ROOT / path)
    model = create_model(recipe.model.name, img_size=recipe.data.img_size, num_classes=10, **recipe.model.args)
    assert sum(p.numel() for p in model.parameters()) > 0
    if path.startswith("recipes/digits/"):  # the digits variants are made to finish in minutes on a shared 2-core box
        assert recipe.data.img_size == 32 and recipe.train.threads == 1 and recipe.train.epochs <= 60
        with torch.no_grad():
            assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    else:
        assert recipe.data.name == "imagefolder" and recipe.data.root == "/path/to/imagenet", "placeholder root"


@pytest.mark.parametrize("name", PUBLISHED)
def test_imagenet_recipe_carries_the_paper_numbers(name):
    recipe = Recipe.load(ROOT / "recipes" / f"{name}.yaml")
    for key, want in PAPER[name].items():
        if key == "effective_batch":
            got = recipe.train.batch_size * 8
        elif key == "warmup_steps":  # warm-up given in epochs; the paper counts steps of the effective batch
            steps_per_epoch = IMAGENET_TRAIN_IMAGES / PAPER[name]["effective_batch"]
            if recipe.train.multiscale:  # a batch size per resolution, each drawn equally often
                sizes = batch_sizes(recipe.train.batch_size, recipe.data.img_size, recipe.train.multiscale.sizes)
                steps_per_epoch = IMAGENET_TRAIN_IMAGES / 8 / (sum(sizes.values()) / len(sizes))
            got = recipe.train.warmup_epochs * steps_per_epoch
            assert got == pytest.approx(want, rel=0.02), f"{name}: warm-up {got:.0f} steps, paper {want}"
            continue
        else:
            got = _get(recipe, key)
        assert got == pytest.approx(want) if isinstance(want, float) else got == want, f"{name}: {key}={got!r}"


def _character(recipe: Recipe) -> dict:
    t = recipe.train
    return {
        "optimizer": t.optimizer.name,
        "loss": t.loss.model_dump(),
        "multiscale": t.multiscale is not None,  # (repeated_aug: only the multi-process ImageNet runs; see the YAMLs)
        "layer_scale": "init_values" in recipe.model.args,
        "no_embed_class": recipe.model.args.get("no_embed_class", False),
        "drop_path_uniform": recipe.model.args.get("drop_path_uniform", False),
        "sam": t.optimizer.sam is not None,
        "distill": t.distill.kind if t.distill else None,
        "ema": t.ema_decay is not None,
        "rand_augment": t.aug.rand_augment is not None,
        "three_augment": t.aug.three_augment,
        "color_jitter": t.aug.color_jitter,
        "mixup": t.aug.mixup > 0,
        "cutmix": t.aug.cutmix > 0,
        "random_erasing": t.aug.random_erasing > 0,
        "label_smoothing": t.label_smoothing,
        "drop_path": bool(t.drop_path),
        "distilled_model": "distilled" in recipe.model.name or recipe.model.args.get("distilled", False),
    }


@pytest.mark.parametrize("name", PUBLISHED)
def test_digits_variant_keeps_the_recipe_character(name):
    paper = Recipe.load(ROOT / "recipes" / f"{name}.yaml")
    small = Recipe.load(ROOT / "recipes" / "digits" / f"{name}.yaml")
    assert _character(small) == _character(paper)
    family = [r.model.name.startswith("mobilevit") for r in (small, paper)]  # MobileViT, or a ViT (DeiT is a ViT)
    assert family[0] == family[1]


def test_study_arms_differ_from_the_baseline_only_in_their_change(tmp_path):
    student = Recipe.load(ROOT / "recipes/digits/study_vit.yaml").model_dump(mode="json")
    runs = {arm: Recipe.from_dict(arm_recipe(student, arm, 2, tmp_path / "teacher", rho=0.05)) for arm in ARMS}
    base = runs["baseline"].model_dump()
    assert runs["baseline"].seed == 2 and base["train"] == Recipe.from_dict(student).model_dump()["train"]
    assert runs["distilled"].train.distill.teacher == str(tmp_path / "teacher")
    assert runs["distilled"].train.distill.kind == "hard" and runs["distilled"].train.optimizer.sam is None
    assert runs["sam"].train.optimizer.sam.rho == 0.05 and runs["sam"].train.distill is None
    for arm in ("distilled", "sam"):  # everything else (epochs, lr, data, model) is the baseline's
        other = runs[arm].model_dump()
        other["train"]["distill"], other["train"]["optimizer"]["sam"], other["name"] = None, None, base["name"]
        assert other == base


def test_study_table_pairs_each_arm_with_the_same_seed_baseline():
    records = [
        {"arm": "baseline", "seed": 0, "val_top1": 90.0, "seconds": 10.0},
        {"arm": "baseline", "seed": 1, "val_top1": 94.0, "seconds": 12.0},
        {"arm": "sam", "seed": 0, "val_top1": 91.0, "seconds": 20.0},
        {"arm": "sam", "seed": 1, "val_top1": 97.0, "seconds": 22.0},
    ]
    table = render(records)
    assert "| baseline | 92.00 ± 2.83 | s0: 90.00, s1: 94.00 | – | 11 |" in table
    # paired differences 1 and 3 -> +2.00 ± 1.41 (unpaired means would give the same mean, not the same std)
    assert "| sam | 94.00 ± 4.24 | s0: 91.00, s1: 97.00 | +2.00 ± 1.41 | 21 |" in table


@pytest.mark.slow
def test_study_trains_every_arm_against_its_seed_teacher_and_reuses_finished_runs(tmp_path, one_thread):
    import yaml

    from edgevit.recipe.study import collect, run_study

    def one_epoch(name: str) -> Path:
        raw = yaml.safe_load((ROOT / "recipes/digits" / name).read_text())
        raw["train"].update(epochs=1, warmup_epochs=0, tensorboard=False)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    out = tmp_path / "study"
    records = run_study(out, [3], one_epoch("study_vit.yaml"), one_epoch("study_teacher.yaml"), rho=0.07)
    assert [r["arm"] for r in records] == ["teacher", *ARMS] and all(r["seed"] == 3 for r in records)
    distilled = Recipe.load(out / "distilled_s3" / "recipe.yaml")
    assert distilled.seed == 3 and distilled.train.distill.teacher == str(out / "teacher_s3")
    assert Recipe.load(out / "sam_s3" / "recipe.yaml").train.optimizer.sam.rho == 0.07
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/model.safetensors")}
    again = run_study(out, [3], one_epoch("study_vit.yaml"), one_epoch("study_teacher.yaml"), rho=0.07)
    assert again == records and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert sorted(r["arm"] for r in collect(out)) == sorted(["teacher", *ARMS])
