"""Writing an app bundle from a trained and exported run: the platform's artifacts, ``bundle.json`` and golden
cases (``docs/reference/bundle.md``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgevit import __version__
from edgevit.apps.bundle import PLATFORMS, PRECISIONS, Bundle, ModelEntry, parse_bundle, read_bundle, sha256_path
from edgevit.apps.golden import write_golden
from edgevit.apps.pipeline import DTYPES, INT_RANGES, Quant, TensorSpec
from edgevit.backends import TensorIO, get_backend
from edgevit.data.eval_transform import eval_transform
from edgevit.export import Artifact
from edgevit.recipe import load_run
from edgevit.rundir import manifest_artifacts
from edgevit.utils import EdgeVitError, atomic_path, read_json, write_json_atomic


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


__all__ = ["platform_artifacts", "write_bundle"]
