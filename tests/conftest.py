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


def randomize_(model: torch.nn.Module, seed: int = 1, fc: torch.nn.Linear | None = None) -> torch.nn.Module:
    """Random norm statistics/affines and an O(1)-scale classifier, in place.

    Default inits zero the last BN of residual branches and draw tiny heads, which hides most of a network
    from a logit comparison; after this every branch shows in the logits, so lowering tests can fail.
    The classifier is every top-level ``head``/``head_dist``/``classifier`` Linear, or ``fc`` when given.
    """
    nn = torch.nn
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            is_head = m is fc if fc is not None else name.split(".")[0] in ("head", "head_dist", "classifier")
            if isinstance(m, nn.Linear) and is_head:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
    return model


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


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """``edgevit run recipes/quickstart.yaml --out RUN``: the whole product on real digits data."""
    out = tmp_path_factory.mktemp("quickstart") / "run"
    proc = edgevit_cli("run", "recipes/quickstart.yaml", "--out", str(out), timeout=2400)  # ~2.5 min alone
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
