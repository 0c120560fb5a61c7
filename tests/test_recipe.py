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
