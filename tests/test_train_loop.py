"""The train loop's machinery: exact resume, crash-safe checkpoints, EMA, accumulation, bf16, DDP, config."""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT
from torch.utils.data import Subset

from edgevit import EdgeVitError, create_model
from edgevit.data import DataSplits
from edgevit.recipe import Recipe
from edgevit.train import TrainConfig, load_checkpoint, save_checkpoint, train
from edgevit.train.sampling import EpochOrder


def _small(digits32, n_train=96, n_val=64):
    return DataSplits(Subset(digits32.train, range(n_train)), Subset(digits32.val, range(n_val)), digits32.classes)


def _model(**kw):
    torch.manual_seed(0)
    return create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=10, **kw)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _Interrupt(Exception):
    pass


def test_killed_mid_epoch_resumes_bit_identical(digits32, tmp_path):
    """Dropout, drop-path and EMA on; a run interrupted at step 9 (epoch 2) resumes from its step-8 checkpoint."""
    data = _small(digits32)  # 96 images / 16 = 6 steps per epoch
    cfg = TrainConfig(epochs=2, batch_size=16, warmup_epochs=0.5, ckpt_every_steps=4, ema_decay=0.9)
    kw = {"drop_rate": 0.1, "drop_path_rate": 0.2}
    full = _model(**kw)
    ref = train(full, data, cfg, tmp_path / "a", seed=3, progress=False)

    def stop(step, loss):
        if step == 9:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(_model(**kw), data, cfg, tmp_path / "b", seed=3, progress=False, on_step_end=stop)
    state = json.loads((tmp_path / "b/checkpoints/last.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 8)  # epoch 2, after its 2nd batch
    resumed = _model(**kw)
    res = train(resumed, data, cfg, tmp_path / "b", seed=3, resume=True, progress=False)
    _assert_same(full.state_dict(), resumed.state_dict())
    _assert_same(ref.ema_model.state_dict(), res.ema_model.state_dict())
    rows_a = list(csv.DictReader(open(tmp_path / "a/metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "b/metrics.csv")))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}
    config = json.loads((tmp_path / "a/checkpoints/config.json").read_text())
    assert config["train"]["ema_decay"] == 0.9 and config["effective_batch"] == 16
    assert list((tmp_path / "a/tb").glob("events.out.tfevents.*"))  # TensorBoard events


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, tiny_vit, monkeypatch):
    import edgevit.train.checkpoint as ckpt

    save_checkpoint(tmp_path, tiny_vit, None, {"epoch": 1})
    old = {k: v.clone() for k, v in tiny_vit.state_dict().items()}
    with torch.no_grad():
        tiny_vit.head.weight.add_(1.0)

    def crash(path, obj):
        raise KeyboardInterrupt  # killed after the tensors were staged, before the commit record

    monkeypatch.setattr(ckpt, "write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, tiny_vit, None, {"epoch": 2})
    monkeypatch.undo()
    fresh = _model()
    assert load_checkpoint(tmp_path, fresh)["epoch"] == 1
    _assert_same(old, fresh.state_dict())
    assert not list(tmp_path.glob("last.next*"))  # the uncommitted staging is gone

    # killed after the commit record, before the renames: the next load finishes the save
    save_checkpoint(tmp_path, tiny_vit, None, {"epoch": 2}, name="next_probe")  # the staged files of a commit
    for f in tmp_path.glob("next_probe*"):
        f.rename(tmp_path / f.name.replace("next_probe", "last.next"))
    assert load_checkpoint(tmp_path, fresh)["epoch"] == 2
    assert torch.equal(fresh.head.weight, tiny_vit.head.weight)


def test_ema_follows_its_decay(digits32, tmp_path):
    d, model = 0.8, _model()
    ema = {k: v.clone() for k, v in model.state_dict().items()}  # e_0 = w_0

    def update(step, loss):
        for k, w in model.state_dict().items():
            ema[k] = d * ema[k] + (1 - d) * w  # e_t = d * e_{t-1} + (1 - d) * w_t

    cfg = TrainConfig(epochs=1, batch_size=32, ema_decay=d, tensorboard=False)
    res = train(model, _small(digits32), cfg, tmp_path, progress=False, on_step_end=update)
    got = res.ema_model.state_dict()
    for k in ema:
        torch.testing.assert_close(got[k], ema[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got["head.weight"], model.head.weight)
    row = next(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert float(row["val_top1"]) == res.final_val_top1 and float(row["val_top1_raw"]) == res.final_val_top1_raw


def test_accumulation_matches_the_large_batch(digits32, tmp_path):
    data, losses = _small(digits32), {}
    for bs, accum in ((32, 1), (16, 2)):
        model = _model()
        cfg = TrainConfig(  # SGD: unlike Adam's, its update shows a wrongly scaled gradient
            epochs=1, batch_size=bs, accum_steps=accum, lr=0.1, optimizer={"name": "sgd"}, tensorboard=False
        )
        train(model, data, cfg, tmp_path / str(bs), progress=False)
        losses[bs] = float(next(csv.DictReader(open(tmp_path / str(bs) / "metrics.csv")))["train_loss"])
        if accum == 1:
            big = model.state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, big[k], rtol=1e-4, atol=2e-6)
    assert losses[16] == pytest.approx(losses[32], rel=1e-5)
    assert json.loads((tmp_path / "16/checkpoints/config.json").read_text())["steps_per_epoch"] == 3


def test_bf16_autocast_trains(digits32, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=32, amp="bf16", tensorboard=False)
    model = _model()
    res = train(model, _small(digits32, n_train=64, n_val=32), cfg, tmp_path, progress=False)
    row = next(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert model.head.weight.dtype == torch.float32 and res.final_val_top1 >= 0 and float(row["train_loss"]) < 5


def test_epoch_order_shards_the_single_process_permutation():
    one = EpochOrder(10, seed=1)
    one.set_epoch(3)
    ranks = [EpochOrder(10, seed=1, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(3)
    assert sorted(ranks[0].indices() + ranks[1].indices()) == sorted(one.indices())
    assert one.indices()[:4] == [
        ranks[0].indices()[0],
        ranks[1].indices()[0],
        ranks[0].indices()[1],
        ranks[1].indices()[1],
    ]
    one.set_epoch(3, skip=4)
    assert list(one) == one.indices()[4:] and len(one) == 6


_DDP_SCRIPT = """
import json, os, sys, torch
from torch.utils.data import Subset
from edgevit import create_model
from edgevit.data import DataSplits, digits
from edgevit.train import TrainConfig, train

out, batch = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
d = digits(img_size=32)
data = DataSplits(Subset(d.train, range(128)), Subset(d.val, range(64)), d.classes)
torch.manual_seed(0)
model = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=10)
cfg = TrainConfig(epochs=2, batch_size=batch, lr=0.05, optimizer={"name": "sgd"}, tensorboard=False)
losses = []
train(model, data, cfg, out, seed=0, progress=False, on_step_end=lambda s, l: losses.append(l))
rank = int(os.environ.get("RANK", "0"))
torch.save(model.state_dict(), f"{out}/weights_{rank}.pt")
json.dump(losses, open(f"{out}/losses_{rank}.json", "w"))  # one file per rank: both ranks write
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    for cmd, out in (
        ([sys.executable, str(script)], tmp_path / "one"),
        ([*launch, str(_free_port()), str(script)], tmp_path / "two"),
    ):
        out.mkdir()
        batch = "32" if out.name == "one" else "16"  # the same global batch
        proc = subprocess.run([*cmd, str(out), batch], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {n: list(csv.DictReader(open(tmp_path / n / "metrics.csv"))) for n in ("one", "two")}
    for a, b in zip(rows["one"], rows["two"], strict=True):  # epoch losses: all-reduced over both ranks
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
        assert float(a["val_top1"]) == pytest.approx(float(b["val_top1"]), abs=1.6)  # at most one of 64 flips
    w1 = torch.load(tmp_path / "one/weights_0.pt")
    for rank in (0, 1):
        w2 = torch.load(tmp_path / f"two/weights_{rank}.pt")
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    for rank in (0, 1):  # on_step_end fires on every rank, once per optimizer step
        assert len(json.loads((tmp_path / f"two/losses_{rank}.json").read_text())) == 8  # 2 epochs x 128 / 32
    assert json.loads((tmp_path / "two/checkpoints/config.json").read_text())["world_size"] == 2


@pytest.mark.parametrize(
    ("train_section", "key"),
    [
        ({"optimizer": {"sam": {"rho": -0.1}}}, "train.optimizer.sam.rho"),
        ({"optimizer": {"name": "lion"}}, "train.optimizer.name"),
        ({"ema": 0.99}, "train.ema"),
        ({"ema_decay": 1.5}, "train.ema_decay"),
        ({"amp": "fp8"}, "train.amp"),
        ({"accum_steps": "two"}, "train.accum_steps"),
        ({"drop_path": -0.1}, "train.drop_path"),
        ({"optimizer": {"layer_decay": 1.5}}, "train.optimizer.layer_decay"),
        ({"aug": {"mixup": -1}}, "train.aug.mixup"),
        ({"aug": {"mixup": 0.8}, "batch_size": 33}, "train"),  # the message names batch_size
        ({"distill": {"kind": "hard"}}, "train.distill.teacher"),
        ({"distill": {"teacher": "runs/t", "kind": "medium"}}, "train.distill.kind"),
        ({"distill": {"teacher": "runs/t", "tau": 0}}, "train.distill.tau"),
        ({"repeated_aug": 1}, "train.repeated_aug"),
        ({"multiscale": {"sizes": []}}, "train.multiscale.sizes"),
        ({"multiscale": {"sizes": [4, 32]}}, "train.multiscale.sizes"),
        ({"multiscale": {"sizes": [32]}, "repeated_aug": 3}, "train"),  # the message names both
    ],
)
def test_bad_train_keys_fail_naming_the_key(train_section, key):
    with pytest.raises(EdgeVitError, match=f"recipe key '{key}'"):
        Recipe.from_dict({"model": {"name": "vit_tiny_patch16"}, "train": train_section})


class _ConvBN(torch.nn.Sequential):
    """A small conv net with batch norm (SAM's BN interaction) and dropout."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(
            torch.nn.Conv2d(3, 8, 3, stride=2),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(8, 10),
        )


def test_sam_mixup_accumulation_resume_bit_identical_and_bn_counts_one_pass(digits32, tmp_path):
    data = _small(digits32)  # 96 images, micro-batches of 8, 2 per step: 6 steps per epoch
    cfg = TrainConfig(
        epochs=2,
        batch_size=8,
        accum_steps=2,
        ckpt_every_steps=2,
        optimizer={"name": "sgd", "sam": {"rho": 0.05}},
        aug={"mixup": 0.8, "cutmix": 1.0},
        grad_clip=1.0,
        tensorboard=False,
    )
    full = _ConvBN()
    train(full, data, cfg, tmp_path / "a", seed=1, progress=False)
    assert full[1].num_batches_tracked.item() == 2 * 12  # micro-batches x 1: SAM's 2nd pass leaves BN stats

    def stop(step, loss):
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_ConvBN(), data, cfg, tmp_path / "b", seed=1, progress=False, on_step_end=stop)
    resumed = _ConvBN()
    train(resumed, data, cfg, tmp_path / "b", seed=1, resume=True, progress=False)
    _assert_same(full.state_dict(), resumed.state_dict())


def test_distill_needs_a_distilled_student_and_a_teacher(digits32, tmp_path):
    cfg = TrainConfig(epochs=1, distill={"teacher": "x"})
    with pytest.raises(EdgeVitError, match="teacher"):
        train(_model(), _small(digits32), cfg, tmp_path, progress=False)
    with pytest.raises(EdgeVitError, match="distillation token"):
        train(_model(), _small(digits32), cfg, tmp_path, progress=False, teacher=_model())


@pytest.mark.slow
def test_recipe_trains_ema_teacher_then_distilled_student_with_sam_aug_drop_path(tmp_path):
    from edgevit.models import load_model
    from edgevit.recipe import stage_train
    from edgevit.train import load_state_dict

    model = {"name": "vit_tiny_patch16", "args": {"patch_size": 8, "depth": 1}}
    data = {"img_size": 16, "val_fraction": 0.8}  # 359 training images
    teacher = Recipe.from_dict(
        {"data": data, "model": model, "train": {"epochs": 1, "ema_decay": 0.9, "tensorboard": False}}
    )
    top1 = stage_train(teacher, tmp_path / "teacher", progress=False)
    _, meta = load_model(tmp_path / "teacher")
    assert meta["val_top1"] == top1 and "val_top1_raw" in meta
    _assert_same(  # the saved model is the EMA
        load_state_dict(tmp_path / "teacher/model.safetensors"),
        load_state_dict(tmp_path / "teacher/checkpoints/last.ema.safetensors"),
    )
    train_section = {
        "epochs": 1,
        "batch_size": 32,
        "drop_path": 0.1,
        "optimizer": {"sam": {"rho": 0.05}},
        "aug": {"crop": "src", "mixup": 0.8},
        "distill": {"teacher": str(tmp_path / "teacher"), "kind": "hard"},
        "tensorboard": False,
    }
    student_model = {**model, "args": {**model["args"], "distilled": True}}
    student = Recipe.from_dict({"data": data, "model": student_model, "train": train_section})
    stage_train(student, tmp_path / "student", progress=False)
    m, meta = load_model(tmp_path / "student")
    assert "drop_path_rate" not in meta["args"] and m.head_dist is not None
    assert m(torch.zeros(2, 3, 16, 16)).shape == (2, 10)  # both heads fused into one output


def test_bench_train_reports_both_loops():
    from edgevit.bench.train import bench_train, render

    doc = bench_train(model_args={"patch_size": 8, "depth": 1}, img_size=16, batch_size=16, steps=2, warmup=1, rounds=1)
    assert doc["plain_img_s"] > 0 and doc["edgevit_img_s"] > 0  # no timed asserts: the machine is shared
    assert doc["ratio"] == pytest.approx(doc["edgevit_img_s"] / doc["plain_img_s"])
    assert "edgevit train()" in render(doc)


def test_layer_decay_scales_each_groups_lr(digits32, tmp_path, monkeypatch):
    import edgevit.train.loop as loop

    made, build = [], loop.build_optimizer
    monkeypatch.setattr(loop, "build_optimizer", lambda m, c: made.append(build(m, c)) or made[-1])
    lrs = []
    cfg = TrainConfig(epochs=1, batch_size=96, warmup_epochs=0, optimizer={"layer_decay": 0.5}, tensorboard=False)
    train(
        _model(),
        _small(digits32),
        cfg,
        tmp_path,
        progress=False,
        on_step_end=lambda step, loss: lrs.append({round(g["lr_scale"], 6): g["lr"] for g in made[0].param_groups}),
    )
    (scaled,) = lrs  # one step: the schedule's LR times each group's scale
    assert {1.0, 0.5, 0.25} <= set(scaled)  # head, the block, embeddings (depth 1)
    assert scaled[0.5] == pytest.approx(scaled[1.0] * 0.5) and scaled[0.25] == pytest.approx(scaled[1.0] * 0.25)


_AUG = {"crop": "src", "padding": 4, "hflip": 0.5, "three_augment": True, "random_erasing": 0.25}


@pytest.fixture(scope="module")
def aug_digits():
    """64 training digits with random crop, flip, 3-Augment and random erasing: every access draws anew."""
    from edgevit.data import digits

    d = digits(img_size=32, aug=_AUG)
    return DataSplits(Subset(d.train, range(64)), Subset(d.val, range(32)), d.classes)


def test_seeded_samples_key_the_draws_and_leave_the_main_process_rngs(aug_digits):
    import random

    import numpy as np

    from edgevit.train.sampling import SeededSamples

    samples = SeededSamples(aug_digits.train, seed=5)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = random.random(), np.random.rand(), torch.rand(1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    a = samples[(3, 0, 7)][0]
    after = random.random(), np.random.rand(), torch.rand(1)
    assert before == after  # the sample's draws did not move the training process's streams
    assert torch.equal(a, samples[(3, 0, 7)][0])  # the same key, the same augmentation
    assert not torch.equal(a, samples[(3, 0, 8)][0])  # a repeated copy (another position) is augmented anew
    assert not torch.equal(a, samples[(3, 1, 7)][0])  # and so is the next epoch's


@pytest.mark.parametrize(
    "extra",
    [
        {"aug": {**_AUG, "mixup": 0.8, "cutmix": 1.0}},
        {"repeated_aug": 3},
        {"multiscale": {"sizes": [24, 32, 40]}},
    ],
    ids=["mixup", "repeated-aug", "multiscale"],
)
def test_workers_resume_bit_identical_and_match_no_workers(extra, aug_digits, tmp_path, one_thread):
    """Augmented data loaded by 2 worker processes: killed mid-epoch and resumed, the run ends with the weights
    of an uninterrupted one, which are also those of a run that loads in the training process (workers: 0)."""
    cfg = dict(epochs=2, batch_size=8, warmup_epochs=0.5, ckpt_every_steps=3, tensorboard=False, **extra)
    ref = _ConvBN()
    train(ref, aug_digits, TrainConfig(**cfg, workers=0), tmp_path / "w0", seed=4, progress=False)
    cfg = TrainConfig(**cfg, workers=2)
    full = _ConvBN()
    train(full, aug_digits, cfg, tmp_path / "a", seed=4, progress=False)
    _assert_same(ref.state_dict(), full.state_dict())
    steps = json.loads((tmp_path / "a/checkpoints/config.json").read_text())["total_steps"]

    def stop(step, loss):
        if step == steps // 2 + 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(_ConvBN(), aug_digits, cfg, tmp_path / "b", seed=4, progress=False, on_step_end=stop)
    assert json.loads((tmp_path / "b/checkpoints/last.json").read_text())["batch"] > 0  # a mid-epoch checkpoint
    resumed = _ConvBN()
    train(resumed, aug_digits, cfg, tmp_path / "b", seed=4, resume=True, progress=False)
    _assert_same(full.state_dict(), resumed.state_dict())


def test_keyed_order_gives_each_sample_its_global_position_on_every_rank():
    from edgevit.train.multiscale import MultiScaleBatches
    from edgevit.train.sampling import KeyedOrder, RepeatedOrder

    def keys(order, epoch, skip=0, batched=False):
        order.set_epoch(epoch, skip)
        out = list(KeyedOrder(order, batched))
        return [k for batch in out for k in batch] if batched else out

    one = keys(EpochOrder(12, seed=1), 2)
    assert [p for _, _, p in one] == list(range(12)) and {e for _, e, _ in one} == {2}
    ranks = [keys(EpochOrder(12, seed=1, rank=r, world=2), 2) for r in range(2)]
    assert sorted(ranks[0] + ranks[1], key=lambda k: k[2]) == one  # each sample keyed as one process keys it
    assert keys(EpochOrder(12, seed=1, rank=1, world=2), 2, skip=2) == ranks[1][2:]  # resumed: the same keys
    rep = keys(RepeatedOrder(12, seed=1, repeats=3), 0)
    assert len({i for i, _, _ in rep}) < len({p for _, _, p in rep}) == len(rep)  # copies: one index, new positions
    ms = MultiScaleBatches(12, seed=1, batch_size=4, base=32, sizes=[24, 32, 40])
    assert keys(ms, 2, batched=True) == one  # the same permutation, cut into batches
    assert keys(ms, 2, skip=1, batched=True) == one[ms.offset(1) :]
