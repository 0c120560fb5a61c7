"""edgevit.testing: assert_parity gates a good artifact through and stops a broken one, on real digits data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from edgevit.testing import assert_parity, infer_artifact
from edgevit.utils import EdgeVitError


def digits_vit(data, seed: int = 0) -> torch.nn.Module:
    """A 1-block ViT-Ti-width model for 32-px digits whose head is fitted in closed form (~93% top-1, ~2 s).

    The random-init backbone is kept; the classifier is the ridge-regression fit of one-hot labels on its pooled
    features over the training split, so predictions are real and vary from image to image without a training
    loop (which takes minutes on a loaded 2-core machine).
    """
    from edgevit import create_model

    torch.manual_seed(seed)
    model = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=10).eval()
    x = torch.stack([data.train[i][0] for i in range(len(data.train))])  # [N, 3, 32, 32]
    y = torch.tensor([int(data.train[i][1]) for i in range(len(data.train))])
    with torch.no_grad():
        f = model.forward_head(model.forward_features(x), pre_logits=True).double()  # [N, D]
        f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)  # [N, D + 1]: a bias column
        eye = torch.eye(f.shape[1], dtype=f.dtype)
        w = torch.linalg.solve(f.T @ f + 1e-2 * eye, f.T @ torch.nn.functional.one_hot(y, 10).double())  # [D+1, 10]
        model.head.weight.copy_(w[:-1].T.float())
        model.head.bias.copy_(w[-1].float())
    return model


@pytest.fixture(scope="module")
def gate_case(digits32, tmp_path_factory):
    """A digits ViT (fitted head), its fp32 ONNX export, and an export where one layer's weights are perturbed."""
    from edgevit.backends import get_backend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster, and far faster on a loaded machine
    model = digits_vit(digits32)
    out = tmp_path_factory.mktemp("gate")
    example = digits32.val[0][0][None].clone()
    onnx = get_backend("onnx")
    onnx.convert(model, example, out / "model_fp32.onnx", "fp32")
    broken = type(model)(model.cfg)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():  # one layer's weights off in this artifact only (a bad export / wrong checkpoint)
        w = broken.blocks[0].mlp.fc2.weight
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.01 * w.std())  # ~30% of images flip
    onnx.convert(broken.eval(), example, out / "broken_fp32.onnx", "fp32")
    torch.set_num_threads(threads)
    return model, out / "model_fp32.onnx", out / "broken_fp32.onnx"


def test_assert_parity_passes_a_good_artifact_and_names_the_metric_on_a_broken_one(gate_case, digits32, one_thread):
    model, good, broken = gate_case
    m = assert_parity(model, str(good), digits32)  # a path: backend from the suffix; DataSplits: its val split
    assert m["backend"] == "onnx" and m["precision"] == "fp32" and m["execution"] == "native"
    assert m["num_images"] == len(digits32.val) == 360
    assert m["agreement"] == 1.0 and m["max_abs_err"] < 1e-4
    assert m["reference_top1"] > 85  # a real classifier: predictions vary from image to image

    with pytest.raises(AssertionError) as e:
        assert_parity(model, broken, digits32.val)  # a torch Dataset of (image, label)
    msg = str(e.value)
    assert "parity failed: onnx fp32 artifact" in msg and "broken_fp32.onnx" in msg
    assert "agreement" in msg and "< 0.995 (short by" in msg  # which metric, by how much
    assert "cosine" in msg
    n_bad = int(msg.split(" of 360 images")[0].rsplit("\n", 1)[-1].strip())
    assert 10 < n_bad < 300  # how many images disagree ...
    assert "get a different top-1 class than PyTorch: #" in msg  # ... and which, with label and both classes
    assert "label " in msg and "artifact " in msg and "max abs err" in msg


def test_dataset_and_tolerance_forms(gate_case, digits32, one_thread):
    model, good, broken = gate_case
    images = torch.stack([digits32.val[i][0] for i in range(100)])
    labels = np.array([int(digits32.val[i][1]) for i in range(100)])
    a = assert_parity(model, good, (images, labels), tolerance="int8")
    b = assert_parity(model, good, (images.numpy(), None), tolerance={"min_agreement": 1.0}, max_images=50)
    assert a["num_images"] == 100 and b["num_images"] == 50 and b["tolerance"]["min_agreement"] == 1.0
    loader = torch.utils.data.DataLoader(digits32.val, batch_size=32)
    assert assert_parity(model, good, loader, max_images=64)["num_images"] == 64
    # a loose enough gate lets the broken artifact through; the failure is about the tolerance, not the code
    loose = {"min_agreement": 0.0, "max_top1_drop": 100.0, "min_cosine": -1.0, "min_psnr_db": None}
    assert assert_parity(model, broken, (images, labels), tolerance=loose)["agreement"] < 1.0
    with pytest.raises(EdgeVitError, match="min_agrement"):
        assert_parity(model, good, (images, labels), tolerance={"min_agrement": 0.9})
    with pytest.raises(EdgeVitError, match="unknown tolerance 'int9'"):
        assert_parity(model, good, (images, labels), tolerance="int9")
    with pytest.raises(EdgeVitError, match=r"\[N, C, H, W\].*\[3, 32, 32\]"):
        assert_parity(model, good, (images[0], labels[:1]))


def test_infer_artifact_from_suffix_file_name_and_manifest(tmp_path):
    for name, backend, precision in [
        ("m.onnx", "onnx", "fp32"),
        ("tflite_int8-dynamic.tflite", "tflite", "int8-dynamic"),
        ("vit_int8.pte", "executorch", "int8"),
    ]:
        (tmp_path / name).write_bytes(b"x")
        art = infer_artifact(tmp_path / name)
        assert (art.backend, art.precision) == (backend, precision), name
    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    (run / "artifacts" / "mine.tflite").write_bytes(b"x")
    manifest = {"artifacts": [{"backend": "tflite", "precision": "fp16", "path": "artifacts/mine.tflite",
                               "info": {"quantizer": "q"}}]}  # fmt: skip
    (run / "artifacts" / "manifest.json").write_text(__import__("json").dumps(manifest))
    art = infer_artifact(run / "artifacts" / "mine.tflite")
    assert (art.precision, art.info) == ("fp16", {"quantizer": "q"})
    with pytest.raises(EdgeVitError, match=r"suffix '\.bin'"):
        (tmp_path / "m.bin").write_bytes(b"x")
        infer_artifact(tmp_path / "m.bin")
    with pytest.raises(EdgeVitError, match="artifact not found"):
        infer_artifact(tmp_path / "missing.onnx")


def test_pytest_plugin_in_a_user_project(gate_case, tmp_path):
    """A user's project enables the plugin in conftest.py; its gates use the fixtures and command-line options."""
    model, good, broken = gate_case
    torch.save(model, tmp_path / "model.pt")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["edgevit.testing"]\n')
    (tmp_path / "test_gate.py").write_text(
        textwrap.dedent(
            f"""
            import torch

            torch.set_num_threads(1)
            MODEL = torch.load({str(tmp_path / "model.pt")!r}, weights_only=False)

            def test_good(parity):
                parity(MODEL, {str(good)!r})  # parity_dataset: the built-in digits validation split

            def test_broken(parity):
                parity(MODEL, {str(broken)!r})
            """
        )
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # --parity-tolerance overrides every gate's tolerance: the fp32 artifacts are judged by int8's here
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--parity-images", "120",
           "--parity-tolerance", "int8"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "AssertionError: parity failed: onnx fp32 artifact" in proc.stdout and "on 120 images" in proc.stdout
    assert "tolerance (int8 default): min_agreement=0.98" in proc.stdout


def test_failure_names_psnr_and_kl_when_the_tolerance_judges_them(gate_case, digits32, one_thread):
    model, _, broken = gate_case
    with pytest.raises(AssertionError) as e:
        tol = {"min_agreement": 0.0, "max_top1_drop": 100.0, "min_cosine": -1.0, "min_psnr_db": 60, "max_kl_div": 1e-6}
        assert_parity(model, broken, digits32, tolerance=tol, max_images=60)
    msg = str(e.value)
    assert "  - PSNR " in msg and "dB < 60.0 (short by" in msg
    assert "  - KL divergence " in msg and "> 1e-06 (over by" in msg and "agreement" not in msg.split("\n")[1]
