"""Property-based fuzz of everything that reads user-written files: the recipe parser, the artifact manifest reader and
the app-bundle reader. No input may produce anything but a parsed value or one EdgeVitError (never another
exception, which the CLI would show as a traceback), and a mutated valid document must never parse to something that
silently differs from what it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgevit import EdgeVitError
from edgevit.recipe import Recipe
from edgevit.rundir import manifest_artifacts, read_manifest

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON-like values, YAML scalars that are easy to get wrong (yes/no, 1e3, ~), and nesting
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["yes", "no", "~", "1e3", "fp32", "int8", "executorch", "NHWC", "../../x", "/etc/passwd"]),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4))
SECTIONS = ["name", "seed", "data", "model", "train", "quantize", "qat", "prune", "sparsify", "recover", "export"]
VALID = {
    "model": {"name": "vit_tiny_patch16", "args": {"patch_size": 8, "depth": 1}},
    "data": {"name": "digits", "img_size": 32},
    "train": {"epochs": 1, "batch_size": 8},
    "export": {"targets": [{"backend": "onnx", "precision": "fp32"}]},
}


def _parses_or_one_error(raw) -> Recipe | None:
    try:
        return Recipe.from_dict(raw)
    except EdgeVitError as e:
        assert str(e) and "\n" not in str(e).strip(), repr(str(e))
        return None


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS + ["parity", "bogus"]), values, max_size=6))
def test_random_recipes_parse_or_fail_with_one_clear_error(raw):
    _parses_or_one_error(raw)


@FUZZ
@given(section=st.sampled_from(sorted(VALID)), key=st.text(min_size=1, max_size=12), value=values)
def test_a_mutated_valid_recipe_parses_to_what_it_says_or_names_the_key(section, key, value):
    raw = json.loads(json.dumps(VALID))
    target = raw[section]
    if isinstance(target, dict):
        target[key] = value
    recipe = _parses_or_one_error(raw)
    if recipe is not None and section in ("data", "train") and key in target:
        dumped = recipe.model_dump(mode="json")[section]
        assert key in dumped  # an accepted key was not silently dropped


@FUZZ
@given(text=st.text(max_size=300))
def test_random_yaml_text_is_a_recipe_or_one_error(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    try:
        Recipe.load(path)
    except EdgeVitError as e:
        assert str(e)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "m.onnx").write_bytes(b"x")
    return tmp_path


ARTIFACT = {"backend": "onnx", "precision": "fp32", "path": "artifacts/m.onnx", "info": {}}


@FUZZ
@given(doc=values)
def test_random_manifests_are_read_or_refused_with_one_error(run_dir, doc):
    (run_dir / "artifacts" / "manifest.json").write_text(json.dumps(doc))
    try:
        manifest_artifacts(run_dir, read_manifest(run_dir))
    except EdgeVitError as e:
        assert str(e)


@FUZZ
@given(key=st.sampled_from(["backend", "precision", "path", "info"]), value=values)
@example(key="path", value="\x00")  # found by CI: resolve() raised ValueError on a NUL byte
@example(key="path", value="../model.onnx")
def test_a_mutated_manifest_entry_never_points_outside_the_run(run_dir, key, value):
    entry = {**ARTIFACT, key: value}
    (run_dir / "artifacts" / "manifest.json").write_text(json.dumps({"artifacts": [entry]}))
    try:
        arts = manifest_artifacts(run_dir, read_manifest(run_dir))
    except EdgeVitError:
        return
    for a in arts:  # what parses must name a file inside RUN/artifacts
        assert Path(a.path).resolve().is_relative_to((run_dir / "artifacts").resolve())


@FUZZ
@given(text=st.binary(max_size=200))
def test_corrupt_manifest_bytes_are_one_error(run_dir, text):
    (run_dir / "artifacts" / "manifest.json").write_bytes(text)
    try:
        read_manifest(run_dir)
    except EdgeVitError as e:
        assert "manifest" in str(e)


@FUZZ
@given(doc=values)
def test_random_bundle_documents_are_read_or_refused_naming_the_key(tmp_path, doc):
    from edgevit.apps import parse_bundle

    try:
        parse_bundle(doc, tmp_path)
    except EdgeVitError as e:
        assert str(e)


def test_yaml_round_trip_of_the_valid_recipe():
    assert Recipe.from_dict(yaml.safe_load(yaml.safe_dump(VALID))).model.name == "vit_tiny_patch16"
