"""Per-pass profile of an ExecuTorch + XNNPACK lowering, for docs/design/export-speed.md.

    PYTHONPATH=. nice -n 5 python docs/design/export_speed_profile.py --path stock|fast [--model M] [--size S]

``stock``: what edgevit ran before (``prepare`` = export + its decompositions, ``to_edge_transform_and_lower``,
``to_executorch``); ``fast``: ``edgevit.export.executorch_lowering`` (``lower`` + ``to_executorch``). Every graph
pass (``PassBase.__call__``), every ``run_decompositions`` and the phases around them are wrapped with a CPU-time
timer (exclusive of nested timed calls); each row: calls, CPU seconds, graph nodes at entry, ms per node, and
whether the pass changed the graph (op, target, arguments or value shapes; names and provenance ignored).
Warms XNNPACK's pattern graphs first (built once per process). CPU time, not wall: the host is shared. The
total is CPU time of the whole lowering, with the profiler's own signature comparisons excluded from the rows.
"""

from __future__ import annotations

import argparse
import collections
import functools
import time

import torch

stats: dict = collections.defaultdict(lambda: {"calls": 0, "cpu": 0.0, "nodes": 0, "changed": 0})
_stack: list[float] = []
_overhead = [0.0]  # CPU seconds the profiler spends comparing graphs, subtracted from the total


def _nodes(obj) -> int:
    graph = getattr(obj, "graph", None)
    return len(graph.nodes) if graph is not None else 0


def _signature(gm) -> list:
    index = {n: i for i, n in enumerate(gm.graph.nodes)}
    out = []
    for n in gm.graph.nodes:
        v = n.meta.get("val")
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else None
        args = repr(torch.fx.node.map_arg((n.args, n.kwargs), lambda a: index[a]))
        out.append((n.op, str(n.target), args, shape))
    return out


def _timed(key, graph_arg=0, compare=False):
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            k = key(*args) if callable(key) else key
            target = args[graph_arg] if len(args) > graph_arg else None
            s0 = time.process_time()
            before = _signature(target) if compare and target is not None else None
            overhead = time.process_time() - s0
            t0 = time.process_time()
            _stack.append(0.0)
            try:
                result = fn(*args, **kwargs)
            finally:
                dt = time.process_time() - t0
                inner = _stack.pop()
                row = stats[k]
                row["calls"] += 1
                row["cpu"] += dt - inner
                row["nodes"] += _nodes(target) if target is not None else 0
            s1 = time.process_time()
            if before is not None and result is not None and hasattr(result, "graph_module"):
                row["changed"] += _signature(result.graph_module) != before
            overhead += time.process_time() - s1
            _overhead[0] += overhead
            if _stack:
                _stack[-1] += dt + overhead  # the caller's row excludes this call and the signature overhead
            return result

        return wrapper

    return deco


def install() -> None:
    import executorch.exir.program._program as program
    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend
    from executorch.exir.backend import backend_api
    from torch.export import ExportedProgram
    from torch.fx.graph_module import GraphModule
    from torch.fx.passes.infra.pass_base import PassBase
    from torch.fx.traceback import NodeSource

    PassBase.__call__ = _timed(lambda self, *a: "pass " + type(self).__name__, graph_arg=1, compare=True)(
        PassBase.__call__
    )
    ExportedProgram.run_decompositions = _timed("run_decompositions")(ExportedProgram.run_decompositions)
    GraphModule.recompile = _timed("  GraphModule.recompile (inside the rows above)")(GraphModule.recompile)
    NodeSource.__init__ = _timed("  NodeSource.__init__ (from_node deep copy)")(NodeSource.__init__)
    torch.export.export = _timed("torch.export.export")(torch.export.export)
    program._generate_edge_program = _timed("_generate_edge_program (rest)", graph_arg=1)(
        program._generate_edge_program
    )
    program.EdgeProgramManager.to_backend = _timed("to_backend (rest: partition, fuse, copy)")(
        program.EdgeProgramManager.to_backend
    )
    program.EdgeProgramManager.to_executorch = _timed("to_executorch (rest: emit, memory plan)")(
        program.EdgeProgramManager.to_executorch
    )
    backend_api.get_fake_program = _timed("get_fake_program")(backend_api.get_fake_program)
    XnnpackBackend.preprocess = staticmethod(
        _timed("XnnpackBackend.preprocess (rest: serialize)")(XnnpackBackend.preprocess)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", choices=("stock", "fast"), default="stock")
    ap.add_argument("--model", default="mobilevit_xxs")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgevit import create_model
    from edgevit.export import executorch_lowering
    from edgevit.export.executorch import _XNNPACK_FRIENDLY_DECOMPOSITIONS, prepare

    bilinear_2d.get_graphs(), sdpa.get_graphs()
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.randn(1, 3, args.size, args.size)
    install()
    t0 = time.process_time()
    if args.path == "stock":
        edge = to_edge_transform_and_lower(prepare(model, x), partitioner=[XnnpackPartitioner()])
        edge.to_executorch()
    else:
        ep = torch.export.export(model, (x,))
        edge = executorch_lowering.lower(ep, _XNNPACK_FRIENDLY_DECOMPOSITIONS)
        executorch_lowering.to_executorch(edge)
    total = time.process_time() - t0 - _overhead[0]
    print(f"{args.path}: {args.model} @{args.size}, {total:.1f} s CPU")
    print("| step | calls | CPU s | % | nodes/call | ms/node | changed graph |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k, r in sorted(stats.items(), key=lambda kv: -kv[1]["cpu"]):
        per_call = r["nodes"] / r["calls"] if r["calls"] else 0
        ms_node = 1000 * r["cpu"] / r["nodes"] if r["nodes"] else float("nan")
        changed = f"{r['changed']}/{r['calls']}" if k.startswith("pass ") else ""
        print(
            f"| {k} | {r['calls']} | {r['cpu']:.2f} | {100 * r['cpu'] / total:.1f} | {per_call:.0f} | "
            f"{ms_node:.2f} | {changed} |"
        )


if __name__ == "__main__":
    main()
