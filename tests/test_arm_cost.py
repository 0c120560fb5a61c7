"""ARM cost profiles on the emulated android-arm64 target: ExecuTorch runs there with accuracy parity, every artifact
gets a deterministic cost profile (instructions per inference, arithmetic mix, estimated cycles) and the cost gate
fails an int8 artifact whose linear layers stayed float, like an accuracy miss.

The end-to-end tests use the session's small trained digits ViT (``tiny_digits_run`` in conftest.py: width 64,
2 blocks, ~1.5 M MACs) and the target set up once per machine (``arm64_target``: the first setup builds the
counting emulator, ~5 min of CPU; later ones find it cached). The unit tests at the top need neither.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil

import numpy as np
import pytest
from conftest import copy_run, edgevit_cli

from edgevit.parity.cost import CostConfig, judge_cost, ratios, render_cost_markdown
from edgevit.targets.cost import CLASSES, classify, estimate_cycles


@pytest.mark.parametrize(
    "mnemonic, op_str, cls",
    [
        ("fmla", "v0.4s, v1.4s, v2.s[0]", "fmla/fmul"),
        ("sdot", "v16.4s, v0.16b, v4.4b[0]", "sdot/udot"),
        ("smmla", "v8.4s, v0.16b, v4.16b", "smmla"),
        ("ldp", "q0, q1, [x3], #0x20", "loads"),
        ("ld1r", "{v0.4s}, [x1]", "loads"),
        ("stp", "x29, x30, [sp, #-0x10]!", "stores"),
        ("b.ne", "#0x1000", "branches"),
        ("cbnz", "x0, #0x40", "branches"),
        ("ret", "", "branches"),
        ("fadd", "v0.4s, v0.4s, v1.4s", "other SIMD/FP"),
        ("sqxtn", "v0.4h, v1.4s", "other SIMD/FP"),
        ("add", "x0, x0, #1", "other scalar"),
        ("bic", "x0, x0, x1", "other scalar"),  # starts with b, not a branch
    ],
)
def test_each_instruction_falls_in_one_class(mnemonic, op_str, cls):
    assert classify(mnemonic, op_str) == cls


def test_cycle_bound_is_the_busiest_pipe_per_core():
    gemm = dict.fromkeys(CLASSES, 0.0) | {"fmla/fmul": 8e6, "loads": 2e6, "other scalar": 1e6}
    a76, a55 = estimate_cycles(gemm, "cortex-a76"), estimate_cycles(gemm, "cortex-a55")
    # A76: 2 Q-form FMLA per cycle -> 4 M cycles, more than issue (11 M / 4) or loads (2 M / 2)
    assert a76["bound_by"] == "SIMD pipes" and a76["cycles"] == pytest.approx(4e6)
    assert a55["cycles"] == pytest.approx(8e6)  # A55: a Q-form FMLA takes both 64-bit pipes: 1 per cycle
    scalar = dict.fromkeys(CLASSES, 0.0) | {"other scalar": 9e6, "branches": 1e6}
    assert estimate_cycles(scalar, "cortex-a76")["bound_by"] == "integer pipes"  # 9 M / 3 ALUs > 10 M / 4 wide
    assert estimate_cycles(scalar, "cortex-a55")["cycles"] == pytest.approx(5e6)  # A55: 10 M / dual issue
    with pytest.raises(Exception, match="no cycle table for CPU 'cortex-x9'"):
        estimate_cycles(gemm, "cortex-x9")


def _entry(backend, precision, cycles, instructions=None):
    mix = dict.fromkeys(CLASSES, 0.0) | {"other scalar": instructions or cycles}
    cost = {"cpu": "cortex-a76", "instructions": instructions or cycles, "mix": mix, "cycles": {"cycles": cycles}}
    return {"backend": backend, "precision": precision, "path": f"{backend}_{precision}", "cost": cost}


def test_cost_gates_judge_int8_against_its_own_fp32_and_budgets():
    entries = [
        _entry("tflite", "fp32", 12e6),  # the wrong fp32 reference for executorch int8 would pass it (0.75)
        _entry("tflite", "int8", 4e6),
        _entry("executorch", "fp32", 10e6),
        _entry("executorch", "int8", 9e6),  # 0.9 of its fp32: the planted-slow-down shape
    ]
    failures = judge_cost(entries, CostConfig(max_int8_vs_fp32=0.8), "android-a76")
    assert list(failures) == ["executorch_int8"]
    assert "0.90x the executorch fp32 artifact's M estimated cycles" in failures["executorch_int8"][0]
    budget = judge_cost(entries, CostConfig(max_int8_vs_fp32=None, max_mcycles={"cortex-a76": 9.5}), "android-a76")
    assert set(budget) == {"executorch_fp32", "tflite_fp32"} and "> budget 9.5 M on android-a76" in str(budget)
    by_device = judge_cost(entries, CostConfig(max_int8_vs_fp32=None, max_mcycles={"android-a76": 5}), "android-a76")
    assert set(by_device) == {"executorch_fp32", "executorch_int8", "tflite_fp32"}
    rows = {(r["a"], r["b"]): r for r in ratios(entries)}
    assert rows["executorch int8", "executorch fp32"]["cycles"] == pytest.approx(0.9)
    assert rows["tflite int8", "executorch int8"]["cycles"] == pytest.approx(4 / 9)
    doc = {"cost": {"cpu": "cortex-a76", "core": None, "config": CostConfig().model_dump(), "ratios": ratios(entries)}}
    doc["artifacts"] = [e | {"cost": e["cost"] | {"mnemonics": {}, "functions": []}} for e in entries]
    for e in doc["artifacts"]:
        e["cost"]["cycles"] |= {"bound_by": "issue"}
    md = render_cost_markdown(doc)
    assert "## ARM cost profile (cortex-a76)" in md and "| executorch | int8 | 9.000 | 9.000 | issue |" in md


def test_counting_emulator_build_names_what_is_missing(monkeypatch):
    """Setup on a host without ninja and glib's headers says which, and the apt command that installs them."""
    import shutil as sh
    import subprocess

    from edgevit.targets import qemu_build
    from edgevit.utils import EdgeVitError

    which = sh.which
    monkeypatch.setattr(qemu_build.shutil, "which", lambda tool: None if tool == "ninja" else which(tool))
    real_run = subprocess.run

    def no_glib(cmd, *a, **kw):
        if cmd[:2] == ["pkg-config", "--exists"]:
            return subprocess.CompletedProcess(cmd, 1)
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(qemu_build.subprocess, "run", no_glib)
    missing = dict(qemu_build.missing_prerequisites())
    assert missing["ninja"] == "ninja-build" and missing["glib-2.0 headers"] == "libglib2.0-dev"
    with pytest.raises(EdgeVitError, match=r"needs ninja, glib-2.0 headers, gmodule-2.0 headers, not found.*"
                       r"`apt-get install libglib2.0-dev ninja-build`"):  # fmt: skip
        qemu_build.check_prerequisites()


# --- on the emulated target (slow) --------------------------------------------------------------------------------

LINEARS = ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]  # the digits ViT's linear layers


@pytest.fixture(scope="module")
def et_run(arm64_target, tiny_digits_run, tmp_path_factory):
    """A copy of the session's digits run with its LiteRT fp32/int8 and ONNX fp32 artifacts plus ExecuTorch fp32 and
    int8 exported into it (as ``edgevit export RUN`` would, with the recipe's calibration)."""
    from edgevit.recipe import Target, stage_export

    run = copy_run(
        tiny_digits_run,
        tmp_path_factory.mktemp("arm-cost") / "run",
        ["tflite_fp32.tflite", "tflite_int8.tflite", "onnx_fp32.onnx"],
    )
    stage_export(run, [Target(backend="executorch", precision=p) for p in ("fp32", "int8")], progress=False)
    return run


@pytest.mark.slow
def test_executorch_litert_onnx_agree_and_are_profiled_on_arm64(et_run):
    """``edgevit parity RUN --device android-arm64``: fp32 and int8 ExecuTorch and LiteRT and fp32 ONNX artifacts run
    by the aarch64 runtimes under QEMU over the whole validation split agree with their x86 runs and with PyTorch
    (ExecuTorch's .pte files in the aarch64 build of the ExecuTorch release that exported them), every artifact
    gets a cost profile whose mix sums to its instructions, and the report names the runtime build that ran."""
    timings = et_run / "pi5-timings.csv"  # two artifacts "timed on the device" (the fit's arithmetic is checked)
    timings.write_text("artifact,ms\nexecutorch_int8.pte,0.31\ntflite_fp32.tflite,0.42\n")
    proc = edgevit_cli("parity", str(et_run), "--device", "android-arm64", "--calibrate", str(timings), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((et_run / "parity-android-arm64.json").read_text())
    cal = doc["cost"]["calibration"]
    mcycles = {a["path"].split("/")[-1]: a["cost"]["cycles"]["cycles"] / 1e6 for a in doc["artifacts"]}
    k = (mcycles["executorch_int8.pte"] * 0.31 + mcycles["tflite_fp32.tflite"] * 0.42) / (
        mcycles["executorch_int8.pte"] ** 2 + mcycles["tflite_fp32.tflite"] ** 2
    )
    assert cal["ms_per_mcycle"] == pytest.approx(k) and cal["core"] == "cortex-a76"
    assert all(
        a["cost"]["calibrated_ms"] == pytest.approx(k * mcycles[a["path"].split("/")[-1]]) for a in doc["artifacts"]
    )
    rows = {(a["backend"], a["precision"]): a for a in doc["artifacts"]}
    assert set(rows) == {(b, p) for b in ("executorch", "tflite") for p in ("fp32", "int8")} | {("onnx", "fp32")}
    assert doc["passed"] is True and doc["num_images"] == 360 and doc["reference"]["top1"] >= 85.0
    assert doc["device"]["name"] == "android-arm64" and doc["device"]["emulated"] is True
    for (backend, precision), a in rows.items():
        host, cost = a["vs_host"], a["cost"]
        print(
            f"{backend} {precision}: ARM64 vs x86 max abs {host['max_abs_err']:.2e} agreement {host['agreement']:.4f}"
            f"; {cost['instructions'] / 1e6:.3f} M instructions, {cost['cycles']['cycles'] / 1e6:.3f} M est. "
            f"cycles ({cost['cycles']['bound_by']}), whole process {cost['process_instructions'] / 1e6:.0f} M"
        )
        assert a["passed"] and a["execution"] == "emulated device android-arm64", a["failures"]
        assert a["runnable"] and a["latency_ms"] is None  # emulated time is not device time: no latency
        if precision == "fp32":  # the same graph on NEON kernels vs the host's x86 ones: accumulation order only
            assert host["max_abs_err"] < 1e-4 and host["agreement"] == 1.0, host
            assert a["agreement"] >= 0.995 and a["cosine"] >= 0.9999, a
        else:
            assert host["agreement"] >= 0.99, host
            assert a["agreement"] >= 0.98 and doc["reference"]["top1"] - a["top1"] <= 1.0, a
        assert sum(cost["mix"].values()) == pytest.approx(cost["instructions"], abs=1.0)  # classes partition it
        assert cost["cpu"] == "cortex-a76" and cost["instructions"] > 1e5
        assert cost["cycles"]["cycles"] == max(cost["cycles"]["by_resource"].values())
    for backend in ("executorch", "tflite"):  # int8 runs dot-product kernels where fp32 runs fmla
        assert (
            rows[backend, "int8"]["cost"]["mix"]["sdot/udot"] > 0 == rows[backend, "fp32"]["cost"]["mix"]["sdot/udot"]
        )
        assert rows[backend, "fp32"]["cost"]["mix"]["fmla/fmul"] > rows[backend, "int8"]["cost"]["mix"]["fmla/fmul"]
    pairs = {frozenset((r["a"], r["b"])): r for r in doc["cost"]["ratios"]}
    int8_vs_fp32 = pairs[frozenset(("executorch int8", "executorch fp32"))]
    assert (
        int8_vs_fp32["cycles"] <= CostConfig().max_int8_vs_fp32
        and frozenset(("executorch fp32", "tflite fp32")) in pairs
    )
    assert doc["cost"]["cpu"] == "cortex-a76" and doc["cost"]["core"]["simd"] == 2
    versions = doc["device"]["versions"]
    et = importlib.metadata.version("executorch")  # the host's: the release that wrote the .pte files
    assert versions["executorch"].startswith(f"ExecuTorch {et} runtime") and "aarch64 wheel" in versions["executorch"]
    parts = {p["what"]: p for p in doc["device"]["parts"]}
    assert parts["executorch runtime"]["note"] == versions["executorch"] and parts["cost profile"]["how"] == "real"
    md = (et_run / "report-android-arm64.md").read_text()
    assert "## ARM cost profile (cortex-a76)" in md and "**Overall: PASS**" in md
    assert "QEMU user-mode emulation" in md and "not device latency" in md
    assert not (et_run / "parity.json").exists()  # the host report is a separate file, never overwritten
    assert "| calibrated ms |" in md and "Calibrated on 2 real timings from pi5-timings.csv" in md
    assert 'id="plot-cost"' in (et_run / "report-android-arm64.html").read_text()


@pytest.mark.slow
def test_two_runs_of_one_artifact_give_identical_counts(et_run, arm64_target):
    """The counts are exact: the same artifact counted twice (fresh processes, fresh temp dirs) gives the same
    per-inference instructions, mix and window totals, to the instruction (LiteRT and ExecuTorch; ONNX Runtime's
    repeat to ~0.1 %, see edgevit.targets.cost)."""
    from edgevit.data import digits
    from edgevit.targets.cost import measure

    image = digits(img_size=32).val[0][0].numpy()
    for name in ("executorch_int8.pte", "tflite_fp32.tflite"):
        backend = "executorch" if name.endswith(".pte") else "tflite"
        a, b = (measure(arm64_target, backend, et_run / "artifacts" / name, image, "cortex-a76") for _ in range(2))
        print(f"{name}: windows {a['window_instructions']} and {b['window_instructions']}")
        assert a["window_instructions"] == b["window_instructions"] and a["mix"] == b["mix"]
        assert a["instructions"] == b["instructions"] and a["functions"] == b["functions"]


@pytest.mark.slow
def test_int8_artifact_with_float_linears_fails_the_cost_gate(et_run, tmp_path):
    """A planted slow-down: an ExecuTorch int8 export whose linear layers were left fp32 (``quantize.keep_float``)
    is as accurate as fp32, so accuracy parity passes it; the cost gate (int8 <= 0.8x its fp32's estimated cycles)
    fails it, and ``edgevit parity`` exits 1 as for an accuracy miss."""
    import yaml

    from edgevit.recipe import Target, stage_export

    run = copy_run(et_run, tmp_path / "run", ["executorch_fp32.pte"])
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe.setdefault("quantize", {})["keep_float"] = LINEARS
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (planted,) = stage_export(run, [Target(backend="executorch", precision="int8")], progress=False)
    assert planted.info["float_modules"] == LINEARS
    proc = edgevit_cli("parity", str(run), "--device", "android-arm64", timeout=1800)
    assert proc.returncode == 1, proc.stderr[-3000:]
    doc = json.loads((run / "parity-android-arm64.json").read_text())
    rows = {a["precision"]: a for a in doc["artifacts"]}
    fp32, int8 = rows["fp32"], rows["int8"]
    assert fp32["passed"] is True and int8["passed"] is False
    assert all(f.startswith("cost: int8 costs") for f in int8["failures"]), int8["failures"]  # accuracy is fine
    ratio = int8["cost"]["cycles"]["cycles"] / fp32["cost"]["cycles"]["cycles"]
    print(f"planted int8 with float linears: {ratio:.3f}x its fp32's estimated cycles; {int8['failures']}")
    assert ratio > 0.8
    shutil.rmtree(run)


@pytest.mark.slow
def test_profiles_count_on_their_own_core(et_run, arm64_target):
    """XNNPACK picks kernels from the emulated core's features: int8 GEMMs use SMMLA (i8mm) on a Cortex-A710 and
    SDOT on a Cortex-A55, and an A55 (in-order, one Q-form SIMD op per cycle) needs more cycles than an A76."""
    from edgevit.targets.cost import measure

    image = np.zeros((3, 32, 32), np.float32)
    pte = et_run / "artifacts" / "executorch_int8.pte"
    a710, a55 = (measure(arm64_target, "executorch", pte, image, cpu) for cpu in ("cortex-a710", "cortex-a55"))
    a76 = measure(arm64_target, "executorch", pte, image, "cortex-a76")
    print({c["cpu"]: (c["instructions"], c["mix"]["sdot/udot"], c["mix"]["smmla"]) for c in (a55, a76, a710)})
    assert a710["mix"]["smmla"] > 0 and a76["mix"]["smmla"] == 0 == a55["mix"]["smmla"]
    assert a55["mix"]["sdot/udot"] > 0 and a55["cycles"]["cycles"] > a76["cycles"]["cycles"]
