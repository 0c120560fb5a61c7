"""ExecuTorch ``.pte`` with the XNNPACK delegate (fp32, or int8 from a PT2E XNNPACK-quantized model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit._utils import atomic_path, require
from edgevit.export.artifact import Runner

SUFFIX = ".pte"
PRECISIONS = ("fp32", "int8")


def export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Lower ``model`` with ``to_edge_transform_and_lower`` + ``XnnpackPartitioner`` and write a ``.pte``.

    Returns delegation facts: the number of XNNPACK partitions and the ops left outside the delegate
    (each runs on ExecuTorch's portable CPU kernels, and each partition boundary costs a copy).
    """
    require("executorch", "executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(model, (example,))
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    outside = {
        op: b.non_delegated
        for op, b in sorted(info.delegation_by_operator.items())
        if b.non_delegated and op not in ("getitem",)
    }
    program = edge.to_executorch()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        program.write_to_file(f)
    return {
        "delegate": "XnnpackBackend",
        "partitions": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "ops_outside_delegate": outside,
    }


def load(path: Path, threads: int) -> Runner:
    """Load a ``.pte`` into ``executorch.runtime`` with an XNNPACK threadpool of ``threads``."""
    require("executorch", "executorch")
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(Path(path)).load_method("forward")

    def run(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])[0].numpy()

    return run
