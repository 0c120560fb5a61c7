"""edgevit.apps: the app pipeline's NumPy reference against PyTorch/PIL/torchvision, bundle.json's contract, golden
cases, and ``edgevit app-check`` with the NumPy golden runner (and runners with planted app bugs)."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import copy_run, edgevit_cli

from edgevit import EdgeVitError
from edgevit.apps import (
    Bundle,
    Frame,
    ModelEntry,
    Quant,
    TensorSpec,
    app_check,
    frame_from_image,
    model_input,
    parse_bundle,
    pipeline,
    read_bundle,
    read_cases,
    runner_command,
    top_k,
    write_bundle,
)
from edgevit.apps.check import REPO
from edgevit.apps.golden import random_cases, read_tensor, write_cases
from edgevit.data.eval_transform import crop_offsets, eval_transform, pil_transform

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # china.jpg, flower.jpg: [427, 640, 3] uint8


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).double().numpy()  # [1, C, H, W] -> [H, W, C]


# ------------------------------------------------------------------------------------------------ pipeline steps


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resize_equals_torchvision_antialiased_resize_of_float_tensors(interpolation):
    rng = np.random.default_rng(0)
    for _ in range(60):  # up and down, square and not, odd factors
        (h, w), (oh, ow) = rng.integers(2, 100, 2), rng.integers(2, 100, 2)
        img = rng.random((h, w, 3))
        ours = pipeline.resize(img, oh, ow, interpolation, antialias=True)
        x = torch.from_numpy(img).permute(2, 0, 1)[None]  # [H, W, C] -> [1, C, H, W]
        ref64 = F.interpolate(x, size=(int(oh), int(ow)), mode=interpolation, antialias=True, align_corners=False)
        assert np.abs(ours - _hwc(ref64)).max() < 1e-6  # float64 tensors: same arithmetic (measured 3e-16)
        ref32 = F.interpolate(x.float(), size=(int(oh), int(ow)), mode=interpolation, antialias=True)
        assert np.abs(ours - _hwc(ref32)).max() < 2e-5  # float32 tensors: torch's float32 coordinates (7e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resize_equals_pil_on_float_images_down_to_one_pixel(interpolation):
    from PIL import Image

    rng = np.random.default_rng(1)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    for _ in range(40):
        (h, w), (oh, ow) = rng.integers(1, 90, 2), rng.integers(1, 90, 2)
        img = rng.random((h, w, 3)).astype(np.float32)
        ours = pipeline.resize(img, oh, ow, interpolation, antialias=True)
        pil = [Image.fromarray(img[..., c], mode="F").resize((int(ow), int(oh)), resample) for c in range(3)]
        assert np.abs(ours - np.stack([np.asarray(p) for p in pil], -1)).max() < 1e-6


def test_resize_without_antialias_is_interpolate_bilinear():
    """The digits path: F.interpolate(bilinear, align_corners=False), up- and downsampling."""
    rng = np.random.default_rng(2)
    for _ in range(40):
        (h, w), (oh, ow) = rng.integers(1, 70, 2), rng.integers(1, 70, 2)
        img = rng.random((h, w, 3))
        ours = pipeline.resize(img, oh, ow, "bilinear", antialias=False)
        ref = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], size=(int(oh), int(ow)), mode="bilinear")
        assert np.abs(ours - _hwc(ref)).max() < 1e-6


def test_centre_crop_offsets_equal_torchvision():
    from torchvision.transforms.functional import center_crop

    for size in [(7, 7), (8, 11), (9, 16), (32, 35), (36, 48), (73, 109)]:
        grid = torch.arange(size[0] * size[1]).view(1, *size)
        for crop in [(1, 1), (4, 5), (5, 4), (7, 7), (size[0], 3), (2, size[1])]:
            if crop[0] > size[0] or crop[1] > size[1]:
                continue
            ref = center_crop(grid, list(crop))
            top, left = crop_offsets(*size, crop)
            assert int(ref[0, 0, 0]) == top * size[1] + left, (size, crop)
            img = grid[0].numpy()[..., None]
            assert np.array_equal(pipeline.center_crop(img, crop)[..., 0], ref[0].numpy())


def test_rotation_follows_bundle_md_and_ignores_stride_padding_and_alpha():
    """The buffer a sensor stores sideways, written out by hand: rotation 90 is ``up(r, c) = in(H-1-c, r)``."""
    stored = np.array([[[1, 0, 0], [2, 0, 0], [3, 0, 0]], [[4, 0, 0], [5, 0, 0], [6, 0, 0]]], np.uint8)  # 2x3 R
    want = {
        0: [[1, 2, 3], [4, 5, 6]],
        90: [[4, 1], [5, 2], [6, 3]],
        180: [[6, 5, 4], [3, 2, 1]],
        270: [[3, 6], [2, 5], [1, 4]],
    }
    for rotation, red in want.items():
        for fmt, order in (("RGBA_8888", [0, 1, 2]), ("BGRA_8888", [2, 1, 0])):
            rows = []
            for r in range(2):
                px = np.zeros((3, 4), np.uint8)
                px[:, order] = stored[r]
                px[:, 3] = 17 + r  # alpha: ignored
                rows.append(np.concatenate([px.reshape(-1), np.full(5, 200 + r, np.uint8)]))  # 5 padding bytes
            frame = Frame(np.concatenate(rows).tobytes(), 3, 2, 17, fmt, rotation)
            up = pipeline.upright_rgb(frame)
            assert up[..., 0].tolist() == red, (rotation, fmt)
            assert not up[..., 1:].any()


def test_frame_rejects_a_short_buffer_and_a_narrow_stride():
    with pytest.raises(EdgeVitError, match="row_stride"):
        Frame(bytes(100), 5, 5, 19)
    with pytest.raises(EdgeVitError, match="bytes"):
        Frame(bytes(4 * 5 * 4 + 19), 5, 5, 20)  # 4 full rows + most of the 5th


def test_app_pipeline_reproduces_the_digits_val_tensors():
    """The 8x8 scans as 8-bit buffers holding the ink (0..16), read with value_scale 16: the app pipeline with the
    digits description gives the dataset's validation tensors, in every rotation, pixel format and stride."""
    from sklearn.datasets import load_digits

    from edgevit.data import digits

    data = digits(img_size=32)
    ink = load_digits().images.astype(np.uint8)  # [N, 8, 8] 0..16
    t = eval_transform("digits", 32)
    t16 = type(t)(**{**t.__dict__, "value_scale": 16.0})
    spec = TensorSpec("image", "float32", (1, 3, 32, 32))
    rng = np.random.default_rng(0)
    for i in data.val.indices[:60]:
        frame = frame_from_image(np.repeat(ink[i][..., None], 3, 2), rng.choice(pipeline.PIXEL_FORMATS), 90 * (i % 4))
        x = model_input(frame, t16, spec)
        assert np.abs(x - data.val.dataset[i][0][None].numpy()).max() < 1e-6


def test_imagefolder_val_transform_is_timm_eval_transform():
    from PIL import Image
    from timm.data import create_transform

    for size in (32, 64, 224):
        ours = pil_transform(eval_transform("imagefolder", size, *IMAGENET))
        timm_tf = create_transform(size, is_training=False, mean=IMAGENET[0], std=IMAGENET[1], crop_pct=0.875)
        for photo in _photos():
            im = Image.fromarray(photo[50:350, 100:560])
            assert torch.equal(ours(im), timm_tf(im))


def test_app_pipeline_is_within_one_pixel_level_of_the_imagefolder_val_transform():
    """PIL resizes 8-bit images with 8-bit intermediate rounding; the spec keeps float64: at most one level apart."""
    from PIL import Image

    rng = np.random.default_rng(3)
    t = eval_transform("imagefolder", 64, *IMAGENET)
    tf, spec = pil_transform(t), TensorSpec("image", "float32", (1, 64, 64, 3), "NHWC")
    std = np.asarray(IMAGENET[1])
    for k in range(8):
        photo = _photos()[k % 2]
        h, w = rng.integers(40, 427, 2)
        img = photo[:h, :w]
        ref = tf(Image.fromarray(img)).permute(1, 2, 0).numpy()[None]  # [3, h, w] -> [1, h, w, 3]
        x = model_input(frame_from_image(img, "BGRA_8888", 270, row_stride=4 * h + 12), t, spec)
        levels = np.abs(x - ref) * 255 * std  # [1, h, w, 3] in 8-bit pixel levels
        assert levels.max() <= 1.0 + 1e-3 and levels.mean() < 0.4


def test_int8_input_rounds_half_away_from_zero_clamps_and_uses_the_zero_point():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.49, 1000.0, -1000.0])
    q = pipeline.quantize(x, "int8", Quant(1.0, 3))
    assert q.tolist() == [0, 1, 2, 4, 5, 5, 127, -128]
    assert pipeline.quantize(np.array([0.0, 1.0]), "uint8", Quant(0.5, 128)).tolist() == [128, 130]


def test_top_k_orders_by_logit_with_ties_to_the_lower_index():
    z = np.array([0.5, 2.0, -1.0, 2.0, 1.0])
    top = top_k(z, 3)
    assert [i for i, _ in top] == [1, 3, 4]
    p = pipeline.softmax(z)
    assert abs(p.sum() - 1) < 1e-12 and top[0][1] == top[1][1] == pytest.approx(np.exp(2) / np.exp(z).sum())
    assert [i for i, _ in top_k(np.array([1.0, 3.0]), 5)] == [1, 0]  # k > classes: every class
    raw = TensorSpec("logits", "int8", (1, 5), quant=Quant(0.1, -3))
    assert np.allclose(pipeline.logits_of(np.array([-3, 7, 0, 0, 0]), raw), [0, 1.0, 0.3, 0.3, 0.3])


# ------------------------------------------------------------------------------------------------ bundle.json


def _bundle(root: Path, crop=(32, 32), classes=10) -> Bundle:
    """A bundle.json (no model files: the golden runner never opens them) with a float NCHW model and an int8
    NHWC one, digits preprocessing."""
    h, w = crop
    t = eval_transform("digits", max(crop))
    t = type(t)(**{**t.__dict__, "crop": crop})
    models = (
        ModelEntry(
            "executorch_fp32",
            "models/executorch_fp32.pte",
            "executorch",
            "fp32",
            "0" * 64,
            TensorSpec("image", "float32", (1, 3, h, w)),
            TensorSpec("logits", "float32", (1, classes)),
        ),
        ModelEntry(
            "tflite_int8_nhwc",
            "models/tflite_int8_nhwc.tflite",
            "tflite",
            "int8",
            "0" * 64,
            TensorSpec("image", "int8", (1, h, w, 3), "NHWC", Quant(0.0157, -1)),
            TensorSpec("logits", "int8", (1, classes), quant=Quant(0.09, 12)),
        ),
    )
    b = Bundle(Path(root), "android", "vit_tiny_patch16", tuple(str(i) for i in range(classes)), t, models)
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / "bundle.json").write_text(json.dumps(b.to_json()))
    return b


def _del(path: str):
    def edit(doc):
        *parents, last = path.split(".")
        obj = doc
        for p in parents:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        del obj[last]

    return edit


def _set(path: str, value):
    def edit(doc):
        *parents, last = path.split(".")
        obj = doc
        for p in parents:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        obj[int(last) if last.isdigit() else last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (_del("models.1.input.layout"), r"models\[1\]\.input\.layout: missing required key"),
        (_del("preprocess.crop"), r"preprocess\.crop: missing required key"),
        (_set("version", 2), r"version: 2 is not supported"),
        (_set("format", "other"), r"format: 'other' is not"),
        (_set("classes", list("012345678")), r"models\[0\]\.output\.shape: \[1, 10\] does not match 9 classes"),
        (_set("models.0.input.layout", "CHW"), r"models\[0\]\.input\.layout: 'CHW' is not one of NCHW, NHWC"),
        (_set("models.0.input.layout", "NHWC"), r"models\[0\]\.input\.shape: \[1, 3, 32, 32\] is not \[1, 32, 32, 3\]"),
        (_set("models.1.input.quant", None), r"models\[1\]\.input\.quant: a int8 tensor needs"),
        (_set("models.1.input.quant.zero_point", 200), r"models\[1\]\.input\.quant\.zero_point: 200 is outside"),
        (_set("models.0.output.quant", {"scale": 1.0, "zero_point": 0}), r"models\[0\]\.output\.quant: must be null"),
        (_set("models.0.file", "../escape.pte"), r"models\[0\]\.file: '../escape.pte' must be a relative"),
        (_set("models.1.key", "executorch_fp32"), r"models\[1\]\.key: 'executorch_fp32' must be unique"),
        (_set("preprocess.crop", [40, 32]), r"preprocess\.crop: \[40, 32\] must be sizes in 1..resize_shorter \(32\)"),
        (_set("preprocess.std", [0.5, 0.0, 0.5]), r"preprocess\.std: must be > 0"),
        (_set("preprocess.antialias", "yes"), r"preprocess\.antialias: must be true or false"),
    ],
)
def test_a_malformed_bundle_names_the_key(tmp_path, edit, error):
    doc = _bundle(tmp_path).to_json()
    assert parse_bundle(copy.deepcopy(doc), tmp_path).models[1].input.quant == Quant(0.0157, -1)
    edit(doc)
    with pytest.raises(EdgeVitError, match=error):
        parse_bundle(doc, tmp_path)


def test_read_bundle_says_which_file_is_missing_or_corrupt(tmp_path):
    with pytest.raises(EdgeVitError, match="app bundle not found"):
        read_bundle(tmp_path)
    (tmp_path / "bundle.json").write_text("{")
    with pytest.raises(EdgeVitError, match="not valid JSON"):
        read_bundle(tmp_path)


def test_write_bundle_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(EdgeVitError, match="is not an app bundle"):
        write_bundle(tmp_path / "run", "android", tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ app-check


def test_app_check_cli_passes_with_the_numpy_runner(tmp_path):
    _bundle(tmp_path / "b", crop=(28, 30))
    args = ["--bundle", str(tmp_path / "b"), "--seed", "3", "--cases", "24", "--keep", str(tmp_path / "work")]
    proc = edgevit_cli("app-check", "android", *args, "--runner", "python")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("24 passed, 0 failed")
    runs = sorted((tmp_path / "work").glob("set*/results/results.json"))
    assert len(runs) == 2  # the bundle's preprocess and a variant one
    models = {r["model"] for run in runs for r in json.loads(run.read_text())["results"]}
    assert {"executorch_fp32", "variant_uint8_nhwc", "variant_int8_nchw", "variant_float32_nhwc"} <= models
    cases = json.loads((tmp_path / "work" / "set0" / "cases" / "cases.json").read_text())["cases"]
    assert {c["rotation"] for c in cases} == {0, 90, 180, 270} and len({c["pixel_format"] for c in cases}) == 2


BUGS = {
    "swap_rb": "frame = replace(frame, pixel_format={'RGBA_8888': 'BGRA_8888', 'BGRA_8888': 'RGBA_8888'}"
    "[frame.pixel_format])",
    "skip_rotation": "frame = replace(frame, rotation=0)",
    "nchw_for_nhwc": "spec = replace(spec, layout='NCHW')",
    "drop_zero_point": "spec = replace(spec, quant=spec.quant and replace(spec.quant, zero_point=0))",
}


def _buggy_runner(tmp_path: Path, bug: str) -> str:
    """A golden runner with one app bug planted: the NumPy runner with its preprocessing call wrapped."""
    script = tmp_path / f"runner_{bug}.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from dataclasses import replace
            from edgevit.apps import pipeline, runner

            correct = pipeline.model_input

            def model_input(frame, t, spec):
                {BUGS[bug]}
                return correct(frame, t, spec)

            pipeline.model_input = model_input
            sys.exit(runner.main())
            """
        )
    )
    return f"{runner_command('android', 'python')[0]} {script}"


@pytest.mark.parametrize("bug", sorted(set(BUGS) - {"skip_rotation"}))  # skip_rotation: through the CLI below
def test_app_check_catches_a_planted_app_bug(tmp_path, bug):
    _bundle(tmp_path / "b")
    result = app_check("android", tmp_path / "b", seed=1, cases=12, runner=_buggy_runner(tmp_path, bug))
    assert result.failed >= 6 and not result.ok, result
    assert "input differs" in result.mismatches[0]
    if bug == "drop_zero_point":
        assert all("int8" in m or "uint8" in m for m in result.mismatches)
    if bug == "nchw_for_nhwc":
        assert all("NHWC" in m for m in result.mismatches)


def test_app_check_cli_exits_non_zero_on_a_runner_that_skips_the_rotation(tmp_path):
    _bundle(tmp_path / "b")
    runner = _buggy_runner(tmp_path, "skip_rotation")
    proc = edgevit_cli("app-check", "android", "--bundle", str(tmp_path / "b"), "--cases", "12", "--runner", runner)
    assert proc.returncode == 1
    failed = int(proc.stdout.split(" failed")[0].split()[-1])
    assert failed >= 6 and "mismatch: " in proc.stderr and "input differs" in proc.stderr  # rotation 0: unaffected


def test_app_check_without_a_runner_says_where_it_looked(tmp_path):
    _bundle(tmp_path / "b")
    proc = edgevit_cli("app-check", "ios", "--bundle", str(tmp_path / "b"))
    assert proc.returncode == 2 and "is a bundle for android, not ios" in proc.stderr
    if not (REPO / "android_demo/core/run-golden.sh").exists():
        with pytest.raises(EdgeVitError, match=r"no golden runner for android: .*run-golden.sh not found.*--runner"):
            app_check("android", tmp_path / "b")
    with pytest.raises(EdgeVitError, match="golden runner command not found"):
        app_check("android", tmp_path / "b", runner="/nonexistent/run-golden.sh")


def test_the_runner_rejects_a_malformed_case_naming_the_key(tmp_path):
    from edgevit.apps.runner import main

    b = _bundle(tmp_path / "b")
    write_cases(tmp_path / "c", random_cases(np.random.default_rng(0), 2), b)
    doc = json.loads((tmp_path / "c" / "cases.json").read_text())
    doc["cases"][1]["rotation"] = 45
    (tmp_path / "c" / "cases.json").write_text(json.dumps(doc))
    with pytest.raises(EdgeVitError, match=r"cases\[1\]\.rotation: 45 is not one of"):
        read_cases(tmp_path / "c")
    assert main(["--bundle", str(tmp_path / "b"), "--cases", str(tmp_path / "c"), "--out", str(tmp_path / "o.json")])


# ------------------------------------------------------------------------------------------------ from a trained run


@pytest.fixture(scope="module")
def android_bundle(tiny_digits_run, tmp_path_factory):
    """``edgevit bundle`` (the console script) of the tiny digits run for Android: its LiteRT fp32 and int8."""
    out = tmp_path_factory.mktemp("bundle") / "android"
    proc = edgevit_cli("bundle", str(tiny_digits_run), "--platform", "android", "--out", str(out), "--cases", "6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_bundle_records_the_models_and_the_eval_transform_of_the_run(android_bundle, tiny_digits_run):
    from edgevit.apps.bundle import sha256_path

    b = read_bundle(android_bundle)
    meta = json.loads((tiny_digits_run / "model.json").read_text())
    assert b.preprocess == eval_transform("digits", 32, meta["mean"], meta["std"])
    assert [m.key for m in b.models] == ["tflite_fp32", "tflite_int8"]  # no .onnx, no Core ML for Android
    q = b.model("tflite_int8")
    assert (q.input.dtype, q.output.dtype) == ("int8", "int8") and q.input.quant.scale > 0
    for m in b.models:
        assert sha256_path(android_bundle / m.file) == m.sha256
        assert sha256_path(tiny_digits_run / "artifacts" / Path(m.file).name) == m.sha256


@pytest.mark.slow
def test_golden_cases_round_trip_through_the_python_runtimes(android_bundle):
    """Each .bin is the pipeline's tensor (bit for bit), and running the bundled file on it gives the logits."""
    from edgevit.export import Artifact

    b = read_bundle(android_bundle)
    cases, doc = read_cases(android_bundle / "golden")
    assert len(cases) == 6 and doc["runtimes"] == {"tflite_fp32": "native", "tflite_int8": "native"}
    for case, entry in zip(cases, doc["cases"], strict=True):
        for m in b.models:
            exp = entry["expected"][m.key]
            x = read_tensor(android_bundle / "golden" / exp["input"], m.input)
            assert np.array_equal(x, model_input(case.frame, b.preprocess, m.input))
            feed = pipeline.dequantize(x, m.input.quant) if m.input.quant else x
            y = Artifact(m.backend, m.precision, android_bundle / m.file).load()(feed)[0]
            assert np.allclose(y, exp["logits"], atol=1e-5)
            assert [i for i, _ in exp["top_k"]] == [i for i, _ in top_k(np.asarray(exp["logits"]), 5)]
            if m.output.quant:  # the raw int8 output, and its dequantisation is the logits
                assert np.allclose(pipeline.logits_of(np.asarray(exp["raw_output"]), m.output), exp["logits"])


@pytest.mark.slow
def test_ios_bundle_runs_core_ml_in_the_emulator_and_nhwc_executorch(tiny_digits_run, tmp_path):
    from edgevit.recipe import Target, stage_export

    run = copy_run(tiny_digits_run, tmp_path / "run", ["coreml_fp16.mlpackage"])
    stage_export(run, [Target(backend="executorch", precision="fp32", layout="NHWC")], progress=False)
    b = write_bundle(run, "ios", tmp_path / "ios", cases=3)
    assert [(m.key, m.input.layout) for m in b.models] == [("coreml_fp16", "NCHW"), ("executorch_fp32_nhwc", "NHWC")]
    cases, doc = read_cases(tmp_path / "ios" / "golden")
    assert doc["runtimes"]["coreml_fp16"].startswith("emulated") and doc["runtimes"]["executorch_fp32_nhwc"] == "native"
    for entry in doc["cases"]:  # fp16 Core ML and fp32 ExecuTorch of one model agree on the class
        exp = entry["expected"]
        assert exp["coreml_fp16"]["top_k"][0][0] == exp["executorch_fp32_nhwc"]["top_k"][0][0]
    result = app_check("ios", tmp_path / "ios", cases=10, runner="python")
    assert result.ok, result.mismatches[:3]
    with pytest.raises(EdgeVitError, match="no executorch or tflite artifact .* for android"):
        write_bundle(copy_run(tiny_digits_run, tmp_path / "r2", ["onnx_fp32.onnx"]), "android", tmp_path / "x")


@pytest.mark.slow
def test_app_pipeline_top1_agrees_with_the_val_transform_on_digits(tiny_digits_run):
    """The trained model's top-1 on every digits val image through the val transform vs the scan rendered as an
    8-bit RGBA/BGRA buffer (random rotation and stride) through the app pipeline: >= 99.5% agree."""
    from edgevit.apps.agreement import digits_agreement

    r = digits_agreement(tiny_digits_run)
    assert r["images"] == 360 and r["agreement"] >= 0.995, r
