"""Shared fixtures. The quickstart run is made once per session by the real CLI (the README's demo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(2)


def edgevit_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the installed ``edgevit`` CLI (as a user would) and capture its output."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "edgevit.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


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


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """``edgevit run recipes/quickstart.yaml --out RUN``: the whole product on real digits data."""
    out = tmp_path_factory.mktemp("quickstart") / "run"
    proc = edgevit_cli("run", "recipes/quickstart.yaml", "--out", str(out), timeout=2400)  # ~2.5 min alone
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
