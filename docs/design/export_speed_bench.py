"""Side-by-side timing for docs/design/export-speed.md: edgevit's ExecuTorch export vs ExecuTorch's own path.

    PYTHONPATH=. nice -n 5 python docs/design/export_speed_bench.py --rounds 2 [--other-backends] [--out FILE.json]

In one process, on ``create_model(MODEL)`` (eval, fp32, random weights, seed 0) and a ``1x3xSxS`` example:

* ``stock``: ``to_edge_transform_and_lower(torch.export.export(m, (x,)), partitioner=[XnnpackPartitioner()])``
* ``edgevit``: ``edgevit.export.export(m, x, "executorch", path)`` (capture, lowering, ``to_executorch``, write)

alternated ABBA for ``--rounds`` rounds after one warm-up lowering of a small ViT (XNNPACK builds its pattern
graphs once per process; neither side should pay for that). Wall and CPU seconds per call, the load average around
each, and the ratio of medians. Also checks that edgevit's ``.pte`` is byte-identical to the one its previous
path produced (``prepare`` + ``to_edge_transform_and_lower`` + ``to_executorch``) and that both run to the same
outputs in ``executorch.runtime``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "executorch", "torchao", "numpy", "litert-torch", "coremltools", "onnx")}


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def _fmt(t: dict) -> str:
    return f"wall {t['wall_s']:6.1f} s  cpu {t['cpu_s']:6.1f} s  load {t['load_before']:.1f} -> {t['load_after']:.1f}"


def _timed(fn):
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "load_before": load0,
        "load_after": os.getloadavg()[0],
    }


def _ablation(model: torch.nn.Module, x: torch.Tensor) -> list[dict]:
    """The lowering + ``to_executorch`` of edgevit's program, adding the fast path's parts one at a time."""
    import contextlib

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgevit.export import executorch_lowering as fast
    from edgevit.export.executorch import _XNNPACK_FRIENDLY_DECOMPOSITIONS, prepare

    real = {k: getattr(fast, k) for k in ("shared_provenance", "skip_noop_replays", "lazy_recompile")}
    triggers = dict(fast._REWRITE_TRIGGERS)
    steps = [
        ("before: edgevit decomposition + to_edge_transform_and_lower", None),
        ("lower(): one decomposition, one IR verification", ()),
        ("+ shared_provenance (pytorch#193051)", ("shared_provenance",)),
        ("+ skip_noop_replays, pure re-traces only", ("shared_provenance", "skip_noop_replays")),
        ("+ rewrite-trigger table", ("shared_provenance", "skip_noop_replays", "triggers")),
        ("+ lazy_recompile (all of it)", ("shared_provenance", "skip_noop_replays", "triggers", "lazy_recompile")),
    ]
    out = []
    for name, on in steps:
        for k, cm in real.items():
            setattr(fast, k, cm if on is None or k in on else contextlib.nullcontext)
        fast._REWRITE_TRIGGERS.clear()
        if on is None or "triggers" in on:
            fast._REWRITE_TRIGGERS.update(triggers)
        if on is None:
            buf, t = _timed(
                lambda: (
                    to_edge_transform_and_lower(prepare(model, x), partitioner=[XnnpackPartitioner()])
                    .to_executorch()
                    .buffer
                )
            )
        else:
            buf, t = _timed(
                lambda: (
                    fast.to_executorch(
                        fast.lower(torch.export.export(model, (x,)), _XNNPACK_FRIENDLY_DECOMPOSITIONS)
                    ).buffer
                )
            )
        out.append({"step": name, "bytes_sha": hashlib.sha256(buf).hexdigest()[:16], **t})
        print(f"{name:62s} {_fmt(t)}  sha {out[-1]['bytes_sha']}")
    for k, cm in real.items():
        setattr(fast, k, cm)
    fast._REWRITE_TRIGGERS.update(triggers)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilevit_xxs")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--other-backends", action="store_true", help="also time tflite, coreml and onnx once")
    ap.add_argument("--ablation", action="store_true", help="also add the fast path's parts one at a time (once each)")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = ap.parse_args()

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from edgevit import create_model
    from edgevit.export import export
    from edgevit.export.executorch import prepare

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.randn(1, 3, args.size, args.size)
    tmp = Path(tempfile.mkdtemp(prefix="export_speed_"))

    warm = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=10).eval()
    warm_ep = torch.export.export(warm, (torch.randn(1, 3, 32, 32),))
    to_edge_transform_and_lower(warm_ep, partitioner=[XnnpackPartitioner()])

    def stock():
        return to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])

    def edgevit():
        return export(model, x, "executorch", tmp / "edgevit.pte")

    runs: dict[str, list[dict]] = {"stock": [], "edgevit": []}
    for r in range(args.rounds):
        order = ("stock", "edgevit") if r % 2 == 0 else ("edgevit", "stock")
        for name in order:
            _, t = _timed(stock if name == "stock" else edgevit)
            runs[name].append(t)
            print(f"round {r} {name:8s} {_fmt(t)}")

    # the .pte edgevit wrote before this change: its own decompositions, then the stock lowering
    before = to_edge_transform_and_lower(prepare(model, x), partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    after = (tmp / "edgevit.pte").read_bytes()
    outputs = []
    for buf in (before, after):
        method = Runtime.get().load_program(buf).load_method("forward")
        outputs.append(method.execute([x])[0].numpy().copy())
    med = {k: statistics.median(t["wall_s"] for t in v) for k, v in runs.items()}
    medc = {k: statistics.median(t["cpu_s"] for t in v) for k, v in runs.items()}
    doc = {
        "date": date.today().isoformat(),
        "commit": _commit(),
        "host": {"nproc": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "versions": _versions(),
        "model": args.model,
        "size": args.size,
        "runs": runs,
        "ratio_wall_median": med["edgevit"] / med["stock"],
        "ratio_cpu_median": medc["edgevit"] / medc["stock"],
        "pte_identical_to_before": before == after,
        "max_abs_output_diff_vs_before": float(np.abs(outputs[0] - outputs[1]).max()),
    }
    print(
        f"edgevit / stock: wall {doc['ratio_wall_median']:.2f} (medians {med['edgevit']:.1f} / {med['stock']:.1f} s), "
        f"cpu {doc['ratio_cpu_median']:.2f}; .pte identical to before: {doc['pte_identical_to_before']}, "
        f"max |out diff| {doc['max_abs_output_diff_vs_before']:.3g}"
    )
    if args.ablation:
        doc["ablation"] = _ablation(model, x)
    if args.other_backends:
        doc["other_backends"] = {}
        for backend, suffix in (("tflite", ".tflite"), ("coreml", ".mlpackage"), ("onnx", ".onnx")):
            try:
                _, t = _timed(lambda b=backend, s=suffix: export(model, x, b, tmp / f"m{s}"))
                doc["other_backends"][backend] = t
                print(f"{backend:8s} {_fmt(t)}")
            except Exception as e:  # a missing optional backend package: record it, time the rest
                doc["other_backends"][backend] = {"error": f"{type(e).__name__}: {e}"[:300]}
                print(f"{backend:8s} failed: {e}")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
