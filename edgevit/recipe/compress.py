"""The compression stages of a recipe: structured pruning and unstructured sparsity of a trained run, each followed
by recovery fine-tuning (with distillation from the uncompressed model), written as a new run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from edgevit.models import save_model
from edgevit.prune import PruneConfig, SparsityConfig, make_sparsity_permanent_, prune_, sparsify_
from edgevit.recipe.stages import example_image, trained
from edgevit.rundir import model_path, recipe_path
from edgevit.train import train
from edgevit.train.distill import distillation_loss
from edgevit.utils import EdgeVitError


def _compress_stage(
    run_dir: str | Path,
    out_dir: str | Path,
    what: str,
    apply,
    resume: bool,
    progress: bool,
    epochs: int | None = None,
    finish=None,
) -> dict[str, Any]:
    """Load RUN's model, ``apply(model, recipe, data)`` (prune or sparsify, returns a JSON-able summary),
    fine-tune with the recipe's ``recover`` settings into OUT, ``finish(model)``, save OUT's model and recipe."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise EdgeVitError(f"{what}: --out must be a new run directory, not {run_dir} itself")
    recipe, model, data, meta = trained(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recover = recipe.recover
    if epochs:
        recover = recover.model_copy(update={"train": recover.train.model_copy(update={"epochs": epochs})})
    recipe = recipe.model_copy(update={"name": f"{recipe.name}-{what}", "recover": recover})
    recipe.save(recipe_path(out_dir))
    teacher = copy.deepcopy(model) if recover.distill else None
    summary = apply(model, recipe, data)
    cfg = recover.train.model_copy(update={"threads": recover.train.threads or recipe.train.threads})
    loss_fn = None
    if teacher is not None:
        loss_fn = distillation_loss(teacher, recover.temperature, recover.distill_weight, cfg.label_smoothing)
    result = train(model, data, cfg, out_dir, seed=recipe.seed, resume=resume, progress=progress, loss_fn=loss_fn)
    if finish is not None:
        finish(model)
    extra = {k: v for k, v in meta.items() if k not in ("name", "args", "val_top1", "pruned")}
    save_model(
        model,
        meta["name"],
        meta["args"],
        model_path(out_dir),
        **extra,
        val_top1=result.final_val_top1,
        source_run=str(run_dir),
        source_val_top1=meta.get("val_top1"),
        **{f"{what}_summary": summary},
    )
    return {**summary, "source_val_top1": meta.get("val_top1"), "val_top1": result.final_val_top1}


def stage_prune(
    run_dir: str | Path,
    out_dir: str | Path,
    config: PruneConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Structurally prune RUN's trained model (``config`` or the recipe's ``prune``), recover-fine-tune it,
    and write a new run OUT (export and parity it like any run). ``epochs`` overrides ``recover.epochs``.
    Returns params/MACs before and after, heads per attention, and val top-1 before and after."""

    def apply(model, recipe, data):
        cfg = config or recipe.prune
        res = prune_(model, cfg, example_image(data), calib=data.train)
        return {"config": cfg.model_dump(), **res.to_json(), "param_ratio": res.param_ratio, "mac_ratio": res.mac_ratio}

    return _compress_stage(run_dir, out_dir, "pruned", apply, resume, progress, epochs)


def stage_sparsify(
    run_dir: str | Path,
    out_dir: str | Path,
    config: SparsityConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Magnitude-prune RUN's model to a target unstructured sparsity, fine-tune with the masks held, fold the
    masks, and write a new run OUT. Dense kernels gain nothing; Core ML's sparse weights shrink the file."""

    def apply(model, recipe, data):
        cfg = config or recipe.sparsify
        return {"config": cfg.model_dump(), **sparsify_(model, cfg).to_json()}

    return _compress_stage(run_dir, out_dir, "sparse", apply, resume, progress, epochs, make_sparsity_permanent_)


__all__ = ["stage_prune", "stage_sparsify"]
