"""Emulated targets without downloads: cached setup steps, a refused download, devices in parity, the report."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgevit.backends import NotRunnable, RunFailed
from edgevit.export import Artifact
from edgevit.parity import ParityConfig, check, render_markdown, report_names
from edgevit.parity.devices import EmulatedDevice, get_device
from edgevit.targets import Step, default_cache, get_target, list_targets, pending_steps, run_steps
from edgevit.utils import EdgeVitError


def _step(name, calls, key=1, fail=False):
    def build(tmp: Path) -> None:
        calls.append(name)
        (tmp / "part").write_text("half")
        if fail:
            raise KeyboardInterrupt  # as if the download were interrupted
        (tmp / "done").write_text(name)

    return Step(name, name, {"v": key}, build)


def test_steps_run_once_rerun_when_stale_and_recover_from_interruption(tmp_path):
    calls: list[str] = []
    steps = [_step("a", calls), _step("b", calls)]
    assert run_steps(tmp_path, steps, progress=False) == ["a", "b"]
    assert run_steps(tmp_path, steps, progress=False) == [] and calls == ["a", "b"]  # idempotent
    assert pending_steps(tmp_path, steps) == []
    assert pending_steps(tmp_path, [_step("a", calls, key=2), steps[1]]) == ["a"]  # a new version is stale

    with pytest.raises(KeyboardInterrupt):
        run_steps(tmp_path, [_step("a", calls, key=2, fail=True), steps[1]], progress=False)
    assert (tmp_path / "a" / "done").read_text() == "a"  # the old result is untouched, never half-replaced
    assert pending_steps(tmp_path, [_step("a", calls, key=2), steps[1]]) == ["a"]
    assert run_steps(tmp_path, [_step("a", calls, key=2), steps[1]], progress=False) == ["a"]  # no manual cleanup
    assert not list(tmp_path.glob(".tmp-*")) and (tmp_path / "a" / "done").is_file()


def test_registry_and_default_cache(monkeypatch, tmp_path):
    assert "android-arm64" in list_targets()
    monkeypatch.setenv("EDGEVIT_CACHE", str(tmp_path))
    assert default_cache("android-arm64") == tmp_path / "targets" / "android-arm64"
    assert get_target("android-arm64").cache == tmp_path / "targets" / "android-arm64"
    with pytest.raises(EdgeVitError, match="unknown target 'ios'"):
        get_target("ios")
    with pytest.raises(EdgeVitError, match=r"unknown device 'phone'; choose host, an emulated target"):
        get_device("phone")


def test_runtimes_match_the_host_versions(tmp_path):
    t = get_target("android-arm64", tmp_path)
    for req in t.requirements():
        name, version = req.split("==")
        assert version == importlib.metadata.version(name)
    steps = {s.name: s for s in t.steps()}
    assert set(steps) == {"sysroot", "qemu", "wheels", "counting-qemu", "count-plugin", "executorch-runtime"}
    # .pte files run in the aarch64 runtime of the ExecuTorch release that exported them
    assert steps["executorch-runtime"].key["executorch"] == importlib.metadata.version("executorch")
    assert t.unsupported("tflite") is None and t.unsupported("onnx") is None and t.unsupported("executorch") is None
    assert "Apple" in t.unsupported("coreml")


def test_not_set_up_names_the_setup_command(tmp_path):
    t = get_target("android-arm64", tmp_path / "c")
    with pytest.raises(EdgeVitError, match=r"not set up .*edgevit target setup android-arm64 --cache"):
        t.ensure_ready()
    with pytest.raises(EdgeVitError, match=r"edgevit target setup android-arm64 --cache"):  # before any work
        _cli("parity", str(tmp_path), "--device", "android-arm64", "--cache", str(tmp_path / "c"))


def test_missing_cross_compiler_is_named_before_any_download(tmp_path, monkeypatch):
    """Without the aarch64 C++ cross compiler (for ExecuTorch's entry point) setup stops at once, naming it and its
    Debian package, having downloaded and built nothing."""
    from edgevit.targets import executorch_runtime

    which = shutil.which
    monkeypatch.setattr(executorch_runtime.shutil, "which", lambda t: None if "aarch64" in t else which(t))
    t = get_target("android-arm64", tmp_path, mirror="http://127.0.0.1:9/debian")
    with pytest.raises(EdgeVitError, match=r"`aarch64-linux-gnu-g\+\+` not found.*apt-get install g\+\+-aarch64"):
        t.setup(progress=False)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_executorch_wheel_without_the_runtime_libraries_is_named(tmp_path, monkeypatch):
    """A wheel that lacks some of the runtime libraries the entry point links fails naming them, and nothing in the
    wheel is written by its archive path (a ``../`` member stays inside)."""
    from edgevit.targets import executorch_runtime as er

    monkeypatch.setattr(er.shutil, "which", lambda tool: f"/usr/bin/{tool}")

    def fake_run(cmd, what, hint, **kw):  # pip download: a wheel with two of the five libraries
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "executorch-9.9-cp311-cp311-manylinux_2_28_aarch64.whl", "w") as z:
            for name in er.LIBS[:2]:
                z.writestr(f"executorch/lib/{name}", b"\x7fELF")
            z.writestr("executorch/include/executorch/runtime/core/error.h", "")
            z.writestr("executorch/include/../../escaped.h", "")  # would land in tmp_path
        return subprocess.CompletedProcess(cmd, 0, "", "")

    out = tmp_path / "out"
    out.mkdir()
    missing = ", ".join(sorted(er.LIBS[2:]))
    with pytest.raises(EdgeVitError, match=f"executorch-9.9-.*whl has no {missing} under executorch/lib/"):
        er.build(out, "9.9", fake_run)
    assert not list(tmp_path.rglob("escaped.h"))


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_refused_download_says_which_url_and_what_to_check(tmp_path):
    t = get_target("android-arm64", tmp_path)
    t.mirror = "http://127.0.0.1:9/debian"  # nothing listens on the discard port: connection refused
    with pytest.raises(EdgeVitError) as e:
        t.setup(progress=False)
    msg = str(e.value)
    assert "http://127.0.0.1:9/debian" in msg and "EDGEVIT_DEBIAN_MIRROR" in msg and "trixie arm64" in msg, msg
    assert not (tmp_path / "sysroot").exists() and not list(tmp_path.glob(".tmp-*"))
    assert t.pending() == ["sysroot", "qemu", "wheels", "counting-qemu", "count-plugin", "executorch-runtime"]


class _FakeTarget:
    """Runs nothing: returns the host's logits plus a perturbation, or crashes, per file name."""

    name, description, cpu = "android-arm64", "a fake ARM64", "cortex-a76"

    def __init__(self, host_logits):
        self.host_logits = host_logits

    def unsupported(self, backend):
        return None if backend in ("tflite", "onnx") else "Core ML runs on Apple platforms only"

    def run(self, backend, model, images, threads, progress, cpu=None):  # the signature of AndroidArm64.run
        if "crash" in str(model):
            raise RunFailed("tflite failed on android-arm64 (killed by signal 11): Segmentation fault")
        out = self.host_logits.copy()
        if "drift" in str(model):
            out[:, 0] += 1e-3  # fp32 kernels that differ more than accumulation order would
        return out


class _FakeArtifact(Artifact):
    def load(self, threads=1, compute_units=None, emulate=True):  # the signature of Artifact.load
        if self.backend == "coreml":
            raise NotRunnable("Core ML needs macOS")
        return lambda x: self.info["logits"][int(x[0, 0, 0, 0])][None]


def test_check_on_an_emulated_device_compares_with_host_and_pytorch(tmp_path):
    n, k = 50, 10
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, k)).astype(np.float32) * 3
    images = np.zeros((n, 3, 4, 4), np.float32)
    images[:, 0, 0, 0] = np.arange(n)  # the fake runtimes look their logits up by image index
    labels = logits.argmax(1)

    def art(backend, precision, name):
        return _FakeArtifact(backend, precision, tmp_path / name, {"logits": logits})

    arts = [
        art("tflite", "fp32", "good.tflite"),
        art("tflite", "fp32", "drift.tflite"),
        art("tflite", "int8", "crash.tflite"),
        art("coreml", "fp16", "m.mlpackage"),
    ]
    for a in arts:
        Path(a.path).write_text("x")
    device = EmulatedDevice(_FakeTarget(logits))
    cfg = ParityConfig(warmup=0, runs=1)
    report = check(arts, images, labels, lambda x: logits[int(x[0, 0, 0, 0])][None], cfg, progress=False, device=device)
    good, drift, crash, coreml = report.artifacts
    assert good["passed"] and good["vs_host"]["max_abs_err"] == 0 and good["latency_ms"] is None
    assert good["vs_host"]["tolerance"] == {"min_agreement": 1.0, "max_abs_err": 1e-4}
    assert drift["passed"] is False and "max abs diff from host run 1.00e-03 > 1e-04" in drift["failures"][0]
    assert crash["passed"] is False and "signal 11" in crash["failures"][0] and crash["runnable"]
    assert coreml["runnable"] is False and coreml["reason"].startswith("Core ML runs on Apple")
    assert report.passed is False
    doc = report.to_json()
    assert doc["device"]["name"] == "android-arm64" and doc["device"]["emulated"] is True

    md = render_markdown(doc)
    assert "# Parity report: android-arm64" in md
    assert "QEMU user-mode emulation" in md and "not device latency" in md and "latency median" not in md
    assert "| tflite | fp32 | – | yes | 1.0000 | 0.00e+00 |" in md
    assert "not run on this device: Core ML runs on Apple platforms only" in md and "**Overall: FAIL**" in md
    assert "fp32: agreement ≥ 1.0, max abs diff ≤ 1e-04" in md
    from edgevit.cli.pipeline import print_summary

    print_summary(report, tmp_path / "report-android-arm64.md")  # the CLI table copes with a crash (no metrics)

    # the default device is the host, and its report keeps its names
    host = check(arts[:1], images, labels, lambda x: logits[int(x[0, 0, 0, 0])][None], cfg, progress=False)
    assert host.device["name"] == "host" and "vs_host" not in host.artifacts[0]
    assert report_names("host") == ("parity.json", "report.md")
    assert report_names("android-arm64") == ("parity-android-arm64.json", "report-android-arm64.md")


def test_device_tolerances_are_overridable():
    cfg = ParityConfig(device_tolerances={"int8": {"min_agreement": 0.95}})
    assert cfg.device_tolerance("int8").min_agreement == 0.95
    assert cfg.device_tolerance("fp32").max_abs_err == 1e-4  # defaults fill the rest
    assert cfg.device_tolerance("w4").min_agreement == 0.99


def test_target_list_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEVIT_CACHE", str(tmp_path))
    out = _cli("target", "list").stdout
    missing = "sysroot, qemu, wheels, counting-qemu, count-plugin, executorch-runtime"
    assert out.startswith(f"android-arm64\tnot set up (missing: {missing})\t" + str(tmp_path)), out


def _cli(*args):
    """The CLI in process (a subprocess would spend most of its time importing torch)."""
    from typer.testing import CliRunner

    from edgevit.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_refused_wheel_download_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # connection refused
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    t = get_target("android-arm64", tmp_path)
    (tmp_path / "site").mkdir()
    with pytest.raises(EdgeVitError) as e:
        t._build_site(tmp_path / "site")
    msg = str(e.value)
    assert "downloading aarch64 wheels ai-edge-litert==" in msg and "onnxruntime==" in msg, msg
    assert "from http://127.0.0.1:9/simple failed" in msg, msg
    assert "check access to PyPI" in msg and "PIP_INDEX_URL" in msg, msg
