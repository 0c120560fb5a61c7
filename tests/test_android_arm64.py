"""The android-arm64 emulated target end to end: setup (downloads once into a persistent cache), then fp32 and
int8 TFLite and fp32 ONNX artifacts of a small digits ViT run by the aarch64 runtimes under QEMU over the whole
validation split, compared with their x86 runs and with PyTorch.

The model (``tiny_digits_run`` in conftest.py, trained once per session) is quickstart-like but narrower (width 64,
2 blocks: ~1.5 M MACs) because emulated float kernels run about 100 M MAC/s; the quickstart's 31 M MACs would take
~2 min per artifact on 2 cores.
"""

import json
import time

import pytest
from conftest import edgevit_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def arm64_ready(arm64_target):
    """The target set up once per session (``arm64_target`` in conftest.py); setting it up again is a no-op."""
    again = edgevit_cli("target", "setup", "android-arm64")
    assert again.returncode == 0 and "already set up" in again.stderr, again.stderr[-2000:]


@pytest.fixture(scope="module")
def small_run(tiny_digits_run, tmp_path_factory):
    """A copy of the session's small trained digits run (``tiny_digits_run`` in conftest.py) listing its fp32 and
    int8 LiteRT and fp32 ONNX artifacts."""
    from conftest import copy_run

    dst = tmp_path_factory.mktemp("arm64") / "run"
    return copy_run(tiny_digits_run, dst, ["tflite_fp32.tflite", "tflite_int8.tflite", "onnx_fp32.onnx"])


def test_artifacts_agree_on_emulated_arm64(arm64_ready, small_run):
    t0 = time.perf_counter()
    proc = edgevit_cli("parity", str(small_run), "--device", "android-arm64", timeout=1200)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((small_run / "parity-android-arm64.json").read_text())
    assert doc["device"]["name"] == "android-arm64" and doc["device"]["emulated"] is True
    assert doc["num_images"] == 360 and doc["passed"] is True and doc["reference"]["top1"] >= 85.0
    rows = {(a["backend"], a["precision"]): a for a in doc["artifacts"]}
    assert set(rows) == {("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32")}
    for key, a in rows.items():
        host = a["vs_host"]
        print(
            f"{key}: ARM64 vs x86 max abs {host['max_abs_err']:.2e} agreement {host['agreement']:.4f}; "
            f"vs PyTorch agreement {a['agreement']:.4f} max abs {a['max_abs_err']:.2e}"
        )
        assert a["runnable"] and a["passed"] and a["latency_ms"] is None, a
        if a["precision"] == "fp32":  # same graph, NEON instead of AVX kernels: accumulation order only
            assert host["max_abs_err"] < 1e-4 and host["agreement"] == 1.0, host
            assert a["agreement"] >= 0.995 and a["cosine"] >= 0.9999, a
        else:
            assert host["agreement"] >= 0.99, host
            assert a["agreement"] >= 0.98 and doc["reference"]["top1"] - a["top1"] <= 1.0, a
    md = (small_run / "report-android-arm64.md").read_text()
    assert "QEMU user-mode emulation" in md and "not device latency" in md and "**Overall: PASS**" in md
    assert not (small_run / "parity.json").exists()  # the host report is a separate file, never overwritten
    print(f"emulated parity (3 artifacts x 360 images, plus host runs and reference): {took:.1f} s")


def test_raspberry_pi_profile_runs_on_the_emulated_arm64_target(arm64_ready, small_run):
    """``--device raspberry-pi`` with android-arm64 set up: the profile's artifacts run under QEMU (same Cortex-A76
    as a Pi 5) at 4 threads on 8-bit input, compared with their host runs; 60 images keep it to seconds."""
    import numpy as np
    import torch

    from edgevit.parity import check
    from edgevit.parity.devices import get_device
    from edgevit.recipe import trained
    from edgevit.rundir import manifest_artifacts

    recipe, model, data, meta = trained(small_run)
    artifacts = manifest_artifacts(small_run)
    images = np.stack([data.val[i][0].numpy() for i in range(60)])
    labels = np.array([int(data.val[i][1]) for i in range(60)])
    dev = get_device("raspberry-pi")
    assert dev.emulated is True

    @torch.no_grad()
    def reference(x):
        return model(torch.from_numpy(x)).numpy()

    report = check(artifacts, images, labels, reference, recipe.parity, False, dev, (meta["mean"], meta["std"]))
    doc = report.to_json()
    assert doc["passed"] and doc["threads"] == 4 and doc["device"]["profile"]["name"] == "raspberry-pi"
    parts = {p["what"]: p for p in doc["device"]["parts"]}
    assert parts["CPU"]["how"] == "emulated" and "cortex-a76" in parts["CPU"]["note"]
    assert parts["runtimes and kernels"]["how"] == "real" and parts["input"]["how"] == "real"
    for a in doc["artifacts"]:
        assert a["runnable"] and a["execution"] == "emulated device android-arm64" and a["latency_ms"] is None, a
        if a["precision"] == "fp32":
            assert a["vs_host"]["max_abs_err"] < 1e-4 and a["vs_host"]["agreement"] == 1.0, a
    assert doc["device"]["ships"] == "tflite_int8.tflite"  # the profile prefers int8, and it passed
