"""Hostile-but-realistic input, tried as a new user would, through the installed ``edgevit`` console script: every
case gets a clear one-line error (or, for parity, a FAIL row) and a non-zero exit, never a traceback, and nothing is
left half-written or pointing the gate at the wrong file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EDGEVIT, ROOT, copy_run, edgevit_cli

from edgevit import EdgeVitError
from edgevit.utils import atomic_path


def _fails_cleanly(proc: subprocess.CompletedProcess, *patterns: str) -> str:
    """The process failed with a non-zero exit, no traceback, and its last stderr line names every pattern."""
    assert proc.returncode != 0, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    text = " ".join(lines[-3:])
    for p in patterns:
        assert p in text, f"{p!r} not in the error:\n{proc.stderr[-2000:]}"
    return text


# ------------------------------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize(
    "args, says",
    [
        (["export", "--model", "vit_tiny_patch16", "--backend", "tensorrt", "--out", "x.onnx"], ["tensorrt", "onnx"]),
        (["export", "--model", "vit_tiny_patch16", "--backend", "onnx"], ["--out"]),
        (["trian"], ["No such command", "train"]),
        (
            ["export", "--model", "vit_tiny_patch16", "--backend", "onnx", "--img-size", "abc", "--out", "x.onnx"],
            ["--img-size", "integer"],
        ),
        (
            ["export", "--model", "vit_tiny_patch16", "--backend", "onnx", "--precision", "w4", "--out", "x.onnx"],
            ["w4"],
        ),
        (["export", "--model", "vit_tiny_patch16", "--backend", "onnx", "--out", "x.tflite"], [".onnx"]),
        (["parity", "/nonexistent/run"], ["/nonexistent/run"]),
    ],
)
def test_usage_errors_are_one_line_through_the_installed_script(args, says):
    _fails_cleanly(edgevit_cli(*args, timeout=300), *says)


def test_bare_edgevit_prints_help_not_a_traceback():
    proc = edgevit_cli()
    assert "Traceback" not in proc.stderr and "Usage" in proc.stdout + proc.stderr
    assert "train" in proc.stdout + proc.stderr


def test_unwritable_out_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    t0 = time.monotonic()
    proc = edgevit_cli("export", "--model", "vit_tiny_patch16", "--backend", "onnx", "--out", str(blocker / "m.onnx"))
    _fails_cleanly(proc, "cannot write", str(blocker))
    proc = edgevit_cli("train", "recipes/quickstart.yaml", "--out", str(blocker / "run"))
    _fails_cleanly(proc, "cannot write", str(blocker))
    proc = edgevit_cli("prune", str(tmp_path), "--out", str(blocker / "pruned"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 120  # no lowering or training started (each would take minutes); not a timing test
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_check_writable_refuses_a_path_under_a_file_and_creates_nothing(tmp_path):
    from edgevit.utils import check_writable

    (tmp_path / "f").write_text("x")
    with pytest.raises(EdgeVitError, match="is a file, not a directory"):
        check_writable(tmp_path / "f" / "x", "--out")
    assert check_writable(tmp_path / "new" / "deeper" / "m.onnx") == tmp_path / "new" / "deeper" / "m.onnx"
    assert not (tmp_path / "new").exists()  # nothing created


# ------------------------------------------------------------------------------------------------ leftovers


def test_temp_dirs_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    """``kill -9`` during an atomic write leaves ``.NAME.PID.XXXX`` behind (no ``finally`` runs); the next write of
    the same file removes it, but never a live writer's."""
    target = tmp_path / "model.pte"
    code = (
        "import os, sys, time\n"
        "from edgevit.utils import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 100000); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".model.pte.")]
    assert len(leftovers) == 1 and f".{proc.pid}." in leftovers[0].name
    alive = tmp_path / f".model.pte.{os.getpid()}.keep"  # a concurrent writer in this (live) process
    alive.mkdir()
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "model.pte"])


# ------------------------------------------------------------------------------------------------ manifests and paths


def _run_copy(tiny_digits_run, tmp_path, artifacts=("onnx_fp32.onnx", "tflite_fp32.tflite")) -> Path:
    return copy_run(tiny_digits_run, tmp_path / "run", list(artifacts))


@pytest.mark.slow
def test_a_corrupt_artifact_is_its_own_fail_row_and_the_others_still_run(tiny_digits_run, tmp_path):
    run = _run_copy(tiny_digits_run, tmp_path)
    assert edgevit_cli("parity", str(run)).returncode == 0  # an all-pass report exists
    data = (run / "artifacts" / "tflite_fp32.tflite").read_bytes()
    (run / "artifacts" / "tflite_fp32.tflite").write_bytes(data[: len(data) // 3])  # truncated
    proc = edgevit_cli("parity", str(run))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    doc = json.loads((run / "parity.json").read_text())
    rows = {a["backend"]: a for a in doc["artifacts"]}
    assert doc["passed"] is False and rows["onnx"]["passed"] is True  # the other artifact was still checked
    bad = rows["tflite"]
    assert bad["passed"] is False and "tflite_fp32.tflite" in bad["failures"][0], bad
    assert "FAIL" in (run / "report.md").read_text()  # the old PASS report was replaced


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda m: m["artifacts"][0].update(path="artifacts/../../elsewhere/model.onnx"), "outside artifacts/"),
        (lambda m: m["artifacts"][0].update(path="/etc/passwd"), "outside artifacts/"),
        (lambda m: m.update(artifacts={"a": 1}), "'artifacts' must be a list"),
        (lambda m: m["artifacts"][0].pop("backend"), "artifacts[0].backend"),
        (lambda m: m["artifacts"][0].update(backend="tensorrt"), "tensorrt"),
    ],
)
def test_an_edited_manifest_is_refused_before_any_work(tiny_digits_run, tmp_path, edit, says):
    run = _run_copy(tiny_digits_run, tmp_path, ["onnx_fp32.onnx"])
    manifest = json.loads((run / "artifacts" / "manifest.json").read_text())
    edit(manifest)
    (run / "artifacts" / "manifest.json").write_text(json.dumps(manifest))
    _fails_cleanly(edgevit_cli("parity", str(run)), says)
    assert not (run / "parity.json").exists()


def test_a_device_profile_name_cannot_write_outside_the_run(tiny_digits_run, tmp_path):
    run = _run_copy(tiny_digits_run, tmp_path, ["onnx_fp32.onnx"])
    profile = tmp_path / "evil.yaml"
    profile.write_text("name: ../../../escaped\ndescription: x\nbackends: [onnx]\nprecisions: [fp32]\n")
    _fails_cleanly(edgevit_cli("parity", str(run), "--device", str(profile)), "cannot be used in a file name")
    assert not list(tmp_path.parent.glob("**/parity-*escaped*"))


# ------------------------------------------------------------------------------------------------ interrupts


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    # as from a terminal: Ctrl-C's default action, even where this test's launcher ignores SIGINT (a job started
    # with `&` by a non-interactive shell does, and its children inherit it: Python then installs no handler)
    terminal = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", terminal, str(EDGEVIT), "train", "recipes/quickstart.yaml", "--out", str(out)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # a hang below ends with every thread's stack in `err`
    )
    deadline = time.monotonic() + 600
    while not (out / "checkpoints" / "last.json").is_file() and time.monotonic() < deadline:
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints where it hangs
        _, err = proc.communicate()
        pytest.fail(f"no exit 300 s after Ctrl-C:\n{err[-6000:]}")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "--resume" in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------ user datasets


def _image_folder(root: Path, classes=("a", "b"), per_class: int = 6) -> Path:
    """A small real ImageFolder: scikit-learn digit scans as 16x16 PNGs, one folder per class."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for c, label in zip(classes, range(len(classes)), strict=False):
        (root / c).mkdir(parents=True)
        for i, img in enumerate(d.images[d.target == label][:per_class]):
            pixels = np.repeat((img * 255 / 16).astype(np.uint8)[..., None], 3, axis=-1)
            Image.fromarray(pixels).resize((16, 16)).save(root / c / f"{i}.png")
    return root


def _tiny_recipe(tmp_path: Path, root: Path, **data) -> Path:
    import yaml

    recipe = {
        "model": {"name": "vit_tiny_patch16", "args": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}},
        "data": {"name": "imagefolder", "root": str(root), "img_size": 16, "val_fraction": 0.3, **data},
        "train": {"epochs": 1, "batch_size": 4, "threads": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_an_unreadable_image_is_named_or_skipped_as_the_data_option_says(tmp_path):
    root = _image_folder(tmp_path / "data")
    (root / "a" / "notes.png").write_text("not an image")  # a renamed text file
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "cut.png").write_bytes(good[: len(good) // 2])  # a truncated download
    proc = edgevit_cli("train", str(_tiny_recipe(tmp_path, root)), "--out", str(tmp_path / "run"))
    _fails_cleanly(proc, "not readable images", "notes.png", "data.bad_images: skip")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
    proc = edgevit_cli("train", str(_tiny_recipe(tmp_path, root, bad_images="skip")), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 2 unreadable image(s)" in proc.stderr and "cut.png" in proc.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_a_one_class_image_folder_is_an_error(tmp_path):
    root = _image_folder(tmp_path / "data", classes=("only",))
    proc = edgevit_cli("train", str(_tiny_recipe(tmp_path, root)), "--out", str(tmp_path / "run"))
    _fails_cleanly(proc, "1 class folder (only)", "at least 2")


def test_weights_of_another_shape_and_unbuildable_sizes_are_one_line_errors(tmp_path):
    from edgevit import create_model
    from edgevit.models import save_state_dict

    save_state_dict(create_model("vit_tiny_patch16", num_classes=5).state_dict(), tmp_path / "w.safetensors")
    out = str(tmp_path / "m.onnx")
    proc = edgevit_cli("export", "--model", "vit_tiny_patch16", "--weights", str(tmp_path / "w.safetensors"),
                       "--backend", "onnx", "--out", out)  # fmt: skip
    _fails_cleanly(proc, "do not fit model 'vit_tiny_patch16'", "size mismatch", "head.weight")
    proc = edgevit_cli("export", "--model", "vit_tiny_patch16", "--img-size", "30", "--backend", "onnx", "--out", out)
    _fails_cleanly(proc, "img_size 30 is not divisible by patch_size 16")
