"""Attention's ``k^T`` transpose folded into XNNPACK's batch matmul (edgevit.backends.executorch.matmul_fold): the
same logits as ExecuTorch's own unfolded graph, no element-wise transpose left in a ViT, nothing folded where the
transposed tensor has another reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgevit import create_model
from edgevit.backends.executorch.convert import prepare
from edgevit.backends.executorch.matmul_fold import XNN_FLAG_TRANSPOSE_B, fold_transposed_matmuls
from edgevit.backends.executorch.runtime import load
from edgevit.bench import randomize_
from edgevit.export import export

pytest.importorskip("executorch")


def _vit(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return randomize_(create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=depth, num_classes=10)).eval()


def _unfolded(model, x, path, precision="fp32", calib=None):
    """ExecuTorch's own lowering of the program edgevit's export lowers, without the fold: every ``bmm`` flags 0."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = to_edge_transform_and_lower(prepare(model, x, precision, calib), partitioner=[XnnpackPartitioner()])
    path.write_bytes(program.to_executorch().buffer)
    return path


def _serialized_graphs(monkeypatch) -> list:
    """Collects each XNNPACK graph as the delegate serialises it (after the fold, when it runs)."""
    from executorch.backends.xnnpack import xnnpack_preprocess

    graphs, real = [], xnnpack_preprocess.serialize_xnnpack_binary

    def keep(graph, constant_data_bytes):
        graphs.append(graph)
        return real(graph, constant_data_bytes)

    monkeypatch.setattr(xnnpack_preprocess, "serialize_xnnpack_binary", keep)
    return graphs


def _nodes(graph, name: str) -> list:
    return [x.xnode_union for x in graph.xnodes if type(x.xnode_union).__name__ == name]


def _elementwise_transposes(graph) -> int:
    """Transposes that move the innermost dimension (each element on its own; the others copy whole rows)."""
    return sum(t.perm[-1] != len(t.perm) - 1 for t in _nodes(graph, "XNNStaticTranspose"))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_vit_attention_reads_k_transposed_with_the_same_logits(tmp_path, monkeypatch, precision):
    model, depth = _vit(depth=2), 2
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calib = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)) if precision == "int8" else None
    graphs = _serialized_graphs(monkeypatch)
    art = export(model, x[:1], "executorch", tmp_path / "folded.pte", precision, calib=calib)
    assert art.info["matmuls_transpose_b"] == depth  # q @ k^T of every block; attn @ v keeps its row copy
    folded = load(art.path, threads=1)
    plain = load(_unfolded(model, x[:1], tmp_path / "plain.pte", precision, calib), threads=1)
    for image in x:
        got, want = folded(image[None].numpy()), plain(image[None].numpy())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    if precision == "fp32":
        with torch.no_grad():
            np.testing.assert_allclose(folded(x[:1].numpy()), model(x[:1]).numpy(), rtol=0, atol=1e-4)

    after, before = graphs
    bmms = _nodes(after, "XNNBatchMatrixMultiply")
    assert sorted(b.flags & XNN_FLAG_TRANSPOSE_B for b in bmms) == [0] * depth + [XNN_FLAG_TRANSPOSE_B] * depth
    assert all(b.flags == 0 for b in _nodes(before, "XNNBatchMatrixMultiply"))
    # each block's k^T became a row copy (the head split): one element-wise transpose fewer per block
    assert _elementwise_transposes(before) - _elementwise_transposes(after) == depth
    assert len(_nodes(before, "XNNStaticTranspose")) == len(_nodes(after, "XNNStaticTranspose"))


class _SharedTranspose(nn.Module):
    """``b^T`` feeds the matmul and a sum: the transpose must stay (its output has another reader)."""

    def forward(self, x):
        a, b = x[:, :8, :], x[:, 8:, :]
        bt = b.transpose(1, 2)
        return torch.bmm(a, bt) + bt.sum(dim=1, keepdim=True)


def test_a_transpose_with_another_reader_is_not_folded(tmp_path, monkeypatch):
    model, x = _SharedTranspose().eval(), torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(3))
    graphs = _serialized_graphs(monkeypatch)
    art = export(model, x, "executorch", tmp_path / "m.pte")
    assert art.info["matmuls_transpose_b"] == 0
    assert all(b.flags == 0 for g in graphs for b in _nodes(g, "XNNBatchMatrixMultiply"))
    with torch.no_grad():
        np.testing.assert_allclose(load(art.path, threads=1)(x.numpy()), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_the_patch_is_scoped(tmp_path):
    from executorch.backends.xnnpack import xnnpack_preprocess

    real = xnnpack_preprocess.serialize_xnnpack_binary
    with pytest.raises(RuntimeError), fold_transposed_matmuls():
        assert xnnpack_preprocess.serialize_xnnpack_binary is not real
        raise RuntimeError
    assert xnnpack_preprocess.serialize_xnnpack_binary is real
