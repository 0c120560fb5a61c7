"""How often the app pipeline and the evaluation transform give a trained model the same top-1 class.

Each image goes two ways: through the dataset's validation transform (what training measured), and rendered as
the 8-bit RGBA/BGRA buffer an app would get (random rotation, pixel format and row stride) through
:func:`edgevit.apps.pipeline.model_input` with the run's recorded preprocess. ``python -m edgevit.apps.agreement``
prints the figures ``docs/guides/demo-apps.md`` reports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import Subset

from edgevit.apps.pipeline import PIXEL_FORMATS, ROTATIONS, TensorSpec, frame_from_image, model_input
from edgevit.data.eval_transform import EvalTransform, eval_transform, pil_transform
from edgevit.models import load_model
from edgevit.recipe import build_model_and_data, load_run
from edgevit.utils import EdgeVitError

PHOTO_CLASSES = ("china_left", "china_right", "flower_left", "flower_right")


def _run_parts(run_dir: str | Path) -> tuple[Any, torch.nn.Module, dict, EvalTransform]:
    recipe = load_run(run_dir)
    model, meta = load_model(Path(run_dir) / "model.safetensors")
    return recipe, model.eval(), meta, eval_transform(recipe.data.name, recipe.data.img_size, meta["mean"], meta["std"])


@torch.no_grad()
def _top1(model: torch.nn.Module, images: np.ndarray, batch: int = 128) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)]).numpy()


def _app_frame(rng: np.random.Generator, rgb: np.ndarray):
    fmt, rot = str(rng.choice(PIXEL_FORMATS)), int(rng.choice(ROTATIONS))
    width = rgb.shape[0] if rot in (90, 270) else rgb.shape[1]  # the stored (sensor) width
    return frame_from_image(rgb, fmt, rot, row_stride=4 * width + int(rng.integers(0, 33)), pad=int(rng.integers(256)))


def _summary(name: str, a: np.ndarray, b: np.ndarray, t: EvalTransform, x_ref, x_app) -> dict[str, Any]:
    levels = np.abs(x_ref - x_app) * t.value_scale * np.asarray(t.std).reshape(1, 3, 1, 1)  # in 8-bit pixel levels
    return {
        "dataset": name,
        "images": len(a),
        "agreement": float((a == b).mean()),
        "disagreements": int((a != b).sum()),
        "max_input_diff_levels": float(levels.max()),
        "mean_input_diff_levels": float(levels.mean()),
        "preprocess": t.to_json(),
    }


def digits_agreement(run_dir: str | Path, seed: int = 0, app: EvalTransform | None = None) -> dict[str, Any]:
    """Top-1 agreement on a digits run's whole validation split: the val tensors vs each 8x8 scan rendered as
    8-bit pixels (``round(ink * 255 / 16)``, grey) in a random frame, through the app pipeline (with the run's
    transform, or ``app`` to see what a wrong one costs).

    Raises:
        EdgeVitError: the run is not a plain ``digits`` run.
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 -- scikit-learn takes a second to import

    recipe, model, meta, t = _run_parts(run_dir)
    if recipe.data.name != "digits" or recipe.data.classes is not None:
        raise EdgeVitError(f"{run_dir} is not a digits run (with all 10 classes)")
    _, data, _ = build_model_and_data(recipe, num_classes=meta["args"].get("num_classes"))
    if not isinstance(data.val, Subset):
        raise EdgeVitError(f"{run_dir}: expected the digits val split as a Subset of the dataset")
    idx = list(data.val.indices)
    x_ref = torch.stack([data.val.dataset[i][0] for i in idx]).numpy()
    scans = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8]
    rng = np.random.default_rng(seed)
    spec, a = TensorSpec("image", "float32", (1, 3, *t.crop)), app or t
    x_app = np.concatenate([model_input(_app_frame(rng, np.repeat(scans[i][..., None], 3, 2)), a, spec) for i in idx])
    return _summary("digits val", _top1(model, x_ref), _top1(model, x_app), t, x_ref, x_app)


def make_photo_folder(root: str | Path, per_class: int = 150, seed: int = 0) -> Path:
    """An image-folder dataset of real photos: random crops (40..213 px a side, PNG, so no codec in the way) of
    the left and right halves of scikit-learn's two sample photos, four classes (:data:`PHOTO_CLASSES`)."""
    from sklearn.datasets import load_sample_images  # noqa: PLC0415 -- scikit-learn takes a second to import

    root, rng = Path(root), np.random.default_rng(seed)
    photos = dict(zip(("china", "flower"), load_sample_images().images, strict=True))  # [427, 640, 3] each
    for cls in PHOTO_CLASSES:
        name, half = cls.split("_")
        img = photos[name][:, :320] if half == "left" else photos[name][:, 320:]
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(40, 214, 2))
            top, left = int(rng.integers(img.shape[0] - h + 1)), int(rng.integers(img.shape[1] - w + 1))
            Image.fromarray(img[top : top + h, left : left + w]).save(root / cls / f"{i:04d}.png")
    return root


def photo_recipe(root: str | Path, img_size: int = 64, epochs: int = 15) -> dict[str, Any]:
    """A small ViT recipe for :func:`make_photo_folder`'s dataset (resize 73 -> crop 64 at the default size)."""
    return {
        "name": "photo-crops",
        "seed": 0,
        "data": {"name": "imagefolder", "root": str(root), "img_size": img_size, "val_fraction": 0.2},
        "model": {
            "name": "vit_tiny_patch16",
            "args": {"patch_size": 8, "depth": 2, "embed_dim": 64, "mlp_dim": 128, "num_heads": 2},
        },
        "train": {"epochs": epochs, "batch_size": 32, "lr": 2.0e-3, "warmup_epochs": 1, "threads": 2},
        "export": {"targets": []},
    }


def folder_agreement(run_dir: str | Path, seed: int = 0, app: EvalTransform | None = None) -> dict[str, Any]:
    """Top-1 agreement on every image of an ``imagefolder`` run's dataset: torchvision's val transform of the PIL
    image vs its pixels in a random frame through the app pipeline (the run's transform, or ``app``).

    Raises:
        EdgeVitError: the run is not an imagefolder run.
    """
    from torchvision.datasets import ImageFolder  # noqa: PLC0415 -- seconds to import; needed only here

    recipe, model, _, t = _run_parts(run_dir)
    if recipe.data.name != "imagefolder":
        raise EdgeVitError(f"{run_dir} is not an imagefolder run")
    tf, rng = pil_transform(t), np.random.default_rng(seed)
    spec = TensorSpec("image", "float32", (1, 3, *t.crop))
    ref, apps = [], []
    for path, _ in ImageFolder(recipe.data.root).samples:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        ref.append(tf(rgb)[None].numpy())
        apps.append(model_input(_app_frame(rng, np.asarray(rgb)), app or t, spec))
    x_ref, x_app = np.concatenate(ref), np.concatenate(apps)
    return _summary(f"photo crops ({recipe.data.root})", _top1(model, x_ref), _top1(model, x_app), t, x_ref, x_app)


def main(argv: list[str] | None = None) -> None:
    """``python -m edgevit.apps.agreement --digits RUN`` / ``--photos RUN`` / ``--make-photos DIR``: print JSON."""
    p = argparse.ArgumentParser(prog="python -m edgevit.apps.agreement", description=__doc__.splitlines()[0])
    p.add_argument("--digits", help="a trained digits run: agreement on its val split")
    p.add_argument("--photos", help="a trained imagefolder run: agreement on every image of its folder")
    p.add_argument("--make-photos", help="write the photo-crop dataset here and its recipe beside it")
    p.add_argument("--img-size", type=int, default=64, help="the photo recipe's image size")
    args = p.parse_args(argv)
    if args.make_photos:
        root = make_photo_folder(args.make_photos)

        recipe = root.with_suffix(".yaml")
        recipe.write_text(yaml.safe_dump(photo_recipe(root.resolve(), args.img_size), sort_keys=False))
        print(f"dataset {root}, recipe {recipe}: edgevit train {recipe} --out RUN")
    for run, fn in ((args.digits, digits_agreement), (args.photos, folder_agreement)):
        if run:
            r = fn(run)
            r.pop("preprocess")
            print(json.dumps(r))


if __name__ == "__main__":
    main()
