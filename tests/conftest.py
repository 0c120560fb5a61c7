"""Shared fixtures. The quickstart run is made once per session by the real CLI (the README's demo).

The suite runs in parallel (``pytest -n 2``, pytest-xdist): each worker uses one torch thread (2 workers on 2 cores),
and the expensive session runs (:func:`quickstart_run`, :func:`tiny_digits_run`) are made once per session, by
whichever worker needs one first, in a directory all workers share (:func:`shared_run`); the others wait for it and
read it. Tests that use the quickstart run are kept on one worker (``xdist_group``), and so are the tests on the
emulated ARM64 target (its first set-up builds an emulator for minutes), so the other worker keeps running tests
instead of waiting for the run or the build to finish.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under pytest-xdist; None in a plain run
torch.set_num_threads(1 if WORKER else 2)  # one intra-op thread per worker: 2 workers share the 2 cores
# stage_export runs one process per backend group by default; the test workers already use both cores, so tests
# export serially (tests/test_recipe.py checks that both ways write the same files)
os.environ.setdefault("EDGEVIT_EXPORT_JOBS", "1")


# the console script pip installed beside this interpreter: the entry point a user runs (pyproject's
# [project.scripts]), so a broken entry point or exception handling that only works through `python -m` fails here
EDGEVIT = Path(sys.executable).parent / "edgevit"


def edgevit_cli(*args: str, timeout: int = 900, **kw) -> subprocess.CompletedProcess:
    """Run the installed ``edgevit`` console script (as a user would) and capture its output."""
    assert EDGEVIT.is_file(), f"no installed edgevit console script at {EDGEVIT}: `pip install -e .` first"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [str(EDGEVIT), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, **kw
    )


@pytest.fixture
def one_thread():
    """Run small-tensor work on one intra-op thread: faster here, and far faster when other jobs load the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def digits32():
    from edgevit.data import digits

    return digits(img_size=32)


@pytest.fixture
def tiny_vit():
    """A 1-block ViT-Ti-width model for 32-px digits, random init (seeded)."""
    from edgevit import create_model

    torch.manual_seed(0)
    return create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=10).eval()


def shared_run(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A run directory made once per test session: by ``build(path)`` in the first process (xdist worker) that asks,
    under a file lock; every other process waits for it and gets the same path. A build that failed is not reused:
    the next process to ask builds it again (and fails the same way, with its own message)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if WORKER else base  # xdist: the session's directory above every worker's own
    out, done = root / f"shared-{name}" / "run", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.is_file():
            shutil.rmtree(out.parent, ignore_errors=True)
            out.parent.mkdir(parents=True)
            build(out)
            done.touch()
    return out


# fixture -> xdist group: every test that needs one of these session fixtures runs on one worker (``--dist
# loadgroup`` hands a group to a single worker, the largest groups first, so these two land on different workers)
GROUPS = {"quickstart_run": "quickstart", "arm64_target": "arm64"}


def pytest_collection_modifyitems(items) -> None:
    """Keep the tests of each expensive shared fixture (:data:`GROUPS`) on one xdist worker."""
    for item in items:
        names = getattr(item, "fixturenames", ())  # the test's whole fixture closure
        for fixture, group in GROUPS.items():
            if fixture in names:
                item.add_marker(pytest.mark.xdist_group(group))
                break


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """``edgevit run recipes/quickstart.yaml --out RUN``: the whole product on real digits data."""

    def build(out: Path) -> None:
        proc = edgevit_cli("run", "recipes/quickstart.yaml", "--out", str(out), timeout=2400)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return shared_run(tmp_path_factory, "quickstart", build)


@pytest.fixture(scope="session")
def arm64_target():
    """``edgevit target setup android-arm64`` into the default cache (``$EDGEVIT_CACHE`` or ~/.cache/edgevit), which
    persists: only the first run on a machine downloads the sysroot and wheels and builds the counting emulator
    (QEMU with plugins, ~5 min of CPU); later sessions find it set up. Returns the target."""
    import time

    from edgevit.targets import get_target

    t0 = time.perf_counter()
    proc = edgevit_cli("target", "setup", "android-arm64", timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\nandroid-arm64 setup: {time.perf_counter() - t0:.1f} s ({proc.stderr.strip().splitlines()[-1]})")
    return get_target("android-arm64")


# One small digits ViT trained and exported once per session for every end-to-end parity test (device profiles, the
# emulated ARM64 target, the mutation suite). The union of what those tests need: 2 blocks of width 64 (~1.5 M MACs,
# so emulated ARM64 kernels take seconds), 10 epochs (>= 85% top-1, real predictions for the mutation faults), 360
# validation images, and every artifact any of them runs. Each test copies the run (``copy_run``) keeping only the
# artifacts it asserts on, so nothing a test writes or edits reaches another test.
TINY_DIGITS_RECIPE = {
    "name": "tiny-digits",
    "seed": 0,
    "data": {"name": "digits", "img_size": 32, "val_fraction": 0.2},
    "model": {
        "name": "vit_tiny_patch16",
        "args": {"patch_size": 8, "depth": 2, "embed_dim": 64, "mlp_dim": 128, "num_heads": 2},
    },
    "train": {
        "epochs": 10,
        "batch_size": 64,
        "lr": 2.0e-3,
        "min_lr": 1.0e-5,
        "warmup_epochs": 1,
        "weight_decay": 0.05,
        "threads": 2,
    },
    "quantize": {"calib_images": 128},
    "export": {
        "targets": [
            {"backend": "tflite", "precision": "fp32"},
            {"backend": "tflite", "precision": "int8"},
            {"backend": "onnx", "precision": "fp32"},
            {"backend": "onnx", "precision": "int8"},
            {"backend": "coreml", "precision": "fp16"},
        ]
    },
    "parity": {"threads": 2, "warmup": 2, "runs": 5},
}


@pytest.fixture(scope="session")
def tiny_digits_run(tmp_path_factory):
    """A run directory (``recipe.yaml``, ``model.safetensors``, ``artifacts/``) of :data:`TINY_DIGITS_RECIPE`:
    trained and exported once per session. Read-only: tests that write into a run use :func:`copy_run`."""
    from edgevit.recipe import Recipe, stage_export, stage_train

    def build(out: Path) -> None:
        stage_train(Recipe.from_dict(TINY_DIGITS_RECIPE), out, progress=False)
        stage_export(out, progress=False)

    return shared_run(tmp_path_factory, "tiny-digits", build)


def copy_run(run: Path, dst: Path, artifacts: list[str] | None = None) -> Path:
    """A copy of ``run`` at ``dst`` whose manifest lists only ``artifacts`` (file names under ``artifacts/``, in
    the order given; None keeps all). The other artifact files are not copied."""
    import json
    import shutil

    keep = None if artifacts is None else [f"artifacts/{a}" for a in artifacts]
    manifest = json.loads((run / "artifacts" / "manifest.json").read_text())
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    missing = [] if keep is None else [p for p in keep if p not in by_path]
    assert not missing, f"{missing} not in {run}'s manifest ({', '.join(by_path)})"
    names = None if keep is None else {Path(p).name for p in keep} | {"manifest.json"}

    def ignore(folder: str, entries: list[str]) -> list[str]:
        if names is None or Path(folder) != run / "artifacts":
            return []
        return [e for e in entries if e not in names]

    shutil.copytree(run, dst, ignore=ignore)
    if keep is not None:
        manifest["artifacts"] = [by_path[p] for p in keep]
        (dst / "artifacts" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst
