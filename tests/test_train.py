import csv

import pytest
import torch
from torch.utils.data import Subset

from edgevit import EdgeVitError, create_model
from edgevit.data import DataSplits
from edgevit.models import load_model, load_state_dict, save_model, save_state_dict
from edgevit.train import TrainConfig, predict, top1, train
from edgevit.train.optim import param_groups


def _small(digits32, n_train=384):
    return DataSplits(Subset(digits32.train, range(n_train)), digits32.val, digits32.classes)


def _model(depth=2):
    torch.manual_seed(0)
    return create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=depth, num_classes=10)


def test_training_learns_digits_and_writes_metrics(digits32, tmp_path):
    model = _model()
    before = top1(*predict(model, digits32.val))
    res = train(model, digits32, TrainConfig(epochs=3, warmup_epochs=0.5), tmp_path, progress=False)
    assert before < 25 and res.final_val_top1 > 50  # chance is 10%; the full recipe reaches >95%
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_top1"]) == pytest.approx(res.final_val_top1)
    for f in ("last.safetensors", "last.optim.safetensors", "last.json"):
        assert (tmp_path / "checkpoints" / f).is_file()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(digits32, tmp_path):
    data = _small(digits32, 192)
    full = _model()
    train(full, data, TrainConfig(epochs=2, batch_size=64), tmp_path / "a", progress=False)
    part = _model()
    train(part, data, TrainConfig(epochs=1, batch_size=64), tmp_path / "b", progress=False)
    # "interrupted" after epoch 1: a new process builds a fresh model and resumes with the 2-epoch config
    resumed = _model()
    train(resumed, data, TrainConfig(epochs=2, batch_size=64), tmp_path / "b", resume=True, progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_resume_without_checkpoint_is_an_error(digits32, tmp_path):
    with pytest.raises(EdgeVitError, match="no checkpoint"):
        train(_model(1), _small(digits32, 64), TrainConfig(epochs=1), tmp_path, resume=True, progress=False)


def test_no_weight_decay_on_norms_biases_tokens():
    model = _model(1)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "pos_embed", "norm.weight", "head.bias", "blocks.0.attn.qkv.bias"} <= no_decay_names
    assert all(p.ndim == 2 or p.ndim == 4 for p in decay["params"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_model_roundtrip_through_safetensors(tmp_path, tiny_vit):
    path = save_model(
        tiny_vit,
        "vit_tiny_patch16",
        {"img_size": 32, "patch_size": 8, "depth": 1, "num_classes": 10},
        tmp_path / "model.safetensors",
    )
    loaded, meta = load_model(tmp_path)
    assert meta["name"] == "vit_tiny_patch16" and path.with_suffix(".json").is_file()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_vit(x))


def test_corrupt_and_unsafe_checkpoints_are_refused(tmp_path, tiny_vit):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EdgeVitError, match="corrupt"):
        load_state_dict(bad)
    good = save_state_dict(tiny_vit.state_dict(), tmp_path / "good.safetensors")
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(EdgeVitError, match="corrupt"):
        load_state_dict(truncated)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    pth = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, pth)
    with pytest.raises(EdgeVitError, match="corrupt or not a PyTorch state dict"):
        load_state_dict(pth)  # weights_only=True refuses arbitrary pickles
    with pytest.raises(EdgeVitError, match="not found"):
        load_state_dict(tmp_path / "missing.pth")


def test_pth_checkpoint_with_wrapper_loads(tmp_path, tiny_vit):
    torch.save({"model": tiny_vit.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    m = create_model(
        "vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=10, weights=tmp_path / "ckpt.pth"
    )
    assert torch.equal(m.head.weight, tiny_vit.head.weight)
    with pytest.raises(EdgeVitError, match="do not fit"):
        create_model(
            "vit_tiny_patch16", img_size=32, patch_size=8, depth=2, num_classes=10, weights=tmp_path / "ckpt.pth"
        )
