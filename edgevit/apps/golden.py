"""Golden cases: raw pixel buffers of varied sizes, strides, rotations and pixel formats, each with the expected model
input tensor of every bundled model (from :mod:`edgevit.apps.pipeline`) and the logits and top-k of running that
model in its Python runtime. The Kotlin and Swift cores' tests read them (``docs/reference/bundle.md``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgevit.apps import pipeline
from edgevit.apps._json import KeyPathReader
from edgevit.apps.bundle import Bundle
from edgevit.apps.pipeline import INT_RANGES, PIXEL_FORMATS, ROTATIONS, Frame, TensorSpec
from edgevit.export import Artifact
from edgevit.parity import artifact_runner
from edgevit.utils import EdgeVitError, read_json, write_json_atomic

CASES_VERSION = 1


@dataclass(frozen=True)
class Case:
    """One golden case: a raw buffer and where its pixels came from."""

    id: str
    frame: Frame
    source: str = ""


@functools.cache
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits  # noqa: PLC0415 -- scikit-learn takes a second to import; only the digits data needs it

    return np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8] ink 0..16 -> 0..255


@functools.cache
def _photos() -> tuple[tuple[str, np.ndarray], ...]:
    from sklearn.datasets import load_sample_images  # noqa: PLC0415 -- scikit-learn takes a second to import

    data = load_sample_images()
    # two [427, 640, 3] uint8 photos: china.jpg, flower.jpg
    return tuple((Path(f).name, img) for f, img in zip(data.filenames, data.images, strict=True))


def random_image(rng: np.random.Generator, max_side: int = 160) -> tuple[np.ndarray, str]:
    """An upright ``[H, W, 3]`` uint8 image and its description: a scikit-learn digit scan (8x8, or enlarged by
    nearest-neighbour), a crop or a shrunk whole view of scikit-learn's two sample photos, or uniform noise."""
    kind = rng.choice(["digit", "photo", "photo", "noise"])
    if kind == "digit":
        i, f = int(rng.integers(len(_digits()))), int(rng.integers(1, max(2, max_side // 8)))
        img = np.repeat(np.repeat(_digits()[i], f, 0), f, 1)
        return np.repeat(img[..., None], 3, axis=2), f"scikit-learn digit #{i}, enlarged x{f} (nearest)"
    if kind == "noise":
        h, w = (int(v) for v in rng.integers(1, max_side + 1, 2))
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "uniform noise"
    name, photo = _photos()[int(rng.integers(len(_photos())))]
    h, w = (int(v) for v in rng.integers(2, max_side + 1, 2))
    if rng.random() < 0.3:  # the whole view, shrunk (a photo's composition, not a texture)
        return np.asarray(Image.fromarray(photo).resize((w, h), Image.BILINEAR)), f"scikit-learn {name}, {w}x{h} whole"
    top, left = int(rng.integers(photo.shape[0] - h + 1)), int(rng.integers(photo.shape[1] - w + 1))
    return photo[top : top + h, left : left + w].copy(), f"scikit-learn {name}, crop {w}x{h} at ({left}, {top})"


def random_frame(rng: np.random.Generator, img: np.ndarray) -> Frame:
    """``img`` stored as a camera would: a random pixel format and rotation, rows padded with garbage bytes to a
    random stride (tight, a few bytes, or 64-byte aligned)."""
    fmt, rot = str(rng.choice(PIXEL_FORMATS)), int(rng.choice(ROTATIONS))
    f = pipeline.frame_from_image(img, fmt, rot)
    tight = 4 * f.width
    stride = [tight, tight + int(rng.integers(1, 40)), -(-tight // 64) * 64 + 64 * int(rng.integers(0, 2))][
        int(rng.integers(3))
    ]
    buf = rng.integers(0, 256, (f.height, stride), dtype=np.uint8)  # garbage in the padding (and alpha below)
    px = np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 4).copy()
    px[..., 3] = rng.integers(0, 256, px.shape[:2])  # alpha is ignored by the pipeline: make it noise
    buf[:, :tight] = px.reshape(f.height, tight)
    return Frame(buf.tobytes(), f.width, f.height, stride, fmt, rot)


def random_cases(rng: np.random.Generator, n: int, max_side: int = 160, prefix: str = "case") -> list[Case]:
    """``n`` cases of random images (:func:`random_image`) in random frames (:func:`random_frame`)."""
    cases = []
    for i in range(n):
        img, source = random_image(rng, max_side)
        cases.append(Case(f"{prefix}_{i:03d}", random_frame(rng, img), source))
    return cases


def _little_endian(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<")).tobytes()


def read_tensor(path: str | Path, spec: TensorSpec) -> np.ndarray:
    """A little-endian ``.bin`` tensor of ``spec``'s dtype and shape.

    Raises:
        EdgeVitError: the file is missing or has the wrong size.
    """
    path, dtype = Path(path), np.dtype(spec.dtype).newbyteorder("<")
    if not path.is_file():
        raise EdgeVitError(f"tensor file not found: {path}")
    data = path.read_bytes()
    want = int(np.prod(spec.shape)) * dtype.itemsize
    if len(data) != want:
        raise EdgeVitError(f"{path} has {len(data)} bytes; a {spec.dtype} tensor {list(spec.shape)} has {want}")
    return np.frombuffer(data, dtype).reshape(spec.shape).astype(spec.dtype)


def write_cases(
    folder: str | Path,
    cases: list[Case],
    bundle: Bundle,
    expected: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    top_k: int = 5,
    extra: Mapping[str, Any] | None = None,
    inputs: bool = True,
) -> Path:
    """Write ``cases`` into ``folder``: each buffer (``<id>.raw``), each model's expected input tensor
    (``<id>__<model>.bin``, from :func:`~edgevit.apps.pipeline.model_input`) and ``cases.json``.

    ``expected[case id][model key]`` adds to that model's entry (``logits``, ``raw_output``, ``top_k``); ``extra``
    adds top-level keys; ``inputs=False`` leaves the expected input tensors out (cases for a runner under test).
    Returns ``folder / "cases.json"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for case in cases:
        f = case.frame
        (folder / f"{case.id}.raw").write_bytes(f.data)
        exp: dict[str, Any] = {}
        for m in bundle.models:
            exp[m.key] = dict((expected or {}).get(case.id, {}).get(m.key, {}))
            if inputs:
                name = f"{case.id}__{m.key}.bin"
                (folder / name).write_bytes(_little_endian(pipeline.model_input(f, bundle.preprocess, m.input)))
                exp[m.key] = {"input": name, **exp[m.key]}
        entries.append(
            {
                "id": case.id,
                "buffer": f"{case.id}.raw",
                "width": f.width,
                "height": f.height,
                "row_stride": f.row_stride,
                "pixel_format": f.pixel_format,
                "rotation": f.rotation,
                "source": case.source,
                "expected": exp,
            }
        )
    doc = {"version": CASES_VERSION, "top_k": top_k, **(extra or {}), "cases": entries}
    return write_json_atomic(folder / "cases.json", doc)


def read_cases(folder: str | Path) -> tuple[list[Case], dict[str, Any]]:
    """The cases in ``folder/cases.json`` with their buffers, and the document itself.

    Raises:
        EdgeVitError: a missing file, or a malformed case (the message names the key path, e.g. ``cases[3].rotation``).
    """
    path = Path(folder) / "cases.json"
    doc = read_json(path, "golden cases")
    d = KeyPathReader(str(path))
    version = d.get(doc, "version", "", int)
    if version != CASES_VERSION:
        raise d.fail("version", f"{version} is not supported (this edgevit reads version {CASES_VERSION})")
    d.get(doc, "top_k", "", int)
    cases = []
    for i, c in enumerate(d.get(doc, "cases", "", list)):
        p = f"cases[{i}]"
        buf = Path(folder) / d.get(c, "buffer", p, str)
        if not buf.is_file():
            raise d.fail(f"{p}.buffer", f"{buf} not found")
        w, h, stride, rot = (d.get(c, k, p, int) for k in ("width", "height", "row_stride", "rotation"))
        fmt = d.enum(c, "pixel_format", p, PIXEL_FORMATS)
        if rot not in ROTATIONS:
            raise d.fail(f"{p}.rotation", f"{rot} is not one of {ROTATIONS}")
        try:
            frame = Frame(buf.read_bytes(), w, h, stride, fmt, rot)
        except EdgeVitError as e:
            raise d.fail(p, str(e)) from e
        cases.append(Case(d.get(c, "id", p, str), frame, c.get("source", "")))
    return cases, doc


def expected_logits(entry: Mapping[str, Any], output: TensorSpec) -> np.ndarray | None:
    """A case's expected logits for one model (``raw_output`` dequantised when present, else ``logits``), or None."""
    if entry.get("raw_output") is not None:
        return pipeline.logits_of(np.asarray(entry["raw_output"]), output)
    if entry.get("logits") is not None:
        return np.asarray(entry["logits"], np.float64)
    return None


def _model_feed(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The app's input tensor as the Python runner takes it: integer inputs dequantised (the LiteRT runner
    re-quantizes them to exactly the same integers), float inputs unchanged."""
    if spec.dtype in INT_RANGES:
        return pipeline.dequantize(x, spec.quant)  # float64: (q - z) * s, and round(that / s) + z == q
    return x


def run_model(runner: Callable[[np.ndarray], np.ndarray], x: np.ndarray, output: TensorSpec) -> dict[str, Any]:
    """``logits`` (and ``raw_output`` for an integer output) of one model run on its input tensor ``x``."""
    y = np.asarray(runner(x), np.float64).reshape(-1)
    if output.dtype not in INT_RANGES:
        return {"logits": [float(np.float32(v)) for v in y]}
    raw = y / output.quant.scale + output.quant.zero_point  # the runner dequantised the raw output: undo it
    if np.abs(raw - np.rint(raw)).max() > 1e-3:
        raise EdgeVitError(f"model output is not {output.dtype} with scale {output.quant.scale}: got {y[:4]}")
    raw = np.rint(raw).astype(np.int64)
    return {"logits": [float(v) for v in pipeline.dequantize(raw, output.quant)], "raw_output": raw.tolist()}


def write_golden(
    folder: str | Path,
    bundle: Bundle,
    artifacts: Mapping[str, Artifact],
    n: int = 8,
    seed: int = 0,
    top_k: int = 5,
    max_side: int = 160,
) -> Path:
    """Write ``n`` golden cases for ``bundle`` into ``folder``: random buffers, every model's expected input
    tensor, and the logits/top-k of running ``artifacts[model key]`` (each in its Python runtime; Core ML off
    macOS in edgevit's emulator, recorded in ``runtimes``).

    Raises:
        EdgeVitError: a model that cannot run here at all, or a runner error.
    """
    rng = np.random.default_rng(seed)
    cases = random_cases(rng, n, max_side)
    expected: dict[str, dict[str, dict[str, Any]]] = {c.id: {} for c in cases}
    runtimes = {}
    for m in bundle.models:
        runner, runtimes[m.key] = artifact_runner(artifacts[m.key])
        for c in cases:
            x = pipeline.model_input(c.frame, bundle.preprocess, m.input)
            out = run_model(runner, _model_feed(x, m.input), m.output)
            out["top_k"] = [[i, p] for i, p in pipeline.top_k(np.asarray(out["logits"]), top_k)]
            expected[c.id][m.key] = out
    return write_cases(folder, cases, bundle, expected, top_k, extra={"seed": seed, "runtimes": runtimes})
