"""The recipe's schema: model + data + train + quantize + export targets + parity tolerances, one YAML file.

Every section is a strict pydantic model (:class:`edgevit._config.StrictModel`): an unknown key anywhere is an
error naming the key. The backends and precisions a target may name come from the backend registry
(:mod:`edgevit.backends`), so a new backend is a valid target the day it is registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_serializer, model_validator

from edgevit._config import StrictModel, key_path
from edgevit.backends import LAYOUTS, all_precisions, get_backend, list_backends, qat_backends
from edgevit.models import create_model, list_models
from edgevit.parity import ParityConfig
from edgevit.prune import PruneConfig, SparsityConfig
from edgevit.quantize import PTQConfig
from edgevit.quantize.qat import QATConfig
from edgevit.train import TrainConfig
from edgevit.train.finetune import FinetuneConfig
from edgevit.utils import EdgeVitError, write_text_atomic

BackendName = Literal[tuple(list_backends())]  # type: ignore[valid-type]  # from the registry
PrecisionName = Literal[tuple(all_precisions())]  # type: ignore[valid-type]
LayoutName = Literal[LAYOUTS]  # type: ignore[valid-type]


class DataConfig(StrictModel):
    """Which dataset (``digits`` is built in; ``imagefolder`` needs ``root``) and how to split it."""

    name: Literal["digits", "imagefolder"] = "digits"
    root: str | None = None
    img_size: int = Field(32, ge=8)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    classes: list[str] | None = Field(
        None, description="only these classes (by name), relabelled 0..n-1 in this order; e.g. a transfer split"
    )
    bad_images: Literal["fail", "skip"] = Field(
        "fail", description="imagefolder files that are not readable images: fail naming them, or skip them"
    )

    @model_validator(mode="after")
    def _root_for_imagefolder(self) -> DataConfig:
        if self.name == "imagefolder" and not self.root:
            raise ValueError("data.root is required for the imagefolder dataset")
        return self


class ModelConfig(StrictModel):
    """A registry name and architecture overrides (``patch_size``, ``depth``, ...)."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class Target(StrictModel):
    """One artifact to export."""

    backend: BackendName
    precision: PrecisionName | None = None
    method: Literal["pt2e", "nncf", "qat"] | None = Field(
        None, description="PTQ method (default: quantize.method), or qat: the graph fine-tuned by `train --qat`"
    )
    layout: LayoutName = Field(
        "NCHW", description="the artifact's input layout; NHWC bakes the NCHW <- NHWC permute into the graph"
    )

    @model_validator(mode="after")
    def _backend_takes_precision(self) -> Target:
        precisions = get_backend(self.backend).precisions
        if self.precision is not None and self.precision not in precisions:
            raise ValueError(f"{self.backend} exports {', '.join(precisions)}, not {self.precision!r}")
        qat = qat_backends()
        if self.method == "qat" and (self.backend not in qat or self.precision != "int8"):
            raise ValueError(f"method qat is int8 on {' or '.join(qat)}, not {self.backend} {self.precision}")
        if self.method == "qat" and self.layout != "NCHW":
            raise ValueError("layout NHWC is not available with method qat: the QAT graph was captured NCHW")
        return self

    @property
    def resolved_precision(self) -> str:
        """The precision, defaulting to the backend's float one."""
        return self.precision or get_backend(self.backend).default_precision

    @property
    def quantized(self) -> bool:
        """Whether the target's precision is not its backend's float one."""
        return self.resolved_precision != get_backend(self.backend).default_precision

    def filename(self, default_method: str) -> str:
        """``{backend}_{precision}[_nncf|_qat][_nhwc]{suffix}``: one file per backend, precision, method, layout."""
        quantized = self.quantized
        method = self.method or default_method
        tag = f"_{method}" if quantized and method != "pt2e" else ""
        tag += "_nhwc" if self.layout == "NHWC" else ""
        return f"{self.backend}_{self.resolved_precision}{tag}{get_backend(self.backend).suffix}"


def _default_targets() -> list[Target]:
    return [
        Target(backend="executorch", precision="fp32"),
        Target(backend="executorch", precision="int8"),
        Target(backend="tflite", precision="fp32"),
        Target(backend="tflite", precision="int8"),
        Target(backend="coreml", precision="fp16"),
        Target(backend="onnx", precision="fp32"),
        Target(backend="onnx", precision="int8"),
    ]


class ExportConfig(StrictModel):
    """The artifacts to produce."""

    targets: list[Target] = Field(default_factory=_default_targets)
    jobs: int | None = Field(
        None,
        ge=1,
        description="processes exporting at once, one backend per process (default: min(2, CPUs); "
        "$EDGEVIT_EXPORT_JOBS overrides); every artifact is the same file whatever the number",
    )


_RECOVER_OWN = ("distill", "distill_weight", "temperature")
# recovery's defaults where they differ from training from scratch
# (30% pruned quickstart ViT: 5 epochs 96.1%, 10 epochs 98.3%; unpruned 98.1%)
_RECOVER_TRAIN_DEFAULTS = {"epochs": 10, "lr": 5e-4, "warmup_epochs": 0.5}


class RecoverConfig(StrictModel):
    """Fine-tuning after ``prune``/``sparsify`` (a ``recover:`` section): train settings plus knowledge
    distillation from the uncompressed model (on by default).

    In YAML the section is flat (``recover: {epochs: 10, lr: 5e-4, distill: true, temperature: 2.0}``): the
    keys ``distill``, ``distill_weight`` and ``temperature`` are recovery's own; every other key is a
    ``train:`` key and goes to :attr:`train`, a :class:`TrainConfig` with recovery's defaults (10 epochs, lr
    5e-4, 0.5 warm-up epochs). ``recover.distill`` is a bool (KD from the model before compression), never
    the DeiT ``train.distill`` section, which recovery does not take.
    """

    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**_RECOVER_TRAIN_DEFAULTS))
    distill: bool = Field(True, description="distil from the model before pruning/sparsifying")
    distill_weight: float = Field(0.5, ge=0, le=1, description="weight of the KD term (1 - weight: labels)")
    temperature: float = Field(2.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any) -> Any:
        """The flat YAML section -> ``{own keys..., "train": {the rest, over recovery's defaults}}``."""
        if not isinstance(data, dict) or isinstance(data.get("train"), TrainConfig):
            return data
        own = {k: data[k] for k in _RECOVER_OWN if k in data}
        rest = {k: v for k, v in data.items() if k not in _RECOVER_OWN}
        return {**own, "train": {**_RECOVER_TRAIN_DEFAULTS, **rest}}

    @model_serializer(mode="wrap")
    def _to_flat(self, handler) -> dict[str, Any]:
        """Dump flat again (the train keys beside recovery's own), as the YAML is written."""
        out = handler(self)
        train_keys = out.pop("train")
        train_keys.pop("distill", None)  # DeiT distillation: not a recovery key (always None here)
        return {**train_keys, **out}


class Recipe(StrictModel):
    """A whole run. Unknown keys anywhere are an error naming the key."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    quantize: PTQConfig = Field(default_factory=PTQConfig)
    qat: QATConfig = Field(default_factory=QATConfig, description="`edgevit train --qat` and method: qat targets")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="`edgevit prune`: structured pruning")
    sparsify: SparsityConfig = Field(default_factory=SparsityConfig, description="`edgevit sparsify`")
    recover: RecoverConfig = Field(default_factory=RecoverConfig, description="fine-tuning after prune/sparsify")
    finetune: FinetuneConfig | None = Field(
        None, description="start from a trained model: FixRes (a new data.img_size), transfer, linear probe"
    )
    export: ExportConfig = Field(default_factory=ExportConfig)
    parity: ParityConfig = Field(default_factory=ParityConfig)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Parse and validate a recipe YAML.

        Raises:
            EdgeVitError: missing file, bad YAML, unknown key, wrong type or value, unknown model.
        """
        path = Path(path)
        if not path.is_file():
            raise EdgeVitError(f"recipe not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise EdgeVitError(f"recipe {path} is not valid YAML: {e}") from e
        return cls.from_dict(raw or {}, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "recipe") -> Recipe:
        """Validate a recipe given as a dict (see :meth:`load`)."""
        if not isinstance(raw, dict):
            raise EdgeVitError(f"{source}: the top level must be a mapping of sections")
        try:
            recipe = cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = list(err["loc"])
            if loc[:2] == ["recover", "train"]:
                del loc[1]  # the recover section is flat in YAML (RecoverConfig.train holds its train keys)
            key = key_path(loc)
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
            raise EdgeVitError(f"{source}: recipe key '{key}': {msg}{more}") from None
        if recipe.model.name not in list_models():
            create_model(recipe.model.name)  # raises the unknown-model error with suggestions
        return recipe

    def save(self, path: str | Path) -> Path:
        """Write the resolved recipe as YAML, atomically."""
        return write_text_atomic(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))


__all__ = ["DataConfig", "ExportConfig", "ModelConfig", "Recipe", "RecoverConfig", "Target"]
