"""The MIL ops edgevit's Core ML emulator implements: ``OPS``, op type -> ``function(**inputs) -> array | tuple``.

Each op computes in float32 (or the integer type it is given) with NumPy, following the MIL op definitions in
coremltools (``coremltools/converters/mil/mil/ops/defs``); :class:`edgevit.backends.coreml.emulator.Emulator`
rounds its outputs to the dtype the program declares.

Why one file over ~450 lines: it is one registry table of ~90 MIL ops of a few lines each; split by op kind, the
table that the emulator and its tests read would be scattered over files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import erf

from edgevit.utils import EdgeVitError


# ----------------------------------------------------------------------------------------------- elementwise
def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _erf(x):
    return erf(x).astype(x.dtype, copy=False)


def _gelu(x, mode="EXACT"):
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise EdgeVitError(f"gelu mode {mode!r} is not one of EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION")


def _binary(f):
    return lambda x, y: f(x, y)


def _unary(f):
    return lambda x: f(x)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _clip(x, alpha, beta):
    return np.minimum(np.maximum(x, alpha), beta)


# ----------------------------------------------------------------------------------------------- linear algebra
def _linear(x, weight, bias=None):
    y = x @ weight.T  # weight [out, in]
    return y if bias is None else y + bias


def _matmul(x, y, transpose_x=False, transpose_y=False):
    if transpose_x and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if transpose_y and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _pads(pad_type, pad, in_sizes, kernel, strides, dilations):
    """``[(before, after)]`` per spatial dim for MIL's ``valid``/``same``/``same_lower``/``custom`` padding."""
    n = len(in_sizes)
    if pad_type == "custom":
        pad = [0] * (2 * n) if pad is None else [int(p) for p in pad]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type == "valid":
        return [(0, 0)] * n
    out = []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        eff = (k - 1) * d + 1
        total = max((math.ceil(size / s) - 1) * s + eff - size, 0)
        small, big = total // 2, total - total // 2
        out.append((big, small) if pad_type == "same_lower" else (small, big))
    return out


def _windows(x, kernel, strides, dilations, pads, value=0.0):
    """``[N, C, *spatial]`` -> ``[N, C, *out, *kernel]`` sliding windows (a view where no padding is needed)."""
    n = len(kernel)
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=value)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    w = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + n)))
    idx = (slice(None), slice(None))
    idx += tuple(slice(None, None, s) for s in strides)  # output positions
    idx += tuple(slice(None, None, d) for d in dilations)  # kernel taps
    return w[idx]


def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    # x [N, Cin, *S], weight [Cout, Cin/groups, *K] -> [N, Cout, *S']
    n = x.ndim - 2
    kernel = weight.shape[2:]
    strides = [1] * n if strides is None else [int(s) for s in strides]
    dilations = [1] * n if dilations is None else [int(d) for d in dilations]
    pads = _pads(pad_type, pad, x.shape[2:], kernel, strides, dilations)
    groups = int(groups)
    cout = weight.shape[0]
    if all(k == 1 for k in kernel) and groups == 1:  # pointwise: one matmul
        if any(p != (0, 0) for p in pads):
            x = np.pad(x, [(0, 0), (0, 0), *pads])
        x = x[(slice(None), slice(None), *(slice(None, None, s) for s in strides))]
        y = np.einsum("nc...,oc->no...", x, weight.reshape(cout, -1), optimize=True)
    else:
        win = _windows(x, kernel, strides, dilations, pads)  # [N, Cin, *out, *K]
        nb, cin = x.shape[:2]
        out = win.shape[2 : 2 + n]
        win = win.reshape(nb, groups, cin // groups, *out, *kernel)
        wg = weight.reshape(groups, cout // groups, cin // groups, *kernel)
        sp, ks = "hwd"[:n], "ijk"[:n]
        if cin // groups == 1 and cout // groups == 1:  # depthwise: elementwise products, summed over taps
            y = np.einsum(f"ngc{sp}{ks},goc{ks}->ng{sp}", win, wg).reshape(nb, cout, *out)
        else:
            y = np.einsum(f"ngc{sp}{ks},goc{ks}->ngo{sp}", win, wg, optimize=True).reshape(nb, cout, *out)
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * n))
    return y


def _pool(reduce, pad_value):
    def pool(
        x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False, exclude_padding_from_average=False
    ):
        n = x.ndim - 2
        kernel = [int(k) for k in kernel_sizes]
        strides = [1] * n if strides is None else [int(s) for s in strides]
        pads = _pads(pad_type, pad, x.shape[2:], kernel, strides, [1] * n)
        if ceil_mode:  # extra trailing padding so the last partial window counts
            pads = [
                (b, a + (-(size + b + a - k) % s))
                for (b, a), size, k, s in zip(pads, x.shape[2:], kernel, strides, strict=True)
            ]
        win = _windows(x, kernel, strides, [1] * n, pads, pad_value)
        axes = tuple(range(-n, 0))
        if reduce == "max":
            return win.max(axis=axes)
        total = win.sum(axis=axes)
        if not exclude_padding_from_average:
            return total / np.prod(kernel)
        count = _windows(np.ones((1, 1, *x.shape[2:]), x.dtype), kernel, strides, [1] * n, pads).sum(axis=axes)
        return total / count

    return pool


# ----------------------------------------------------------------------------------------------- normalisation
def _layer_norm(x, axes, gamma=None, beta=None, epsilon=1e-5):
    axes = tuple(sorted(int(a) % x.ndim for a in np.atleast_1d(axes)))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + epsilon)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]  # gamma/beta span the normalised axes
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


def _channel(v, ndim):
    return v.reshape(1, -1, *([1] * (ndim - 2)))  # [C] -> [1, C, 1, ...]


def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    y = (x - _channel(mean, x.ndim)) / np.sqrt(_channel(variance, x.ndim) + epsilon)
    if gamma is not None:
        y = y * _channel(gamma, x.ndim)
    if beta is not None:
        y = y + _channel(beta, x.ndim)
    return y


def _instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + epsilon)
    if gamma is not None:
        y = y * _channel(gamma, x.ndim)
    if beta is not None:
        y = y + _channel(beta, x.ndim)
    return y


def _l2_norm(x, axes=None, epsilon=1e-6):
    axes = tuple(range(-x.ndim, 0)) if axes is None else tuple(int(a) for a in axes)
    return x / np.sqrt(np.maximum((x**2).sum(axis=axes, keepdims=True), epsilon))


# ----------------------------------------------------------------------------------------------- reductions
def _reduce(f):
    def reduce(x, axes=None, keep_dims=False):
        axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return f(x, axis=axes, keepdims=bool(keep_dims))

    return reduce


def _reduce_arg(f):
    def reduce(x, axis=-1, keep_dims=False, output_dtype="int32"):
        y = f(x, axis=int(axis))
        return np.expand_dims(y, int(axis)) if keep_dims else y

    return reduce


# ----------------------------------------------------------------------------------------------- tensor shape
def _reshape(x, shape):
    shape = [x.shape[i] if s == 0 and len(shape) == x.ndim else int(s) for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    idx = []
    for i in range(x.ndim):
        s = 1 if stride is None else int(stride[i])
        b = None if begin_mask is not None and begin_mask[i] else int(begin[i])
        e = None if end_mask is not None and end_mask[i] else int(end[i])
        if squeeze_mask is not None and squeeze_mask[i]:
            idx.append(int(begin[i]))
            continue
        idx.append(slice(b, e, s))
    return x[tuple(idx)]


def _slice_by_size(x, begin, size):
    idx = []
    for b, s, dim in zip(begin, size, x.shape, strict=True):
        b = int(b) % dim if dim else 0
        idx.append(slice(b, None if s == -1 else b + int(s)))
    return x[tuple(idx)]


def _concat(values, axis, interleave=False):
    if not interleave:
        return np.concatenate(values, axis=int(axis))
    axis = int(axis) % values[0].ndim  # [.., A, ..] x k -> [.., A, k, ..] -> [.., A*k, ..]
    stacked = np.stack(values, axis=axis + 1)
    return stacked.reshape(*values[0].shape[:axis], -1, *values[0].shape[axis + 1 :])


def _split(x, axis, num_splits=None, split_sizes=None):
    axis = int(axis)
    if split_sizes is None:
        return tuple(np.split(x, int(num_splits), axis=axis))
    return tuple(np.split(x, np.cumsum(split_sizes)[:-1], axis=axis))


def _squeeze(x, axes=None):
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(int(a) for a in axes))


def _expand_dims(x, axes):
    out_rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(int(a) % out_rank for a in axes))


def _pad(x, pad, mode="constant", constant_val=0.0):
    pad = [int(p) for p in pad]
    k = len(pad) // 2  # pads the last k dims, [before, after] each
    widths = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=constant_val)
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def _upsample_nearest(x, scale_factor_height=1, scale_factor_width=1):
    h, w = x.shape[-2:]
    ho, wo = int(math.floor(h * scale_factor_height)), int(math.floor(w * scale_factor_width))
    rows = np.minimum((np.arange(ho) * h / ho).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(wo) * w / wo).astype(np.int64), w - 1)
    return x[..., rows[:, None], cols[None, :]]


def _grid(n_in, n_out, align_corners, half_pixel):
    if align_corners:
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    elif half_pixel:
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    else:
        pos = np.arange(n_out) * n_in / n_out
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def _upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    h, w = x.shape[-2:]
    ho, wo = int(math.floor(h * scale_factor_height)), int(math.floor(w * scale_factor_width))
    half = (not align_corners) if half_pixel_centers is None else bool(half_pixel_centers)
    r0, r1, fr = _grid(h, ho, align_corners, half)
    c0, c1, fc = _grid(w, wo, align_corners, half)
    top = x[..., r0, :] * (1 - fr)[:, None] + x[..., r1, :] * fr[:, None]
    return top[..., c0] * (1 - fc) + top[..., c1] * fc


# ----------------------------------------------------------------------------------------------- quantization
def _per_axis(param, ndim, axis):
    """A scalar or ``[D]`` quantization parameter shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    param = np.asarray(param)
    if param.ndim == 0 or param.ndim == ndim:
        return param
    shape = [1] * ndim
    shape[int(axis)] = -1
    return param.reshape(shape)


_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15)}


def _quantize(input, scale, output_dtype, zero_point=None, axis=None):
    # clip(round_half_even(x / scale) + zero_point), as coremltools' reference does
    q = np.round(input / _per_axis(scale, input.ndim, axis))
    if zero_point is not None:
        q = q + _per_axis(zero_point, input.ndim, axis).astype(np.float32)
    lo, hi = _INT_RANGE[output_dtype]
    return np.clip(q, lo, hi)


def dequantize(input, scale, zero_point=None, axis=None):
    """MIL ``dequantize``: ``(input - zero_point) * scale`` per tensor or along ``axis``."""
    x = input.astype(np.float32)
    if zero_point is not None:
        x = x - _per_axis(zero_point, input.ndim, axis).astype(np.float32)
    return x * _per_axis(scale, input.ndim, axis)


def _constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    return dequantize(quantized_data, scale, zero_point, axis)


def _repeat_blocks(param, shape):
    """Repeat a per-block ``param`` (same rank as ``shape``) up to ``shape``: block size = dim / param dim."""
    for axis, (dim, pdim) in enumerate(zip(shape, param.shape, strict=True)):
        if dim != pdim:
            param = np.repeat(param, dim // pdim, axis=axis)
    return param


def _constexpr_blockwise_shift_scale(data, scale, offset=None):
    x = data.astype(np.float32)
    if offset is not None:
        x = x - _repeat_blocks(offset.astype(np.float32), data.shape)
    return x * _repeat_blocks(scale, data.shape)


def _unpack_bits(packed, nbits, count):
    """Little-endian bit-packed unsigned ``nbits``-wide integers (LSB first) -> ``[count]`` int64."""
    bits = np.unpackbits(packed.astype(np.uint8), bitorder="little")[: nbits * count]
    return (bits.reshape(count, nbits).astype(np.int64) << np.arange(nbits)).sum(axis=1)


def _constexpr_lut_to_dense(indices, lut, shape=None, vector_axis=None):
    if shape is not None:  # iOS 16: one LUT, indices bit-packed into uint8
        shape = [int(s) for s in shape]
        nbits = int(round(math.log2(lut.size)))
        return lut[_unpack_bits(indices, nbits, int(np.prod(shape)))].reshape(shape)
    # iOS 18: lut [*groups, P, V]; indices unpacked with the output's shape (divided by V along vector_axis)
    k = indices.ndim
    block = [d // g for d, g in zip(indices.shape, lut.shape[:k], strict=True)]
    grid = np.indices(indices.shape, sparse=True)
    group = np.ravel_multi_index(tuple(g // b for g, b in zip(grid, block, strict=True)), lut.shape[:k])
    flat = lut.reshape(-1, lut.shape[-2], lut.shape[-1])
    out = flat[group, indices.astype(np.int64)]  # [*indices.shape, V]
    if lut.shape[-1] == 1:
        return out[..., 0]
    axis = int(vector_axis) % k
    out = np.moveaxis(out, -1, axis + 1)
    return out.reshape(*indices.shape[:axis], -1, *indices.shape[axis + 1 :])


def _constexpr_sparse_to_dense(nonzero_data, mask, shape=None):
    if shape is not None:  # iOS 16: bit-packed uint8 mask and an explicit shape
        shape = [int(s) for s in shape]
        flat = np.unpackbits(mask.astype(np.uint8), bitorder="little")[: int(np.prod(shape))]
    else:  # iOS 18: uint1 mask with the output's shape
        shape, flat = mask.shape, mask.reshape(-1)
    out = np.zeros(flat.size, nonzero_data.dtype)
    out[flat != 0] = nonzero_data
    return out.reshape(shape)


def _cast(x, dtype):
    return x  # the output's declared dtype does the conversion


def _identity(x):
    return x


def _tile(x, reps):
    return np.tile(x, [int(r) for r in reps])


def _gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise EdgeVitError("Core ML emulator: gather with batch_dims != 0 is not implemented")
    return np.take(x, indices.astype(np.int64), axis=int(axis))


OPS: dict[str, Callable[..., Any]] = {
    # elementwise binary (NumPy broadcasting is MIL's)
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "floor_div": _binary(np.floor_divide),
    "mod": _binary(np.mod),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "select": lambda cond, a, b: np.where(cond, a, b),
    # elementwise unary
    "abs": _unary(np.abs),
    "ceil": _unary(np.ceil),
    "floor": _unary(np.floor),
    "round": _unary(np.round),
    "sign": _unary(np.sign),
    "sqrt": _unary(np.sqrt),
    "rsqrt": lambda x, epsilon=1e-12: 1.0 / np.sqrt(x + epsilon),
    "inverse": lambda x, epsilon=1e-4: 1.0 / (x + epsilon),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "log": lambda x, epsilon=1e-45: np.log(x + epsilon),
    "square": _unary(np.square),
    "sin": _unary(np.sin),
    "cos": _unary(np.cos),
    "tanh": _unary(np.tanh),
    "erf": _erf,
    "logical_not": _unary(np.logical_not),
    "clip": _clip,
    # activations
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "gelu": _gelu,
    "softmax": _softmax,
    "softplus": lambda x: np.logaddexp(x, 0),
    "leaky_relu": lambda x, alpha=0.01: np.where(x >= 0, x, alpha * x),
    "elu": lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
    "sigmoid_hard": lambda x, alpha=0.2, beta=0.5: np.clip(alpha * x + beta, 0, 1),
    "thresholded_relu": lambda x, alpha=1.0: np.where(x > alpha, x, 0),
    "clamped_relu": lambda x, alpha=0.0, beta=6.0: np.minimum(np.where(x >= 0, x, alpha * x), beta),
    "prelu": lambda x, alpha: np.where(x >= 0, x, _channel(alpha, x.ndim) * x),
    # linear algebra
    "linear": _linear,
    "matmul": _matmul,
    "conv": _conv,
    # normalisation
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "l2_norm": _l2_norm,
    # reductions
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "reduce_prod": _reduce(np.prod),
    "reduce_sum_square": _reduce(lambda x, **kw: np.sum(x * x, **kw)),
    "reduce_l1_norm": _reduce(lambda x, **kw: np.sum(np.abs(x), **kw)),
    "reduce_l2_norm": _reduce(lambda x, **kw: np.sqrt(np.sum(x * x, **kw))),
    "reduce_log_sum_exp": _reduce(lambda x, **kw: np.log(np.sum(np.exp(x), **kw))),
    "reduce_argmax": _reduce_arg(np.argmax),
    "reduce_argmin": _reduce_arg(np.argmin),
    # pooling and resizing
    "avg_pool": _pool("mean", 0.0),
    "max_pool": _pool("max", -np.inf),
    "upsample_nearest_neighbor": _upsample_nearest,
    "upsample_bilinear": _upsample_bilinear,
    # tensor shape and data movement
    "reshape": _reshape,
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "concat": _concat,
    "stack": lambda values, axis: np.stack(values, axis=int(axis)),
    "split": _split,
    "squeeze": _squeeze,
    "expand_dims": _expand_dims,
    "tile": _tile,
    "pad": _pad,
    "gather": _gather,
    "identity": _identity,
    "cast": _cast,
    "shape": lambda x: np.array(x.shape, np.int32),
    # quantization and compressed weights
    "quantize": _quantize,
    "dequantize": dequantize,
    "constexpr_affine_dequantize": _constexpr_affine_dequantize,
    "constexpr_blockwise_shift_scale": _constexpr_blockwise_shift_scale,
    "constexpr_lut_to_dense": _constexpr_lut_to_dense,
    "constexpr_sparse_to_dense": _constexpr_sparse_to_dense,
}
