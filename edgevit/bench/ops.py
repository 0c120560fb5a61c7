"""Single ops and blocks lowered to ExecuTorch (XNNPACK) and LiteRT, timed side by side: where a model's gap is.

``python -m edgevit.bench.ops [--threads 1]`` prints, per case, the best and median wall time of each runtime
and the ratio of medians. The cases are the pieces a model's gap was found in (issue 3): 3x3 convolutions
(ExecuTorch 2.3-2.8x of LiteRT on this x86 host: ExecuTorch 1.5.1's 5x16 IGEMM kernel keeps an accumulator on
the stack, found with ``perf`` + ``objdump``; LiteRT's newer XNNPACK does not), 1x1 convolutions and elementwise ops
(at par), LayerNorm as ``executorch.py`` decomposes it (~1.7x), and a whole transformer block.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from edgevit.backends import get_backend
from edgevit.bench import interleaved_latency, perturb_
from edgevit.models.layers import Block


class _Conv(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2))


class _XSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def cases() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """``(name, module, input shape)`` for each measured piece (MobileViT-XXS and ViT-Tiny shapes)."""
    return [
        ("conv3x3 48->48 @32 (MobileViT conv_kxk)", _Conv(48, 48, 3), (1, 48, 32, 32)),
        ("conv3x3 96->48 @32 (MobileViT conv_fusion)", _Conv(96, 48, 3), (1, 96, 32, 32)),
        ("conv3x3 3->16 s2 @256 (MobileViT stem)", _Conv(3, 16, 3, 2), (1, 3, 256, 256)),
        ("conv1x1 48->48 @32", _Conv(48, 48, 1), (1, 48, 32, 32)),
        ("x*sigmoid(x) @48x128x128", _XSigmoid(), (1, 48, 128, 128)),
        ("LayerNorm 197x192", nn.LayerNorm(192, eps=1e-6), (1, 197, 192)),
        ("ViT-Tiny block 197x192", Block(192, 3, 768), (1, 197, 192)),
    ]


def run(threads: int = 1, runs: int = 60, warmup: int = 5) -> list[dict]:
    """Lower every case to both runtimes and time them in interleaved rounds; returns one row per case."""
    executorch, tflite = get_backend("executorch"), get_backend("tflite")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgevit-ops-") as tmp:
        for name, module, shape in cases():
            torch.manual_seed(0)
            module = perturb_(module.eval())
            x = torch.randn(shape)
            et_path, tfl_path = Path(tmp) / "m.pte", Path(tmp) / "m.tflite"
            executorch.convert(module, x, et_path, "fp32")
            tflite.convert(module, x, tfl_path, "fp32")
            runners = [executorch.load(et_path, threads), tflite.load(tfl_path, threads)]
            et, tfl = interleaved_latency(runners, x[0].numpy(), warmup, runs, rounds=3)
            rows.append(
                {
                    "case": name,
                    "executorch_ms": (et["min"], et["median"]),
                    "litert_ms": (tfl["min"], tfl["median"]),
                    "ratio": et["median"] / tfl["median"],
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args()
    rows = run(args.threads, args.runs)
    print(f"{args.threads} thread(s)\n\n| case | ExecuTorch best / median ms | LiteRT best / median ms | ET / LiteRT |")
    print("|---|---|---|---|")
    for r in rows:
        (a, b), (c, d) = r["executorch_ms"], r["litert_ms"]
        print(f"| {r['case']} | {a:.3f} / {b:.3f} | {c:.3f} / {d:.3f} | {r['ratio']:.2f}× |")


if __name__ == "__main__":
    main()
