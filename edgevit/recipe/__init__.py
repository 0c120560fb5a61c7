"""Recipes: the schema of one YAML file (:mod:`edgevit.recipe.config`) and the stages that run it
(:mod:`edgevit.recipe.stages`) in a run directory (:mod:`edgevit.rundir`)."""

from edgevit.backends import list_backends
from edgevit.recipe.compress import stage_prune, stage_sparsify
from edgevit.recipe.config import DataConfig, ExportConfig, ModelConfig, Recipe, RecoverConfig, Target
from edgevit.recipe.stages import (
    build_model_and_data,
    example_image,
    load_run,
    qat_backends,
    run,
    stage_export,
    stage_parity,
    stage_qat,
    stage_train,
    trained,
)
from edgevit.rundir import plan_path, qat_dir
from edgevit.train.distill import load_teacher

BACKENDS = tuple(list_backends())

__all__ = [
    "BACKENDS",
    "DataConfig",
    "ExportConfig",
    "ModelConfig",
    "Recipe",
    "RecoverConfig",
    "Target",
    "build_model_and_data",
    "example_image",
    "load_run",
    "load_teacher",
    "plan_path",
    "qat_backends",
    "qat_dir",
    "run",
    "stage_export",
    "stage_parity",
    "stage_prune",
    "stage_qat",
    "stage_sparsify",
    "stage_train",
    "trained",
]
