"""Augmentation: the default changes nothing, 3-Augment picks exactly one op, Simple Random Crop, Mixup/CutMix."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image, ImageOps
from pydantic import ValidationError

from edgevit import EdgeVitError
from edgevit.data import digits, imagefolder
from edgevit.data.datasets import digits_images, digits_tensors
from edgevit.data.transforms import (
    AugConfig,
    ToPIL,
    as_aug_config,
    build_criterion,
    build_mixup,
    build_train_transform,
)

MEAN = STD = (0.5, 0.5, 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")  # per-image transforms are tiny tensor ops


@pytest.fixture(scope="module")
def images():
    return digits_images(32)


def _stack(ds):
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_default_aug_leaves_digits_tensors_identical(digits32, images):
    for aug in (AugConfig(), {}, AugConfig(mixup=0.8, cutmix=1.0)):  # mixing is per batch: not in the dataset
        d = digits(img_size=32, aug=aug)
        assert torch.equal(_stack(d.train), _stack(digits32.train))
        assert torch.equal(_stack(d.val), _stack(digits32.val))
    # and the default transform itself reproduces the stored tensors bit for bit: (x - mean) / std
    x, _ = images
    stored, _ = digits_tensors(32, MEAN, STD)
    tf = build_train_transform(AugConfig(), 32, MEAN, STD)
    assert all(torch.equal(tf(x[i].clone()), stored[i]) for i in range(0, len(x), 6))


@pytest.mark.parametrize(
    "aug",
    [
        AugConfig(crop="src", hflip=0.5, three_augment=True, color_jitter=0.3),
        AugConfig(crop="rrc", scale=(0.5, 1.0), hflip=0.5, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25),
    ],
    ids=["deit3", "augreg"],
)
def test_augmented_training_images_leave_validation_identical(digits32, aug):
    torch.manual_seed(0)
    d = digits(img_size=32, aug=aug)
    assert torch.equal(_stack(d.val), _stack(digits32.val))
    train = torch.stack([d.train[i][0] for i in range(64)])
    plain = torch.stack([digits32.train[i][0] for i in range(64)])
    assert train.shape == plain.shape and train.dtype == torch.float32
    assert not torch.equal(train, plain) and train.isfinite().all()
    assert [d.train[i][1] for i in range(64)] == [digits32.train[i][1] for i in range(64)]


def _tinted(x):
    """A digit as a coloured PIL image (so grayscale is visible)."""
    return ToPIL()(x * torch.tensor([1.0, 0.6, 0.3]).view(3, 1, 1))


def test_three_augment_applies_exactly_one_of_its_ops_per_image(images):
    import random

    from timm.data.auto_augment import AutoAugment

    tf = build_train_transform(AugConfig(three_augment=True), 32, MEAN, STD)
    (three,) = [t for t in tf.transforms if isinstance(t, AutoAugment)]
    calls = []
    for sub_policy in three.policy:
        assert len(sub_policy) == 1 and sub_policy[0].prob == 1.0
        op = sub_policy[0]

        def record(img, *args, _fn=op.aug_fn, _name=op.name, **kw):
            calls.append(_name)
            return _fn(img, *args, **kw)

        op.aug_fn = record
    assert sorted(op[0].name for op in three.policy) == ["Desaturate", "GaussianBlurRand", "Solarize"]

    random.seed(0)
    x, _ = images
    counts = dict.fromkeys(["Desaturate", "GaussianBlurRand", "Solarize"], 0)
    for i in range(240):
        img = _tinted(x[i])
        calls.clear()
        out = three(img)
        assert len(calls) == 1  # exactly one op per image
        counts[calls[0]] += 1
        if calls[0] == "Desaturate":  # full grayscale, as DeiT III's transforms.Grayscale(3)
            assert np.array_equal(np.asarray(out), np.asarray(img.convert("L").convert("RGB")))
        elif calls[0] == "Solarize":  # PIL's default threshold 128, as DeiT III's ImageOps.solarize(img)
            assert np.array_equal(np.asarray(out), np.asarray(ImageOps.solarize(img)))
        else:  # a blur (radius 0.1..2 may leave a 32-px digit unchanged), but neither of the others
            assert not np.array_equal(np.asarray(out), np.asarray(img.convert("L").convert("RGB")))
            assert not np.array_equal(np.asarray(out), np.asarray(ImageOps.solarize(img)))
        calls.clear()
        tf(x[i].clone())  # the whole pipeline also applies exactly one
        assert len(calls) == 1
    assert all(55 <= c <= 105 for c in counts.values()), counts  # uniform: 80 each expected (sd 7.3)


def test_simple_random_crop_keeps_the_aspect_ratio_then_pads_and_crops(images):
    x, _ = images
    wide = torch.cat([x[0], x[1]], dim=2)  # two real digits side by side: [3, 32, 64]
    tf = build_train_transform(AugConfig(crop="src", padding=4), 16, MEAN, STD)
    resize, crop = tf.transforms[0], tf.transforms[1]
    resized = resize(wide)
    assert resized.shape == (3, 16, 32)  # shorter side -> 16, aspect 1:2 kept
    padded = torch.nn.functional.pad(resized.unsqueeze(0), (4, 4, 4, 4), mode="reflect")[0]  # [3, 24, 40]
    torch.manual_seed(0)
    offsets = set()
    for _ in range(30):
        out = crop(resized)
        assert out.shape == (3, 16, 16)
        hits = [
            (i, j) for i in range(9) for j in range(25) if torch.equal(out, padded[:, i : i + 16, j : j + 16])
        ]  # a window of the reflect-padded image
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 5  # and a random one
    assert tf(wide).shape == (3, 16, 16)
    pil = ToPIL()(wide)  # PIL images (imagefolder) go the same way
    assert build_train_transform(AugConfig(crop="src"), 16, MEAN, STD)(pil).shape == (3, 16, 16)
    assert build_train_transform(AugConfig(crop="rrc"), 16, MEAN, STD)(pil).shape == (3, 16, 16)


def test_random_erasing_erases_after_normalisation(images):
    x, _ = images
    torch.manual_seed(0)
    out = build_train_transform(AugConfig(random_erasing=1.0), 32, MEAN, STD)(x[5].clone())
    changed = out != (x[5] - 0.5) / 0.5
    rows, cols = changed.any(0).any(1).nonzero(), changed.any(0).any(0).nonzero()
    assert changed.any() and changed.all(0).sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_mixup_and_cutmix_targets_sum_to_one(digits32):
    x = torch.stack([digits32.train[i][0] for i in range(32)])
    y = torch.stack([digits32.train[i][1] for i in range(32)])
    np.random.seed(0)
    for mode in ("batch", "pair", "elem"):
        mixup = build_mixup(AugConfig(mixup=0.8, cutmix=1.0, mixup_mode=mode), 10, label_smoothing=0.1)
        for _ in range(5):
            _, target = mixup(x.clone(), y)
            assert target.shape == (32, 10) and (target >= 0).all()
            torch.testing.assert_close(target.sum(1), torch.ones(32))


def test_odd_batches_mix_all_but_the_last_image(digits32):
    x = torch.stack([digits32.train[i][0] for i in range(31)])
    y = torch.stack([digits32.train[i][1] for i in range(31)])
    np.random.seed(3)
    for mode in ("batch", "pair", "elem"):
        mixup = build_mixup(AugConfig(mixup=0.8, cutmix=1.0, mixup_mode=mode, mixup_prob=1.0), 10, 0.1)
        mixed, target = mixup(x.clone(), y)
        assert mixed.shape == x.shape and target.shape == (31, 10)
        torch.testing.assert_close(target.sum(1), torch.ones(31))
        assert torch.equal(mixed[-1], x[-1])
        expected_last = torch.full((10,), 0.01)
        expected_last[y[-1]] = 0.91
        torch.testing.assert_close(target[-1], expected_last)
        assert not torch.equal(mixed[:-1], x[:-1])


def _lams(target, y):
    """Each row's weight on its own label (the other image's label gets 1 - lam); labels must differ."""
    return target[torch.arange(len(y)), y]


def test_cutmix_lambda_is_the_unpasted_area_fraction():
    np.random.seed(1)
    n, size = 8, 32
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()  # image i == i
    y = torch.arange(n)  # all labels different, so lam can be read off the target
    for mode in ("batch", "elem"):
        mixup = build_mixup(AugConfig(cutmix=1.0, mixup_mode=mode), n)
        for _ in range(10):
            mixed, target = mixup(x.clone(), y)
            lam = _lams(target, y)
            pasted = (mixed == x.flip(0)).all(1).float().mean((1, 2))  # fraction from the partner image
            torch.testing.assert_close(pasted, 1 - lam)
            torch.testing.assert_close(target[torch.arange(n), y.flip(0)], 1 - lam)


def test_mixup_blends_images_with_the_target_weights(digits32):
    x = torch.stack([digits32.val[i][0] for i in range(16)])
    y = torch.arange(16) % 10
    y[10:] = torch.tensor([9, 8, 7, 6, 5, 4])  # partner labels (reversed order) differ from their own
    np.random.seed(2)
    mixed, target = build_mixup(AugConfig(mixup=0.8), 10)(x.clone(), y)
    lam = _lams(target, y)[0]
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))


def test_mixup_off_and_the_matching_losses():
    from timm.loss import SoftTargetCrossEntropy

    assert build_mixup(AugConfig(), 10) is None
    assert isinstance(build_criterion(None, 0.1), nn.CrossEntropyLoss)
    assert build_criterion(None, 0.1).label_smoothing == 0.1
    assert isinstance(build_criterion(build_mixup(AugConfig(cutmix=1.0), 10)), SoftTargetCrossEntropy)


@pytest.mark.parametrize(
    "bad,key",
    [
        ({"hflip": 1.5}, "hflip"),
        ({"random_erasing": -0.1}, "random_erasing"),
        ({"mixup": -1}, "mixup"),
        ({"mixup_prob": 2}, "mixup_prob"),
        ({"mixup_mode": "rows"}, "mixup_mode"),
        ({"crop": "center"}, "crop"),
        ({"scale": (0.9, 0.1)}, "scale"),
        ({"color_jitter": -0.3}, "color_jitter"),
        ({"padding": -1}, "padding"),
        ({"rand_augment": "rand-x9"}, "rand_augment"),
        ({"rand_augment": "autoaug"}, "rand_augment"),
        ({"mix_up": 0.8}, "mix_up"),
    ],
)
def test_aug_config_rejects_bad_values_naming_the_key(bad, key):
    with pytest.raises(ValidationError, match=key):
        AugConfig(**bad)
    with pytest.raises(EdgeVitError, match=f"aug key '{key}'"):
        as_aug_config(bad)


def test_aug_config_alternatives_and_dataset_errors():
    with pytest.raises(ValidationError, match="rand_augment and three_augment"):
        AugConfig(rand_augment="rand-m9", three_augment=True)
    with pytest.raises(EdgeVitError, match="aug key 'hflip'"):
        digits(img_size=16, aug={"hflip": 3})
    with pytest.raises(EdgeVitError, match="not both"):
        digits(img_size=16, aug=AugConfig(hflip=0.5), train_transform=lambda im: im)


def test_imagefolder_uses_the_aug_transform(tmp_path, images):
    from torchvision.transforms.v2 import Compose

    x, y = images
    for i in range(40):
        folder = tmp_path / str(int(y[i]))
        folder.mkdir(exist_ok=True)
        ToPIL()(x[i]).save(folder / f"{i}.png")
    aug = AugConfig(crop="src", hflip=0.5, three_augment=True, color_jitter=0.3)
    d = imagefolder(tmp_path, img_size=24, val_fraction=0.25, aug=aug)
    assert d.train[0][0].shape == (3, 24, 24)
    assert isinstance(d.train.dataset.transform, Compose)
    assert d.val[0][0].shape == (3, 24, 24)
    default = imagefolder(tmp_path, img_size=24, val_fraction=0.25, aug=AugConfig())  # falls back to `augment`
    assert not isinstance(default.train.dataset.transform, Compose) or "RandomResizedCrop" in repr(
        default.train.dataset.transform
    )
    assert isinstance(Image.open(next(tmp_path.glob("*/*.png"))), Image.Image)


def test_rand_augment_posterize_to_zero_bits_works_with_current_pillow(images):
    from timm.data.auto_augment import RandAugment

    tf = build_train_transform(AugConfig(rand_augment="rand-m9-mstd0.5-inc1"), 32, MEAN, STD)
    (ra,) = [t for t in tf.transforms if isinstance(t, RandAugment)]
    (op,) = [op for op in ra.ops if op.name == "PosterizeIncreasing"]
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # 4 - int(10 / 10 * 4) = 0 bits: timm + Pillow 13 raise
    out = op(ToPIL()(images[0][0]))
    assert np.asarray(out).max() == 0  # old Pillow's (and TF's) answer: every bit masked -> black
