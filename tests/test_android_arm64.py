"""The android-arm64 emulated target: setup (downloads and builds once into a persistent cache; again is a no-op)
and the Raspberry Pi profile run on it. The whole-split parity of ExecuTorch, LiteRT and ONNX artifacts on the
target, with their cost profiles, is tests/test_arm_cost.py's.

The model (``tiny_digits_run`` in conftest.py, trained once per session) is quickstart-like but narrower (width 64,
2 blocks: ~1.5 M MACs) because emulated float kernels run about 100 M MAC/s; the quickstart's 31 M MACs would take
~2 min per artifact on 2 cores.
"""

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
