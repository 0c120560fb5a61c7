"""Seed study: does DeiT distillation from a stronger teacher, or SAM, help a small ViT on digits?

Each seed picks the train/val split, the initialisation and the data order. Per seed the study trains the
teacher recipe (default ``recipes/digits/study_teacher.yaml``: MobileViT-XXS, a convnet with MobileViT blocks) on
that seed's split, then three arms of the student recipe (default ``recipes/digits/study_vit.yaml``) with the
same epochs and data:

- ``baseline``: the student recipe as it is;
- ``distilled``: plus ``train.distill`` (hard DeiT distillation through the distillation token) from the teacher;
- ``sam``: plus ``train.optimizer.sam`` (SAM with ``rho``).

Every run is a normal ``edgevit train`` run directory under OUT (``teacher_s0``, ``baseline_s0``, ...) with a
``study.json`` beside it (val top-1 and wall time); runs already finished are reused, so the study resumes
and can be split over processes (``--seeds 0`` in one, ``--seeds 1 2`` in another, then ``--report``; never give
two processes the same seed)::

    python -m edgevit.recipe.study --out runs/study --seeds 0 1 2

prints mean +- std of the val top-1 per arm and the paired per-seed difference to the baseline.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from edgevit.recipe.config import Recipe
from edgevit.recipe.stages import stage_train
from edgevit.utils import EdgeVitError, read_json, write_json_atomic

ARMS = ("baseline", "distilled", "sam")
DEFAULT_STUDENT = "recipes/digits/study_vit.yaml"
DEFAULT_TEACHER = "recipes/digits/study_teacher.yaml"


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in recursively (``patch`` wins); neither is modified."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def arm_recipe(student: dict[str, Any], arm: str, seed: int, teacher_dir: Path, rho: float) -> dict[str, Any]:
    """The recipe dict of one study run: the student recipe, its ``seed`` and the arm's change.

    Raises:
        EdgeVitError: an unknown arm.
    """
    patches: dict[str, dict[str, Any]] = {
        "baseline": {},
        "distilled": {"train": {"distill": {"teacher": str(teacher_dir), "kind": "hard", "alpha": 0.5}}},
        "sam": {"train": {"optimizer": {"sam": {"rho": rho}}}},
    }
    if arm not in patches:
        raise EdgeVitError(f"unknown study arm {arm!r}; arms are {', '.join(patches)}")
    return _merge(student, {"seed": seed, "name": f"{student.get('name', 'study')}-{arm}-s{seed}", **patches[arm]})


def _train(raw: dict[str, Any], run_dir: Path, progress: bool) -> dict[str, Any]:
    """Train ``raw`` into ``run_dir`` unless a finished ``study.json`` is there; return that record.

    A run interrupted before its ``study.json`` resumes from its last checkpoint (``seconds`` then counts the
    resumed part only).
    """
    done = run_dir / "study.json"
    if done.is_file():
        return read_json(done, "study record")
    recipe = Recipe.from_dict(raw, source=str(run_dir))
    t0 = time.perf_counter()
    resume = (run_dir / "checkpoints" / "last.json").is_file()
    top1 = stage_train(recipe, run_dir, resume=resume, progress=progress)
    record = {"run": str(run_dir), "seed": recipe.seed, "val_top1": top1, "seconds": time.perf_counter() - t0}
    record["resumed"] = resume
    write_json_atomic(done, record)
    return record


def _load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EdgeVitError(f"study recipe not found: {path}")
    return yaml.safe_load(path.read_text())


def run_study(
    out: str | Path,
    seeds: list[int],
    student: str | Path = DEFAULT_STUDENT,
    teacher: str | Path = DEFAULT_TEACHER,
    arms: tuple[str, ...] = ARMS,
    rho: float = 0.05,
    progress: bool = False,
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    """Train the teacher and every arm for every seed into ``out`` (reusing finished runs).

    ``epochs`` overrides the student recipe's ``train.epochs`` (the teacher keeps its own).

    Returns:
        One record per run: ``{"run", "seed", "val_top1", "seconds", "arm"}`` (arm ``teacher`` included).

    Raises:
        EdgeVitError: a missing recipe, a bad recipe key, an unknown arm.
    """
    out = Path(out)
    student_raw, teacher_raw = _load_yaml(student), _load_yaml(teacher)
    if epochs is not None:
        student_raw = _merge(student_raw, {"train": {"epochs": epochs}})
    records = []
    for seed in seeds:
        teacher_dir = out / f"teacher_s{seed}"
        t_raw = _merge(teacher_raw, {"seed": seed, "name": f"{teacher_raw.get('name', 'teacher')}-s{seed}"})
        records.append({**_train(t_raw, teacher_dir, progress), "arm": "teacher"})
        for arm in arms:
            raw = arm_recipe(student_raw, arm, seed, teacher_dir, rho)
            records.append({**_train(raw, out / f"{arm}_s{seed}", progress), "arm": arm})
    return records


def collect(out: str | Path) -> list[dict[str, Any]]:
    """Every finished study run under ``out`` (``<arm>_s<seed>/study.json``)."""
    records = []
    for path in sorted(Path(out).glob("*_s*/study.json")):
        arm = path.parent.name.rsplit("_s", 1)[0]
        records.append({**read_json(path, "study record"), "arm": arm})
    return records


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def render(records: list[dict[str, Any]]) -> str:
    """A markdown table: per arm the val top-1 mean ± sample std over seeds, each seed's value, the paired
    difference to the baseline of the same seed (mean ± std) and the mean wall time of a run."""
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], {})[int(r["seed"])] = r
    base = by_arm.get("baseline", {})
    lines = [
        "| arm | val top-1 % (mean ± std) | per seed | Δ vs baseline, paired (mean ± std) | wall s / run |",
        "|---|---|---|---|---|",
    ]
    for arm in ("teacher", *ARMS, *sorted(set(by_arm) - {"teacher", *ARMS})):
        runs = by_arm.get(arm)
        if not runs:
            continue
        seeds = sorted(runs)
        top = [runs[s]["val_top1"] for s in seeds]
        per_seed = ", ".join(f"s{s}: {runs[s]['val_top1']:.2f}" for s in seeds)
        diffs = [runs[s]["val_top1"] - base[s]["val_top1"] for s in seeds if s in base]
        delta = "–" if arm in ("baseline", "teacher") or not diffs else _mean_std(diffs).replace("±", "±", 1)
        if delta != "–" and not delta.startswith("-"):
            delta = "+" + delta
        wall = statistics.fmean(runs[s]["seconds"] for s in seeds)
        lines.append(f"| {arm} | {_mean_std(top)} | {per_seed} | {delta} | {wall:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m edgevit.recipe.study --out DIR [--seeds 0 1 2] [--arms ...] [--rho R] [--report]``."""
    p = argparse.ArgumentParser(prog="python -m edgevit.recipe.study", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="study directory (one run directory per teacher/arm/seed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--student", default=DEFAULT_STUDENT)
    p.add_argument("--teacher", default=DEFAULT_TEACHER)
    p.add_argument("--rho", type=float, default=0.05, help="SAM radius of the sam arm")
    p.add_argument("--epochs", type=int, default=None, help="override the student recipe's train.epochs")
    p.add_argument("--report", action="store_true", help="only print the table of the finished runs in --out")
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    try:
        if not a.report:
            run_study(a.out, a.seeds, a.student, a.teacher, tuple(a.arms), a.rho, a.progress, a.epochs)
        print(render(collect(a.out)))
    except EdgeVitError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
