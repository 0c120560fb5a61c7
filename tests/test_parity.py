import json

import numpy as np
import pytest

from edgevit.export import Artifact
from edgevit.parity import ParityConfig, Tolerance, check, judge, metrics, render_markdown


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


def test_judge_names_each_violation():
    tol = Tolerance(min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.999)
    ok = {"agreement": 0.995, "top1": 97.5, "cosine": 0.9995}
    assert judge(ok, 98.0, tol) == []
    bad = {"agreement": 0.9, "top1": 95.0, "cosine": 0.99}
    fails = judge(bad, 98.0, tol)
    assert len(fails) == 3 and "agreement 0.9000 < 0.99" in fails[0] and "top-1 drop 3.00" in fails[1]


def test_check_flags_a_faulty_artifact_and_emulates_core_ml_off_macos(digits32, tiny_vit, tmp_path):
    """An artifact with a planted fault (one class's bias raised) fails; Core ML off macOS runs in the emulator,
    is judged by the fp16 tolerance and says so (``execution``; no latency)."""
    import platform

    import torch

    from edgevit.export import backend_module

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
        backend_module(a.backend).export(tiny_vit, example, a.path)
    faulty = tiny_vit.__class__(tiny_vit.cfg)
    faulty.load_state_dict(tiny_vit.state_dict())
    with torch.no_grad():
        faulty.head.bias[3] += 10.0  # one class always wins
    backend_module("onnx").export(faulty.eval(), example, bad.path)
    report = check([onnx, bad, coreml], images, labels, ref, ParityConfig(warmup=1, runs=3), progress=False)
    good_row, bad_row, coreml_row = report.artifacts
    assert good_row["passed"] is True and good_row["agreement"] == 1.0
    assert bad_row["passed"] is False and bad_row["agreement"] < 0.5
    assert report.passed is False
    doc = report.to_json()
    json.dumps(doc)  # serialisable
    md = render_markdown(doc)
    assert "**Overall: FAIL**" in md
    assert good_row["execution"] == "native"
    assert coreml_row["passed"] is True and coreml_row["agreement"] >= 0.99 and coreml_row["size_bytes"] > 0
    assert 0 < coreml_row["max_abs_err"] < 0.05  # fp16: close to, not equal to, PyTorch fp32
    if platform.system() != "Darwin":
        assert coreml_row["execution"].startswith("emulated (NumPy MIL interpreter, per-op fp16 rounding")
        assert coreml_row["latency_ms"] is None
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
