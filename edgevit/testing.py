"""Parity gates for your own test suite: ``assert_parity`` and a pytest plugin.

``assert_parity(model, artifact, dataset, tolerance=...)`` runs the PyTorch model and an exported artifact over
the same images at batch 1 (the artifact in its own runtime, Core ML off macOS in edgevit's emulator; an NHWC
export is fed the images channels-last, as its manifest entry says), computes
:func:`edgevit.parity.metrics` and judges them with :func:`edgevit.parity.judge`, exactly as ``edgevit parity``
does, and raises ``AssertionError`` with a readable diff when the artifact misses its tolerance::

    from edgevit.testing import assert_parity

    def test_phone_model_matches(model, val_images, val_labels):
        assert_parity(model, "build/model_int8.tflite", (val_images, val_labels), tolerance="int8")

The pytest plugin (enable it with ``pytest_plugins = ["edgevit.testing"]`` in your top-level ``conftest.py``)
adds the options ``--parity-tolerance`` (a precision name or a JSON object, overriding every gate's tolerance)
and ``--parity-images N`` (check only the first N images), and the fixtures ``parity`` (``assert_parity`` with
those options applied and ``parity_dataset`` as the default data) and ``parity_dataset`` (the built-in digits
validation split at 32 px; override it in your ``conftest.py`` with your own validation data).

At import time this module loads only the standard library and pytest (when installed), so enabling the plugin
costs nothing; torch, NumPy and the backends are imported when a gate runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from edgevit.backends import NotRunnable, get_backend, list_backends
from edgevit.data import DataSplits, digits
from edgevit.export import Artifact
from edgevit.parity import DEFAULT_TOLERANCES, ParityConfig, Tolerance, artifact_runner, judge, metrics, run_all
from edgevit.rundir import read_manifest
from edgevit.utils import EdgeVitError

__all__ = ["assert_parity", "infer_artifact"]

_SHOW_IMAGES = 5  # disagreeing images listed in the failure message


def infer_artifact(path: str | Path, precision: str | None = None):
    """An :class:`edgevit.export.Artifact` for a file written by edgevit.

    The backend comes from the suffix (``.pte``, ``.tflite``, ``.mlpackage``, ``.onnx``). The precision is, in
    order: ``precision`` when given; the entry for this file in the run's ``artifacts/manifest.json`` (which also
    carries the quantizer facts); a precision named in the file name (``tflite_int8.tflite``); the backend's
    float precision.

    Raises:
        EdgeVitError: the file does not exist or its suffix is not an edgevit backend's.
    """
    path = Path(path)
    if not path.exists():
        raise EdgeVitError(f"artifact not found: {path}")
    suffixes = {get_backend(b).suffix: b for b in list_backends()}
    backend = suffixes.get(path.suffix)
    if backend is None:
        raise EdgeVitError(
            f"cannot tell the backend of {path}: its suffix {path.suffix!r} is none of {', '.join(sorted(suffixes))}"
        )
    for run_dir in (path.parent.parent, path.parent):  # the file in RUN/artifacts/, or RUN itself
        for entry in read_manifest(run_dir)["artifacts"]:
            if (run_dir / entry["path"]).resolve() == path.resolve() and entry.get("backend") == backend:
                return Artifact(backend, precision or entry["precision"], path, entry.get("info", {}))
    if precision is None:
        tokens = path.name[: -len(path.suffix)].split("_")
        named = [p for p in get_backend(backend).precisions if p in tokens]
        precision = max(named, key=len) if named else get_backend(backend).default_precision
    return Artifact(backend, precision, path)


def _as_artifact(artifact: Any, precision: str | None):
    """``artifact`` as an :class:`~edgevit.export.Artifact` (paths via :func:`infer_artifact`)."""
    if isinstance(artifact, Artifact):
        return Artifact(artifact.backend, precision, artifact.path, artifact.info) if precision else artifact
    if isinstance(artifact, (str, Path)):
        return infer_artifact(artifact, precision)
    raise TypeError(f"artifact must be an edgevit Artifact or a path, got {type(artifact).__name__}")


def _as_arrays(dataset: Any, max_images: int | None):
    """``([N, C, H, W] float32 images, [N] int labels or None)`` from any of the accepted dataset forms."""

    def arr(x) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    if isinstance(dataset, DataSplits):
        dataset = dataset.val
    labels = None
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and not np.isscalar(dataset[1]):
        images, labels = arr(dataset[0]), (None if dataset[1] is None else arr(dataset[1]))
    elif isinstance(dataset, (np.ndarray, torch.Tensor)):
        images = arr(dataset)
    elif hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):  # a map-style Dataset of (image, label)
        n = len(dataset) if max_images is None else min(max_images, len(dataset))
        items = [dataset[i] for i in range(n)]
        pairs = all(isinstance(it, (tuple, list)) for it in items)
        images = np.stack([arr(it[0] if pairs else it) for it in items])
        labels = np.array([int(it[1]) for it in items]) if pairs else None
    elif hasattr(dataset, "__iter__"):  # a DataLoader: batches of (images, labels)
        xs, ys = [], []
        for batch in dataset:
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            xs.append(arr(x))
            ys.append(None if y is None else arr(y))
            if max_images is not None and sum(len(b) for b in xs) >= max_images:
                break
        images = np.concatenate(xs)
        labels = None if any(y is None for y in ys) else np.concatenate(ys)
    else:
        raise TypeError(
            f"dataset must be a torch Dataset, a DataLoader, (images, labels) arrays or DataSplits; "
            f"got {type(dataset).__name__}"
        )
    if max_images is not None:
        images = images[:max_images]
        labels = None if labels is None else labels[:max_images]
    if images.ndim != 4 or len(images) == 0:
        raise EdgeVitError(f"parity needs a non-empty batch of [N, C, H, W] images; got shape {list(images.shape)}")
    if labels is not None and len(labels) != len(images):
        raise EdgeVitError(f"{len(images)} images but {len(labels)} labels")
    return np.ascontiguousarray(images, dtype=np.float32), None if labels is None else labels.astype(np.int64)


def _as_tolerance(tolerance: Any, precision: str):
    """``(Tolerance, description)``: a Tolerance, a precision name, or a dict overriding the precision's default."""
    if isinstance(tolerance, Tolerance):
        return tolerance, "given"
    if tolerance is None:
        return ParityConfig().tolerance(precision), f"{precision} default"
    if isinstance(tolerance, str):
        if tolerance not in DEFAULT_TOLERANCES:
            raise EdgeVitError(
                f"unknown tolerance {tolerance!r}: give a precision name ({', '.join(DEFAULT_TOLERANCES)}), "
                "a dict or a Tolerance"
            )
        return DEFAULT_TOLERANCES[tolerance], f"{tolerance} default"
    if isinstance(tolerance, dict):
        base = DEFAULT_TOLERANCES.get(precision) or DEFAULT_TOLERANCES["fp32"]
        try:
            return Tolerance(**(base.model_dump() | tolerance)), f"{precision} default with {tolerance}"
        except ValidationError as e:
            bad = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise EdgeVitError(f"bad tolerance {tolerance}: {bad} (keys: {', '.join(Tolerance.model_fields)})") from e
    raise TypeError(f"tolerance must be a Tolerance, a precision name or a dict, got {type(tolerance).__name__}")


def _diff(art, execution, tol, tol_name, m, failures, ref_top1, ref_logits, logits, labels) -> str:
    """The failure message: each violated bound (``failures``: :class:`edgevit.parity.Violation` s), the
    disagreeing images and where the largest error is."""
    n = len(logits)
    ref_cls, got_cls = ref_logits.argmax(-1), logits.argmax(-1)
    bad = np.flatnonzero(ref_cls != got_cls)
    bounds = ", ".join(f"{k}={v}" for k, v in tol.model_dump().items() if v is not None)
    lines = [
        f"parity failed: {art.backend} {art.precision} artifact {art.path} ({execution}) vs the PyTorch model "
        f"on {n} images; tolerance ({tol_name}): {bounds}"
    ]
    lines += [f"  - {v} ({v.margin})" for v in failures]  # each violated bound, and by how much
    if len(bad):
        shown = []
        for i in bad[:_SHOW_IMAGES]:
            label = f"label {labels[i]}, " if labels is not None else ""
            shown.append(f"#{i} ({label}PyTorch {ref_cls[i]}, artifact {got_cls[i]})")
        more = f", ... {len(bad) - _SHOW_IMAGES} more" if len(bad) > _SHOW_IMAGES else ""
        lines.append(
            f"  {len(bad)} of {n} images ({100 * len(bad) / n:.1f}%) get a different top-1 class than PyTorch: "
            + ", ".join(shown)
            + more
        )
    else:
        lines.append(f"  all {n} images get the same top-1 class as PyTorch")
    err = np.abs(logits.astype(np.float64) - ref_logits.astype(np.float64))
    worst = np.unravel_index(int(err.argmax()), err.shape)
    top1 = f"top-1 {m['top1']:.2f}% (PyTorch {ref_top1:.2f}%)" if labels is not None else "no labels given"
    lines.append(
        f"  logits: max abs err {m['max_abs_err']:.3g} (image #{worst[0]}, class {worst[1]}), mean abs err "
        f"{m['mean_abs_err']:.3g}, cosine {m['cosine']:.6f}; {top1}"
    )
    return "\n".join(lines)


def assert_parity(
    model,
    artifact,
    dataset,
    tolerance=None,
    *,
    precision: str | None = None,
    threads: int = 1,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Assert that an exported artifact matches its PyTorch model on real images.

    Args:
        model: the reference ``torch.nn.Module`` (run in eval mode, no grad, fp32).
        artifact: an :class:`edgevit.export.Artifact`, or the path of a ``.pte``/``.tflite``/``.mlpackage``/
            ``.onnx`` file (backend and precision from :func:`infer_artifact`).
        dataset: validation data preprocessed as the model expects: a torch ``Dataset`` of ``(image, label)``,
            a ``DataLoader``, ``(images, labels)`` arrays/tensors (``[N, C, H, W]``, ``[N]``; labels may be
            ``None``: top-1 is then measured against PyTorch's predictions), or :class:`edgevit.data.DataSplits`
            (its validation split).
        tolerance: a :class:`edgevit.parity.Tolerance`; a precision name (``"int8"``: that precision's default
            tolerance); a dict of Tolerance fields overriding the artifact precision's default (e.g.
            ``{"min_agreement": 0.99}``); or None, the default for the artifact's precision.
        precision: override the artifact's precision (which picks the default tolerance).
        threads: runtime threads for the artifact.
        max_images: check only the first N images.

    Returns:
        The metrics (:func:`edgevit.parity.metrics`) plus ``reference_top1``, ``num_images``, ``backend``,
        ``precision``, ``execution`` and ``tolerance``, for logging.

    Raises:
        AssertionError: the artifact misses the tolerance (the message names each violated metric, by how
            much, how many images disagree and the first few of them), or it cannot run here.
        EdgeVitError: the artifact is missing or of an unknown kind, or the data or tolerance is malformed.
    """
    art = _as_artifact(artifact, precision)
    images, labels = _as_arrays(dataset, max_images)
    tol, tol_name = _as_tolerance(tolerance, art.precision)
    try:
        runner, execution = artifact_runner(art, threads)
    except NotRunnable as e:
        raise AssertionError(f"{art.backend} {art.precision} artifact {art.path} cannot run here: {e}") from e

    was_training = model.training
    model.eval()
    try:

        @torch.no_grad()
        def reference(x: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(x)).float().numpy()

        ref_logits = run_all(reference, images, "pytorch (reference)", progress=False)
    finally:
        model.train(was_training)
    logits = run_all(runner, art.feed(images), f"{art.backend} {art.precision}", progress=False)  # its layout
    if logits.shape != ref_logits.shape:
        raise AssertionError(
            f"{art.backend} {art.precision} artifact {art.path} returns logits of shape {list(logits.shape[1:])} "
            f"per image, PyTorch {list(ref_logits.shape[1:])}"
        )
    truth = labels if labels is not None else ref_logits.argmax(-1)
    m = metrics(logits, ref_logits, truth)
    ref_top1 = float((ref_logits.argmax(-1) == truth).mean() * 100.0)
    failures = judge(m, ref_top1, tol)
    if failures:
        raise AssertionError(_diff(art, execution, tol, tol_name, m, failures, ref_top1, ref_logits, logits, labels))
    return m | {
        "reference_top1": ref_top1,
        "num_images": len(images),
        "backend": art.backend,
        "precision": art.precision,
        "execution": execution,
        "tolerance": tol.model_dump(),
    }


# ---- pytest plugin: `pytest_plugins = ["edgevit.testing"]` in your top-level conftest.py ----

try:
    import pytest
except ImportError:  # assert_parity works without pytest; the plugin needs it
    pytest = None

if pytest is not None:

    def pytest_addoption(parser) -> None:
        """``--parity-tolerance`` and ``--parity-images``."""
        group = parser.getgroup("edgevit", "edgevit parity gates")
        group.addoption(
            "--parity-tolerance",
            default=None,
            help="override every parity gate's tolerance: a precision name (fp32, fp16, int8, ...) or a JSON object "
            "of Tolerance fields, e.g. '{\"min_agreement\": 0.99}'",
        )
        group.addoption("--parity-images", type=int, default=None, help="check only the first N images")

    @pytest.fixture
    def parity_tolerance(request):
        """The ``--parity-tolerance`` option: None, a precision name, or a dict of Tolerance fields."""
        raw = request.config.getoption("--parity-tolerance")
        if raw is None or not raw.lstrip().startswith("{"):
            return raw
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise pytest.UsageError(f"--parity-tolerance {raw!r} is not a precision name or valid JSON: {e}") from e

    @pytest.fixture(scope="session")
    def parity_dataset():
        """Validation data for parity gates: the built-in digits validation split at 32 px (360 real scans).

        Override it in your ``conftest.py`` to return your own validation data (any form ``assert_parity``
        takes), preprocessed as your model expects.
        """
        return digits(img_size=32).val

    @pytest.fixture
    def parity(request, parity_dataset, parity_tolerance):
        """``assert_parity`` with ``parity_dataset`` as the default data and the command-line options applied.

        ``parity(model, artifact, dataset=None, tolerance=None, **kw)``; ``--parity-tolerance`` wins over
        ``tolerance``, ``--parity-images`` limits the images.
        """
        max_images = request.config.getoption("--parity-images")

        def gate(model, artifact, dataset=None, tolerance=None, **kw):
            kw.setdefault("max_images", max_images)
            tol = parity_tolerance if parity_tolerance is not None else tolerance
            return assert_parity(model, artifact, parity_dataset if dataset is None else dataset, tol, **kw)

        return gate
