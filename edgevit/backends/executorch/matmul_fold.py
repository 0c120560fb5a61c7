"""Fold the transpose feeding a batch matmul's second operand into the matmul (XNNPACK's ``XNN_FLAG_TRANSPOSE_B``).

Attention computes ``q @ k^T``. ExecuTorch's XNNPACK backend serialises every ``bmm`` with flags 0
(``backends/xnnpack/operators/op_bmm.py`` in executorch 1.5.1), so the ``permute`` that makes ``k^T`` runs as an
XNNPACK ``static_transpose`` that moves every element on its own (the 4x4 ``x32_transposec`` kernel) before the
matmul packs ``k^T`` again. XNNPACK's batch matmul can read ``B`` as ``[..., N, K]`` instead
(``XNN_FLAG_TRANSPOSE_B``), and LiteRT's delegate uses it: on the emulated Cortex-A76 the element-wise transposes were
the largest part of ExecuTorch's gap to LiteRT on plain ViTs (docs/guides/arm-cost.md).

The fold works on the XNNPACK graph the delegate serialises (ExecuTorch's dataclasses, before the flatbuffer is
written), inside :func:`fold_transposed_matmuls`. A float ``bmm`` whose second input comes from a
``static_transpose`` that puts the innermost dimension next to last (``k^T``), through reshapes that keep the two
matrix dimensions and dtype converts (the int8 graph's dequantize), each read by nothing else, gets the flag; the
transpose's ``perm`` (and each reshape's shape) has its last two entries swapped. The matmul computes the same
product, and the transpose left over keeps the innermost dimension (a row copy: the head split
``[B, N, h, d] -> [B, h, N, d]``) or, when it became the identity, is removed. Transposes that already keep rows
(``attn @ v``) are left alone: folding would make them element-wise. The ExecuTorch runtime passes a node's flags
to ``xnn_define_batch_matrix_multiply`` (``backends/xnnpack/runtime/XNNCompiler.cpp``, 1.3.1 through 1.5.1), so
every runtime that loads the ``.pte`` runs the folded graph.

Why here and not upstream: an ExecuTorch change (a flag in ``op_bmm.py`` plus a pass) is the right home; until it
lands, this is the smallest change that gives ExecuTorch users the kernel LiteRT already gets. Tests:
tests/test_export_speed.py (same logits as the unfolded ``.pte``, fewer transposes, a planted wrong swap caught).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

# executorch/backends/xnnpack/utils/xnnpack_constants.py: XNN_FLAG_TRANSPOSE_B = XNN_FLAG_TRANSPOSE_WEIGHTS = 1
XNN_FLAG_TRANSPOSE_B = 0x1
_FLOAT_TYPES = {"xnn_datatype_fp32", "xnn_datatype_fp16"}


def _node_inputs(node: Any) -> list[int]:
    """The value ids a serialised XNNPACK node reads: its integer ``*_id`` fields other than ``output_id``."""
    return [
        getattr(node, f.name)
        for f in fields(node)
        if f.name.endswith("_id") and f.name != "output_id" and isinstance(getattr(node, f.name), int)
    ]


def _tensor(value: Any) -> Any:
    """The ``XNNTensorValue`` of an ``XValue`` (quantized or not)."""
    union = value.xvalue_union
    return getattr(union, "tensor_value", union)


def fold_graph(graph: Any) -> int:
    """Fold ``transpose -> [reshape ->] bmm`` chains of an ExecuTorch ``XNNGraph`` in place (see the module
    docstring); returns the number of matmuls folded."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_schema import (  # noqa: PLC0415 -- optional package (edgevit[executorch])
        XNNBatchMatrixMultiply,
        XNNConvert,
        XNNStaticReshape,
        XNNStaticTranspose,
    )

    tensors = {_tensor(v).id_out: _tensor(v) for v in graph.xvalues}
    producer = {xnode.xnode_union.output_id: xnode for xnode in graph.xnodes if hasattr(xnode.xnode_union, "output_id")}
    uses = Counter(i for xnode in graph.xnodes for i in _node_inputs(xnode.xnode_union))
    uses.update(graph.output_ids)

    def sole(value_id: int, kind: type | tuple[type, ...]) -> Any:
        """The node of type ``kind`` producing ``value_id`` when nothing else reads the value; else None."""
        xnode = producer.get(value_id)
        if xnode is None or not isinstance(xnode.xnode_union, kind) or uses[value_id] != 1:
            return None
        return xnode

    def is_float(value_id: int) -> bool:
        return tensors[value_id].datatype.name in _FLOAT_TYPES

    def swap(dims: list[int]) -> list[int]:
        return [*dims[:-2], dims[-1], dims[-2]]

    dropped, folded = [], 0
    for xnode in graph.xnodes:
        bmm = xnode.xnode_union
        if not isinstance(bmm, XNNBatchMatrixMultiply) or bmm.flags & XNN_FLAG_TRANSPOSE_B:
            continue
        if not all(is_float(i) for i in (bmm.input1_id, bmm.input2_id, bmm.output_id)):
            continue
        chain, value = [], bmm.input2_id  # from the matmul back to the transpose: reshapes and dtype converts
        while (step := sole(value, (XNNStaticReshape, XNNConvert, XNNStaticTranspose))) is not None:
            chain.append(step.xnode_union)
            if isinstance(step.xnode_union, XNNStaticTranspose):
                break
            value = step.xnode_union.input_id
        if not chain or not isinstance(chain[-1], XNNStaticTranspose) or len(chain[-1].perm) < 2:
            continue
        if chain[-1].perm[-2] != len(chain[-1].perm) - 1:
            continue  # the transpose keeps rows (attn @ v's head split): folding would make it element-wise
        reshapes = [r for r in chain if isinstance(r, XNNStaticReshape)]
        if any(min(r.new_shape) < 1 or list(r.new_shape[-2:]) != list(tensors[r.input_id].dims[-2:]) for r in reshapes):
            continue  # a reshape that regroups the matrix dimensions themselves (or an inferred one) stays as it is
        t = chain[-1]
        t.perm = swap(t.perm)
        for r in reshapes:
            r.new_shape = swap(r.new_shape)
        for step in chain:
            tensors[step.output_id].dims = swap(tensors[step.output_id].dims)
        if t.perm == sorted(t.perm):  # the identity now: its reader reads the transpose's input
            reader = chain[-2] if len(chain) > 1 else bmm
            setattr(reader, "input_id" if reader is not bmm else "input2_id", t.input_id)
            dropped.append(t)
        bmm.flags |= XNN_FLAG_TRANSPOSE_B
        folded += 1
    graph.xnodes[:] = [x for x in graph.xnodes if all(x.xnode_union is not d for d in dropped)]
    return folded


@contextlib.contextmanager
def fold_transposed_matmuls() -> Iterator[list[int]]:
    """Within the block, every XNNPACK partition ExecuTorch serialises has its transposed ``bmm`` operands folded
    (:func:`fold_graph`); yields a list that receives each partition's number of folded matmuls. Restored on exit,
    also on error. A process-wide patch: do not lower in another thread meanwhile."""
    from executorch.backends.xnnpack import xnnpack_preprocess  # noqa: PLC0415 -- optional package (edgevit[executorch])

    real = xnnpack_preprocess.serialize_xnnpack_binary
    counts: list[int] = []

    def serialize(graph, constant_data_bytes):
        counts.append(fold_graph(graph))
        return real(graph, constant_data_bytes)

    xnnpack_preprocess.serialize_xnnpack_binary = serialize
    try:
        yield counts
    finally:
        xnnpack_preprocess.serialize_xnnpack_binary = real


__all__ = ["XNN_FLAG_TRANSPOSE_B", "fold_graph", "fold_transposed_matmuls"]
