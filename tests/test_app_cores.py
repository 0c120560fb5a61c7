"""The demo apps' cores, built and tested on this machine: the Kotlin core (``android_demo/check.sh``: kotlinc, JUnit 5,
ktlint, tree-sitter parse of the app layer) and the Swift core (``ios_demo/check.sh``: swift test in a Debian trixie
root, swift format lint, swiftc -parse, the Xcode project check) on the golden cases of a bundle made from a trained
run, then ``edgevit app-check`` on 200 fresh random cases through each core's golden runner.

The toolchains install on first use into ``$EDGEVIT_CACHE`` (``make test`` starts both installs in the background
first); a toolchain that cannot be installed fails these tests loudly, it never skips them.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, copy_run, edgevit_cli, shared_run

CHECKS = {"android": ROOT / "android_demo" / "check.sh", "ios": ROOT / "ios_demo" / "check.sh"}


@pytest.fixture(scope="session")
def app_run(tiny_digits_run, tmp_path_factory):
    """The session's tiny digits run with what the apps meet besides its LiteRT and Core ML files: ExecuTorch fp32
    with NHWC input (camera frames) and ExecuTorch int8 with float input; made once per session."""
    from edgevit.recipe import Target, stage_export

    def build(out: Path) -> None:
        copy_run(tiny_digits_run, out, ["tflite_fp32.tflite", "tflite_int8.tflite", "coreml_fp16.mlpackage"])
        nhwc = Target(backend="executorch", precision="fp32", layout="NHWC")
        stage_export(out, [nhwc, Target(backend="executorch", precision="int8")], progress=False)

    return shared_run(tmp_path_factory, "apps", build)


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["android", "ios"])
def test_app_core_passes_the_golden_cases_and_fresh_random_cases(platform, app_run, tmp_path):
    bundle = tmp_path / "bundle"
    proc = edgevit_cli("bundle", str(app_run), "--platform", platform, "--out", str(bundle), "--cases", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    layouts = {m["input"]["layout"] for m in json.loads((bundle / "bundle.json").read_text())["models"]}
    assert layouts == {"NCHW", "NHWC"}  # both layouts reach the core's golden tests
    check = subprocess.run(["bash", str(CHECKS[platform]), str(bundle)], capture_output=True, text=True, timeout=1800)
    out = check.stdout + check.stderr
    assert check.returncode == 0, out[-4000:]
    # the core's unit tests: JUnit's summary (Android), XCTest's (iOS)
    pattern = (
        r"android core: (\d+) passed, (\d+) failed"
        if platform == "android"
        else r"Executed (\d+) tests, with (\d+) failures"
    )
    tests = re.findall(pattern, out)
    assert tests and int(tests[-1][0]) > 20 and tests[-1][1] == "0", out[-3000:]
    proc = edgevit_cli("app-check", platform, "--bundle", str(bundle), "--cases", "200", "--seed", "1", timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "200 passed, 0 failed" in proc.stdout
