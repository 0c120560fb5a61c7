"""``bundle.json``: what an app ships (its models, classes and preprocessing), as data, read back with errors that
name the key path (``docs/reference/bundle.md``). :mod:`edgevit.apps.writer` writes bundles from a run."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.apps._json import KeyPathReader
from edgevit.apps.pipeline import DTYPES, INT_RANGES, LAYOUTS, Quant, TensorSpec
from edgevit.data.eval_transform import COLOR_ORDERS, INTERPOLATIONS, EvalTransform
from edgevit.utils import EdgeVitError, read_json

FORMAT = "edgevit-bundle"
VERSION = 1
PLATFORMS = {"android": ("executorch", "tflite"), "ios": ("coreml", "executorch")}  # what each platform ships
PRECISIONS = ("fp32", "fp16", "int8")  # float and static int8; dynamic and weight-only stay in the run
_KEY = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class ModelEntry:
    """One shipped model: its file (relative to the bundle), backend, precision and tensors."""

    key: str
    file: str
    backend: str
    precision: str
    sha256: str
    input: TensorSpec
    output: TensorSpec


@dataclass(frozen=True)
class Bundle:
    """A parsed ``bundle.json`` (``root``: its folder)."""

    root: Path
    platform: str
    model_name: str
    classes: tuple[str, ...]
    preprocess: EvalTransform
    models: tuple[ModelEntry, ...]
    golden: str | None = None
    created_by: dict[str, Any] = field(default_factory=dict)

    def model(self, key: str) -> ModelEntry:
        """The model entry ``key``; EdgeVitError naming the keys there are when it is absent."""
        for m in self.models:
            if m.key == key:
                return m
        raise EdgeVitError(f"bundle {self.root} has no model {key!r}; it has {[m.key for m in self.models]}")

    def to_json(self) -> dict[str, Any]:
        """The ``bundle.json`` document."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "platform": self.platform,
            "model_name": self.model_name,
            "classes": list(self.classes),
            "preprocess": self.preprocess.to_json(),
            "models": [_model_json(m) for m in self.models],
        }
        if self.golden:
            doc["golden"] = self.golden
        if self.created_by:
            doc["created_by"] = self.created_by
        return doc


def _tensor_json(t: TensorSpec, is_input: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "dtype": t.dtype}
    if is_input:
        d["layout"] = t.layout
    d["shape"] = list(t.shape)
    d["quant"] = None if t.quant is None else {"scale": float(t.quant.scale), "zero_point": int(t.quant.zero_point)}
    return d


def _model_json(m: ModelEntry) -> dict[str, Any]:
    return {
        "key": m.key,
        "file": m.file,
        "backend": m.backend,
        "precision": m.precision,
        "sha256": m.sha256,
        "input": _tensor_json(m.input, True),
        "output": _tensor_json(m.output, False),
    }


# ---------------------------------------------------------------------------------------------------------- reading


def _preprocess(d: KeyPathReader, obj: Any, path: str) -> EvalTransform:
    get = d.get
    shorter = get(obj, "resize_shorter", path, int)
    if shorter < 1:
        raise d.fail(f"{path}.resize_shorter", "must be >= 1")
    crop = d.numbers(obj, "crop", path, 2, int)
    if not all(1 <= c <= shorter for c in crop):
        raise d.fail(f"{path}.crop", f"{crop} must be sizes in 1..resize_shorter ({shorter})")
    mean, std = d.numbers(obj, "mean", path, 3), d.numbers(obj, "std", path, 3)
    if min(std) <= 0:
        raise d.fail(f"{path}.std", "must be > 0")
    scale = get(obj, "value_scale", path, float)
    if scale <= 0:
        raise d.fail(f"{path}.value_scale", "must be > 0")
    return EvalTransform(
        shorter,
        tuple(crop),
        tuple(mean),
        tuple(std),
        interpolation=d.enum(obj, "interpolation", path, INTERPOLATIONS),
        antialias=get(obj, "antialias", path, bool),
        value_scale=scale,
        color_order=d.enum(obj, "color_order", path, COLOR_ORDERS),
        source=get(obj, "source", path, str, required=False) or "",
    )


def _tensor(d: KeyPathReader, obj: Any, path: str, is_input: bool) -> TensorSpec:
    dtype = d.enum(obj, "dtype", path, DTYPES)
    layout = d.enum(obj, "layout", path, LAYOUTS) if is_input else "NCHW"
    shape = d.get(obj, "shape", path, list)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise d.fail(f"{path}.shape", f"must be positive integers, got {shape}")
    if "quant" not in obj:
        raise d.fail(f"{path}.quant", "missing required key (null for a float tensor)")
    q, quant = obj["quant"], None
    if dtype in INT_RANGES:
        if q is None:
            raise d.fail(f"{path}.quant", f"a {dtype} tensor needs {{scale, zero_point}}")
        scale, zero = d.get(q, "scale", f"{path}.quant", float), d.get(q, "zero_point", f"{path}.quant", int)
        lo, hi = INT_RANGES[dtype]
        if scale <= 0:
            raise d.fail(f"{path}.quant.scale", "must be > 0")
        if not lo <= zero <= hi:
            raise d.fail(f"{path}.quant.zero_point", f"{zero} is outside {dtype}'s range {lo}..{hi}")
        quant = Quant(scale, zero)
    elif q is not None:
        raise d.fail(f"{path}.quant", f"must be null for a {dtype} tensor")
    return TensorSpec(d.get(obj, "name", path, str), dtype, tuple(shape), layout, quant)


def parse_bundle(doc: Any, root: Path, where: str = "bundle.json") -> Bundle:
    """A :class:`Bundle` from a parsed ``bundle.json`` document (``root``: the bundle's folder).

    Raises:
        EdgeVitError: the document breaks the contract in ``docs/reference/bundle.md``; the message names the key
            path (``models[1].input.layout``) and what was wrong.
    """
    d = KeyPathReader(where)
    fmt = d.get(doc, "format", "", str)
    if fmt != FORMAT:
        raise d.fail("format", f"{fmt!r} is not {FORMAT!r}")
    version = d.get(doc, "version", "", int)
    if version != VERSION:
        raise d.fail("version", f"{version} is not supported (this edgevit reads version {VERSION})")
    platform = d.enum(doc, "platform", "", tuple(PLATFORMS))
    classes = d.get(doc, "classes", "", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise d.fail("classes", "must be a non-empty list of strings")
    pre = _preprocess(d, d.get(doc, "preprocess", "", dict), "preprocess")
    models, keys = [], set()
    for i, m in enumerate(d.get(doc, "models", "", list)):
        path = f"models[{i}]"
        key = d.get(m, "key", path, str)
        if not _KEY.match(key) or key in keys:
            raise d.fail(f"{path}.key", f"{key!r} must be unique and match [A-Za-z0-9_]+")
        keys.add(key)
        file = d.get(m, "file", path, str)
        if file.startswith("/") or ".." in Path(file).parts or "\\" in file or "\x00" in file or not file:
            raise d.fail(f"{path}.file", f"{file!r} must be a relative POSIX path inside the bundle")
        sha = d.get(m, "sha256", path, str)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise d.fail(f"{path}.sha256", "must be 64 lowercase hex digits")
        inp = _tensor(d, d.get(m, "input", path, dict), f"{path}.input", True)
        out = _tensor(d, d.get(m, "output", path, dict), f"{path}.output", False)
        h, w = pre.crop
        want = (1, 3, h, w) if inp.layout == "NCHW" else (1, h, w, 3)
        if inp.shape != want:
            raise d.fail(f"{path}.input.shape", f"{list(inp.shape)} is not {list(want)} ({inp.layout}, crop {h}x{w})")
        if out.shape != (1, len(classes)):
            raise d.fail(f"{path}.output.shape", f"{list(out.shape)} does not match {len(classes)} classes")
        backend = d.enum(m, "backend", path, ("executorch", "tflite", "coreml"))
        precision = d.enum(m, "precision", path, PRECISIONS)
        models.append(ModelEntry(key, file, backend, precision, sha, inp, out))
    if not models:
        raise d.fail("models", "must list at least one model")
    return Bundle(
        root=Path(root),
        platform=platform,
        model_name=d.get(doc, "model_name", "", str),
        classes=tuple(classes),
        preprocess=pre,
        models=tuple(models),
        golden=d.get(doc, "golden", "", str, required=False),
        created_by=d.get(doc, "created_by", "", dict, required=False) or {},
    )


def read_bundle(bundle_dir: str | Path) -> Bundle:
    """Read and check ``bundle_dir/bundle.json``.

    Raises:
        EdgeVitError: the file is missing or not JSON, or breaks the contract (the message names the key path).
    """
    path = Path(bundle_dir) / "bundle.json"
    return parse_bundle(read_json(path, "app bundle"), Path(bundle_dir), str(path))


# ---------------------------------------------------------------------------------------------------------- writing


def sha256_path(path: str | Path) -> str:
    """SHA-256 of a file, or of a directory as bundle.md defines it (each file's relative path and hash, sorted)."""
    path = Path(path)
    if path.is_file():
        return _sha_file(path)
    h = hashlib.sha256()
    for rel in sorted((p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()), key=str.encode):
        h.update(f"{rel}\n{_sha_file(path / rel)}\n".encode())
    return h.hexdigest()


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
