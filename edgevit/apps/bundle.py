"""``bundle.json``: what an app ships (its models, classes and preprocessing), written from a run and read back with
errors that name the key path (``docs/reference/bundle.md``)."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit import __version__
from edgevit._utils import EdgeVitError, atomic_path, read_json, write_json_atomic
from edgevit.apps._json import KeyPathReader
from edgevit.apps.golden import write_golden
from edgevit.apps.pipeline import DTYPES, INT_RANGES, LAYOUTS, Quant, TensorSpec
from edgevit.backends import TensorIO, get_backend
from edgevit.data.eval_transform import COLOR_ORDERS, INTERPOLATIONS, EvalTransform, eval_transform
from edgevit.export import Artifact
from edgevit.recipe import load_run
from edgevit.rundir import manifest_artifacts

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
        if file.startswith("/") or ".." in Path(file).parts or "\\" in file or not file:
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


def platform_artifacts(run_dir: str | Path, platform: str) -> list[Artifact]:
    """The run's artifacts ``platform`` ships (bundle.md: Android ExecuTorch + LiteRT, iOS Core ML + ExecuTorch;
    float and static int8), in that backend order, then the manifest's.

    Raises:
        EdgeVitError: an unknown platform, no manifest, or nothing to ship.
    """
    if platform not in PLATFORMS:
        raise EdgeVitError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    run_dir = Path(run_dir)
    arts = manifest_artifacts(run_dir)
    picked = [a for b in PLATFORMS[platform] for a in arts if a.backend == b and a.precision in PRECISIONS]
    if not picked:
        have = ", ".join(f"{a.backend} {a.precision}" for a in arts) or "none"
        raise EdgeVitError(
            f"{run_dir} has no {' or '.join(PLATFORMS[platform])} artifact in {', '.join(PRECISIONS)} for {platform} "
            f"(it has: {have}); add such export targets to the recipe and run `edgevit export`"
        )
    return picked


def _io_specs(art: Artifact, num_classes: int) -> tuple[TensorSpec, TensorSpec]:
    """The artifact's input and output tensors: shape and layout from the manifest, element type and quantization
    from its backend (:meth:`edgevit.backends.Backend.io_tensors`: int8 for a full-integer LiteRT file, float32 where
    the graph quantizes inside, as ExecuTorch and Core ML int8 do)."""
    shape = tuple(art.info.get("input_shape") or ())
    if not shape:
        raise EdgeVitError(f"{art.path}: the manifest does not record info.input_shape; re-export it")
    inp = TensorSpec("image", "float32", shape, art.layout)
    out = TensorSpec("logits", "float32", (1, num_classes))
    i, o = get_backend(art.backend).io_tensors(art.path)

    def spec(io: TensorIO, base: TensorSpec) -> TensorSpec:
        if io.dtype not in DTYPES:
            raise EdgeVitError(f"{art.path}: {base.name} tensor dtype {io.dtype} is not one an app feeds ({DTYPES})")
        quant = Quant(io.scale, io.zero_point) if io.dtype in INT_RANGES else None
        return TensorSpec(base.name, io.dtype, base.shape, base.layout, quant)

    return spec(i, inp), spec(o, out)


def write_bundle(
    run_dir: str | Path, platform: str, out: str | Path, cases: int = 8, seed: int = 0, top_k: int = 5
) -> Bundle:
    """Write an app bundle for ``platform`` from a trained and exported run: the platform's artifacts under
    ``models/``, ``bundle.json`` (with the evaluation transform of the run's dataset, recorded from
    :func:`~edgevit.data.eval_transform.eval_transform`) and ``cases`` golden cases under ``golden/``
    (:func:`edgevit.apps.golden.write_golden`). The bundle is built beside ``out`` and moved into place at the end.

    Args:
        run_dir: a run directory with ``model.json`` and ``artifacts/manifest.json``.
        platform: ``android`` or ``ios``.
        out: the bundle folder; replaced if it holds a bundle, refused if it holds anything else.
        cases: how many golden cases (0: none).
        seed: the golden cases' random seed.
        top_k: how many classes the golden top-k lists.

    Returns:
        The written :class:`Bundle` (read back from ``out``).

    Raises:
        EdgeVitError: an unknown platform, a run without the artifacts the platform ships, an artifact whose input
            does not match the evaluation crop, or an ``out`` that is a non-bundle folder.
    """
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "bundle.json").is_file())):
        raise EdgeVitError(f"{out} exists and is not an app bundle; choose an empty or new folder")
    arts = platform_artifacts(run_dir, platform)
    recipe = load_run(run_dir)
    meta = read_json(run_dir / "model.json", "trained model description (run `edgevit train` first)")
    classes = list(meta["classes"])
    pre = eval_transform(recipe.data.name, recipe.data.img_size, meta["mean"], meta["std"])
    with atomic_path(out) as tmp:
        (tmp / "models").mkdir(parents=True)
        entries = []
        for art in arts:
            if not Path(art.path).exists():
                raise EdgeVitError(f"artifact {art.path} is in the manifest but missing; re-run `edgevit export`")
            name = Path(art.path).name
            dst = tmp / "models" / name
            (shutil.copytree if Path(art.path).is_dir() else shutil.copy2)(art.path, dst)
            inp, outp = _io_specs(art, len(classes))
            key = name.split(".")[0]  # the file name's stem: backend_precision[_method][_nhwc], unique in a run
            entries.append(ModelEntry(key, f"models/{name}", art.backend, art.precision, sha256_path(dst), inp, outp))
        bundle = Bundle(
            tmp,
            platform,
            meta["name"],
            tuple(classes),
            pre,
            tuple(entries),
            golden="golden/cases.json" if cases else None,
            created_by={"edgevit": __version__, "run": recipe.name},
        )
        bundle = parse_bundle(bundle.to_json(), tmp, f"bundle for {run_dir}")  # the contract, checked before writing
        if cases:
            pairs = zip(entries, arts, strict=True)
            arts_by_key = {e.key: Artifact(a.backend, a.precision, tmp / e.file, a.info) for e, a in pairs}
            write_golden(tmp / "golden", bundle, arts_by_key, cases, seed, top_k)
        write_json_atomic(tmp / "bundle.json", bundle.to_json())
    return read_bundle(out)
