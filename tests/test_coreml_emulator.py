"""The Core ML emulator (``edgevit.backends.coreml.emulator``): each op against NumPy/PyTorch, fp16 rounding,
whole models.

Ops are tested on tiny MIL programs built with coremltools' Builder. Whole models: one small config per family
converted to an fp32 ML Program must match PyTorch within 1e-4 (relative to the largest logit); the same program
with fp16 compute (coremltools' own ``add_fp16_cast`` pass, as ``ct.convert`` applies it) must be close to PyTorch
run in float16 and measurably further from fp32 than the fp32 program. ``EDGEVIT_EMULATE_ALL=1`` sweeps the whole
registry through edgevit's real Core ML export (fp16 package) plus an fp32 conversion (slow: an hour or more).
"""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevit.bench import randomize_

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from edgevit.backends.coreml.emulator import OPS, Emulator, emulate  # noqa: E402
from edgevit.utils import EdgeVitError  # noqa: E402

RNG = np.random.default_rng(0)


def _rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _run(build, *arrays, fp16=False, opset=None):
    """Build ``build(*input vars)`` as a program on fp32 inputs (cast to fp16 and back when ``fp16``); run it."""
    specs = [mb.TensorSpec(shape=a.shape, dtype=types.fp32) for a in arrays]

    def body(*xs):
        if fp16:
            xs = [mb.cast(x=x, dtype="fp16") for x in xs]
        out = build(*xs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [mb.cast(x=o, dtype="fp32") if fp16 and o.dtype == types.fp16 else o for o in outs]

    # the Builder reads the argument count off the function's signature
    fns = {1: lambda a: body(a), 2: lambda a, b: body(a, b)}
    prog = mb.program(input_specs=specs, opset_version=opset or ct.target.iOS17)(fns[len(arrays)])
    names = list(prog.functions["main"].inputs)
    em = Emulator(prog)
    got = em(dict(zip(names, arrays, strict=True)))
    res = [got[n] for n in em.outputs]
    return res if len(res) > 1 else res[0]


def _close(got, want, tol=1e-5):
    want = np.asarray(want, dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))


T = torch.from_numpy


# ------------------------------------------------------------------------------------------------ per-op tests
@pytest.mark.parametrize(
    "groups,stride,dilation,pad_type,pad,kernel",
    [
        (1, 1, 1, "valid", None, 3),
        (1, 2, 1, "custom", [1, 1, 1, 1], 3),
        (1, 1, 2, "same", None, 3),
        (2, 1, 1, "custom", [0, 1, 2, 0], 3),  # asymmetric custom padding, grouped
        (8, 2, 1, "custom", [1, 1, 1, 1], 3),  # depthwise
        (1, 2, 1, "valid", None, 1),  # pointwise with stride
        (1, 4, 1, "valid", None, 4),  # patch embedding
    ],
)
def test_conv_matches_torch(groups, stride, dilation, pad_type, pad, kernel):
    x, w, b = _rand(2, 8, 9, 9), _rand(16, 8 // groups, kernel, kernel), _rand(16)
    kw = dict(strides=[stride] * 2, dilations=[dilation] * 2, groups=groups, pad_type=pad_type)
    if pad is not None:
        kw["pad"] = pad
    got = _run(lambda v: mb.conv(x=v, weight=w, bias=b, **kw), x)
    xt = T(x)
    if pad_type == "custom":
        xt = F.pad(xt, [pad[2], pad[3], pad[0], pad[1]])
    tpad = "same" if pad_type == "same" else 0
    want = F.conv2d(xt, T(w), T(b), stride=stride, dilation=dilation, groups=groups, padding=tpad).numpy()
    _close(got, want)


def test_linear_matmul_broadcast():
    x, w, b = _rand(2, 5, 7), _rand(3, 7), _rand(3)
    _close(_run(lambda v: mb.linear(x=v, weight=w, bias=b), x), x @ w.T + b)
    a, c = _rand(4, 1, 5, 6), _rand(3, 7, 6)  # batch broadcast [4,1] x [3] and transpose_y
    _close(_run(lambda u, v: mb.matmul(x=u, y=v, transpose_y=True), a, c), a @ np.swapaxes(c, -1, -2))
    p, q = _rand(6, 5), _rand(6, 2)
    _close(_run(lambda u, v: mb.matmul(x=u, y=v, transpose_x=True), p, q), p.T @ q)


def test_norms_match_torch():
    x = _rand(2, 6, 4, 5)
    g, b = _rand(5), _rand(5)
    _close(
        _run(lambda v: mb.layer_norm(x=v, axes=[-1], gamma=g, beta=b, epsilon=1e-6), x),
        F.layer_norm(T(x), (5,), T(g), T(b), 1e-6).numpy(),
        1e-4,
    )
    g2, b2 = _rand(4, 5), _rand(4, 5)
    _close(
        _run(lambda v: mb.layer_norm(x=v, axes=[-2, -1], gamma=g2, beta=b2), x),
        F.layer_norm(T(x), (4, 5), T(g2), T(b2), 1e-5).numpy(),
        1e-4,
    )
    m, var, gc, bc = _rand(6), np.abs(_rand(6)) + 0.1, _rand(6), _rand(6)
    _close(
        _run(lambda v: mb.batch_norm(x=v, mean=m, variance=var, gamma=gc, beta=bc, epsilon=1e-5), x),
        F.batch_norm(T(x), T(m), T(var), T(gc), T(bc), False, 0.0, 1e-5).numpy(),
        1e-4,
    )
    _close(
        _run(lambda v: mb.instance_norm(x=v, gamma=gc, beta=bc, epsilon=1e-5), x),
        F.instance_norm(T(x), weight=T(gc), bias=T(bc), eps=1e-5).numpy(),
        1e-4,
    )


def test_activations_match_torch():
    x = _rand(3, 50, scale=4.0)
    xt = T(x)
    cases = {
        lambda v: mb.relu(x=v): F.relu(xt),
        lambda v: mb.relu6(x=v): F.relu6(xt),
        lambda v: mb.sigmoid(x=v): torch.sigmoid(xt),
        lambda v: mb.silu(x=v): F.silu(xt),
        lambda v: mb.gelu(x=v, mode="EXACT"): F.gelu(xt),
        lambda v: mb.gelu(x=v, mode="TANH_APPROXIMATION"): F.gelu(xt, approximate="tanh"),
        lambda v: mb.gelu(x=v, mode="SIGMOID_APPROXIMATION"): xt * torch.sigmoid(1.702 * xt),
        lambda v: mb.sigmoid_hard(x=v, alpha=1 / 6, beta=0.5): F.hardsigmoid(xt),
        lambda v: mb.thresholded_relu(x=v, alpha=0.5): torch.where(xt > 0.5, xt, 0.0),
        lambda v: mb.leaky_relu(x=v, alpha=0.1): F.leaky_relu(xt, 0.1),
        lambda v: mb.elu(x=v, alpha=1.0): F.elu(xt),
        lambda v: mb.clip(x=v, alpha=-1.0, beta=2.0): xt.clamp(-1, 2),
        lambda v: mb.softmax(x=v, axis=-1): F.softmax(xt, -1),
        lambda v: mb.softmax(x=v, axis=0): F.softmax(xt, 0),
        lambda v: mb.tanh(x=v): torch.tanh(xt),
        lambda v: mb.erf(x=v): torch.erf(xt),
        lambda v: mb.exp(x=v): torch.exp(xt),
        lambda v: mb.abs(x=v): xt.abs(),
    }
    for build, want in cases.items():
        _close(_run(build, x), want.numpy(), 1e-5)


def test_elementwise_broadcasting_and_unary():
    a, b = _rand(2, 1, 4), np.abs(_rand(3, 1)) + 0.5
    for op, f in [
        ("add", np.add),
        ("sub", np.subtract),
        ("mul", np.multiply),
        ("real_div", np.divide),
        ("maximum", np.maximum),
        ("minimum", np.minimum),
    ]:
        _close(_run(lambda u, v, op=op: getattr(mb, op)(x=u, y=v), a, b), f(a, b))
    pos = np.abs(a) + 0.1
    _close(_run(lambda u: mb.pow(x=u, y=2.0), pos), pos**2)
    _close(_run(lambda u: mb.sqrt(x=u), pos), np.sqrt(pos))
    _close(_run(lambda u: mb.rsqrt(x=u, epsilon=1e-6), pos), 1 / np.sqrt(pos + 1e-6))
    _close(_run(lambda u: mb.log(x=u), pos), np.log(pos))
    _close(_run(lambda u: mb.add(x=u, y=1.5), a), a + 1.5)  # scalar constant


def test_shape_ops():
    x = _rand(2, 3, 4, 5)
    _close(_run(lambda v: mb.reshape(x=v, shape=[2, -1, 5]), x), x.reshape(2, -1, 5))
    _close(_run(lambda v: mb.transpose(x=v, perm=[0, 2, 3, 1]), x), x.transpose(0, 2, 3, 1))
    got = _run(
        lambda v: mb.slice_by_index(
            x=v, begin=[0, 1, 0, 4], end=[2, 3, 4, 0], stride=[1, 1, 2, -2], end_mask=[False, False, False, True]
        ),
        x,
    )
    _close(got, x[0:2, 1:3, 0:4:2, 4::-2])
    got = _run(
        lambda v: mb.slice_by_index(
            x=v, begin=[0, 2, 0, 0], end=[1, 3, 4, 5], squeeze_mask=[False, True, False, False]
        ),
        x,
    )
    _close(got, x[0:1, 2, :, :])
    _close(_run(lambda v: mb.slice_by_size(x=v, begin=[0, 1, 1, 0], size=[-1, 2, 2, 3]), x), x[:, 1:3, 1:3, 0:3])
    a, b, c = _run(lambda v: mb.split(x=v, num_splits=3, axis=1), x)
    _close(b, x[:, 1:2])
    p, q = _run(lambda v: mb.split(x=v, split_sizes=[1, 4], axis=-1), x)
    _close(q, x[..., 1:])
    _close(_run(lambda u, v: mb.concat(values=[u, v], axis=2), x, x[:, :, :1]), np.concatenate([x, x[:, :, :1]], 2))
    y = _rand(2, 3, 4, 5)
    want = np.stack([x, y], axis=3).reshape(2, 3, 8, 5)  # x row 0, y row 0, x row 1, ...
    _close(_run(lambda u, v: mb.concat(values=[u, v], axis=2, interleave=True), x, y), want)
    _close(_run(lambda v: mb.expand_dims(x=v, axes=[0, -1]), x), x[None, ..., None])
    _close(_run(lambda v: mb.squeeze(x=v, axes=[0]), x[:1]), x[0])
    _close(_run(lambda v: mb.tile(x=v, reps=[1, 2, 1, 3]), x), np.tile(x, [1, 2, 1, 3]))
    _close(
        _run(lambda v: mb.pad(x=v, pad=[1, 2, 0, 1], mode="constant", constant_val=0.5), x),
        np.pad(x, [(0, 0), (0, 0), (1, 2), (0, 1)], constant_values=0.5),
    )


def test_reductions():
    x = _rand(2, 3, 4, 5)
    for op, f in [("reduce_mean", np.mean), ("reduce_sum", np.sum), ("reduce_max", np.max), ("reduce_min", np.min)]:
        _close(_run(lambda v, op=op: getattr(mb, op)(x=v, axes=[2, 3], keep_dims=True), x), f(x, (2, 3), keepdims=True))
        _close(_run(lambda v, op=op: getattr(mb, op)(x=v, axes=[-1]), x), f(x, -1))
    got = _run(lambda v: mb.reduce_argmax(x=v, axis=1), x)
    np.testing.assert_array_equal(got, x.argmax(1))


@pytest.mark.parametrize("exclude", [True, False])
def test_pooling_matches_torch(exclude):
    x = _rand(1, 4, 7, 7)
    kw = dict(kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1])
    got = _run(lambda v: mb.avg_pool(x=v, exclude_padding_from_average=exclude, **kw), x)
    _close(got, F.avg_pool2d(T(x), 3, 2, 1, count_include_pad=not exclude).numpy())
    got = _run(lambda v: mb.max_pool(x=v, **kw), x)
    _close(got, F.max_pool2d(T(x), 3, 2, 1).numpy())
    got = _run(
        lambda v: mb.avg_pool(
            x=v,
            kernel_sizes=[2, 2],
            strides=[2, 2],
            pad_type="valid",
            ceil_mode=True,
            exclude_padding_from_average=True,
        ),
        x,
    )
    _close(got, F.avg_pool2d(T(x), 2, 2, ceil_mode=True, count_include_pad=False).numpy())


def test_upsampling_matches_torch():
    x = _rand(1, 2, 3, 4)
    got = _run(lambda v: mb.upsample_nearest_neighbor(x=v, scale_factor_height=2, scale_factor_width=3), x)
    _close(got, F.interpolate(T(x), scale_factor=(2, 3), mode="nearest").numpy())
    for align in (True, False):
        got = _run(
            lambda v, a=align: mb.upsample_bilinear(x=v, scale_factor_height=2, scale_factor_width=2, align_corners=a),
            x,
        )
        want = F.interpolate(T(x), scale_factor=2, mode="bilinear", align_corners=align).numpy()
        _close(got, want, 1e-5)


def test_quantize_dequantize_match_torch():
    x = _rand(2, 4, 3)
    got = _run(
        lambda v: mb.dequantize(
            input=mb.quantize(input=v, scale=0.02, zero_point=np.int8(3), output_dtype="int8"),
            scale=0.02,
            zero_point=np.int8(3),
        ),
        x,
    )
    want = torch.dequantize(torch.quantize_per_tensor(T(x), 0.02, 3, torch.qint8)).numpy()
    _close(got, want, 1e-6)
    scales = np.array([0.01, 0.03, 0.05, 0.1], np.float32)
    zps = np.array([0, 1, -2, 5], np.int8)
    got = _run(
        lambda v: mb.dequantize(
            input=mb.quantize(input=v, scale=scales, zero_point=zps, axis=1, output_dtype="int8"),
            scale=scales,
            zero_point=zps,
            axis=1,
        ),
        x,
    )
    want = torch.quantize_per_channel(T(x), T(scales).double(), torch.from_numpy(zps.astype(np.int64)), 1, torch.qint8)
    _close(got, torch.dequantize(want).numpy(), 1e-6)
    q = _run(
        lambda v: mb.quantize(input=v, scale=0.5, output_dtype="uint8"),
        np.array([[-1.0, 0.25, 0.75, 300.0]], np.float32),
    )
    assert q.dtype == np.uint8 and q.tolist() == [[0, 0, 2, 255]]  # clipped; round half to even


def test_constexpr_ops_match_coremltools_decompression():
    from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as c16
    from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as c18
    from coremltools.optimize import _utils as u

    q = RNG.integers(-128, 127, (6, 8), dtype=np.int8)
    s, zp = (RNG.random(6) * 0.1).astype(np.float16), RNG.integers(-3, 3, 6, dtype=np.int8)
    got = OPS["constexpr_affine_dequantize"](q, zp, s, 0).astype(np.float16)  # the output dtype is the scale's
    _close(got, c16.constexpr_affine_dequantize.decompress(q, zp, s, 0))
    q4 = RNG.integers(-8, 7, (6, 64), dtype=np.int8)
    s4 = (RNG.random((6, 2)) * 0.1).astype(np.float32)
    off = RNG.integers(-2, 2, (6, 2), dtype=np.int8)
    _close(
        OPS["constexpr_blockwise_shift_scale"](q4, s4, off), c18.constexpr_blockwise_shift_scale.decompress(q4, s4, off)
    )
    lut, idx = RNG.standard_normal(16).astype(np.float16), RNG.integers(0, 16, 5 * 7).astype(np.uint8)
    packed = u.pack_elements_into_bits(idx, 4)
    _close(
        OPS["constexpr_lut_to_dense"](packed, lut, np.array([5, 7], np.uint32)),
        c16.constexpr_lut_to_dense.decompress(lut, packed, np.array([5, 7])),
    )
    lut18 = RNG.standard_normal((2, 1, 4, 1)).astype(np.float32)  # two LUTs along axis 0
    idx18 = RNG.integers(0, 4, (6, 2)).astype(np.uint8)
    _close(OPS["constexpr_lut_to_dense"](idx18, lut18), c18.constexpr_lut_to_dense.decompress(idx18, lut18, None))
    lutv = RNG.standard_normal((1, 1, 4, 2)).astype(np.float32)  # vector palettization along axis 1
    _close(
        OPS["constexpr_lut_to_dense"](idx18, lutv, vector_axis=1),
        c18.constexpr_lut_to_dense.decompress(idx18, lutv, np.int32(1)),
    )
    dense = RNG.standard_normal((4, 5)).astype(np.float16) * (RNG.random((4, 5)) > 0.5)
    mask = np.packbits((dense != 0).reshape(-1), bitorder="little")
    got = OPS["constexpr_sparse_to_dense"](dense[dense != 0], mask, np.array([4, 5], np.uint32))
    _close(got, dense)
    _close(OPS["constexpr_sparse_to_dense"](dense[dense != 0], (dense != 0).astype(np.uint8)), dense)


# ------------------------------------------------------------------------------------------------ precision
def test_fp16_rounding_is_round_to_nearest_even_with_overflow():
    x = np.array([[1 + 2**-11, 1 + 3 * 2**-11, 65504.0, 65520.0, 1e-8, -3.14159265]], np.float32)
    got = _run(lambda v: mb.identity(x=v), x, fp16=True)
    assert got.tolist()[0][:4] == [1.0, 1 + 2**-9, 65504.0, np.inf]  # ties to even; past max -> inf
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32))


def test_fp16_ops_round_every_output_like_torch_half():
    x, w, b = _rand(4, 64), _rand(32, 64), _rand(32)
    w16, b16 = w.astype(np.float16), b.astype(np.float16)
    got = _run(lambda v: mb.gelu(x=mb.linear(x=v, weight=w16, bias=b16)), x, fp16=True)
    # torch: float16 tensors, each op's result rounded to float16 (CPU half matmul accumulates in float32)
    h = F.linear(T(x).half(), T(w16), T(b16))
    want = F.gelu(h.float()).half().float().numpy()
    assert np.array_equal(got, got.astype(np.float16).astype(np.float32))  # every value is a float16
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    fp32 = _run(lambda v: mb.gelu(x=mb.linear(x=v, weight=w, bias=b)), x)
    assert np.abs(got - fp32).max() > 1e-3  # distinguishable from fp32 compute
    # inside an fp16 program, an intermediate that overflows float16 stays inf, as on device
    big = _run(
        lambda v: mb.mul(x=mb.mul(x=v, y=np.float16(300.0)), y=np.float16(300.0)),
        np.ones((1, 2), np.float32),
        fp16=True,
    )
    assert np.isinf(big).all()


# ------------------------------------------------------------------------------------------------ API and errors
def test_unsupported_op_is_named():
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))], opset_version=ct.target.iOS17)
    def prog(x):
        return mb.cumsum(x=x, axis=1, name="running_total")

    with pytest.raises(EdgeVitError, match=r"'cumsum'.*running_total"):
        Emulator(prog)


def test_wrong_inputs_are_clear_errors():
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))], opset_version=ct.target.iOS17)
    def prog(x):
        return mb.relu(x=x)

    name = next(iter(prog.functions["main"].inputs))
    with pytest.raises(EdgeVitError, match="inputs are"):
        emulate(prog, {"nope": np.zeros((2, 3), np.float32)})
    with pytest.raises(EdgeVitError, match="shape"):
        emulate(prog, {name: np.zeros((3, 3), np.float32)})


# ------------------------------------------------------------------------------------------------ whole models
FAMILIES = {  # one small config per family
    "vit_tiny_patch16": dict(img_size=32, patch_size=8, depth=2),
    "deit_tiny_distilled": dict(img_size=32, patch_size=8, depth=2),
    "mobilevit_xxs": dict(img_size=64),
    "mobilevitv2_050": dict(img_size=64),
    "mobile_former_26m": dict(img_size=64),
}


def _model_and_input(name, kw):
    from edgevit import create_model
    from edgevit.data.datasets import digits_tensors

    torch.manual_seed(0)
    model = randomize_(create_model(name, num_classes=10, **kw)).eval()
    x = digits_tensors(kw["img_size"], model.default_cfg["mean"], model.default_cfg["std"])[0][:1].clone()
    return model, x


def _convert(model, x, precision, to="milinternal"):
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    ep = torch.export.export(model, (x,)).run_decompositions({})
    return ct.convert(
        ep,
        convert_to=to,
        compute_precision=precision,
        minimum_deployment_target=ct.target.iOS17,
        inputs=[ct.TensorType(name="image", shape=tuple(x.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
    )


@pytest.mark.parametrize("name", list(FAMILIES))
def test_zoo_family_runs_in_the_emulator(name):
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    model, x = _model_and_input(name, FAMILIES[name])
    prog = _convert(model, x, ct.precision.FLOAT32)
    fp32 = Emulator(prog)  # loaded (constants copied) before the program is rewritten below
    PASS_REGISTRY["common::add_fp16_cast"](prog)  # the pass ct.convert runs for compute_precision=FLOAT16
    with torch.no_grad():
        ref = model(x).numpy()
        ref16 = model.half()(x.half()).float().numpy()
    scale = np.abs(ref).max()
    e32 = fp32({"image": x.numpy()})["logits"]
    e16 = Emulator(prog)({"image": x.numpy()})["logits"]
    err32 = np.abs(e32 - ref).max() / scale
    err16 = np.abs(e16 - ref16).max() / scale
    err16_32 = np.abs(e16 - ref).max() / scale
    print(f"{name}: fp32 rel {err32:.2e}; fp16 vs torch fp16 {err16:.2e}; fp16 vs fp32 {err16_32:.2e}")
    assert err32 <= 1e-4, f"{name}: emulated fp32 differs from PyTorch by {err32:.2e} (relative)"
    assert err16 <= 1e-2, f"{name}: emulated fp16 differs from PyTorch float16 by {err16:.2e}"
    assert err16_32 > 10 * err32 and err16_32 > 1e-4, f"{name}: fp16 emulation indistinguishable from fp32"


@pytest.mark.skipif(platform.system() != "Darwin", reason="MLModel.predict needs macOS")
def test_emulator_agrees_with_core_ml_on_macos(tmp_path):
    from edgevit.export import export

    model, x = _model_and_input("vit_tiny_patch16", FAMILIES["vit_tiny_patch16"])
    art = export(model, x, "coreml", tmp_path / "m.mlpackage")
    real = ct.models.MLModel(str(art.path)).predict({"image": x.numpy()})["logits"]
    got = emulate(art.path, {"image": x.numpy()})["logits"]
    np.testing.assert_allclose(got, real, atol=5e-3 * np.abs(real).max())


SWEEP = os.environ.get("EDGEVIT_EMULATE_ALL") == "1"


def _sweep_models():
    from edgevit import list_models

    return [m for m in list_models() if m not in {"vit_giant_patch14", "vit_gigantic_patch14"}]


@pytest.mark.skipif(not SWEEP, reason="set EDGEVIT_EMULATE_ALL=1 to sweep the whole registry (slow)")
@pytest.mark.parametrize("name", _sweep_models() if SWEEP else [])
def test_every_zoo_model_runs_in_the_emulator(name, tmp_path):
    """edgevit's real Core ML export (fp16 package, loaded back from disk) and an fp32 conversion, per model."""
    import re

    from edgevit.export import export

    m = re.search(r"patch(\d+)", name)
    size = 2 * int(m.group(1)) if m else 64
    model, x = _model_and_input(name, dict(img_size=size))
    art = export(model, x, "coreml", tmp_path / f"{name}.mlpackage")
    fp32 = _convert(model, x, ct.precision.FLOAT32)
    with torch.no_grad():
        ref = model(x).numpy()
        ref16 = model.half()(x.half()).float().numpy()
    scale = np.abs(ref).max()
    err32 = np.abs(emulate(fp32, {"image": x.numpy()})["logits"] - ref).max() / scale
    e16 = emulate(art.path, {"image": x.numpy()})["logits"]
    err16 = np.abs(e16 - ref16).max() / scale
    print(f"SWEEP {name} {size}px: fp32 rel {err32:.2e}; fp16 vs torch fp16 {err16:.2e}")
    assert err32 <= 1e-4 and err16 <= 1e-2
