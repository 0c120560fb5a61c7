"""ExecuTorch + XNNPACK lowering without the repeated work: the same ``.pte`` as ``to_edge_transform_and_lower``.

``to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])`` re-traces the whole graph dozens of times
(docs/design/export-speed.md has the profile). :func:`lower` runs the same steps (ExecuTorch's own functions, in
the same order) with the repeated work cut:

* one ``run_decompositions`` (ExecuTorch's core-ATen table minus the ops XNNPACK keeps, plus the caller's own
  decompositions) where the stock path runs three after edgevit's; the decomposition the stock path repeats for
  kept ops the partitioner then rejects runs only when there are such nodes;
* the edge-IR verifier once on the edge program, not on every program each pass builds
  (``EdgeCompileConfig._check_ir_validity=False`` for the steps, then one explicit check);
* :func:`fast_passes` around it all: two small patches of dependency internals, each mirroring an upstream
  change, each restored on exit (see :func:`shared_provenance` and :func:`skip_noop_replays`).

To share the ``torch.export`` capture between the variants of one run (fp32, int8, NNCF, dynamic int8 of the same
model), wrap the exports in :func:`shared_capture`. Tests: tests/test_export_speed.py (same ``.pte`` bytes as the
stock path, patches restored, planted faults caught).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

from edgevit._utils import EdgeVitError, require

# Upstream changes the two patches mirror (neither is in torch 2.14.1 / executorch 1.5.1).
UPSTREAM_PROVENANCE_FIX = "https://github.com/pytorch/pytorch/pull/193051"  # NodeSource: shallow-copy from_node
UPSTREAM_RETRACE_GUARDS = (
    "https://github.com/pytorch/executorch/pull/20180",  # Arm passes: retrace only after a real update
    "https://github.com/pytorch/executorch/pull/16231",  # ScalarToTensorPass: run the ExportPass only on changes
)


@contextlib.contextmanager
def shared_provenance() -> Iterator[None]:
    """Within the block, ``torch.fx.traceback.NodeSource`` shares its parent's ``from_node`` records instead of
    deep-copying them, as pytorch/pytorch#193051 does upstream; restored on exit, also on error.

    Every pass that re-traces a graph gives each new node ``from_node = [NodeSource(old_node)]``, and ``NodeSource``
    deep-copies ``old_node``'s own ``from_node``: a tree one level deeper per pass, copied on every node of every
    pass (~15% of an XNNPACK lowering). The records are never mutated after construction (upstream already aliases
    them elsewhere), so sharing them changes no graph, no metadata value and no ``to_dict()``, only object identity.

    Raises:
        RuntimeError: ``NodeSource`` no longer stores ``from_node`` as this expects (a torch upgrade changed it).
    """
    from torch.fx import traceback as fx_traceback

    cls = fx_traceback.NodeSource
    original = cls.__init__

    def __init__(self, node, pass_name: str = "", action=None) -> None:
        parents = node.meta.get("from_node") if node is not None else None
        if parents is None:
            original(self, node, pass_name, action)
            return
        del node.meta["from_node"]  # the original then copies nothing ...
        try:
            original(self, node, pass_name, action)
        finally:
            node.meta["from_node"] = parents
        if self.from_node != []:
            raise RuntimeError("torch.fx.traceback.NodeSource changed; edgevit's shared_provenance patch is stale")
        self.from_node = list(parents)  # ... and shares the parents' records (in a new outer list, as upstream)

    cls.__init__ = __init__
    try:
        yield
    finally:
        cls.__init__ = original


def _value_summary(v: Any) -> Any:
    """What a re-trace reads from a node's ``meta["val"]``: tensor metadata, or the value's repr."""
    if isinstance(v, torch.Tensor):
        strides = tuple(map(str, v.stride())) if v.layout == torch.strided else None
        constant = getattr(v, "constant", None)  # a FakeTensor's real value, when it has one
        const_id = id(constant) if constant is not None else None
        return ("T", tuple(map(str, v.shape)), v.dtype, strides, str(v.device), const_id)
    if isinstance(v, (list, tuple)):
        return tuple(_value_summary(x) for x in v)
    return repr(v)


def graph_fingerprint(gm: torch.fx.GraphModule) -> tuple | None:
    """Everything an ``ExportPass`` re-trace of ``gm`` depends on: each node's op, target, arguments (nodes as
    positions), value metadata, and the identity of ``get_attr`` objects. ``None`` (never equal) for graphs with
    nested graph modules (control flow), which :func:`skip_noop_replays` always re-traces."""
    index = {n: i for i, n in enumerate(gm.graph.nodes)}
    out = []
    for n in gm.graph.nodes:
        args = repr(torch.fx.node.map_arg((n.args, n.kwargs), lambda a: ("%", index[a])))
        attr = None
        if n.op == "get_attr":
            obj = getattr(gm, n.target, None)
            if isinstance(obj, torch.fx.GraphModule):
                return None
            attr = (id(obj), _value_summary(obj) if isinstance(obj, torch.Tensor) else type(obj).__name__)
        out.append((n.op, n.target, args, _value_summary(n.meta.get("val")), attr))
    return tuple(out)


def _replays_only(cls: type) -> bool:
    """Whether ``cls`` (an ``ExportPass``) re-traces without rewriting: it overrides none of the hooks the re-trace
    calls, only ``call``/``__init__`` (its rewriting, if any, happens in place before ``super().call``)."""
    from executorch.exir.pass_base import ExportPass, _ExportPassBase

    if not issubclass(cls, ExportPass):
        return False
    hooks = (set(vars(_ExportPassBase)) | set(vars(ExportPass))) - {"call", "__init__", "__doc__", "__module__"}
    return all(getattr(cls, h, None) is getattr(ExportPass, h, None) for h in hooks)


@contextlib.contextmanager
def skip_noop_replays() -> Iterator[list[str]]:
    """Within the block, an ``ExportPass`` re-trace (``super().call(gm)``) of a graph no pass changed since the last
    re-trace produced it returns that graph instead of rebuilding it; restored on exit, also on error.

    Most XNNPACK passes edit the graph in place where their pattern occurs and then re-trace it unconditionally
    "to regenerate metadata", on every node, even when nothing matched (bilinear upsample, SDPA, conv1d, PReLU,
    concatenation, batch norm ... in a model without them): 10 of the 17 preprocess passes on MobileViT. Upstream
    now guards such re-traces with a "modified" check (executorch#20180, #16231); this does it for every pass at
    once, by comparing :func:`graph_fingerprint` with the one taken when the graph was last re-traced. Passes that
    rewrite during the re-trace (``call_operator`` overrides) always run. A re-trace of an unchanged, re-traced graph
    rebuilds the same nodes with the same metadata, so the lowered program is the same.

    Yields:
        The names of the passes whose re-trace was skipped (appended as they are).
    """
    from executorch.exir.pass_base import _ExportPassBase
    from torch.fx.passes.infra.pass_base import PassResult

    original = _ExportPassBase.call
    retraced: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph module -> fingerprint after re-trace
    pure: dict[type, bool] = {}
    skipped: list[str] = []

    def call(self, graph_module):
        cls = type(self)
        if cls not in pure:
            pure[cls] = _replays_only(cls)
        if pure[cls] and graph_module in retraced:
            fp = graph_fingerprint(graph_module)
            if fp is not None and fp == retraced[graph_module]:
                skipped.append(cls.__name__)
                return PassResult(graph_module, True)
        result = original(self, graph_module)
        fp = graph_fingerprint(result.graph_module)
        if fp is not None:
            retraced[result.graph_module] = fp
        return result

    _ExportPassBase.call = call
    try:
        yield skipped
    finally:
        _ExportPassBase.call = original


@contextlib.contextmanager
def fast_passes() -> Iterator[None]:
    """:func:`shared_provenance` and :func:`skip_noop_replays` together (what :func:`lower` and
    :func:`to_executorch` run in)."""
    with shared_provenance(), skip_noop_replays():
        yield


def decomposition_table(
    partitioner, program: torch.export.ExportedProgram, extra: dict[Any, Callable] | None = None
) -> tuple[Any, list, Callable | None]:
    """ExecuTorch's core-ATen decomposition table without the ops ``partitioner`` keeps whole, plus ``extra``.

    Returns:
        ``(table, kept_ops, check_op_support)``: the table, the ops left undecomposed for the partitioner (filtered
        as ``to_edge_transform_and_lower`` filters them) and the partitioner's per-node check (``None`` if none).
    """
    from executorch.exir.program._program import _remove_invalid_ops_for_not_decompose
    from executorch.exir.tracer import _default_decomposition_table

    kept, check = partitioner.ops_to_not_decompose(program)
    if check is not None:  # to_edge_transform_and_lower's EDGE_DO_NOT_DECOMP route filters the list first
        kept = _remove_invalid_ops_for_not_decompose(kept)
    table = _default_decomposition_table()
    for op in kept:
        table.pop(op, None)
    for op, fn in (extra or {}).items():
        table[op] = fn
    return table, list(kept), check


class _NoDeprecationNotice:
    """Drops XnnpackPartitioner's "deprecated to_edge() + to_backend()" warning: it inspects the call stack for a
    function named ``to_edge_transform_and_lower`` and warns otherwise, though :func:`lower` runs that function's
    steps."""

    def filter(self, record) -> bool:
        return "DEPRECATION WARNING" not in record.getMessage()


def lower(ep: torch.export.ExportedProgram, decompositions: dict[Any, Callable] | None = None):
    """``to_edge_transform_and_lower(ep.run_decompositions(decompositions), partitioner=[XnnpackPartitioner()])``,
    with the repeated work cut (see the module docstring); the ``.pte`` it leads to is the same.

    Args:
        ep: a ``torch.export`` program in ATen dialect (float, or PT2E-quantized and re-exported), not decomposed;
            it is not modified.
        decompositions: decompositions applied on top of ExecuTorch's table (edgevit's XNNPACK-friendly
            layer_norm and silu); they win over ops XNNPACK would keep.

    Returns:
        The ``EdgeProgramManager`` with the XNNPACK partitions delegated; write it with :func:`to_executorch`.

    Raises:
        Whatever ExecuTorch raises for a program it cannot lower (an op without a kernel, an invalid edge IR).
    """
    require("executorch", "executorch")
    import logging

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, EdgeProgramManager
    from executorch.exir.program._program import (
        _generate_edge_program,
        _replace_aten_ops_with_transformed_ops,
        _restore_transformed_ops_to_aten_ops,
        _sanity_check_graph_for_non_decomp_ops,
    )
    from executorch.exir.tracer import _default_decomposition_table
    from executorch.exir.verification.verifier import EXIREdgeDialectVerifier

    partitioner = XnnpackPartitioner()
    config = EdgeCompileConfig(_check_ir_validity=False)  # verified once below instead of on every program built
    quiet = _NoDeprecationNotice()
    log = logging.getLogger(XnnpackPartitioner.__module__)
    log.addFilter(quiet)
    try:
        with fast_passes():
            program = partitioner.transform_for_pre_decomposition(ep)
            table, kept, check = decomposition_table(partitioner, program, decompositions)
            program = program.run_decompositions(table)
            kept_nodes = [n for n in program.graph.nodes if n.op == "call_function" and n.target in kept]
            if check is None:  # the stock path preserves every kept op its table had
                preserved = {op for op in kept if op in _default_decomposition_table()}
            elif all(check(n) for n in kept_nodes):
                preserved = {n.target for n in kept_nodes}
            else:  # the stock path's second decomposition: kept ops on nodes XNNPACK rejects are decomposed after all
                preserved = set(_replace_aten_ops_with_transformed_ops("forward", program, {"forward": [partitioner]}))
                program = program.run_decompositions(_default_decomposition_table())
                _restore_transformed_ops_to_aten_ops(program)
            preserve = sorted(preserved, key=str)
            edge_program = _generate_edge_program(config, program, preserve_ops=preserve)
            strict = EdgeCompileConfig(_core_aten_ops_exception_list=list(preserve))
            EXIREdgeDialectVerifier(edge_compile_config=strict, class_only=True, preserve_ops=list(preserve))()(
                edge_program.graph_module
            )
            config._core_aten_ops_exception_list = list(preserve)
            edge = EdgeProgramManager({"forward": edge_program}, None, config, list(preserve))
            edge = edge.to_backend({"forward": partitioner})
            _sanity_check_graph_for_non_decomp_ops(
                "forward",
                edge.exported_program(),
                set(preserve),
                check,
                partitioner_name=type(partitioner).__name__,
                generate_error=True,
            )
    finally:
        log.removeFilter(quiet)
    return edge


def to_executorch(edge):
    """``edge.to_executorch()`` under :func:`fast_passes`: the ``ExecutorchProgramManager`` to write.

    Takes the ``EdgeProgramManager`` from :func:`lower` (or ``to_edge_transform_and_lower``).
    """
    with fast_passes():
        return edge.to_executorch()


# (model, example, parameter versions) -> ExportedProgram, while a shared_capture() block is open
_captures: list[dict] = []


def _capture_key(model: torch.nn.Module, example: torch.Tensor) -> tuple:
    versions = tuple(t._version for t in model.state_dict(keep_vars=True).values())
    return id(model), id(example), example._version, tuple(example.shape), model.training, versions


@contextlib.contextmanager
def shared_capture() -> Iterator[None]:
    """Within the block, :func:`export_program` captures each (model, example) once: the fp32, int8, NNCF and
    dynamic int8 ExecuTorch exports of one model share one ``torch.export`` (int8 quantizes a fresh ``.module()`` of
    it; the shared program is never modified). A model or example changed in place is captured anew.

    How a run uses it (edgevit.recipe.stage_export)::

        with shared_capture():
            for t in targets:
                export(model, example, t.backend, path, precision, calib=calib, ptq=t_ptq, layout=t.layout)
    """
    _captures.append({})
    try:
        yield
    finally:
        _captures.pop()


def export_program(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export.export(model, (example,))``; inside :func:`shared_capture`, once per model and example.

    Raises:
        Whatever ``torch.export`` raises for a model it cannot capture.
    """
    if not _captures:
        return torch.export.export(model, (example,))
    cache, key = _captures[-1], _capture_key(model, example)
    hit = cache.get(key)
    if hit is None or hit[0] is not model or hit[1] is not example:
        hit = cache[key] = (model, example, torch.export.export(model, (example,)))
    return hit[2]


def captured_module(model: torch.nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The graph PT2E quantizers annotate: a fresh ``.module()`` of :func:`export_program` of the eval-mode model
    (what :func:`edgevit.quantize.capture` returns, shared inside :func:`shared_capture`).

    Raises:
        EdgeVitError: ``torch.export`` cannot capture the model.
    """
    try:
        return export_program(model.eval(), example).module()
    except Exception as e:
        raise EdgeVitError(f"torch.export could not capture the model for quantization: {e}") from e


__all__ = [
    "captured_module",
    "export_program",
    "fast_passes",
    "graph_fingerprint",
    "lower",
    "shared_capture",
    "shared_provenance",
    "skip_noop_replays",
    "to_executorch",
]
