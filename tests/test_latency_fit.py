"""`edgevit parity --calibrate FILE` (edgevit.parity.latency_fit): real-device timings fit ms per estimated cycle on
one core and label every counted artifact with calibrated milliseconds; bad timings files are one-line errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import edgevit_cli

from edgevit import EdgeVitError
from edgevit.parity.cost import render_cost_html, render_cost_markdown
from edgevit.parity.latency_fit import apply, fit, read_timings
from edgevit.recipe import Recipe

# Estimated cycles of the zoo models on the emulated Cortex-A76 (docs/guides/arm-cost.md, ExecuTorch fp32 and int8
# at native resolution), as M cycles; the "timings" are those cycles at 2.4 GHz with a few percent of spread.
MCYCLES = {"deit_fp32.pte": 1102.4, "deit_int8.pte": 376.0, "mvit_fp32.pte": 162.3, "mvit_int8.pte": 121.7}
MS = {"deit_fp32.pte": 470.1, "deit_int8.pte": 152.2, "mvit_fp32.pte": 69.9, "mvit_int8.pte": 52.0}


def _report(cpu="cortex-a76"):
    artifacts = [
        {"path": f"artifacts/{name}", "backend": "executorch", "precision": name[5:9], "cost": _cost(mc)}
        for name, mc in MCYCLES.items()
    ]
    artifacts.append(
        {"path": "artifacts/coreml_fp16.mlpackage", "backend": "coreml", "precision": "fp16", "cost": None}
    )
    return SimpleNamespace(artifacts=artifacts, cost={"cpu": cpu, "core": {}, "config": {}, "ratios": []})


def _cost(mcycles):
    return {
        "instructions": mcycles * 1.1e6,
        "cycles": {"cycles": mcycles * 1e6, "bound_by": "simd"},
        "mix": {"fmla/fmul": mcycles * 0.5e6},
        "functions": [],
    }


def _csv(tmp_path, text, name="timings.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_fit_recovers_the_clock_and_says_how_far_to_trust_it():
    exact = fit([(c, c / 2.4) for c in (100.0, 250.0, 1000.0)])  # a 2.4 GHz core the bound describes exactly
    assert exact["ms_per_mcycle"] == pytest.approx(1 / 2.4) and exact["effective_ghz"] == pytest.approx(2.4)
    assert exact["max_error"] == pytest.approx(0, abs=1e-12) and exact["loo_max_error"] == pytest.approx(0, abs=1e-12)
    # least squares through the origin, by hand: k = sum(c * ms) / sum(c^2)
    noisy = fit([(100.0, 50.0), (200.0, 80.0)])
    assert noisy["ms_per_mcycle"] == pytest.approx((100 * 50 + 200 * 80) / (100**2 + 200**2))
    assert noisy["errors"] == pytest.approx([0.42 * 100 / 50 - 1, 0.42 * 200 / 80 - 1])
    assert noisy["loo_max_error"] is None  # two timings: nothing left out to predict
    # leave-one-out: the outlier predicted from the others is 50 % off
    loo = fit([(100.0, 40.0), (200.0, 80.0), (300.0, 60.0)])
    assert loo["loo_max_error"] == pytest.approx(1.0, rel=1e-9)  # 0.4 ms/Mcycle x 300 = 120 vs 60 measured


def test_calibrated_ms_on_every_counted_artifact_with_the_fit_in_the_report(tmp_path):
    path = _csv(
        tmp_path, "artifact,ms\n# measured on a Raspberry Pi 5, one thread\ndeit_fp32.pte,470.1\nmvit_int8.pte,52.0\n"
    )
    report = _report()
    apply(report, read_timings(path), str(path))
    cal = report.cost["calibration"]
    k = (1102.4 * 470.1 + 121.7 * 52.0) / (1102.4**2 + 121.7**2)
    assert cal["ms_per_mcycle"] == pytest.approx(k) and cal["core"] == "cortex-a76" and len(cal["points"]) == 2
    for a in report.artifacts[:4]:
        assert a["cost"]["calibrated_ms"] == pytest.approx(k * MCYCLES[a["path"].split("/")[1]])
    assert report.artifacts[4]["cost"] is None  # not counted: nothing to label
    assert 0 < cal["max_error"] < 0.05
    md = render_cost_markdown({"artifacts": report.artifacts, "cost": report.cost})
    header = next(line for line in md.splitlines() if line.startswith("| backend |"))
    row = next(line for line in md.splitlines() if line.startswith("| executorch | int8 |") and "376.000" in line)
    assert header.split(" | ")[4] == "calibrated ms" and row.split(" | ")[4] == f"{k * 376.0:.2f}"
    assert "Calibrated on 2 real timings from timings.csv (cortex-a76)" in md and "not a measurement" in md
    html = render_cost_html({"artifacts": report.artifacts, "cost": report.cost})
    assert "<th>calibrated ms</th>" in html and f"<td>{k * 376.0:.2f}</td>" in html


def test_rows_from_other_runs_carry_their_cycles_and_other_cores_are_left_out(tmp_path):
    text = "artifact,ms,mcycles,core\nother_run.tflite,100.0,240.0,cortex-a76\nmvit_fp32.pte,70.0,,cortex-a76\n"
    text += "deit_fp32.pte,900.0,,cortex-a55\n"
    report = _report()
    apply(report, read_timings(_csv(tmp_path, text)), "t.csv")
    points = {p["artifact"]: p["mcycles"] for p in report.cost["calibration"]["points"]}
    assert points == {"other_run.tflite": 240.0, "mvit_fp32.pte": 162.3}  # the A55 row is for another core


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "name,ms\na.pte,1\n",
            r"the header must be artifact,ms with optional mcycles and core columns \(got name,ms\)",
        ),
        ("artifact,ms,clock\na.pte,1,2\n", "the header must be"),
        ("artifact,ms\n", "no timings"),
        ("artifact,ms\n# Pi 5\n\na.pte,-3\n", r"timings.csv:4: ms must be a positive number, got '-3'"),
        ("artifact,ms\na.pte,fast\n", "ms must be a positive number, got 'fast'"),
        ("artifact,ms\na.pte,nan\n", "ms must be a positive number"),
        ("artifact,ms,mcycles\na.pte,3,0\n", "mcycles must be a positive number"),
        ("artifact,ms\n,3\n", "timings.csv:2: no artifact name"),
        ("artifact,ms\na.pte,3,120\n", r"timings.csv:2: more values than the header's columns \(artifact,ms\)"),
        ("artifact,ms\na.pte,\x003\n", r"timings.csv:2: ms must be a positive number, got '\\x003'"),
        (f"artifact,ms\n{'a' * 140_000},3\n", r"timings.csv: not a CSV file \(field larger than field limit"),
    ],
)
def test_a_bad_timings_file_is_a_one_line_error(tmp_path, text, message):
    with pytest.raises(EdgeVitError, match=message) as e:
        read_timings(_csv(tmp_path, text))
    assert "\n" not in str(e.value)


def test_timings_that_do_not_match_the_run_are_one_line_errors(tmp_path):
    with pytest.raises(EdgeVitError, match=r"cannot read it \(FileNotFoundError"):
        read_timings(tmp_path / "missing.csv")
    rows = read_timings(_csv(tmp_path, "artifact,ms\nvit_fp32.pte,3\n"))
    with pytest.raises(EdgeVitError, match=r"vit_fp32.pte not counted in this run \(counted: deit_fp32.pte, .*mcycles"):
        apply(_report(), rows, "t.csv")
    a55 = read_timings(_csv(tmp_path, "artifact,ms,core\ndeit_fp32.pte,3,cortex-a55\n"))
    with pytest.raises(EdgeVitError, match="no timing for cortex-a76 \\(the file has cortex-a55\\)"):
        apply(_report(), a55, "t.csv")
    with pytest.raises(EdgeVitError, match="needs an ARM cost profile"):
        apply(SimpleNamespace(artifacts=[], cost=None), rows, "t.csv")


def test_calibrate_on_a_device_that_does_not_count_fails_before_any_work(tmp_path):
    path = _csv(tmp_path, "artifact,ms\nexecutorch_fp32.pte,3\n")
    proc = edgevit_cli("parity", str(tmp_path / "no-such-run"), "--calibrate", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --calibrate needs a device with an ARM cost profile; host does not count"


def test_calibrate_with_the_cost_profile_off_fails_before_any_work(tmp_path):
    """A run whose recipe turns the cost profile off cannot be calibrated: said at once (before the target is even
    looked at), not after the emulated parity run."""
    run = tmp_path / "run"
    run.mkdir()
    Recipe.from_dict({"model": {"name": "vit_tiny_patch16"}, "parity": {"cost": {"enabled": False}}}).save(
        run / "recipe.yaml"
    )
    path = _csv(tmp_path, "artifact,ms\nexecutorch_fp32.pte,3\n")
    proc = edgevit_cli(
        "parity", str(run), "--device", "android-arm64", "--cache", str(tmp_path / "none"), "--calibrate", str(path)
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"error: --calibrate needs the cost profile, and {run / 'recipe.yaml'} sets parity.cost.enabled: false"
    )
