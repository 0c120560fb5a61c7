"""ExecuTorch + XNNPACK lowering without the repeated work: the same ``.pte`` as ``to_edge_transform_and_lower``.

``to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])`` re-traces the whole graph dozens of times
(docs/design/export-speed.md has the profile). :func:`lower` runs the same steps (ExecuTorch's own functions, in
the same order) with the repeated work cut:

* one ``run_decompositions`` (ExecuTorch's core-ATen table minus the ops XNNPACK keeps, plus the caller's own
  decompositions) where the stock path runs three after edgevit's; the decomposition the stock path repeats for
  kept ops the partitioner then rejects runs only when there are such nodes;
* the edge-IR verifier once on the edge program, not on every program each pass builds
  (``EdgeCompileConfig._check_ir_validity=False`` for the steps, then one explicit check);
* :func:`fast_passes` around it all: three small patches of dependency internals, each mirroring an upstream
  change, each restored on exit (:func:`shared_provenance`, :func:`skip_noop_replays`, :func:`lazy_recompile`).

To share the ``torch.export`` capture between the variants of one run (fp32, int8, NNCF, dynamic int8 of the same
model), wrap the exports in :func:`edgevit.quantize.capture.shared_capture`. Tests: tests/test_export_speed.py (same
``.pte`` bytes as the stock path, patches restored, planted faults caught).

Why one file over ~450 lines: the lowering and the three patches it needs stay together in the one small, tested place
that touches dependency internals, each patch beside the upstream change it mirrors.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch._export.pass_base import _ExportPassBaseDeprecatedDoNotUse
from torch.fx import traceback as fx_traceback
from torch.fx._lazy_graph_module import _LazyGraphModule
from torch.fx.graph import _PyTreeCodeGen
from torch.fx.graph_module import GraphModule
from torch.fx.passes.infra.pass_base import PassResult

from edgevit.utils import require

# Upstream changes the patches mirror (none is in torch 2.14.1 / executorch 1.5.1 for these code paths).
UPSTREAM_PROVENANCE_FIX = "https://github.com/pytorch/pytorch/pull/193051"  # NodeSource: shallow-copy from_node
UPSTREAM_RETRACE_GUARDS = (
    "https://github.com/pytorch/executorch/pull/20180",  # Arm passes: retrace only after a real update
    "https://github.com/pytorch/executorch/pull/16231",  # ScalarToTensorPass: run the ExportPass only on changes
)
UPSTREAM_LAZY_RECOMPILE = (
    "torch.fx._lazy_graph_module._LazyGraphModule",  # upstream's deferred recompile (Inductor's pattern passes)
    "https://github.com/pytorch/executorch/pull/21696",  # skip a redundant recompile after a retrace
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


def _overridden_hooks(cls: type) -> set[str]:
    """The re-trace hooks of ``ExportPass`` that ``cls`` overrides (``call`` and ``__init__`` are not hooks)."""
    from executorch.exir.pass_base import ExportPass, _ExportPassBase  # noqa: PLC0415 -- optional package (edgevit[executorch])

    hooks = {
        name
        for base in (_ExportPassBase, ExportPass)
        for name, value in vars(base).items()
        if not name.startswith("__") and isinstance(value, (type, staticmethod, classmethod, Callable))
    } - {"call"}
    return {h for h in hooks if getattr(cls, h) is not getattr(ExportPass, h)}


def _replays_only(cls: type) -> bool:
    """Whether ``cls`` (an ``ExportPass``) re-traces without rewriting: it overrides none of the hooks the re-trace
    calls, only ``call``/``__init__`` (its rewriting, if any, happens in place before ``super().call``)."""
    from executorch.exir.pass_base import ExportPass  # noqa: PLC0415 -- optional package (edgevit[executorch])

    return issubclass(cls, ExportPass) and not _overridden_hooks(cls)


def _flat_nodes(args: Any) -> list[torch.fx.Node]:
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg(args, found.append)
    return found


def _val(node: torch.fx.Node) -> Any:
    return node.meta.get("val")


def _reaches_call_operator(n: torch.fx.Node) -> bool:
    """Whether an ExportPass re-trace hands node ``n`` to ``call_operator`` (ATen and edge ops do; getitem, symbolic
    ops and higher-order ops go to other hooks)."""
    from executorch.exir.dialects.edge._ops import EdgeOpOverload  # noqa: PLC0415 -- optional package (edgevit[executorch])

    return n.op == "call_function" and isinstance(
        n.target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, EdgeOpOverload)
    )


def _mixed_types(pass_, n: torch.fx.Node) -> bool:
    """RemoveMixedTypeOperators.call_operator: an allow-listed binary op whose arguments are not all tensors of one
    dtype (one that the op's type promotion keeps) gets ``_to_copy`` casts."""
    aten = torch.ops.aten
    ops = (
        aten.add.Tensor,
        aten.mul.Tensor,
        aten.sub.Tensor,
        aten.div.Tensor,
        aten.div.Tensor_mode,
        aten.minimum.default,
    )
    if n.target not in ops or len(n.args) <= 1:
        return False
    vals = [_val(a) if isinstance(a, torch.fx.Node) else a for a in n.args]
    if not all(isinstance(v, torch.Tensor) for v in vals) or len({v.dtype for v in vals}) != 1:
        return True
    int_to_float = n.target == aten.div.Tensor or (
        n.target == aten.div.Tensor_mode and n.kwargs.get("rounding_mode") is None
    )
    return int_to_float and not vals[0].dtype.is_floating_point


def _constant_args(pass_, n: torch.fx.Node) -> bool:
    """ConstPropPass.call_operator (propogate_quant=False): folds ops whose arguments hold no graph value."""
    return bool(getattr(pass_, "propogate_quant", True)) or not _flat_nodes((n.args, n.kwargs))


def _view_op(pass_, n: torch.fx.Node) -> bool:
    """ReplaceBrokenOpsWithFunctionalOpsPass.call_operator: replaces view ops (``op.is_view``) with their copies."""
    return not isinstance(n.target, torch._ops.OpOverload) or n.target.is_view


def _symbolic_arg(pass_, n: torch.fx.Node) -> bool:
    """SymToTensorPass.call_operator: wraps SymInt/SymFloat/SymBool arguments in ``scalar_tensor``."""
    return any(isinstance(_val(a), (torch.SymInt, torch.SymFloat, torch.SymBool)) for a in _flat_nodes(n.args))


def _plain_transpose(pass_, n: torch.fx.Node) -> bool:
    """NormalizeTransposePass.call_operator: turns ``aten.t`` into ``aten.t_copy``."""
    return n.target == torch.ops.aten.t.default


# Passes that rewrite during the re-trace (a call_operator override) only at nodes these predicates recognise:
# pass class (module, name) -> node -> "may rewrite it". Each mirrors that pass's call_operator in executorch 1.5.x
# (checked against its source); for another executorch version the table is not used and such passes always run.
_REWRITE_TRIGGERS: dict[tuple[str, str], Callable] = {
    ("executorch.exir.passes.normalize_transpose_pass", "NormalizeTransposePass"): _plain_transpose,
    ("executorch.exir.passes.replace_broken_ops_with_function_ops_pass", "ReplaceBrokenOpsWithFunctionalOpsPass"): (
        _view_op
    ),
    ("executorch.exir.passes.sym_to_tensor_pass", "SymToTensorPass"): _symbolic_arg,
    ("executorch.exir.passes.remove_mixed_type_operators", "RemoveMixedTypeOperators"): _mixed_types,
    ("executorch.exir.passes.const_prop_pass", "ConstPropPass"): _constant_args,
}
_TRIGGERS_CHECKED_FOR = "1.5."


def _rewrite_trigger(cls: type) -> Callable | None:
    """The node predicate under which ``cls`` rewrites during its re-trace, if it is a known pass that overrides
    ``call_operator`` and nothing else (on the executorch version the table was checked against)."""
    from importlib.metadata import version  # noqa: PLC0415 -- optional package (edgevit[executorch])

    trigger = _REWRITE_TRIGGERS.get((cls.__module__, cls.__name__))
    if trigger is None or not version("executorch").startswith(_TRIGGERS_CHECKED_FOR):
        return None
    return trigger if _overridden_hooks(cls) == {"call_operator"} else None


@contextlib.contextmanager
def skip_noop_replays() -> Iterator[list[str]]:
    """Within the block, an ``ExportPass`` re-trace of a graph that no pass changed since a re-trace produced it
    returns that graph instead of rebuilding it, when the pass has nothing to rewrite; restored on exit, also on
    error.

    Most XNNPACK passes edit the graph in place where their pattern occurs and then re-trace it unconditionally
    "to regenerate metadata", on every node, even when nothing matched (bilinear upsample, SDPA, conv1d, PReLU,
    concatenation, batch norm ... in a model without them): 10 of the 17 preprocess passes on MobileViT. Upstream
    now guards such re-traces with a "modified" check (executorch#20180, #16231); this does it for every pass at
    once, by comparing :func:`graph_fingerprint` with the one taken when the graph was last re-traced. A pass that
    rewrites during the re-trace (``call_operator``) is skipped only if it is one of ``_REWRITE_TRIGGERS`` and no
    node triggers it; any other such pass always runs. A re-trace of an unchanged, re-traced graph with nothing to
    rewrite rebuilds the same nodes with the same metadata, so the lowered program is the same.

    Yields:
        The names of the passes whose re-trace was skipped (appended as they are).
    """
    from executorch.exir.pass_base import _ExportPassBase  # noqa: PLC0415 -- optional package (edgevit[executorch])

    original, original_deprecated = _ExportPassBase.call, _ExportPassBaseDeprecatedDoNotUse.call
    retraced: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph module -> fingerprint after re-trace
    kinds: dict[type, tuple[bool, Callable | None]] = {}
    skipped: list[str] = []

    def record(result):
        fp = graph_fingerprint(result.graph_module)
        if fp is not None:
            retraced[result.graph_module] = fp
        return result

    def call(self, graph_module):
        cls = type(self)
        if cls not in kinds:
            kinds[cls] = (_replays_only(cls), _rewrite_trigger(cls))
        pure, trigger = kinds[cls]
        if (pure or trigger is not None) and graph_module in retraced:
            fp = graph_fingerprint(graph_module)
            if (
                fp is not None
                and fp == retraced[graph_module]
                and (pure or not any(trigger(self, n) for n in graph_module.graph.nodes if _reaches_call_operator(n)))
            ):
                skipped.append(cls.__name__)
                return PassResult(graph_module, True)
        return record(original(self, graph_module))

    def call_deprecated(self, graph_module):  # torch's older re-trace base (ReplaceViewOpsWithViewCopyOpsPass)
        return record(original_deprecated(self, graph_module))

    _ExportPassBase.call, _ExportPassBaseDeprecatedDoNotUse.call = call, call_deprecated
    try:
        yield skipped
    finally:
        _ExportPassBase.call, _ExportPassBaseDeprecatedDoNotUse.call = original, original_deprecated


class _PythonCodeOnDemand:
    """Stands for the ``PythonCode`` a deferred ``recompile()`` returns; compiles the module when read."""

    def __init__(self, gm: torch.fx.GraphModule, compile_now: Callable) -> None:
        self._gm, self._compile_now = weakref.ref(gm), compile_now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compile_now(self._gm()), name)


@contextlib.contextmanager
def lazy_recompile() -> Iterator[None]:
    """Within the block, ``GraphModule.recompile()`` (Python code generation + ``compile``) is deferred until the
    module is called or its ``code`` read, as ``torch.fx._lazy_graph_module._LazyGraphModule`` does upstream.
    ``GraphModule`` is restored on exit, also on error; a module still pending then keeps compiling on first use
    (through its own per-instance class), so none leaves the block stale.

    A lowering recompiles each graph three to four times per pass (the new module, the pass manager's result and
    its checks before and after each pass) and executes almost none of them: ExportPass re-traces interpret
    the graph node by node (~20% of a lowering after the other cuts). Upstream trims such calls one by one
    (executorch#21696); this defers all of them. ``_LazyGraphModule`` instances keep their own behaviour.
    """

    real_recompile = GraphModule.recompile
    real_code = GraphModule.__dict__["code"]
    real_str = GraphModule.__str__
    pending: weakref.WeakSet = weakref.WeakSet()

    def compile_now(gm):
        pending.discard(gm)
        return real_recompile(gm)

    def forward(self, *args, **kwargs):  # installed on the module's own class until it is compiled
        compile_now(self)
        return self(*args, **kwargs)

    def recompile(self):
        if isinstance(self, _LazyGraphModule) or type(self).__qualname__.split(".")[-1] != "GraphModuleImpl":
            return real_recompile(self)  # upstream's lazy modules, or a class shared by several instances
        if isinstance(self._graph._codegen, _PyTreeCodeGen):  # what callers read without compiling
            self._in_spec = self._graph._codegen.pytree_info.in_spec
            self._out_spec = self._graph._codegen.pytree_info.out_spec
        pending.add(self)
        type(self).forward = forward  # GraphModule.__new__ gives each instance a class of its own (GraphModuleImpl)
        return _PythonCodeOnDemand(self, compile_now)

    def code(self):
        if self in pending:
            compile_now(self)
        return real_code.fget(self)

    def __str__(self):
        if self in pending:
            compile_now(self)
        return real_str(self)

    GraphModule.recompile = recompile
    GraphModule.code = property(code, doc=real_code.__doc__)
    GraphModule.__str__ = __str__
    try:
        yield
    finally:
        GraphModule.recompile, GraphModule.code, GraphModule.__str__ = real_recompile, real_code, real_str
        for gm in list(pending):  # most are garbage awaiting the cycle collector: do not compile them all now
            type(gm).code, type(gm).__str__ = property(code, doc=real_code.__doc__), __str__


@contextlib.contextmanager
def fast_passes() -> Iterator[None]:
    """:func:`shared_provenance`, :func:`skip_noop_replays` and :func:`lazy_recompile` together (what
    :func:`lower` and :func:`to_executorch` run in). Process-wide patches: do not lower in another thread meanwhile."""
    with shared_provenance(), skip_noop_replays(), lazy_recompile():
        yield


def decomposition_table(
    partitioner, program: torch.export.ExportedProgram, extra: dict[Any, Callable] | None = None
) -> tuple[Any, list, Callable | None]:
    """ExecuTorch's core-ATen decomposition table without the ops ``partitioner`` keeps whole, plus ``extra``.

    Returns:
        ``(table, kept_ops, check_op_support)``: the table, the ops left undecomposed for the partitioner (filtered
        as ``to_edge_transform_and_lower`` filters them) and the partitioner's per-node check (``None`` if none).
    """
    from executorch.exir.program._program import _remove_invalid_ops_for_not_decompose  # noqa: PLC0415 -- optional package (edgevit[executorch])
    from executorch.exir.tracer import _default_decomposition_table  # noqa: PLC0415 -- optional package (edgevit[executorch])

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
    import logging  # noqa: PLC0415 -- optional package (edgevit[executorch])

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: PLC0415 -- optional package (edgevit[executorch])
    from executorch.exir import EdgeCompileConfig, EdgeProgramManager  # noqa: PLC0415 -- optional package (edgevit[executorch])
    from executorch.exir.program._program import (  # noqa: PLC0415 -- optional package (edgevit[executorch])
        _generate_edge_program,
        _replace_aten_ops_with_transformed_ops,
        _restore_transformed_ops_to_aten_ops,
        _sanity_check_graph_for_non_decomp_ops,
    )
    from executorch.exir.tracer import _default_decomposition_table  # noqa: PLC0415 -- optional package (edgevit[executorch])
    from executorch.exir.verification.verifier import EXIREdgeDialectVerifier  # noqa: PLC0415 -- optional package (edgevit[executorch])

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


__all__ = [
    "fast_passes",
    "graph_fingerprint",
    "lower",
    "shared_provenance",
    "skip_noop_replays",
    "to_executorch",
]
