"""The run directory: the one module that knows its layout, and the artifact manifest an app reads.

Every stage reads and writes files in a run directory, so each CLI verb can run on its own::

    RUN/recipe.yaml                     the resolved recipe (written first)
    RUN/checkpoints/                    last.{safetensors,optim.safetensors,ema.safetensors,json}, config.json
    RUN/metrics.csv, RUN/tb/            one row per epoch; TensorBoard events
    RUN/model.{safetensors,json}        the trained model (EMA weights with train.ema_decay) and how to rebuild it
    RUN/qat/<backend>/                  QAT fine-tuning of that backend's graph (checkpoints, metrics.csv)
    RUN/artifacts/                      exported files, manifest.json (input, mean/std, classes, each artifact),
                                        mixed_precision.json (the max_drop plan)
    RUN/parity.json, report.{md,html}   the host parity report; parity-DEVICE.json, report-DEVICE.{md,html}
    RUN/compress_report.{md,png}        compress-report's table and plot
    RUN/timings.json                    how long each stage of the last run/export/parity took

Paths read from a manifest are checked to stay inside the run's ``artifacts/`` (an edited manifest must not point
the parity gate at another file than the one shipped), and names that become file names (a device profile's) are
checked to be plain names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgevit.backends import list_backends
from edgevit.export import Artifact
from edgevit.utils import EdgeVitError, read_json, write_json_atomic

RECIPE = "recipe.yaml"
MODEL = "model.safetensors"
ARTIFACTS = "artifacts"
MANIFEST = f"{ARTIFACTS}/manifest.json"
PLAN = f"{ARTIFACTS}/mixed_precision.json"
TIMINGS = "timings.json"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def recipe_path(run_dir: str | Path) -> Path:
    """``RUN/recipe.yaml``."""
    return Path(run_dir) / RECIPE


def model_path(run_dir: str | Path) -> Path:
    """``RUN/model.safetensors`` (its ``.json`` beside it)."""
    return Path(run_dir) / MODEL


def artifacts_dir(run_dir: str | Path) -> Path:
    """``RUN/artifacts``."""
    return Path(run_dir) / ARTIFACTS


def manifest_path(run_dir: str | Path) -> Path:
    """``RUN/artifacts/manifest.json``."""
    return Path(run_dir) / MANIFEST


def plan_path(run_dir: str | Path) -> Path:
    """Where ``stage_export`` writes the accuracy-controlled mixed-precision plan."""
    return Path(run_dir) / PLAN


def qat_dir(run_dir: str | Path, backend: str) -> Path:
    """Where ``stage_qat`` fine-tunes ``backend``'s QAT graph (checkpoints, metrics.csv)."""
    return Path(run_dir) / "qat" / backend


def timings_path(run_dir: str | Path) -> Path:
    """``RUN/timings.json``: the stage timing table of the last command that ran stages."""
    return Path(run_dir) / TIMINGS


def plain_name(name: str, what: str) -> str:
    """``name`` if it can be used as (part of) a file name: letters, digits, ``.``, ``_``, ``-``, no path.

    Raises:
        EdgeVitError: a name with a separator, ``..``, or other characters, naming ``what`` it is.
    """
    if not _PLAIN_NAME.match(name or "") or ".." in name:
        raise EdgeVitError(f"{what} {name!r} cannot be used in a file name: use letters, digits, '.', '_' and '-'")
    return name


def report_names(device: str = "host") -> tuple[str, str]:
    """``(parity.json, report.md)`` for the host; ``(parity-DEVICE.json, report-DEVICE.md)`` for another device,
    so a device check never overwrites the host report (and its latency, which ``compress-report`` reads)."""
    if device == "host":
        return "parity.json", "report.md"
    device = plain_name(device, "device name")
    return f"parity-{device}.json", f"report-{device}.md"


def report_paths(run_dir: str | Path, device: str = "host") -> list[Path]:
    """Every file a parity report for ``device`` writes in ``run_dir`` (JSON, Markdown, HTML)."""
    json_name, md_name = report_names(device)
    md = Path(run_dir) / md_name
    return [Path(run_dir) / json_name, md, md.with_suffix(".html")]


def read_manifest(run_dir: str | Path, missing_ok: bool = True) -> dict[str, Any]:
    """The run's ``artifacts/manifest.json``, its structure checked (``{"artifacts": []}`` when there is none and
    ``missing_ok``).

    Raises:
        EdgeVitError: unreadable JSON, or JSON of the wrong structure, naming the key.
    """
    path = manifest_path(run_dir)
    if not path.is_file():
        if missing_ok:
            return {"artifacts": []}
        raise EdgeVitError(f"{run_dir} has no artifact manifest ({MANIFEST}); run `edgevit export {run_dir}` first")
    manifest = read_json(path, "artifact manifest")
    where = f"artifact manifest {path}"
    if not isinstance(manifest, dict):
        raise EdgeVitError(f"{where}: the top level must be an object with an 'artifacts' list")
    arts = manifest.get("artifacts")
    if not isinstance(arts, list):
        raise EdgeVitError(f"{where}: 'artifacts' must be a list")
    backends = list_backends()
    for i, a in enumerate(arts):
        if not isinstance(a, dict):
            raise EdgeVitError(f"{where}: artifacts[{i}] must be an object")
        for key in ("backend", "precision", "path"):
            if not isinstance(a.get(key), str):
                raise EdgeVitError(f"{where}: artifacts[{i}].{key} is missing or not a string")
        if a["backend"] not in backends:
            raise EdgeVitError(f"{where}: artifacts[{i}].backend {a['backend']!r} is not one of {', '.join(backends)}")
        if not isinstance(a.get("info", {}), dict):
            raise EdgeVitError(f"{where}: artifacts[{i}].info must be an object")
    if "input" in manifest and not isinstance(manifest["input"], dict):
        raise EdgeVitError(f"{where}: 'input' must be an object")
    return manifest


def artifact_file(run_dir: str | Path, relative: str) -> Path:
    """The file a manifest's artifact ``path`` names, which must lie inside ``RUN/artifacts``.

    Raises:
        EdgeVitError: an absolute path, or one that leaves ``artifacts/`` (``../``, a symlink out).
    """
    base = artifacts_dir(run_dir).resolve()
    if "\x00" in relative:  # the OS cannot name such a file; resolve() would raise ValueError
        raise EdgeVitError(f"artifact manifest {manifest_path(run_dir)}: path {relative!r} contains a NUL byte")
    rel = Path(relative)
    target = (Path(run_dir) / rel).resolve()
    if rel.is_absolute() or not target.is_relative_to(base):
        raise EdgeVitError(
            f"artifact manifest {manifest_path(run_dir)}: path {relative!r} is outside {ARTIFACTS}/; the gate checks "
            "only files shipped in the run's artifacts directory"
        )
    return Path(run_dir) / rel


def manifest_artifacts(run_dir: str | Path, manifest: dict[str, Any] | None = None) -> list[Artifact]:
    """The artifacts the run's manifest lists, with paths checked by :func:`artifact_file`."""
    manifest = read_manifest(run_dir) if manifest is None else manifest
    run_dir = Path(run_dir)
    out = []
    for a in manifest["artifacts"]:
        artifact_file(run_dir, a["path"])
        out.append(Artifact.from_json(a, root=run_dir))
    return out


def record(
    run_dir: str | Path,
    meta: dict,
    example_shape: list[int],
    artifacts: list[Artifact],
    preprocess: dict[str, Any] | None = None,
) -> Path:
    """Add (or replace) ``artifacts`` in ``artifacts/manifest.json``, with what an app needs to feed them.

    ``meta`` is the trained model's ``model.json`` (name, args, mean, std, classes); ``example_shape`` the PyTorch
    model's input shape ``[1, C, H, W]``; ``preprocess`` the evaluation transform from an 8-bit image to that input
    (:meth:`edgevit.data.eval_transform.EvalTransform.to_json`: resize, interpolation, crop, mean/std), recorded as
    ``input.preprocess`` so an app can reproduce it exactly.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    new = {str(Path(x.path).relative_to(run_dir)) for x in artifacts}
    keep = [a for a in manifest["artifacts"] if a["path"] not in new]
    manifest = {
        "model": {"name": meta["name"], "args": meta["args"]},
        "input": {
            "name": "image",
            "shape": list(example_shape),
            "layout": "NCHW",
            "dtype": "float32",
            "mean": meta["mean"],
            "std": meta["std"],
            "scale": "pixel / 255, then (x - mean) / std",
            # shape and layout are the PyTorch model's; a channels-last export takes its own (NHWC: [1, H, W, C])
            "per_artifact": "artifacts[].info.input_layout and info.input_shape override layout and shape",
            **({"preprocess": preprocess} if preprocess else {}),
        },
        "output": {"name": "logits", "shape": [1, len(meta["classes"])]},
        "classes": meta["classes"],
        "artifacts": keep + [a.to_json(root=run_dir) for a in artifacts],
    }
    return write_json_atomic(manifest_path(run_dir), manifest)


def input_shape(run_dir: str | Path) -> list[int]:
    """The PyTorch model's input shape ``[1, C, H, W]`` as the manifest records it.

    Raises:
        EdgeVitError: no manifest, or one without ``input.shape``.
    """
    manifest = read_manifest(run_dir, missing_ok=False)
    shape = (manifest.get("input") or {}).get("shape")
    if not isinstance(shape, list) or len(shape) != 4:
        raise EdgeVitError(f"artifact manifest {manifest_path(run_dir)}: input.shape is missing or not [1, C, H, W]")
    return shape
