"""Device profiles (``edgevit/parity/profiles/*.yaml``): loading and validation, the 8-bit input path on real digits
images, and ``edgevit parity RUN --device NAME`` for every bundled profile on a small trained digits run (trained
once per session for several test files: ``tiny_digits_run`` in conftest.py).

The ARM64-emulated raspberry-pi run (QEMU) is in ``tests/test_android_arm64.py``, beside the target it runs on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevit.parity.devices import (
    DeviceProfile,
    ProfileDevice,
    get_device,
    get_profile,
    list_devices,
    list_profiles,
    load_profile,
)
from edgevit.utils import EdgeVitError

PROFILES = ["android-a55", "android-a710", "android-a76", "android-midrange", "iphone", "raspberry-pi"]


def test_bundled_profiles_load_and_are_listed():
    assert list_profiles() == PROFILES
    assert set(PROFILES) <= set(list_devices()) and {"host", "android-arm64"} <= set(list_devices())
    mid = get_profile("android-midrange")
    assert mid.backends == ["tflite", "executorch"] and mid.precisions[0] == "int8" and mid.threads == 4
    assert (mid.input.layout, mid.input.dtype) == ("NHWC", "uint8")
    iphone = get_profile("iphone")
    assert iphone.backends == ["coreml"] and iphone.precisions[0] == "fp16" and iphone.compute_units == "CPU_AND_NE"
    pi = get_profile("raspberry-pi")
    assert pi.arm64_target == "android-arm64" and pi.threads == 4 and set(pi.backends) == {"tflite", "onnx"}
    cores = {
        name: get_profile(name).qemu_cpu for name in ("android-a55", "android-a76", "android-a710", "raspberry-pi")
    }
    assert cores == {  # each counted on its own core's QEMU model (XNNPACK picks kernels from its features)
        "android-a55": "cortex-a55",
        "android-a76": "cortex-a76",
        "android-a710": "cortex-a710",
        "raspberry-pi": "cortex-a76",
    }


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(EdgeVitError, match=r"unknown device 'pixel'.*android-midrange, iphone, raspberry-pi"):
        get_device("pixel")
    with pytest.raises(EdgeVitError, match=r"unknown device profile 'pixel'; choose one of android-a55, android-a710"):
        get_profile("pixel")


@pytest.mark.parametrize(
    "body, error",
    [
        ("input: {dtype: uint8, layot: NHWC}", "device profile key 'input.layot': unknown key"),
        ("thread: 4", "device profile key 'thread': unknown key"),
        ("backends: [tflite, tensorrt]", "device profile key 'backends': Value error, unknown backend 'tensorrt'"),
        ("precisions: [int4]", "device profile key 'precisions': Value error, unknown precision 'int4'"),
        ("threads: 0", "device profile key 'threads': Input should be greater than or equal to 1"),
        ("arm64_target: pi-zero", "device profile key 'arm64_target': Value error, unknown emulated target"),
        ("qemu_cpu: cortex-x1", "device profile key 'qemu_cpu': Value error, unknown QEMU CPU with a cycle table"),
    ],
)
def test_a_bad_profile_key_is_named(tmp_path, body, error):
    good = {"name": "mine", "description": "my board", "backends": ["onnx"], "precisions": ["fp32"]}
    path = tmp_path / "mine.yaml"
    key = body.split(":")[0]
    lines = [f"{k}: {json.dumps(v)}" for k, v in good.items() if k != key] + [body]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EdgeVitError, match=str(path).replace(".", r"\.") + ": " + _re(error)):
        load_profile(path)
    with pytest.raises(EdgeVitError, match=_re(error)):
        get_device(str(path))  # a profile file works as --device PATH, with the same error


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_a_profile_file_is_a_device(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: my board\nbackends: [onnx]\nprecisions: [fp32]\n")
    dev = get_device(str(path))
    assert isinstance(dev, ProfileDevice) and dev.name == "mine" and dev.threads is None and not dev.emulated
    assert dev.to_json()["profile"]["input"] == {"layout": "NCHW", "dtype": "float32"}


def test_8_bit_input_rounds_real_digits_to_pixel_levels(digits32):
    """uint8 input: each normalised image becomes the nearest 8-bit pixel image, for the reference and artifacts."""
    images = np.stack([digits32.val[i][0].numpy() for i in range(32)])
    mean = std = np.full(3, 0.5, np.float32)  # digits()'s default normalisation
    dev = get_device("android-midrange")
    out = dev.prepare(images, (mean, std))
    pixels = (out * std[:, None, None] + mean[:, None, None]) * 255  # back to 0..255
    assert np.abs(pixels - np.round(pixels)).max() < 1e-3  # on the uint8 grid
    assert 0 < np.abs(out - images).max() <= 0.5 / 255 / std.min() + 1e-6  # rounding, nothing more
    assert out.dtype == np.float32 and out.shape == images.shape
    part = {p["what"]: p for p in dev.parts()}["input"]
    assert (
        part["how"] == "real"
        and "8-bit pixels" in part["note"]
        and "prefers NHWC: export with layout NHWC" in part["note"]
    )
    untouched = ProfileDevice(DeviceProfile(name="f", description="f", backends=["onnx"], precisions=["fp32"]))
    assert untouched.prepare(images, (mean, std)) is images  # float32 input: unchanged
    blind = get_device("android-midrange")
    assert blind.prepare(images, None) is images  # without mean/std it cannot recover pixels, and says so
    assert {p["what"]: p for p in blind.parts()}["input"]["how"] == "emulated"


def test_raspberry_pi_runs_on_the_host_when_its_arm64_target_is_not_set_up(tmp_path):
    dev = get_device("raspberry-pi", cache=tmp_path / "empty")
    assert isinstance(dev, ProfileDevice) and dev.emulated is False
    parts = {p["what"]: p for p in dev.to_json()["parts"]}
    assert parts["CPU and kernels"]["how"] == "emulated"
    assert "android-arm64 is not set up" in parts["CPU and kernels"]["note"]
    assert "`edgevit target setup android-arm64`" in parts["CPU and kernels"]["note"]


def test_ships_the_first_passing_artifact_by_backend_then_precision():
    dev = get_device("android-midrange")
    rows = [
        {"backend": "executorch", "precision": "int8", "path": "a/executorch_int8.pte", "passed": True},
        {"backend": "tflite", "precision": "fp32", "path": "a/tflite_fp32.tflite", "passed": True},
        {"backend": "tflite", "precision": "int8", "path": "a/tflite_int8.tflite", "passed": False},
    ]
    assert dev.ships(rows) == "tflite_fp32.tflite"  # tflite before executorch; its int8 failed
    assert dev.ships([rows[2]]) is None


@pytest.fixture(scope="module")
def profile_run(tiny_digits_run, tmp_path_factory):
    """A copy of the session's small trained digits run (``tiny_digits_run`` in conftest.py) listing its LiteRT
    fp32, ONNX fp32 and Core ML fp16 artifacts (its int8 ones would change which artifact a profile ships)."""
    from conftest import copy_run

    dst = tmp_path_factory.mktemp("profiles") / "run"
    return copy_run(tiny_digits_run, dst, ["tflite_fp32.tflite", "onnx_fp32.onnx", "coreml_fp16.mlpackage"])


def _rows(doc):
    return {(a["backend"], a["precision"]): a for a in doc["artifacts"]}


@pytest.mark.slow
def test_parity_device_android_midrange_cli(profile_run):
    """``edgevit parity RUN --device android-midrange``: LiteRT at 4 threads on 8-bit input; ONNX and Core ML listed
    as not for this device; the report says what was emulated and which artifact the phone would ship."""
    from typer.testing import CliRunner

    from edgevit.cli import app

    result = CliRunner().invoke(app, ["parity", str(profile_run), "--device", "android-midrange"])
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads((profile_run / "parity-android-midrange.json").read_text())
    assert doc["schema_version"] == 2 and doc["passed"] is True and doc["threads"] == 4
    dev = doc["device"]
    assert dev["name"] == "android-midrange" and dev["emulated"] is False and dev["profile"]["threads"] == 4
    assert dev["ships"] == "tflite_fp32.tflite"
    parts = {p["what"]: p for p in dev["parts"]}
    assert parts["threads"]["how"] == "real" and parts["CPU and kernels"]["how"] == "emulated"
    assert parts["input"]["how"] == "real" and "8-bit pixels: images rounded" in parts["input"]["note"]
    rows = _rows(doc)
    tfl = rows["tflite", "fp32"]
    assert tfl["passed"] and tfl["execution"] == "native" and tfl["agreement"] == 1.0 and tfl["psnr_db"] > 80
    assert tfl["latency_ms"]["threads"] == 4 and tfl["peak_memory_mb"] is not None
    for key in (("onnx", "fp32"), ("coreml", "fp16")):
        assert rows[key]["runnable"] is False and rows[key]["passed"] is None
        assert rows[key]["reason"] == f"android-midrange runs tflite, executorch artifacts, not {key[0]}"
    md = (profile_run / "report-android-midrange.md").read_text()
    assert "# Parity report: android-midrange" in md and "| part | how | note |" in md and "| top-5 % |" in md
    assert "android-midrange would ship: `tflite_fp32.tflite`" in md and "**Overall: PASS**" in md
    assert not (profile_run / "parity.json").exists()  # the host report is never overwritten


@pytest.mark.slow
def test_parity_device_iphone_and_raspberry_pi(profile_run, tmp_path):
    """iphone: Core ML only (off macOS in the emulator, said in device.parts); raspberry-pi without its ARM64
    target set up: LiteRT and ONNX on this host at 4 threads, the report saying the target was missing."""
    import platform

    from edgevit.recipe import stage_parity

    report, md = stage_parity(profile_run, progress=False, device="iphone")
    doc = report.to_json()
    rows = _rows(doc)
    coreml = rows["coreml", "fp16"]
    assert doc["passed"] and coreml["passed"] and coreml["agreement"] >= 0.99 and coreml["kl_div"] < 1e-3
    assert rows["tflite", "fp32"]["reason"] == "iphone runs coreml artifacts, not tflite"
    assert doc["device"]["ships"] == "coreml_fp16.mlpackage"
    part = {p["what"]: p for p in doc["device"]["parts"]}["coreml runtime"]
    assert "CPU_AND_NE" in part["note"]
    if platform.system() != "Darwin":
        assert part["how"] == "emulated" and coreml["execution"].startswith("emulated (NumPy MIL interpreter")
        assert coreml["latency_ms"] is None and coreml["peak_memory_mb"] is None
    assert md.name == "report-iphone.md" and "Core ML compute units CPU_AND_NE" in md.read_text()

    import torch

    threads = torch.get_num_threads()
    report = stage_parity(profile_run, progress=False, device="raspberry-pi", cache=tmp_path / "no-target")[0]
    assert torch.get_num_threads() == threads  # the profile's 4 threads do not leak into the rest of the process
    doc = report.to_json()
    rows = _rows(doc)
    assert doc["passed"] and doc["device"]["emulated"] is False and doc["threads"] == 4
    for key in (("tflite", "fp32"), ("onnx", "fp32")):
        assert rows[key]["passed"] and rows[key]["execution"] == "native" and rows[key]["latency_ms"]["threads"] == 4
    assert rows["coreml", "fp16"]["runnable"] is False
    cpu = {p["what"]: p for p in doc["device"]["parts"]}["CPU and kernels"]
    assert cpu["how"] == "emulated" and "android-arm64 is not set up" in cpu["note"]


@pytest.mark.slow
def test_parity_device_feeds_an_nhwc_export_channels_last(tiny_digits_run, tmp_path):
    """android-midrange prefers NHWC: an artifact exported with ``layout="NHWC"`` (its manifest entry says so) is fed
    the digits channels-last by ``edgevit parity --device``, gives the NCHW export's logits, and the report says
    which layout each artifact was fed."""
    from conftest import copy_run

    from edgevit.export import Artifact
    from edgevit.recipe import Target, stage_export, stage_parity, trained

    run = copy_run(tiny_digits_run, tmp_path / "run", ["tflite_fp32.tflite"])
    _, _, data, _ = trained(run)
    # the recipe key export.targets[].layout, exported into the run as `edgevit export` does
    (nhwc,) = stage_export(run, [Target(backend="tflite", precision="fp32", layout="NHWC")], progress=False)
    assert Path(nhwc.path).name == "tflite_fp32_nhwc.tflite" and nhwc.layout == "NHWC"
    manifest = json.loads((run / "artifacts" / "manifest.json").read_text())
    assert [Path(a["path"]).name for a in manifest["artifacts"]] == ["tflite_fp32.tflite", "tflite_fp32_nhwc.tflite"]
    # what an app reads to feed each file: the NHWC one says so itself, the top-level input says to look there
    infos = {Path(a["path"]).name: a["info"] for a in manifest["artifacts"]}
    c, h, w = manifest["input"]["shape"][1:]
    assert (infos["tflite_fp32_nhwc.tflite"]["input_layout"], infos["tflite_fp32_nhwc.tflite"]["input_shape"]) == (
        "NHWC",
        [1, h, w, c],
    )
    assert "input_layout" in manifest["input"]["per_artifact"]

    report, md = stage_parity(run, progress=False, device="android-midrange")
    doc = report.to_json()
    rows = {Path(a["path"]).name: a for a in doc["artifacts"]}
    assert doc["passed"] and rows["tflite_fp32_nhwc.tflite"]["passed"] and rows["tflite_fp32.tflite"]["passed"]
    assert (
        rows["tflite_fp32_nhwc.tflite"]["input_layout"] == "NHWC"
        and rows["tflite_fp32.tflite"]["input_layout"] == "NCHW"
    )
    for key in ("agreement", "max_abs_err", "cosine"):  # the same logits, fed the same 8-bit images either way
        assert rows["tflite_fp32_nhwc.tflite"][key] == pytest.approx(rows["tflite_fp32.tflite"][key], abs=1e-5), key
    note = {p["what"]: p for p in doc["device"]["parts"]}["input"]["note"]
    assert "NCHW for tflite fp32; NHWC for tflite fp32" in note and "prefers NHWC: export with layout NHWC" in note
    assert "NHWC for tflite fp32" in md.read_text()

    images = np.stack([data.val[i][0].numpy() for i in range(len(data.val))])
    nchw = Artifact.from_json(manifest["artifacts"][0], root=run)
    run_nchw, run_nhwc = nchw.load(2), nhwc.load(2)
    want = np.concatenate([run_nchw(x[None]) for x in images])
    got = np.concatenate([run_nhwc(x[None]) for x in nhwc.feed(images)])  # [N, H, W, C] digits
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the NCHW export's logits
    with pytest.raises(EdgeVitError, match=r"takes NHWC input of shape \[1, 32, 32, 3\]; got shape \[1, 3, 32, 32\]"):
        run_nhwc(images[:1])
