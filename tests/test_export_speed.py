"""The fast ExecuTorch lowering (edgevit.backends.executorch.lowering) writes the same .pte as ExecuTorch's own path,
its patches of torch / ExecuTorch internals are scoped and restored, and the capture is shared between variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgevit import create_model
from edgevit.backends.executorch import lowering as fast
from edgevit.backends.executorch.convert import prepare
from edgevit.backends.executorch.runtime import load
from edgevit.bench import randomize_
from edgevit.export import export
from edgevit.quantize import export_program, shared_capture

pytest.importorskip("executorch")


def _vit(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return randomize_(create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=depth, num_classes=10)).eval()


def _mobilevit_probe() -> nn.Module:
    """Conv + BatchNorm + SiLU stem, an inverted residual, MobileViT v1 and v2 blocks, a head: what the XNNPACK
    passes a ViT does not reach (batch-norm fusion, channels-last, concatenation, SiLU) act on."""
    from edgevit.models import mobilevit as mv

    torch.manual_seed(0)
    probe = nn.Sequential(
        mv.ConvNormAct(3, 16, 3, stride=2),
        mv.InvertedResidual(16, 16, expansion=2.0),
        mv.MobileViTBlock(16, transformer_dim=16, transformer_depth=1),
        mv.MobileViTV2Block(16, transformer_dim=8, transformer_depth=1),
        mv.ClassifierHead(16, 10),
    )
    return randomize_(probe, fc=probe[-1].fc).eval()


def _stock_pte(model, x, precision="fp32", calib=None) -> bytes:
    """What edgevit wrote before the fast path: its decompositions, then ExecuTorch's own lowering."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = prepare(model, x, precision, calib)
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _originals() -> dict:
    from executorch.exir.pass_base import _ExportPassBase
    from torch.fx.graph_module import GraphModule
    from torch.fx.traceback import NodeSource

    return {
        "NodeSource.__init__": NodeSource.__init__,
        "_ExportPassBase.call": _ExportPassBase.call,
        "GraphModule.recompile": GraphModule.recompile,
        "GraphModule.code": GraphModule.__dict__["code"],
        "GraphModule.__str__": GraphModule.__str__,
    }


@pytest.mark.parametrize(
    "case, precision",
    [("vit", "fp32"), ("vit", "int8"), ("vit", "int8-dynamic"), ("mobilevit_probe", "fp32")],
)
def test_fast_lowering_writes_the_stock_pte_byte_for_byte(tmp_path, one_thread, case, precision):
    model = _vit() if case == "vit" else _mobilevit_probe()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calib = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) if precision == "int8" else None
    before = _originals()
    art = export(model, x, "executorch", tmp_path / "m.pte", precision, calib=calib)
    assert _originals() == before  # every patch undone
    assert art.info["partitions"] == 1 and art.info["ops_outside_delegate"] == {}, art.info
    assert art.path.read_bytes() == _stock_pte(model, x, precision, calib)
    if precision == "fp32":  # and it runs: same logits as PyTorch
        with torch.no_grad():
            ref = model(x).numpy()
        got = load(art.path, threads=1)(x.numpy())
        assert abs(got - ref).max() <= 1e-4 * abs(ref).max()


def test_patches_are_undone_when_the_lowering_fails():
    before = _originals()
    with pytest.raises(RuntimeError, match="planted"), fast.fast_passes():
        assert _originals() != before  # all three are in place inside
        raise RuntimeError("planted")
    assert _originals() == before


def test_shared_provenance_shares_records_without_changing_them():
    from torch.fx.traceback import NodeSource, NodeSourceAction

    gm = torch.fx.symbolic_trace(nn.Sequential(nn.ReLU(), nn.Tanh()))
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    node.meta["from_node"] = [NodeSource(None, "a"), NodeSource(None, "b", NodeSourceAction.REPLACE)]
    deep = NodeSource(node, "p", NodeSourceAction.CREATE)
    with fast.shared_provenance():
        shared = NodeSource(node, "p", NodeSourceAction.CREATE)
        bare = NodeSource(None, "q")
    assert shared.to_dict() == deep.to_dict() and bare.from_node == []
    assert shared.from_node is not node.meta["from_node"]  # its own list (appending to the node's does not leak)
    assert all(a is b for a, b in zip(shared.from_node, node.meta["from_node"], strict=True))  # shared records
    assert all(a is not b for a, b in zip(deep.from_node, node.meta["from_node"], strict=True))  # stock: copies
    assert "from_node" in node.meta and len(node.meta["from_node"]) == 2


def _edge_graph_module():
    from executorch.exir import EdgeCompileConfig, to_edge

    class AddRelu(nn.Module):
        def forward(self, x):
            return torch.relu(x + 1.0) * 2.0

    ep = torch.export.export(AddRelu(), (torch.randn(2, 3),))
    return to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).exported_program().graph_module


def test_skip_noop_replays_skips_unchanged_graphs_and_reruns_changed_ones():
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import ExportPass

    class TurnReluIntoSigmoid(ExportPass):  # edits in place, then re-traces (as most XNNPACK passes do)
        def call(self, graph_module):
            for n in graph_module.graph.nodes:
                if n.target == exir_ops.edge.aten.relu.default:
                    n.target = exir_ops.edge.aten.sigmoid.default
            return super().call(graph_module)

    class Rewriter(ExportPass):  # rewrites during the re-trace: must always run
        def call_operator(self, op, args, kwargs, meta):
            return super().call_operator(op, args, kwargs, meta)

    gm = _edge_graph_module()
    with fast.skip_noop_replays() as skipped:
        first = ExportPass()(gm).graph_module  # not re-traced by us before: runs
        assert first is not gm and skipped == []
        assert ExportPass()(first).graph_module is first and skipped == ["ExportPass"]
        assert Rewriter()(first).graph_module is not first and skipped == ["ExportPass"]
        changed = TurnReluIntoSigmoid()(first).graph_module  # the in-place edit changes the fingerprint: re-traced
        assert changed is not first and skipped == ["ExportPass"]
        targets = [n.target for n in changed.graph.nodes if n.op == "call_function"]
        assert exir_ops.edge.aten.sigmoid.default in targets and exir_ops.edge.aten.relu.default not in targets
        assert TurnReluIntoSigmoid()(changed).graph_module is changed  # nothing left to turn: skipped
        assert skipped == ["ExportPass", "TurnReluIntoSigmoid"]


def test_skip_noop_replays_elides_the_xnnpack_passes_with_nothing_to_do(one_thread):
    """Around ExecuTorch's own lowering of a ViT: the preprocess passes with nothing to do (no conv1d, PReLU, batch
    norm, upsample ...) are skipped, and so are the known rewriting passes with nothing to rewrite; other rewriting
    passes (call_operator overrides outside the trigger table) never are; the .pte is the same."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model, x = _vit(depth=1), torch.randn(1, 3, 32, 32)
    with fast.skip_noop_replays() as skipped:
        ep = prepare(model, x)
        got = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    assert {"Conv1dUnsqueezePass", "PReLUReshapePass", "DecomposeBatchNorm", "ConvertToSDPAPass"} <= set(skipped)
    assert {"NormalizeTransposePass", "RemoveMixedTypeOperators", "ConstPropPass"} <= set(skipped)
    assert not {"OpReplacePass", "DimOrderOpsRevertPass", "ScalarToTensorPass", "MemoryFormatOpsPass"} & set(skipped)
    assert got == _stock_pte(model, x)


class _Transpose(nn.Module):
    def forward(self, x):
        return torch.t(x) + 1.0


class _View(nn.Module):
    def forward(self, x):
        return x.view(-1) * x.view(-1)


class _MixedTypes(nn.Module):
    def forward(self, x):
        return x + torch.ones(x.shape[-1], dtype=torch.int64)


class _Constant(nn.Module):
    def forward(self, x):
        return x + torch.full((3,), 2.0)


class _Plain(nn.Module):  # nothing any trigger-table pass rewrites
    def forward(self, x):
        return torch.relu(x) + x


def _targets(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


_TRIGGER_CASES = {  # pass -> (a module it rewrites, "did it rewrite" on the result)
    "NormalizeTransposePass": (_Transpose, lambda gm: torch.ops.aten.t.default not in _targets(gm)),
    "ReplaceBrokenOpsWithFunctionalOpsPass": (
        _View,
        lambda gm: not any(getattr(t, "is_view", False) for t in _targets(gm)),
    ),
    "RemoveMixedTypeOperators": (_MixedTypes, lambda gm: torch.ops.aten._to_copy.default in _targets(gm)),
    "ConstPropPass": (_Constant, lambda gm: torch.ops.aten.full.default not in _targets(gm)),
}


def _trigger_pass(name: str):
    from executorch.exir.passes.const_prop_pass import ConstPropPass
    from executorch.exir.passes.normalize_transpose_pass import NormalizeTransposePass
    from executorch.exir.passes.remove_mixed_type_operators import RemoveMixedTypeOperators
    from executorch.exir.passes.replace_broken_ops_with_function_ops_pass import ReplaceBrokenOpsWithFunctionalOpsPass

    passes = (NormalizeTransposePass, ReplaceBrokenOpsWithFunctionalOpsPass, RemoveMixedTypeOperators, ConstPropPass)
    return {p.__name__: p for p in passes}[name]()


@pytest.mark.parametrize("name", sorted(_TRIGGER_CASES))
def test_rewriting_passes_run_where_their_trigger_occurs(name):
    """Each pass of the trigger table still rewrites a graph that has its op (so the table cannot hide a rewrite),
    and is skipped on a re-traced graph without it."""
    from executorch.exir.pass_base import ExportPass

    module, rewritten = _TRIGGER_CASES[name]
    for cls, expect_skip in ((module, False), (_Plain, True)):
        gm = torch.export.export(cls(), (torch.randn(2, 3) if cls is not _Transpose else torch.randn(3, 2),))
        with fast.skip_noop_replays() as skipped:
            traced = ExportPass()(gm.graph_module).graph_module  # a re-traced, unchanged graph
            out = _trigger_pass(name)(traced).graph_module
        assert (skipped == [name]) is expect_skip, (cls.__name__, skipped)
        if not expect_skip:
            assert out is not traced and rewritten(out), [str(t) for t in _targets(out)]


def _insert_after(gm: torch.fx.GraphModule, fn) -> None:
    """Append ``fn`` to the module's only call: ``module(x)`` becomes ``fn(module(x))``."""
    call = next(n for n in gm.graph.nodes if n.op == "call_module")
    with gm.graph.inserting_after(call):
        new = gm.graph.call_function(fn, (call,))
    call.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)


def test_lazy_recompile_compiles_when_used_and_leaves_nothing_stale():
    x = torch.tensor([-1.0, 2.0])
    used = torch.fx.symbolic_trace(nn.Sequential(nn.ReLU()))
    unused = torch.fx.symbolic_trace(nn.Sequential(nn.Tanh()))
    with fast.lazy_recompile():
        _insert_after(used, torch.neg)
        used.recompile()
        assert "neg" in used.code  # reading the code compiles it
        assert torch.equal(used(x), torch.tensor([0.0, -2.0]))  # and so does calling it
        _insert_after(unused, torch.abs)
        unused.recompile()  # never read nor called inside the block
    assert "abs" in unused.code and torch.equal(unused(x), torch.tanh(x).abs())  # compiled on exit, not stale


def test_shared_capture_exports_the_float_model_once(tmp_path, one_thread, monkeypatch):
    model, x = _vit(depth=1), torch.randn(1, 3, 32, 32)
    plain = export(model, x, "executorch", tmp_path / "plain.pte").path.read_bytes()
    calls = []
    real = torch.export.export

    def counting(mod, *args, **kwargs):
        calls.append(mod)
        return real(mod, *args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counting)
    with shared_capture():
        a = export(model, x, "executorch", tmp_path / "a.pte", "int8-dynamic")
        shared = export_program(model, x)
        state = {k: v.clone() for k, v in shared.state_dict.items()}
        b = export(model, x, "executorch", tmp_path / "b.pte", "fp32")
        assert export_program(model, x) is shared
    assert sum(c is model for c in calls) == 1  # int8's op check, its capture and fp32's lowering share one export
    assert b.path.read_bytes() == plain  # quantizing its .module() left the shared program untouched
    assert all(torch.equal(v, shared.state_dict[k]) for k, v in state.items())
    assert a.info["partitions"] == 1
    with shared_capture():
        export_program(model, x)
        with torch.no_grad():
            model.head.bias.add_(1.0)  # changed in place: captured anew
        export_program(model, x)
    assert sum(c is model for c in calls) == 3


def test_the_byte_comparison_catches_a_skipped_rewriting_pass(tmp_path, monkeypatch, one_thread):
    """Planted fault: treat every pass as a pure re-trace, so that rewriting passes with an unchanged input (e.g.
    the one turning ATen ops into edge ops) are skipped: the .pte then differs from the stock one, or the lowering
    fails. (Without the fault they are equal: test_fast_lowering_writes_the_stock_pte_byte_for_byte.)"""
    model, x = _vit(depth=1), torch.randn(1, 3, 32, 32)
    monkeypatch.setattr(fast, "_replays_only", lambda cls: True)
    try:
        got = export(model, x, "executorch", tmp_path / "m.pte").path.read_bytes()
    except Exception:
        return
    assert got != _stock_pte(model, x)
