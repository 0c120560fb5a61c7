"""The app pipeline as a NumPy reference: a raw RGBA/BGRA camera or photo buffer to the model's input tensor, and the
model's output to softmax and top-k, exactly as ``docs/reference/bundle.md`` specifies.

The Kotlin and Swift cores implement the same arithmetic (float64, in the same order), so float tensors agree to
float32 rounding and int8/uint8 tensors agree bit for bit. Every step is a small function a test can compare with
PyTorch/PIL: :func:`upright_rgb`, :func:`resize`, :func:`center_crop`, :func:`normalise`, :func:`to_tensor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgevit.data.eval_transform import EvalTransform, crop_offsets, resized_size
from edgevit.utils import EdgeVitError

PIXEL_FORMATS = ("RGBA_8888", "BGRA_8888")
ROTATIONS = (0, 90, 180, 270)
DTYPES = ("float32", "int8", "uint8")
LAYOUTS = ("NCHW", "NHWC")
INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


@dataclass(frozen=True)
class Frame:
    """A raw 8-bit 4-channel buffer as a camera or photo decoder hands it to an app.

    ``data`` holds ``height`` rows of ``row_stride`` bytes (the last row may stop after ``4 * width`` bytes);
    ``rotation`` is the clockwise rotation that makes it upright.
    """

    data: bytes
    width: int
    height: int
    row_stride: int
    pixel_format: str = "RGBA_8888"
    rotation: int = 0

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or self.row_stride < 4 * self.width:
            raise EdgeVitError(f"frame {self.width}x{self.height} needs row_stride >= {4 * self.width}")
        if self.pixel_format not in PIXEL_FORMATS or self.rotation not in ROTATIONS:
            raise EdgeVitError(f"pixel_format {self.pixel_format!r} / rotation {self.rotation!r} not supported")
        need = self.row_stride * (self.height - 1) + 4 * self.width
        if len(self.data) < need:
            raise EdgeVitError(f"frame buffer has {len(self.data)} bytes; {self.height} rows need {need}")


@dataclass(frozen=True)
class Quant:
    """An integer tensor's affine quantization: ``real = (q - zero_point) * scale``."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as ``bundle.json`` records it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    layout: str = "NCHW"  # inputs only
    quant: Quant | None = None


def frame_from_image(
    rgb: np.ndarray, pixel_format: str = "RGBA_8888", rotation: int = 0, row_stride: int | None = None, pad: int = 0
) -> Frame:
    """The buffer a camera would deliver for the upright ``[H, W, 3]`` uint8 image ``rgb``: stored rotated so that
    turning it clockwise by ``rotation`` makes it upright, alpha 255, rows padded to ``row_stride`` (default
    ``4 * width``) with the byte ``pad``."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    stored = np.rot90(rgb, k=rotation // 90)  # counter-clockwise: the clockwise rotation undoes it
    h, w = stored.shape[:2]
    px = np.empty((h, w, 4), np.uint8)
    px[..., :3] = stored if pixel_format == "RGBA_8888" else stored[..., ::-1]
    px[..., 3] = 255
    stride = row_stride or 4 * w
    buf = np.full((h, stride), pad, np.uint8)
    buf[:, : 4 * w] = px.reshape(h, 4 * w)
    return Frame(buf.tobytes(), w, h, stride, pixel_format, rotation)


def upright_rgb(frame: Frame) -> np.ndarray:
    """The frame's pixels as an upright ``[H', W', 3]`` float64 RGB image (0..255): channels read by the pixel
    format, alpha dropped, rotated clockwise by ``frame.rotation`` (bundle.md step 1)."""
    h, w, stride = frame.height, frame.width, frame.row_stride
    raw = np.frombuffer(frame.data, np.uint8)
    raw = np.concatenate([raw[: stride * h], np.zeros(max(0, stride * h - len(raw)), np.uint8)])  # short last row
    px = raw.reshape(h, stride)[:, : 4 * w].reshape(h, w, 4)  # [H, stride] -> [H, W, 4]
    rgb = px[..., :3] if frame.pixel_format == "RGBA_8888" else px[..., 2::-1]  # BGRA -> RGB
    return np.rot90(rgb, k=-(frame.rotation // 90)).astype(np.float64)  # k < 0: clockwise


def _filter(name: str, x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    if name == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def resize_weights(n_in: int, n_out: int, interpolation: str, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """PIL's ``precompute_coeffs`` for one axis: ``(index [n_out, taps], weight [n_out, taps])`` with each row's
    normalised weights left to right (padding taps: index 0, weight 0.0)."""
    s = n_in / n_out
    fs = s if antialias and s > 1.0 else 1.0
    inv_fs = 1.0 / fs
    support = _SUPPORT[interpolation] * fs
    center = (np.arange(n_out) + 0.5) * s
    lo = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc(center + support + 0.5), n_in).astype(np.int64)
    taps = int((hi - lo).max())
    j = lo[:, None] + np.arange(taps)[None, :]  # [n_out, taps]
    valid = j < hi[:, None]
    w = np.where(valid, _filter(interpolation, ((j - center[:, None]) + 0.5) * inv_fs), 0.0)
    total = np.zeros(n_out)
    for k in range(taps):  # left to right, as every core sums
        total = total + w[:, k]
    return np.where(valid, j, 0), w / total[:, None]


def _resize_axis(img: np.ndarray, axis: int, n_out: int, interpolation: str, antialias: bool) -> np.ndarray:
    n_in = img.shape[axis]
    if n_in == n_out:
        return img
    idx, w = resize_weights(n_in, n_out, interpolation, antialias)
    x = np.moveaxis(img, axis, 0)  # the resized axis first: [n_in, ...]
    out = np.zeros((n_out, *x.shape[1:]))
    bcast = (slice(None),) + (None,) * (x.ndim - 1)
    for k in range(idx.shape[1]):  # accumulate tap by tap: the same order as a scalar loop over j
        out = out + w[:, k][bcast] * x[idx[:, k]]
    return np.moveaxis(out, 0, axis)


def resize(img: np.ndarray, height: int, width: int, interpolation: str = "bilinear", antialias: bool = True):
    """``[H, W, C]`` float64 resized to ``[height, width, C]``: horizontal pass, then vertical (bundle.md step 2)."""
    x = _resize_axis(np.asarray(img, np.float64), 1, width, interpolation, antialias)
    return _resize_axis(x, 0, height, interpolation, antialias)


def center_crop(img: np.ndarray, crop: Sequence[int]) -> np.ndarray:
    """The centre ``[crop_h, crop_w]`` of ``[H, W, C]`` (torchvision ``CenterCrop`` offsets; bundle.md step 3)."""
    top, left = crop_offsets(img.shape[0], img.shape[1], crop)
    if top < 0 or left < 0:
        raise EdgeVitError(f"centre crop {list(crop)} is larger than the resized image {list(img.shape[:2])}")
    return img[top : top + crop[0], left : left + crop[1]]


def normalise(img: np.ndarray, t: EvalTransform) -> np.ndarray:
    """``[h, w, 3]`` RGB 0..255 to the model's channels: ``(v / value_scale - mean[c]) / std[c]``, channel ``c``
    in ``t.color_order`` (bundle.md step 4)."""
    rgb = img if t.color_order == "RGB" else img[..., ::-1]
    mean, std = np.asarray(t.mean, np.float64), np.asarray(t.std, np.float64)
    return (rgb / t.value_scale - mean) / std


def quantize(x: np.ndarray, dtype: str, q: Quant) -> np.ndarray:
    """``clamp(sign(t) * floor(|t| + 0.5) + zero_point)`` with ``t = x / scale`` (round half away from zero)."""
    t = x / q.scale
    r = np.sign(t) * np.floor(np.abs(t) + 0.5)
    lo, hi = INT_RANGES[dtype]
    return np.clip(r + q.zero_point, lo, hi).astype(dtype)


def to_tensor(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``[h, w, 3]`` float64 model channels as the model's input: ``spec.layout`` and ``spec.dtype`` (steps 5-6)."""
    if spec.layout not in LAYOUTS or spec.dtype not in DTYPES:
        raise EdgeVitError(f"input layout {spec.layout!r} / dtype {spec.dtype!r} not supported")
    t = np.transpose(x, (2, 0, 1))[None] if spec.layout == "NCHW" else x[None]  # [h, w, 3] -> [1, 3, h, w]
    t = np.ascontiguousarray(t)
    if spec.dtype == "float32":
        return t.astype(np.float32)
    if spec.quant is None:
        raise EdgeVitError(f"input {spec.name!r} is {spec.dtype} but has no quant (scale, zero_point)")
    return quantize(t, spec.dtype, spec.quant)


def model_input(frame: Frame, t: EvalTransform, spec: TensorSpec) -> np.ndarray:
    """The whole app preprocessing: ``frame`` to the model input tensor ``spec`` describes."""
    img = upright_rgb(frame)
    h, w = resized_size(img.shape[0], img.shape[1], t.resize_shorter)
    img = center_crop(resize(img, h, w, t.interpolation, t.antialias), t.crop)
    return to_tensor(normalise(img, t), spec)


def dequantize(raw: np.ndarray, q: Quant) -> np.ndarray:
    """An integer output as float64 logits: ``(q - zero_point) * scale``."""
    return (np.asarray(raw, np.float64) - q.zero_point) * q.scale


def softmax(z: np.ndarray) -> np.ndarray:
    """float64 softmax of 1-D logits: ``exp(z - max)`` over their sum accumulated in index order."""
    z = np.asarray(z, np.float64).reshape(-1)
    e = np.exp(z - z.max())
    total = 0.0
    for v in e:
        total += v
    return e / total


def top_k(z: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """``[(class index, probability)]`` of the ``k`` largest logits, descending, ties by lower index first."""
    z = np.asarray(z, np.float64).reshape(-1)
    p = softmax(z)
    order = np.argsort(-z, kind="stable")[: min(k, z.size)]
    return [(int(i), float(p[i])) for i in order]


def logits_of(output: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A model's raw output as float64 logits (dequantised when ``spec`` is an integer tensor)."""
    if spec.dtype in INT_RANGES:
        if spec.quant is None:
            raise EdgeVitError(f"output {spec.name!r} is {spec.dtype} but has no quant (scale, zero_point)")
        return dequantize(output, spec.quant).reshape(-1)
    return np.asarray(output, np.float64).reshape(-1)
