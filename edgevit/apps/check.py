"""``edgevit app-check``: run a core's golden runner on fresh random cases and compare everything it computes with
the NumPy reference (:mod:`edgevit.apps.pipeline`).

The cases vary size, stride, rotation and pixel format; the bundles handed to the runner are derived from the real
one: its models plus NCHW/NHWC x float32/int8/uint8 variants with random quantization, and a second bundle with a
random preprocess (crop, resize, filter, antialias, channel order, mean/std). Each case carries random logits (with
ties) or raw integer outputs, so the runner's dequantization, softmax and top-k are checked as well.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.apps import pipeline
from edgevit.apps.bundle import Bundle, ModelEntry, read_bundle
from edgevit.apps.golden import Case, expected_logits, random_cases, read_tensor, write_cases
from edgevit.apps.pipeline import INT_RANGES, Quant, TensorSpec
from edgevit.data.eval_transform import EvalTransform
from edgevit.utils import EdgeVitError, read_json, write_json_atomic

REPO = Path(__file__).resolve().parents[2]
RUNNERS = {"android": "android_demo/core/run-golden.sh", "ios": "ios_demo/run-golden.sh"}  # from the repo root
PYTHON = "python"  # --runner python: the NumPy reference's own runner (python -m edgevit.apps.runner)
TOP_K = 5
FLOAT_TOL = 1e-6


@dataclass
class CheckResult:
    """Cases that matched in every model (``passed``) and did not (``failed``), with a line per mismatch."""

    passed: int
    failed: int
    mismatches: list[str] = field(default_factory=list)
    runner: str = ""

    @property
    def ok(self) -> bool:
        """True when every case matched."""
        return self.failed == 0 and self.passed > 0


def runner_command(platform: str, runner: str | None = None) -> list[str]:
    """The golden runner's command: ``runner`` split like a shell would (``python``: the NumPy reference), or the
    platform's default script in the repository.

    Raises:
        EdgeVitError: an unknown platform, or a runner that does not exist (saying how to get or choose one).
    """
    if platform not in RUNNERS:
        raise EdgeVitError(f"unknown platform {platform!r}; choose one of {', '.join(RUNNERS)}")
    if runner == PYTHON:
        return [sys.executable, "-m", "edgevit.apps.runner"]
    if runner is None:
        script = REPO / RUNNERS[platform]
        if not script.is_file():
            raise EdgeVitError(
                f"no golden runner for {platform}: {script} not found (it comes with the {platform} core); pass "
                f"--runner CMD, or --runner python to check the NumPy reference itself"
            )
        return [str(script)]
    cmd = shlex.split(runner)
    if not cmd or (shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file()):
        raise EdgeVitError(f"golden runner command not found: {runner!r}")
    return cmd


def variant_models(rng: np.random.Generator, crop: tuple[int, int], num_classes: int) -> list[ModelEntry]:
    """Model entries (no files) for every input layout x dtype, integer ones with random quantization and an
    integer output; the runner must handle each as bundle.md says."""
    h, w = crop
    models = []
    for dtype in ("float32", "int8", "uint8"):
        for layout in ("NCHW", "NHWC"):
            quant = out_quant = None
            if dtype in INT_RANGES:
                lo, hi = INT_RANGES[dtype]
                quant = Quant(float(rng.uniform(0.005, 0.06)), int(rng.integers(lo + 60, hi - 59)))
                out_quant = Quant(float(rng.uniform(0.02, 0.3)), int(rng.integers(lo, hi + 1)))
            shape = (1, 3, h, w) if layout == "NCHW" else (1, h, w, 3)
            key = f"variant_{dtype}_{layout.lower()}"
            inp = TensorSpec("image", dtype, shape, layout, quant)
            out = TensorSpec("logits", dtype, (1, num_classes), "NCHW", out_quant)
            precision = "fp32" if dtype == "float32" else "int8"
            models.append(ModelEntry(key, f"models/{key}.absent", "tflite", precision, "0" * 64, inp, out))
    return models


def variant_preprocess(rng: np.random.Generator) -> EvalTransform:
    """A random preprocess within the contract: resize 4..72, any crop within it, either filter, antialias on or
    off, RGB or BGR, mean/std and value scale that keep inputs within about +-9 (float32 steps < 1e-6)."""
    shorter = int(rng.integers(4, 73))
    return EvalTransform(
        shorter,
        (int(rng.integers(1, shorter + 1)), int(rng.integers(1, shorter + 1))),
        tuple(float(v) for v in rng.uniform(0.2, 0.7, 3)),
        tuple(float(v) for v in rng.uniform(0.2, 0.5, 3)),
        interpolation=str(rng.choice(["bilinear", "bicubic"])),
        antialias=bool(rng.random() < 0.7),
        value_scale=float(rng.choice([255.0, 127.5])),
        color_order=str(rng.choice(["RGB", "BGR"])),
        source="app-check variant",
    )


def random_outputs(rng: np.random.Generator, models, cases: list[Case]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per case and model, random ``logits`` (float outputs) or ``raw_output`` (integer ones), often with a tie at
    the top, for the runner's top-k."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for c in cases:
        out[c.id] = {}
        for m in models:
            k = m.output.shape[-1]
            if m.output.dtype in INT_RANGES:
                lo, hi = INT_RANGES[m.output.dtype]
                z = rng.integers(lo, hi + 1, k)
            else:
                z = np.float32(rng.normal(0.0, 4.0, k)).astype(np.float64)
            if k > 1 and rng.random() < 0.5:
                i, j = rng.choice(k, 2, replace=False)
                z[max(i, j)] = z[np.argmax(z)]  # a tie with the maximum: stable order puts the lower index first
            key = "raw_output" if m.output.dtype in INT_RANGES else "logits"
            out[c.id][m.key] = {key: [v.item() for v in z]}
    return out


def compare(bundle: Bundle, cases: list[Case], expected, results_file: Path, k: int = TOP_K) -> dict[str, list[str]]:
    """Per case id, what the runner got wrong (an empty list: it matched), comparing its ``results_file`` with the
    NumPy reference: every model's input tensor (within 1e-6, integers exactly) and top-k."""
    doc = read_json(results_file, "golden runner results")
    got = {(r.get("id"), r.get("model")): r for r in doc.get("results", []) if isinstance(r, dict)}
    bad: dict[str, list[str]] = {}
    for c in cases:
        f = c.frame
        what = f"{f.width}x{f.height} stride {f.row_stride} {f.pixel_format} rot {f.rotation}"
        bad[c.id] = []
        for m in bundle.models:
            r, tag = got.get((c.id, m.key)), f"{c.id} ({what}) {m.key} ({m.input.dtype} {m.input.layout})"
            if r is None:
                bad[c.id].append(f"{tag}: no result from the runner")
                continue
            ref = pipeline.model_input(f, bundle.preprocess, m.input)
            try:
                x = read_tensor(results_file.parent / str(r.get("input_file")), m.input)
            except EdgeVitError as e:
                bad[c.id].append(f"{tag}: {e}")
                continue
            diff = np.abs(x.astype(np.float64) - ref.astype(np.float64))
            tol = FLOAT_TOL if m.input.dtype == "float32" else 0.0
            if diff.max() > tol:
                at = np.unravel_index(int(diff.argmax()), diff.shape)
                bad[c.id].append(
                    f"{tag}: input differs at {sum(diff.reshape(-1) > tol)} of {diff.size} values, max "
                    f"{diff.max():.3g} at {list(map(int, at))} (runner {x[at]}, reference {ref[at]})"
                )
            z = expected_logits(expected[c.id][m.key], m.output)
            want = [[i, p] for i, p in pipeline.top_k(z, k)]
            top = r.get("top_k") or []
            same = len(top) == len(want) and all(
                int(a[0]) == b[0] and abs(float(a[1]) - b[1]) <= FLOAT_TOL for a, b in zip(top, want, strict=True)
            )
            if not same:
                bad[c.id].append(f"{tag}: top-k {top} != reference {[[i, round(p, 6)] for i, p in want]}")
    return bad


def _run(cmd: list[str], bundle_dir: Path, cases_dir: Path, out: Path, timeout: int) -> None:
    full = [*cmd, "--bundle", str(bundle_dir), "--cases", str(cases_dir), "--out", str(out)]
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EdgeVitError(f"golden runner {shlex.join(cmd)} could not run: {e}") from e
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1][:400]
        raise EdgeVitError(f"golden runner {shlex.join(cmd)} failed (exit {proc.returncode}): {tail}")


def app_check(
    platform: str,
    bundle_dir: str | Path,
    seed: int = 0,
    cases: int = 200,
    runner: str | None = None,
    workdir: str | Path | None = None,
    timeout: int = 900,
) -> CheckResult:
    """Generate ``cases`` fresh random cases, run ``platform``'s golden runner on them and compare with the NumPy
    reference. Half the cases use the bundle's preprocess (with its models and the layout/dtype variants), half a
    random variant preprocess.

    Args:
        platform: ``android`` or ``ios`` (which default runner: :data:`RUNNERS`).
        bundle_dir: a bundle written by ``edgevit bundle``.
        seed: the random seed of the cases (the same seed, the same cases).
        cases: how many cases (>= 1).
        runner: the runner command (``python``: the NumPy reference's); default :func:`runner_command`'s.
        workdir: where to write the cases and results (kept); default a temporary folder (removed).
        timeout: seconds each runner invocation may take.

    Returns:
        A :class:`CheckResult`.

    Raises:
        EdgeVitError: a malformed bundle, a missing runner, or a runner that fails or writes no results.
    """
    if cases < 1:
        raise EdgeVitError(f"--cases must be >= 1, got {cases}")
    bundle = read_bundle(bundle_dir)
    if bundle.platform != platform:
        raise EdgeVitError(f"{bundle_dir} is a bundle for {bundle.platform}, not {platform}")
    cmd = runner_command(platform, runner)
    rng = np.random.default_rng(seed)
    k = len(bundle.classes)
    own = replace(bundle, models=bundle.models + tuple(variant_models(rng, bundle.preprocess.crop, k)))
    pre = variant_preprocess(rng)
    other = replace(bundle, preprocess=pre, models=tuple(variant_models(rng, pre.crop, k)))
    n_own = (cases + 1) // 2
    groups = [
        (own, random_cases(rng, n_own, prefix="fresh")),
        (other, random_cases(rng, cases - n_own, prefix="variant")),
    ]
    with tempfile.TemporaryDirectory(prefix="edgevit-app-check-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        bad: dict[str, list[str]] = {}
        for i, (b, group) in enumerate(groups):
            if not group:
                continue
            d = root / f"set{i}"
            (d / "results").mkdir(parents=True, exist_ok=True)
            write_json_atomic(d / "bundle.json", b.to_json())
            expected = random_outputs(rng, b.models, group)
            write_cases(d / "cases", group, b, expected, TOP_K, inputs=False)  # the answers stay here
            _run(cmd, d, d / "cases", d / "results" / "results.json", timeout)
            bad.update(compare(b, group, expected, d / "results" / "results.json", TOP_K))
    failed = [c for c, lines in bad.items() if lines]
    lines = [line for c in failed for line in bad[c]]
    return CheckResult(len(bad) - len(failed), len(failed), lines, shlex.join(cmd))
