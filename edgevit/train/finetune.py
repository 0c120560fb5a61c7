"""Fine-tuning from a trained model: FixRes (a higher resolution), transfer (a new head), linear probing.

A recipe with a ``finetune:`` section starts from another run's weights instead of a fresh init::

    data: {img_size: 48}                # FixRes: fine-tune (and export) at 48 px a model trained at 32
    model: {name: vit_tiny_patch16}     # the source's architecture arguments are inherited
    finetune:
      from: runs/digits32               # a run directory, its model.safetensors, or a .safetensors/.pth file
      linear_probe: false               # true: only the classifier trains; the backbone is frozen
      reset_head: null                  # null: a new head when the classes differ; true / false: force

What :func:`load_pretrained_` does with the source state dict:

- ViT/DeiT absolute position embeddings are resampled to the new patch grid (timm's
  ``resample_abs_pos_embed``, bicubic); the class and distillation tokens' rows are kept as they are.
  MobileViT and Mobile-Former have no position embedding; their convolutions take any size.
- The classifier (``head``, ``head_dist``, ``head.fc``, or timm's ``get_classifier()``) is loaded when it
  fits and the classes are the same; otherwise it keeps its fresh initialisation and is reported.
- Any other missing key, unexpected key or shape mismatch is an error naming the keys and the file.

Loading is safe: safetensors, or ``torch.load(weights_only=True)`` for ``.pth`` (see
:func:`edgevit.models.weights.load_state_dict`).

Linear probing (:func:`freeze_backbone_`) trains the head on fixed features: every parameter outside the
classifier gets ``requires_grad=False`` (the optimiser never sees it: no update, no weight decay), and
:func:`frozen_to_eval_`, called at the start of every epoch, puts every module without a trainable parameter
in eval mode, so batch norm statistics do not move and dropout / drop-path outside the head are off: the
backbone computes the features it computes at inference. Layer-wise LR decay for full fine-tuning is
``train.optimizer.layer_decay`` (e.g. 0.65-0.75).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from edgevit.models.layers import resample_pos_embed
from edgevit.models.weights import load_state_dict
from edgevit.utils import EdgeVitError, read_json


class FinetuneConfig(BaseModel):
    """Start training from a trained model (the ``finetune:`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, serialize_by_alias=True)

    source: str = Field(
        alias="from", description="run directory, or its model.safetensors, or a .safetensors/.pth state dict"
    )
    linear_probe: bool = Field(False, description="train only the classifier; the frozen backbone runs in eval mode")
    reset_head: bool | None = Field(
        None, description="re-initialise the classifier; null: when the number of classes or their names differ"
    )


@dataclass
class TransferReport:
    """What :func:`load_pretrained_` did: where from, which keys were left at their fresh init and why, what was
    resampled, and (filled in by the caller) the validation top-1 before any fine-tuning step."""

    source: str
    loaded: int
    reinitialised: list[str] = field(default_factory=list)
    reason: str | None = None
    resampled: dict[str, list[int]] = field(default_factory=dict)
    source_classes: list[str] | None = None
    val_top1_before: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (recorded in the run's ``model.json`` under ``finetune``)."""
        return asdict(self)


def resolve_source(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The weights file of ``path`` and its ``model.json``-style metadata (``None`` for a bare state dict).

    ``path`` is a run directory (its ``model.safetensors``), a file saved by ``save_model`` (with its
    ``.json`` sidecar), or any ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict.

    Raises:
        EdgeVitError: nothing loadable at ``path``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
        if not p.is_file():
            raise EdgeVitError(
                f"finetune.from: {path} has no model.safetensors; is it a trained run directory (`edgevit train`)?"
            )
    elif not p.is_file():
        raise EdgeVitError(f"finetune.from: {path} not found (a run directory or a .safetensors/.pth file)")
    sidecar = p.with_suffix(".json")
    meta = read_json(sidecar, "model metadata") if sidecar.is_file() else None
    if not (isinstance(meta, dict) and "name" in meta):  # e.g. checkpoints/last.json: run state, not a model
        meta = None
    if meta is not None and meta.get("pruned"):
        raise EdgeVitError(f"finetune.from: {path} is a structurally pruned model; fine-tuning it is not supported")
    return p, meta


_HEADS = ("head", "head_dist", "head.fc")


def head_names(model: nn.Module) -> list[str]:
    """The module names of ``model``'s classifier(s): timm's ``get_classifier()``, else ``head``/``head_dist``/
    ``head.fc`` Linear layers (edgevit's ViT/DeiT, Mobile-Former / MobileViT).

    Raises:
        EdgeVitError: no classifier found.
    """
    if hasattr(model, "get_classifier"):
        heads = model.get_classifier()
        ids = {id(h) for h in (heads if isinstance(heads, tuple) else (heads,))}
        names = [n for n, m in model.named_modules() if id(m) in ids and n]
    else:
        names = [n for n, m in model.named_modules() if n in _HEADS and isinstance(m, nn.Linear)]
    if not names:
        raise EdgeVitError(f"{type(model).__name__} has no classifier named head, head_dist or head.fc")
    return names


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def load_pretrained_(
    model: nn.Module,
    source: str | Path,
    classes: list[str] | None = None,
    reset_head: bool | None = None,
) -> TransferReport:
    """Load a trained model's weights into ``model`` (built for the new resolution and classes), in place.

    Args:
        model: the model to fine-tune, freshly initialised (its head is what a reset head keeps).
        source: see :func:`resolve_source`.
        classes: the new data's class names; with the source's recorded classes they decide ``reset_head=None``.
        reset_head: ``True`` keeps the fresh head; ``False`` loads the source's (error if it does not fit);
            ``None`` keeps the fresh head when its shape or the class names differ from the source's.

    Returns:
        A :class:`TransferReport` (re-initialised keys, resampled position embedding).

    Raises:
        EdgeVitError: see :func:`resolve_source`; keys outside the classifier missing, unexpected or of
            another shape (named, with both shapes); ``reset_head=False`` with a head that does not fit.
    """
    path, meta = resolve_source(source)
    sd = dict(load_state_dict(path))
    own = model.state_dict()
    heads = head_names(model)
    report = TransferReport(str(source), 0, source_classes=(meta or {}).get("classes"))

    pe = sd.get("pos_embed")
    if pe is not None and "pos_embed" in own and pe.shape != own["pos_embed"].shape:
        grid = model.patch_embed.grid_size
        grid = grid[0] if isinstance(grid, tuple) else grid  # timm keeps (h, w); edgevit's grids are square
        prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        old = round((pe.shape[1] - prefix) ** 0.5)
        try:
            sd["pos_embed"] = resample_pos_embed(pe, grid, prefix)  # [1, prefix + g*g, D] -> [1, prefix + g'*g', D]
        except ValueError as e:
            raise EdgeVitError(f"finetune.from: {path}: pos_embed {list(pe.shape)} cannot be resampled: {e}") from e
        report.resampled["pos_embed"] = [old, grid]

    head_keys = [k for k in own if _under(k, heads)]
    misfit = [k for k in head_keys if k not in sd or sd[k].shape != own[k].shape]
    src_classes = report.source_classes
    renamed = classes is not None and src_classes is not None and list(src_classes) != list(classes)
    if reset_head is False and misfit:
        raise EdgeVitError(
            f"finetune.reset_head is false but the classifier in {path} does not fit the model: "
            + ", ".join(f"{k} {_shape(sd.get(k))} vs {list(own[k].shape)}" for k in misfit)
        )
    if reset_head or (reset_head is None and (misfit or renamed)):
        report.reinitialised = head_keys
        report.reason = (
            "finetune.reset_head: true"
            if reset_head
            else f"classifier shape {_shape(sd.get(misfit[0]))} -> {list(own[misfit[0]].shape)}"
            if misfit
            else f"classes {src_classes} -> {classes}"
        )
        for k in head_keys:
            sd.pop(k, None)
    else:
        head_keys = []

    mismatched = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    missing = [k for k in own if k not in sd and k not in head_keys]
    unexpected = [k for k in sd if k not in own]
    if mismatched or missing or unexpected:
        parts = []
        if mismatched:
            shown = ", ".join(f"{k} {list(sd[k].shape)} vs {list(own[k].shape)}" for k in mismatched[:5])
            parts.append(f"shape mismatch (checkpoint vs model) at {shown}")
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        hint = f" (it holds a {meta['name']} model with args {meta.get('args')})" if meta else ""
        raise EdgeVitError(
            f"finetune.from: {path} does not fit the model{hint}: {'; '.join(parts)}. Fine-tuning keeps the "
            "architecture: use the source's model name and model.args (only img_size and the classes may change)"
        )
    # the model's own load_state_dict: modules convert their own layouts (e.g. Mobile-Former's released one)
    model.load_state_dict({**{k: own[k] for k in head_keys}, **sd})
    report.loaded = len(sd)
    return report


def _shape(t: torch.Tensor | None) -> list[int] | str:
    return list(t.shape) if t is not None else "absent"


def freeze_backbone_(model: nn.Module) -> list[str]:
    """Linear probing: ``requires_grad=False`` for every parameter outside the classifier, in place.

    Returns:
        The names of the parameters left trainable (the classifier's).

    Raises:
        EdgeVitError: see :func:`head_names`.
    """
    heads = head_names(model)
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(_under(name, heads))
        if p.requires_grad:
            trainable.append(name)
    return trainable


def frozen_to_eval_(model: nn.Module) -> None:
    """Put every module with no trainable parameter (in it or below it) in eval mode, in place.

    Call it after ``model.train()`` (the train loop's ``on_epoch_start``): frozen batch norms keep their running
    statistics, and dropout / drop-path outside the classifier are off.
    """
    for m in model.modules():
        if not any(p.requires_grad for p in m.parameters()):
            m.training = False


__all__ = [
    "FinetuneConfig",
    "TransferReport",
    "freeze_backbone_",
    "frozen_to_eval_",
    "head_names",
    "load_pretrained_",
    "resolve_source",
]
