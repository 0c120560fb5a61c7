import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.export import Artifact
from edgevit.parity import (
    ParityConfig,
    Tolerance,
    check,
    judge,
    kl_div,
    latency,
    metrics,
    psnr_db,
    render_markdown,
    top_k,
)


def test_metrics_on_known_logits():
    ref = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
    got = ref.copy()
    got[3] = [0.0, 1.0, 0.0]  # one prediction flips, and is orthogonal to the reference
    labels = np.array([0, 1, 2, 1])
    m = metrics(got, ref, labels)
    assert m["agreement"] == 0.75
    assert m["top1"] == 100.0  # the flip happens to be correct
    assert m["max_abs_err"] == 1.0
    assert m["mean_abs_err"] == pytest.approx(2 / 12)
    assert m["cosine"] == pytest.approx(0.75)
    assert m["top5"] == 100.0  # 3 classes: every label is in the top 5


def test_top5_counts_labels_ranked_within_five():
    logits = np.array([np.arange(10, 0, -1), np.arange(10, 0, -1), np.arange(10, 0, -1)], np.float32)  # class i ranks i
    assert top_k(logits, np.array([0, 4, 5]), 5) == pytest.approx(200 / 3)  # ranks 1 and 5 count, rank 6 does not
    assert top_k(logits, np.array([0, 4, 5]), 1) == pytest.approx(100 / 3)


def test_psnr_and_kl_on_known_numbers():
    ref = np.array([[0.0, 10.0]], np.float32)
    # peak = reference range 10, MSE = (1^2 + 0^2) / 2 = 0.5: 10 log10(100 / 0.5) = 23.0103 dB
    assert psnr_db(np.array([[1.0, 10.0]], np.float32), ref) == pytest.approx(10 * np.log10(200), abs=1e-9)
    assert psnr_db(ref, ref) == float("inf")
    # softmax([0, 0]) = (1/2, 1/2); softmax([ln 3, 0]) = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 0.143841 nats
    p, q = np.array([[0.0, 0.0]]), np.array([[np.log(3.0), 0.0]])
    assert kl_div(q, p) == pytest.approx(0.5 * np.log(2 / 3) + 0.5 * np.log(2), abs=1e-12)
    assert kl_div(p + 5.0, p) == pytest.approx(0.0, abs=1e-15)  # softmax ignores a shift
    assert kl_div(np.array([[1000.0, -1000.0]]), np.array([[999.0, -1000.0]])) < 1e-300  # stable at large logits
    m = metrics(ref.copy(), ref, np.array([1]))
    assert m["psnr_db"] is None and m["kl_div"] == 0.0  # identical: infinite PSNR is stored as null (JSON has no inf)


def test_psnr_and_kl_tolerances_are_judged_and_partial_overrides_keep_the_defaults():
    tol = Tolerance(min_agreement=0.9, max_top1_drop=1.0, min_psnr_db=30.0, max_kl_div=1e-3)
    m = {"agreement": 1.0, "top1": 98.0, "cosine": 1.0, "psnr_db": 25.0, "kl_div": 2e-3}
    assert [str(v) for v in judge(m, 98.0, tol)] == ["PSNR 25.0 dB < 30.0", "KL divergence 2.00e-03 > 0.001"]
    assert judge(m | {"psnr_db": None, "kl_div": 0.0}, 98.0, tol) == []  # identical logits pass
    cfg = ParityConfig(tolerances={"int8": {"min_agreement": 0.9}})
    assert cfg.tolerance("int8").min_agreement == 0.9
    assert cfg.tolerance("int8").min_cosine == 0.98 and cfg.tolerance("int8").max_top1_drop == 1.0  # defaults kept
    assert cfg.tolerance("fp32").min_agreement == 0.995
    with pytest.raises(ValueError, match="min_agrement"):
        ParityConfig(tolerances={"int8": {"min_agrement": 0.9}})


def test_latency_is_a_distribution():
    import time

    def runner(x):
        time.sleep(0.002)
        return x

    lat = latency(runner, np.zeros((1, 2, 2), np.float32), warmup=2, runs=7, threads=3)
    assert lat["runs"] == 7 and lat["warmup"] == 2 and lat["threads"] == 3 and len(lat["samples"]) == 7
    assert 2.0 <= lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
    assert lat["mean"] == pytest.approx(np.mean(lat["samples"]), rel=1e-4)
    assert lat["std"] == pytest.approx(np.std(lat["samples"]), rel=1e-3, abs=1e-5)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_rss_sees_a_transient_allocation():
    """In a fresh process: in a long-lived one (a test worker) the allocator may serve the 64 MiB from pages an
    earlier test freed but kept resident, and the rise above the entry RSS reads 0 (documented on PeakRSS)."""
    code = (
        "import numpy as np\n"
        "from edgevit.measure import PeakRSS\n"
        "with PeakRSS() as mem:\n"
        "    a = np.ones(64 * 2**20 // 8); del a  # 64 MiB, touched\n"
        "with PeakRSS() as small:\n"
        "    np.ones(1000).sum()\n"
        "print(mem.mb, small.mb)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    big, small = float(out[-2]), float(out[-1])
    assert 60 <= big < 200, big
    assert small < 16, small  # the high-water mark was reset, not carried over


def test_markdown_renders_a_schema_1_file():
    """An old parity.json (no top5/PSNR/KL/memory, latency median and p90 only) still renders; gaps show as –."""
    doc = {
        "schema_version": 1,
        "num_images": 4,
        "threads": 2,
        "reference": {"backend": "pytorch", "precision": "fp32", "top1": 98.0, "latency_ms": {"median": 2.0, "p90": 3}},
        "passed": True,
        "artifacts": [
            {
                "backend": "onnx", "precision": "fp32", "quantizer": None, "path": "a.onnx", "size_bytes": 2048,
                "runnable": True, "reason": None, "execution": "native", "top1": 98.0, "agreement": 1.0,
                "max_abs_err": 1e-6, "mean_abs_err": 1e-7, "cosine": 1.0,
                "latency_ms": {"median": 1.0, "p90": 1.5, "runs": 5, "warmup": 1}, "passed": True, "failures": [],
            }
        ],
        "device": {"name": "host", "emulated": False},
    }  # fmt: skip
    md = render_markdown(doc)
    assert "top-5 –%" in md
    assert (
        "| onnx | fp32 | – | yes | 98.00 | – | 1.0000 | 1.00e-06 | 1.00e-07 | 1.000000 | – | – | 1.000 | 1.500 | – |"
        in md
    )
    assert "2.00× faster | – | 2 | pass |" in md


def test_judge_names_each_violation():
    tol = Tolerance(min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.999)
    ok = {"agreement": 0.995, "top1": 97.5, "cosine": 0.9995}
    assert judge(ok, 98.0, tol) == []
    bad = {"agreement": 0.9, "top1": 95.0, "cosine": 0.99}
    fails = judge(bad, 98.0, tol)
    assert [(v.metric, v.value, v.bound) for v in fails] == [
        ("agreement", 0.9, 0.99),
        ("top1_drop", 3.0, 1.0),
        ("cosine", 0.99, 0.999),
    ]  # structured: the report and edgevit.testing read the same violations
    assert [str(v) for v in fails] == [
        "agreement 0.9000 < 0.99",
        "top-1 drop 3.00 points > 1.0",
        "cosine 0.990000 < 0.999",
    ]
    assert [v.margin for v in fails] == ["short by 0.0900", "over by 2.00 points", "short by 9.00e-03"]


def test_check_flags_a_faulty_artifact_and_emulates_core_ml_off_macos(digits32, tiny_vit, tmp_path):
    """An artifact with a planted fault (one class's bias raised) fails; Core ML off macOS runs in the emulator,
    is judged by the fp16 tolerance and says so (``execution``; no latency)."""
    import platform

    import torch

    from edgevit.backends import get_backend

    images = np.stack([digits32.val[i][0].numpy() for i in range(40)])
    labels = np.array([int(digits32.val[i][1]) for i in range(40)])

    def ref(x):
        with torch.no_grad():
            return tiny_vit(torch.from_numpy(x)).numpy()

    onnx = Artifact("onnx", "fp32", tmp_path / "m.onnx")
    bad = Artifact("onnx", "fp32", tmp_path / "bad.onnx")
    coreml = Artifact("coreml", "fp16", tmp_path / "m.mlpackage")
    example = torch.from_numpy(images[:1])
    for a in (onnx, bad, coreml):
        get_backend(a.backend).convert(tiny_vit, example, a.path, a.precision)
    faulty = tiny_vit.__class__(tiny_vit.cfg)
    faulty.load_state_dict(tiny_vit.state_dict())
    with torch.no_grad():
        faulty.head.bias[3] += 10.0  # one class always wins
    get_backend("onnx").convert(faulty.eval(), example, bad.path, "fp32")
    report = check([onnx, bad, coreml], images, labels, ref, ParityConfig(warmup=1, runs=3), progress=False)
    good_row, bad_row, coreml_row = report.artifacts
    assert good_row["passed"] is True and good_row["agreement"] == 1.0
    assert bad_row["passed"] is False and bad_row["agreement"] < 0.5
    assert report.passed is False
    doc = report.to_json()
    json.dumps(doc)  # serialisable
    md = render_markdown(doc)
    print(md)
    assert "**Overall: FAIL**" in md
    assert good_row["execution"] == "native"
    assert doc["schema_version"] == 2 and 0 <= doc["reference"]["top5"] <= 100
    assert (
        good_row["psnr_db"] > 60
        and good_row["kl_div"] < 1e-6
        and good_row["top5"] == pytest.approx(doc["reference"]["top5"])
    )
    assert bad_row["psnr_db"] < good_row["psnr_db"] - 30 and bad_row["kl_div"] > 1.0  # 10-logit bias: far off
    lat = good_row["latency_ms"]
    assert lat["runs"] == 3 and lat["threads"] == 2 and len(lat["samples"]) == 3 and lat["min"] <= lat["median"]
    assert good_row["peak_memory_mb"] is not None and good_row["peak_memory_mb"] >= 0
    assert "| top-5 % |" in md and "| PSNR dB | KL nats |" in md and "| std ms |" in md and "| peak MiB |" in md
    assert coreml_row["passed"] is True and coreml_row["agreement"] >= 0.99 and coreml_row["size_bytes"] > 0
    assert 0 < coreml_row["max_abs_err"] < 0.05  # fp16: close to, not equal to, PyTorch fp32
    if platform.system() != "Darwin":
        assert coreml_row["execution"].startswith("emulated (NumPy MIL interpreter, per-op fp16 rounding")
        assert coreml_row["latency_ms"] is None and coreml_row["peak_memory_mb"] is None
        assert {"what": "coreml runtime", "how": "emulated", "note": coreml_row["execution"]} in doc["device"]["parts"]
        assert "| coreml | fp16 | – | emulated |" in md and "Emulated here, not run by the real runtime" in md


def test_pareto_front_keeps_only_non_dominated_variants():
    from edgevit.parity.compress import pareto

    rows = [
        {"name": "fp32", "top1": 98.0, "latency_ms": 2.0, "size_bytes": 400},
        {"name": "int8", "top1": 97.8, "latency_ms": 1.0, "size_bytes": 100},  # faster, smaller: on the front
        {"name": "bad", "top1": 97.0, "latency_ms": 1.5, "size_bytes": 100},  # int8 beats it everywhere
        {"name": "big", "top1": 98.0, "latency_ms": 2.0, "size_bytes": 500},  # fp32 ties it and is smaller
        {"name": "coreml", "top1": None, "latency_ms": None, "size_bytes": 50},  # not runnable here
    ]
    assert [r["name"] for r in pareto(rows)] == ["int8", "fp32"]


def test_core_ml_compute_units_set_the_emulated_precision(digits32, tiny_vit, tmp_path):
    """One fp32 .mlpackage: under CPU_ONLY it is emulated in fp32 (error vs PyTorch at float32 level); under ALL
    (the GPU and Neural Engine allowed, which compute in fp16) in fp16, exactly as the fp16 conversion of the same
    model; ``execution`` says which. A device profile's compute units reach the emulator through ``check``."""
    import torch

    from edgevit.backends import get_backend
    from edgevit.bench import randomize_
    from edgevit.export import export
    from edgevit.parity import ParityConfig, check
    from edgevit.parity.devices import DeviceProfile, ProfileDevice

    randomize_(tiny_vit)
    images = np.stack([digits32.val[i][0].numpy() for i in range(24)])
    labels = np.array([int(digits32.val[i][1]) for i in range(24)])
    example = torch.from_numpy(images[:1])
    fp32 = export(tiny_vit, example, "coreml", tmp_path / "m32.mlpackage", precision="fp32")
    fp16 = export(tiny_vit, example, "coreml", tmp_path / "m16.mlpackage", precision="fp16")
    assert fp32.info["compute_precision"] == "fp32" and fp16.info["compute_precision"] == "fp16"
    with torch.no_grad():
        ref = tiny_vit(torch.from_numpy(images)).numpy()
    scale = float(np.abs(ref).max())

    def logits(art, units):
        run = get_backend("coreml").emulate(art.path, units)
        return np.concatenate([run(img[None]) for img in images]), run.execution

    cpu, cpu_how = logits(fp32, "CPU_ONLY")
    allu, all_how = logits(fp32, "ALL")
    half, _ = logits(fp16, None)
    cpu_err, all_err = np.abs(cpu - ref).max() / scale, np.abs(allu - ref).max() / scale
    print(f"fp32 package vs PyTorch, relative max abs err: CPU_ONLY {cpu_err:.2e}, ALL {all_err:.2e}")
    assert cpu_err < 1e-5  # float32 level
    assert 1e-4 < all_err < 3e-2  # float16 level (fp16 has an 11-bit significand: ~5e-4 per op)
    np.testing.assert_array_equal(allu, half)  # the same program an fp16 conversion gives
    assert cpu_how == "emulated (NumPy MIL interpreter, fp32; compute units CPU_ONLY)"
    assert "fp32 program run in fp16, as compute units ALL let the GPU/Neural Engine run it" in all_how
    assert "per-op fp16 rounding" in logits(fp16, "CPU_ONLY")[1]  # an fp16 program is fp16 on any units

    def profile(units):
        p = DeviceProfile(name="mac", description="d", backends=["coreml"], precisions=["fp32"], compute_units=units)
        return ProfileDevice(p)

    cfg = ParityConfig(warmup=0, runs=1)
    ref_fn = lambda x: tiny_vit(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    for units in ("CPU_ONLY", "CPU_AND_NE"):
        doc = check([fp32], images, labels, ref_fn, cfg, progress=False, device=profile(units)).to_json()
        (row,) = doc["artifacts"]
        err = row["max_abs_err"] / scale  # float32 level on the CPU, float16 level with the Neural Engine allowed
        assert (err < 1e-5) if units == "CPU_ONLY" else (err == pytest.approx(all_err, rel=0.05)), (units, err)
        note = {p["what"]: p for p in doc["device"]["parts"]}["coreml runtime"]["note"]
        if units == "CPU_AND_NE":
            assert "fp16" in row["execution"] and "fp32 programs are emulated in fp16" in note
        else:
            assert "fp16" not in row["execution"] and "each program in its own precision" in note


def test_core_ml_compute_units_reach_mlmodel_on_macos(tmp_path, monkeypatch):
    """On macOS a profile's compute units are passed to ``MLModel(..., compute_units=ct.ComputeUnit[...])``
    (recorded here with a stand-in MLModel, as this host has no Core ML runtime), and the report says so."""
    import platform

    import coremltools as ct

    from edgevit import EdgeVitError
    from edgevit.parity import ParityConfig, check
    from edgevit.parity.devices import get_device

    seen = []

    class RecordingMLModel:
        def __init__(self, path, **kw):
            seen.append(kw.get("compute_units"))

        def predict(self, inputs):
            return {"logits": np.asarray(inputs["image"]).reshape(1, -1)[:, :10]}

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(ct.models, "MLModel", RecordingMLModel)
    (tmp_path / "m.mlpackage").mkdir()
    art = Artifact("coreml", "fp16", tmp_path / "m.mlpackage")
    art.load(1)
    art.load(1, "CPU_AND_NE")
    assert seen == [None, ct.ComputeUnit.CPU_AND_NE]  # None: Core ML's default
    with pytest.raises(EdgeVitError, match=r"unknown Core ML compute units 'NE'; choose one of ALL, CPU_AND_GPU"):
        art.load(1, "NE")

    images = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = lambda x: x.reshape(1, -1)[:, :10]  # noqa: E731  (the stand-in's logits: identical)
    report = check([art], images, np.zeros(4, int), ref, ParityConfig(warmup=0, runs=1), False, get_device("iphone"))
    assert seen[-1] == ct.ComputeUnit.CPU_AND_NE and report.artifacts[0]["execution"] == "native"
    part = {p["what"]: p for p in report.device["parts"]}["coreml runtime"]
    assert part == {
        "what": "coreml runtime",
        "how": "real",
        "note": "MLModel.predict on this Mac with compute_units=CPU_AND_NE",
    }
