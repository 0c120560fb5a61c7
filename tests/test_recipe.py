import os

import pytest
import yaml

from edgevit import EdgeVitError
from edgevit.recipe import Recipe

QUICKSTART = "recipes/quickstart.yaml"


def _raw():
    return yaml.safe_load(open(QUICKSTART))


def test_quickstart_recipe_is_valid():
    r = Recipe.load(QUICKSTART)
    assert r.data.name == "digits" and r.model.name == "vit_tiny_patch16"
    assert {(t.backend, t.precision) for t in r.export.targets} >= {
        ("executorch", "int8"),
        ("tflite", "int8"),
        ("onnx", "int8"),
        ("coreml", "fp16"),
    }
    assert r.parity.tolerance("int8").min_agreement == 0.98


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["train"].update(epocs=3), "recipe key 'train.epocs': unknown key"),
        (lambda d: d.update(trian={}), "recipe key 'trian': unknown key"),
        (lambda d: d["train"].update(epochs="many"), "recipe key 'train.epochs'"),
        (lambda d: d["train"].update(lr=-1), "recipe key 'train.lr': Input should be greater than 0"),
        (lambda d: d["parity"]["tolerances"]["int8"].update(min_agreement=2), "tolerances.int8.min_agreement"),
        (lambda d: d["export"]["targets"].append({"backend": "tensorrt"}), "export.targets.9.backend"),
        (
            lambda d: d["export"]["targets"].append({"backend": "onnx", "precision": "w4-lut"}),
            "recipe key 'export.targets.9': Value error, onnx exports fp32, int8, not 'w4-lut'",
        ),
        (lambda d: d["quantize"].update(smooth_quant=True), "recipe key 'quantize': Value error, smooth_quant"),
        (
            lambda d: d["export"]["targets"].append({"backend": "tflite", "layout": "nhwc"}),
            "recipe key 'export.targets.9.layout': Input should be 'NCHW' or 'NHWC'",
        ),
        (
            lambda d: d["export"]["targets"].append(
                {"backend": "executorch", "precision": "int8", "method": "qat", "layout": "NHWC"}
            ),
            "layout NHWC is not available with method qat",
        ),
        (lambda d: d["model"].update(name="vit_tiny_patch61"), "did you mean vit_tiny_patch16"),
        (lambda d: d["data"].update(name="imagefolder"), "data.root is required"),
    ],
)
def test_bad_recipes_fail_naming_the_key(mutate, message, tmp_path):
    raw = _raw()
    mutate(raw)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(EdgeVitError, match=message.replace(".", r"\.").replace("(", r"\(")):
        Recipe.load(path)


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(EdgeVitError, match="recipe not found"):
        Recipe.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(EdgeVitError, match="not valid YAML"):
        Recipe.load(bad)


def test_resolved_recipe_roundtrips(tmp_path):
    r = Recipe.load(QUICKSTART)
    r.save(tmp_path / "recipe.yaml")
    assert Recipe.load(tmp_path / "recipe.yaml") == r


def test_an_nhwc_target_gets_its_own_file_beside_the_nchw_one():
    from edgevit.recipe import Target

    nchw, nhwc = Target(backend="tflite", precision="int8"), Target(backend="tflite", precision="int8", layout="NHWC")
    assert (nchw.filename("pt2e"), nhwc.filename("pt2e")) == ("tflite_int8.tflite", "tflite_int8_nhwc.tflite")
    assert Target(backend="onnx", layout="NHWC").filename("nncf") == "onnx_fp32_nhwc.onnx"


@pytest.mark.slow
def test_parallel_export_writes_the_same_files_as_a_serial_one(tiny_digits_run, tmp_path, monkeypatch):
    """One process per backend group (``export.jobs``) changes nothing in any artifact, byte for byte: the session's
    digits run was exported serially (conftest sets ``EDGEVIT_EXPORT_JOBS=1``); these exports run 2 processes."""
    import hashlib

    from conftest import copy_run

    from edgevit.recipe import Target, stage_export

    names = ["tflite_int8.tflite", "onnx_fp32.onnx", "onnx_int8.onnx"]  # calibrated int8 included
    targets = [Target(backend=b, precision=p) for b, p in (("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8"))]
    monkeypatch.setenv("EDGEVIT_EXPORT_JOBS", "2")
    run = copy_run(tiny_digits_run, tmp_path / "parallel", [])
    arts = stage_export(run, targets, progress=False)
    assert [a.path.name for a in arts] == names
    assert "export (2 processes in parallel)" in (run / "timings.json").read_text()

    def digest(path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert {a.path.name: digest(a.path) for a in arts} == {n: digest(tiny_digits_run / "artifacts" / n) for n in names}


def test_export_jobs_follow_the_environment_then_the_recipe_and_never_exceed_the_backends(monkeypatch):
    from edgevit.recipe.stages import backend_groups, export_jobs

    monkeypatch.delenv("EDGEVIT_EXPORT_JOBS", raising=False)
    assert export_jobs(None, 4) == min(2, os.cpu_count() or 1) and export_jobs(3, 2) == 2 and export_jobs(1, 4) == 1
    monkeypatch.setenv("EDGEVIT_EXPORT_JOBS", "1")
    assert export_jobs(4, 4) == 1
    monkeypatch.setenv("EDGEVIT_EXPORT_JOBS", "two")
    with pytest.raises(EdgeVitError, match="EDGEVIT_EXPORT_JOBS"):
        export_jobs(None, 4)
    from edgevit.recipe import Target

    pairs = [("executorch", "fp32"), ("executorch", "int8"), ("tflite", "fp32"), ("onnx", "fp32")]
    pairs += [("executorch", "int8-dynamic"), ("coreml", "fp16")]
    ts = [Target(backend=b, precision=p) for b, p in pairs]
    groups = backend_groups(ts, 2)
    assert sorted(i for g in groups for i in g) == list(range(6)) and groups[0] == [0, 1, 4]  # a backend stays whole
