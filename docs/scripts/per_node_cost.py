"""Per-node cost of ExecuTorch's and LiteRT's runtimes on the emulated Cortex-A76 (docs/guides/arm-cost.md).

Chains of 1 and 201 sigmoids on a [1, 3, 4, 4] tensor (the kernels do almost nothing) exported to both backends and
counted on android-arm64: (count at 201 - count at 1) / 200 is what each further XNNPACK node costs per inference.
Needs ``edgevit target setup android-arm64``. Usage: ``python docs/scripts/per_node_cost.py [WORK_DIR]``.
"""

import sys
import tempfile
from pathlib import Path

import torch

from edgevit.export import export
from edgevit.targets import get_target
from edgevit.targets.cost import measure

LENGTHS = (1, 201)


class SigmoidChain(torch.nn.Module):
    """``n`` sigmoids in a row: ``n`` XNNPACK nodes in either runtime."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        for _ in range(self.n):
            x = torch.sigmoid(x)
        return x


def main(work: Path) -> None:
    target = get_target("android-arm64")
    x = torch.rand(1, 3, 4, 4)
    counts = {}
    for backend, suffix in (("executorch", ".pte"), ("tflite", ".tflite")):
        for n in LENGTHS:
            art = export(SigmoidChain(n).eval(), x, backend, work / f"chain{n}{suffix}")
            cost = measure(target, backend, art.path, x[0].numpy(), "cortex-a76", top=8, progress=False)
            counts[backend, n] = cost["instructions"]
            top = ", ".join(f"{f['function']} {f['instructions']:.0f}" for f in cost["functions"])
            print(f"{backend} {n} nodes: {cost['instructions']:.0f} instructions per inference; {top}")
    for backend in ("executorch", "tflite"):
        per_node = (counts[backend, LENGTHS[1]] - counts[backend, LENGTHS[0]]) / (LENGTHS[1] - LENGTHS[0])
        print(f"{backend}: {counts[backend, 1]:.0f} for one node, {per_node:.0f} per further node")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp))
