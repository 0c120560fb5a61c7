import numpy as np
import pytest
import torch
from PIL import Image

from edgevit import EdgeVitError
from edgevit.data import calibration_batch, digits, imagefolder


def test_digits_is_the_real_dataset_with_a_stratified_split(digits32):
    n_train, n_val = len(digits32.train), len(digits32.val)
    assert n_train + n_val == 1797 and n_val == 360
    x, y = digits32.val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey repeated to 3 channels
    assert -1.0 <= x.min() and x.max() <= 1.0  # [0, 1] normalised with mean=std=0.5
    val_labels = np.array([int(digits32.val[i][1]) for i in range(n_val)])
    counts = np.bincount(val_labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit


def test_digits_split_is_fixed_by_seed():
    a, b, c = digits(16, seed=0), digits(16, seed=0), digits(16, seed=1)
    assert a.val.indices == b.val.indices
    assert a.val.indices != c.val.indices
    assert not set(a.train.indices) & set(a.val.indices)


def test_digits_upsampling_keeps_the_digit():
    """A '1' is narrow, a '0' is wide: the upsampled image keeps the ink where the 8x8 original had it."""
    from sklearn.datasets import load_digits

    d = load_digits()
    big = digits(32, val_fraction=0.5)
    x, y = big.train[0]
    orig = d.images[big.train.indices[0]] / 16.0
    down = torch.nn.functional.avg_pool2d((x[:1] + 1) / 2, 4)[0].numpy()  # back to 8x8 in [0, 1]
    assert int(y) == d.target[big.train.indices[0]]
    assert np.corrcoef(down.ravel(), orig.ravel())[0, 1] > 0.95


def _make_folder(root, classes=("cat", "dog"), n=6, size=20):
    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = np.full((size, size, 3), 40 + 150 * ci, np.uint8) + rng.integers(0, 20, (size, size, 3), np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_imagefolder_splits_and_normalises(tmp_path):
    _make_folder(tmp_path)
    data = imagefolder(tmp_path, img_size=16, val_fraction=0.5)
    assert data.classes == ["cat", "dog"]
    assert len(data.train) == 6 and len(data.val) == 6
    x, y = data.val[0]
    assert x.shape == (3, 16, 16)
    dark = [data.val[i][0].mean() for i in range(len(data.val)) if data.val[i][1] == 0]
    light = [data.val[i][0].mean() for i in range(len(data.val)) if data.val[i][1] == 1]
    assert max(dark) < min(light)  # class 0 was made darker: labels follow folders


def test_imagefolder_uses_train_val_subfolders(tmp_path):
    _make_folder(tmp_path / "train", n=4)
    _make_folder(tmp_path / "val", n=2)
    data = imagefolder(tmp_path, img_size=16)
    assert (len(data.train), len(data.val)) == (8, 4)


def test_imagefolder_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeVitError, match="not found"):
        imagefolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeVitError, match="cannot read"):
        imagefolder(tmp_path / "empty")


def test_calibration_batch_is_deterministic(digits32):
    a = calibration_batch(digits32.train, 8, seed=3)
    b = calibration_batch(digits32.train, 8, seed=3)
    assert a.shape == (8, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, calibration_batch(digits32.train, 8, seed=4))
