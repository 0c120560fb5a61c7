"""The CLI as users and scripts call it: useful help, one-line errors, non-zero exits."""

import json

import pytest
from conftest import edgevit_cli

VERBS = ["train", "quantize", "export", "parity", "run", "models"]


def _one_line_error(proc, pattern):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and pattern in lines[-1], proc.stderr[-2000:]


def test_help_lists_every_verb():
    proc = edgevit_cli("--help")
    assert proc.returncode == 0
    for verb in VERBS:
        assert verb in proc.stdout


@pytest.mark.parametrize(
    "verb, must_mention",
    [
        ("train", ["--out", "--resume", "checkpoints"]),
        ("quantize", ["int8", "calibrat"]),
        ("export", ["--model", "--backend", "--precision", "--img-size", "--out", "randomly initialised"]),
        ("parity", ["validation", "exits 1"]),
        ("run", ["train", "quantize", "export", "parity"]),
        ("models", ["--json"]),
    ],
)
def test_each_verb_help_is_useful_on_its_own(verb, must_mention):
    proc = edgevit_cli(verb, "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for word in must_mention:
        assert word in text, f"`edgevit {verb} --help` should mention {word!r}"


def test_models_json_reports_backbone_and_full_counts():
    proc = edgevit_cli("models", "vit_*", "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    ti = rows["vit_tiny_patch16"]
    assert ti["params"] == 5717416 and round(ti["backbone_params"] / 1e6, 1) == 5.5
    assert ti["flops"] == 2 * ti["macs"] and round(ti["macs"] / 1e9, 2) == 1.25
    assert round(rows["vit_gigantic_patch14"]["backbone_params"] / 1e6) == 1843  # built on meta: instant


def test_unknown_model(tmp_path):
    proc = edgevit_cli("export", "--model", "vit_tiny_patch61", "--backend", "onnx", "--out", str(tmp_path / "m.onnx"))
    _one_line_error(proc, "unknown model 'vit_tiny_patch61'; did you mean vit_tiny_patch16")


def test_unknown_recipe_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: vit_tiny_patch16}\ntrain: {epochz: 3}\n")
    proc = edgevit_cli("run", str(recipe), "--out", str(tmp_path / "run"))
    _one_line_error(proc, "recipe key 'train.epochz': unknown key")
    assert not (tmp_path / "run").exists()  # failed before any work


def test_missing_dataset_path(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: vit_tiny_patch16}}\ndata: {{name: imagefolder, root: {tmp_path / 'nope'}}}\n")
    proc = edgevit_cli("train", str(recipe), "--out", str(tmp_path / "run"))
    _one_line_error(proc, "dataset path not found")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    proc = edgevit_cli(
        "export",
        "--model",
        "vit_tiny_patch16",
        "--weights",
        str(bad),
        "--backend",
        "onnx",
        "--out",
        str(tmp_path / "m.onnx"),
    )
    _one_line_error(proc, "is corrupt or not a safetensors file")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_run_dir(tmp_path):
    proc = edgevit_cli("parity", str(tmp_path / "nope"))
    _one_line_error(proc, "run directory not found")


def test_quantize_rejects_incomplete_or_impossible_targets(tmp_path):
    proc = edgevit_cli("quantize", str(tmp_path), "--backend", "onnx")
    _one_line_error(proc, "give both --backend and --precision")
    proc = edgevit_cli("quantize", str(tmp_path), "--backend", "onnx", "--precision", "w4-lut")
    _one_line_error(proc, "onnx exports fp32, int8, not 'w4-lut'")


def test_export_registry_name_random_init(tmp_path):
    """A registry name without weights exports a randomly initialised model: does the architecture lower?"""
    out = tmp_path / "vit.pte"
    proc = edgevit_cli(
        "export", "--model", "vit_mini_patch28", "--img-size", "56", "--backend", "executorch", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file() and out.stat().st_size > 4 * 5e6  # ~5M fp32 parameters
    assert "partitions" in proc.stderr


def test_bench_measures_every_runtime_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    proc = edgevit_cli(
        "bench", "vit_mini_patch28", "--img-size", "56", "--runs", "3", "--warmup", "1", "-p", "fp32", "-p", "int8",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    rows = {(r["backend"], r["precision"]): r for r in doc["results"]}
    backends = ("executorch", "tflite", "onnx")
    assert set(rows) == {("eager", "fp32")} | {(b, p) for b in backends for p in ("fp32", "int8")}
    assert rows["tflite", "fp32"]["vs_litert"] == 1.0 and doc["gemm_peak_gflops"] > 0
    assert rows["executorch", "fp32"]["info"]["ops_outside_delegate"] == {}
    for r in rows.values():
        assert r["macs"] == rows["eager", "fp32"]["macs"] > 0 and r["latency_ms"]["p90"] >= r["latency_ms"]["median"]
    for backend in backends:
        fp32, int8 = rows[backend, "fp32"], rows[backend, "int8"]
        assert fp32["vs_fp32"] == 1.0 and int8["vs_fp32"] == int8["latency_ms"]["median"] / fp32["latency_ms"]["median"]
        assert int8["size_bytes"] < 0.35 * fp32["size_bytes"], backend
    assert "| vit_mini_patch28 | 56 |" in proc.stdout and "| int8 |" in proc.stdout


@pytest.mark.slow
def test_bench_export_times_each_backend_beside_executorchs_own_path(tmp_path):
    out = tmp_path / "export.json"
    proc = edgevit_cli("bench", "--export", "vit_mini_patch28", "--img-size", "56", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["backend"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"executorch", "tflite", "coreml", "onnx"}
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 and r["nodes"] > 10 for r in rows.values())
    et = rows["executorch"]
    assert et["vs_stock"] == pytest.approx(et["wall_s"] / et["stock_wall_s"]) and "vs_stock" not in rows["onnx"]
    assert "| vit_mini_patch28 | 56 |" in proc.stdout
