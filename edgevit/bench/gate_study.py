"""How tight can parity's float gates be? Clean artifacts' errors across the registry, and planted-fault catch rates.

Two measurements behind the default float tolerances (:data:`edgevit.parity.DEFAULT_TOLERANCES`):

- ``clean``: each model (random weights, perturbed and with random norm statistics so every branch shows) exported
  fp32 to ExecuTorch, LiteRT and ONNX (and fp16 to Core ML, emulated) at a small resolution, compared with PyTorch
  on real digits images: the logit PSNR and cosine a healthy artifact reaches.
- ``planted``: a trained quickstart-size model with one weight tensor scaled by ``1 + eps`` (each tensor in turn):
  the PSNR of its logits vs the clean model's. An fp32 artifact of that model computes those logits to ~1e-6, so
  this is what the gate sees of a real planted fault (``tests/test_gate.py`` checks real artifacts).

``python -m edgevit.bench.gate_study clean --models vit_mini_patch28 mobilevit_xxs --out clean.json`` and
``python -m edgevit.bench.gate_study planted --run runs/quickstart --eps 0.01``; docs/design-notes.md has the tables.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.backends import get_backend
from edgevit.bench import perturb_, randomize_
from edgevit.data import digits
from edgevit.export import export
from edgevit.models import create_model
from edgevit.parity import metrics
from edgevit.recipe import trained

CLEAN_BACKENDS = {"executorch": "fp32", "tflite": "fp32", "onnx": "fp32", "coreml": "fp16"}


def small_size(name: str) -> int:
    """A small resolution the model takes: two patches a side for patch models, else 64 px."""
    m = re.search(r"patch(\d+)", name)
    return 2 * int(m.group(1)) if m else 64


def clean(models: list[str], images: int = 16, backends: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Metrics of each model's clean artifacts vs PyTorch (one row per model and backend)."""
    backends = backends or CLEAN_BACKENDS
    rows = []
    for name in models:
        size = small_size(name)
        torch.manual_seed(0)
        model = create_model(name, img_size=size, num_classes=10).eval()
        perturb_(model)
        randomize_(model)
        cfg = model.default_cfg
        data = digits(size, mean=cfg["mean"], std=cfg["std"])
        x = torch.stack([data.val[i][0] for i in range(images)])
        labels = np.array([int(data.val[i][1]) for i in range(images)])
        with torch.no_grad():
            ref = model(x).numpy()
        with tempfile.TemporaryDirectory(prefix="edgevit-gate-") as tmp:
            for backend, precision in backends.items():
                path = Path(tmp) / f"m{get_backend(backend).suffix}"
                art = export(model, x[:1], backend, path, precision)
                run = art.load(2)
                got = np.concatenate([run(x[i : i + 1].numpy()) for i in range(images)])
                m = metrics(got, ref, labels)
                rows.append({"model": name, "img_size": size, "backend": backend, "precision": precision, **m})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def planted(run_dir: str | Path, eps: float = 0.01, images: int = 360) -> list[dict[str, Any]]:
    """PSNR/cosine/agreement of the run's model with each weight tensor scaled by ``1 + eps`` in turn, vs the clean
    model, on the first ``images`` validation images."""
    _, model, data, _ = trained(run_dir)
    model.eval()
    n = min(images, len(data.val))
    x = torch.stack([data.val[i][0] for i in range(n)])
    labels = np.array([int(data.val[i][1]) for i in range(n)])
    with torch.no_grad():
        ref = model(x).numpy()
    rows = []
    for name, p in model.named_parameters():
        with torch.no_grad():
            p.mul_(1 + eps)
            got = model(x).numpy()
            p.div_(1 + eps)
        m = metrics(got, ref, labels)
        rows.append({"tensor": name, "numel": p.numel(), **m})
    return rows


def main(argv: list[str] | None = None) -> None:
    """``clean`` or ``planted``; prints JSON rows and optionally writes them (``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("clean")
    c.add_argument("--models", nargs="+", required=True)
    c.add_argument("--images", type=int, default=16)
    p = sub.add_parser("planted")
    p.add_argument("--run", required=True)
    p.add_argument("--eps", type=float, default=0.01)
    for s in (c, p):
        s.add_argument("--out")
    args = ap.parse_args(argv)
    rows = clean(args.models, args.images) if args.what == "clean" else planted(args.run, args.eps)
    if args.what == "planted":
        for r in sorted(rows, key=lambda r: -(r["psnr_db"] or 1e9)):
            print(f"{r['tensor']:<28} psnr {r['psnr_db']!s:>8.8} cos {r['cosine']:.9f} agree {r['agreement']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
