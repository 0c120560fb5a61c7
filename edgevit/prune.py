"""Structured pruning with torch-pruning, and unstructured sparsity with ``torch.nn.utils.prune``.

Structured pruning removes whole channels, MLP hidden units and attention heads, so the model is physically
smaller and faster on every backend: ``prune_(model, PruneConfig(ratio=0.3), example)``. torch-pruning traces
the model once and finds the coupled groups (a conv's output channels, the BatchNorm after it and the next
layer's inputs; the residual stream of a transformer), ranks each group's channels by importance (weight
magnitude, or |weight x gradient| on a few labelled batches for ``taylor``) and cuts the lowest ``ratio`` of
them. Attention heads go as whole heads, so ``num_heads * head_dim`` stays the qkv width. The classifier's
outputs are never pruned. Fine-tune afterwards with :func:`edgevit.train.train` to recover accuracy.

Unstructured sparsity zeroes individual weights: ``sparsify_(model, SparsityConfig(sparsity=0.5))`` keeps a
mask per layer (masked weights stay zero through fine-tuning), :func:`make_sparsity_permanent_` folds the masks
in. Dense kernels (XNNPACK, LiteRT, ONNX Runtime) run a sparse model exactly as fast as a dense one; the gain is
file size where the format stores sparse weights: Core ML's ``sparse`` precision (``edgevit export``) stores
zero-heavy weights as ``constexpr_sparse_to_dense`` (a bitmask plus the non-zero values).

A pruned model has non-registry widths. :func:`edgevit.models.save_model` records ``model.pruning`` in the
sidecar, and :func:`edgevit.models.load_model` rebuilds the registry model and resizes it to the saved tensors'
shapes (``restore_pruned_``, which lives with the zoo in ``edgevit/models/_prune.py`` and is re-exported here)
before loading them: no pickled modules.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch.nn.utils import prune as tprune
from torch.utils.data import DataLoader, Dataset

from edgevit.models._prune import restore_pruned_, sync_widths_
from edgevit.models.layers import Attention
from edgevit.models.mobile_former import ChannelShuffle
from edgevit.models.mobilevit import LinearSelfAttention
from edgevit.utils import EdgeVitError, require

_CLASSIFIER_NAMES = ("head", "head_dist", "classifier")  # top-level modules whose outputs are the logits


class PruneConfig(BaseModel):
    """Structured pruning settings (a ``prune:`` recipe section).

    ``ratio`` is the fraction of each group's channels to remove (of all groups' channels ranked together with
    ``global_pruning``); with ``prune_heads`` the same fraction of every attention's heads, rounded to whole
    heads (at least one head stays). ``ignore`` names modules whose output channels must not change
    (e.g. ``patch_embed.proj`` keeps a ViT's token width); the classifier is always kept.
    """

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(0.3, gt=0, lt=1, description="fraction of prunable channels/heads to remove")
    importance: Literal["magnitude", "taylor"] = "magnitude"
    global_pruning: bool = Field(False, description="rank all groups together instead of pruning each by ratio")
    prune_heads: bool = Field(True, description="remove whole attention heads; False leaves attention as it is")
    ignore: list[str] = Field(default_factory=list, description="module names whose output channels stay")
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this (e.g. 8)")
    calib_batches: int = Field(4, ge=1, description="taylor only: labelled batches for the gradients")
    batch_size: int = Field(32, ge=1, description="taylor only")


class SparsityConfig(BaseModel):
    """Unstructured magnitude sparsity settings (a ``sparsify:`` recipe section).

    ``scope: global`` ranks all targeted weights together (layers end up with different sparsities); ``layer``
    gives every layer exactly ``sparsity``. Targets are the ``Linear`` and ``Conv2d`` weights except the
    classifier and the ``ignore``d modules (and their children).
    """

    model_config = ConfigDict(extra="forbid")

    sparsity: float = Field(0.5, gt=0, lt=1, description="fraction of targeted weights set to zero")
    scope: Literal["global", "layer"] = "global"
    ignore: list[str] = Field(default_factory=list, description="module names left dense")


@dataclass
class PruneResult:
    """What :func:`prune_` removed: sizes before/after, heads per attention and channel widths per layer."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)  # attention module -> (before, after)
    widths: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer -> (out channels before, after)
    skipped_groups: int = 0  # coupled groups torch-pruning could not index (left whole)

    @property
    def param_ratio(self) -> float:
        """Parameters after / before."""
        return self.params_after / self.params_before

    @property
    def mac_ratio(self) -> float:
        """MACs after / before."""
        return self.macs_after / self.macs_before

    def to_json(self) -> dict[str, Any]:
        """A JSON-able record (tuples become lists)."""
        return asdict(self)


@dataclass
class SparsityResult:
    """Achieved sparsity: overall over the targeted weights, and per layer."""

    sparsity: float
    layers: dict[str, float]
    targeted_params: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-able record."""
        return asdict(self)


_C = TypeVar("_C", bound=BaseModel)


def _validated(cls: type[_C], config: _C | Mapping[str, Any] | None) -> _C:
    """``config`` as a ``cls``; a bad mapping raises :class:`EdgeVitError` naming the key."""
    if isinstance(config, cls):
        return config
    try:
        return cls.model_validate(dict(config or {}))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise EdgeVitError(f"{cls.__name__} '{key}': {msg} (got {err.get('input')!r})") from None


def _named(model: nn.Module, names: list[str], what: str) -> list[nn.Module]:
    """The modules called ``names`` in ``model``; an unknown name raises with the closest names."""
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EdgeVitError(f"{what}: the model has no module named {name!r}{hint}")
        out.append(modules[name])
    return out


def _classifiers(model: nn.Module) -> list[nn.Module]:
    """The layers producing the logits (their outputs are the classes and must not be pruned)."""
    found = [m for n, m in model.named_children() if n in _CLASSIFIER_NAMES]
    get = getattr(model, "get_classifier", None)  # timm models
    if callable(get) and isinstance(get(), nn.Module):
        found.append(get())
    return found


# -- structured pruning ------------------------------------------------------------------------------------------


def _unsupported(model: nn.Module) -> str | None:
    """Why torch-pruning cannot prune ``model`` correctly, or None."""
    for name, m in model.named_modules():
        if isinstance(m, ChannelShuffle):
            return (
                f"{name} is a channel shuffle (a reshape torch-pruning cannot follow); prune a variant without "
                "grouped convs (e.g. mobile_former_52m instead of mobile_former_26m) or use sparsify_"
            )
    return None


def _protected(model: nn.Module, prune_heads: bool) -> list[nn.Module]:
    """Layers whose output channels must stay for the forward pass to remain correct.

    - a MobileViTv2 attention's ``qkv_proj`` and ``out_proj`` (the qkv output is sliced with the input's width,
      so neither the qkv channels nor the transformer width may change);
    - the projections of every other module that splits channels into heads (Mobile-Former's bridges and
      Former), whose heads are contiguous channel ranges torch-pruning does not know about;
    - an Attention's ``qkv`` when heads are not pruned;
    - grouped convs other than plain depthwise ones (a channel multiplier, as in Mobile-Former's depthwise
      expansions): torch-pruning does not keep their output channels a multiple of the groups.
    """
    keep: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, LinearSelfAttention):
            keep.extend([m.qkv_proj, m.out_proj])
        elif isinstance(m, Attention):
            if not prune_heads:
                keep.append(m.qkv)
        elif isinstance(getattr(m, "num_heads", None), int):
            keep.extend(c for c in m.children() if isinstance(c, nn.Linear))
        elif isinstance(m, nn.Conv2d) and m.groups > 1 and not (m.groups == m.in_channels == m.out_channels):
            keep.append(m)
    return keep


def _importance(name: str):
    """torch-pruning's group importance: L2 weight magnitude, or first-order Taylor (needs gradients)."""
    tp = require("torch_pruning", "prune")
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


class _SkipUnindexable:
    """Wrap an importance: a group torch-pruning cannot index (raises while scoring) is left whole, counted."""

    def __init__(self, inner):
        self.inner = inner
        self.skipped = 0

    def __call__(self, group):
        try:
            return self.inner(group)
        except (IndexError, RuntimeError):
            self.skipped += 1
            return None


def _accumulate_gradients(model: nn.Module, data: Dataset, batches: int, batch_size: int) -> None:
    """Sum cross-entropy gradients over ``batches`` seeded batches of ``data`` (for Taylor importance)."""
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=g)
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        F.cross_entropy(model(x), y).backward()


def _macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of one forward at ``example``'s shape (edgevit.profile's convention: matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415 -- imports triton: seconds at start-up

    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(example.shape, device="meta"))
    return counter.get_total_flops() // 2


def _widths(model: nn.Module) -> dict[str, int]:
    return {
        n: (m.out_features if isinstance(m, nn.Linear) else m.out_channels)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }


def prune_(
    model: nn.Module,
    config: PruneConfig | Mapping[str, Any] | None,
    example: torch.Tensor,
    calib: Dataset | None = None,
) -> PruneResult:
    """Structurally prune ``model`` in place with torch-pruning.

    Args:
        model: an edgevit (or timm) classifier ``[B, C, H, W] -> [B, K]``; its mode is kept.
        config: a :class:`PruneConfig` or a mapping of its fields.
        example: a ``[1, C, H, W]`` input used to trace the model's channel dependencies.
        calib: a labelled dataset of ``(image, label)`` for ``importance="taylor"`` (ignored otherwise).

    Returns:
        A :class:`PruneResult`; ``model.pruning`` holds its JSON summary, which ``save_model`` records.

    Raises:
        EdgeVitError: bad config, an ``ignore`` name the model lacks, taylor without ``calib``, an architecture
            torch-pruning cannot follow, or a pruned model whose forward pass fails.
    """
    cfg = _validated(PruneConfig, config)
    tp = require("torch_pruning", "prune")
    ignored = _named(model, cfg.ignore, "prune ignore")
    if cfg.importance == "taylor" and calib is None:
        raise EdgeVitError("taylor importance needs labelled images: pass calib=data.train (or use magnitude)")
    why = _unsupported(model)
    if why:
        raise EdgeVitError(f"cannot prune this model structurally: {why}")

    was_training = model.training
    model.eval()  # tracing must not update BatchNorm statistics
    params_before, macs_before, widths_before = (
        sum(p.numel() for p in model.parameters()),
        _macs(model, example),
        _widths(model),
    )
    attentions = {n: m for n, m in model.named_modules() if isinstance(m, Attention)}
    heads_before = {n: m.num_heads for n, m in attentions.items()}

    num_heads, head_ratios = {}, {}
    if cfg.prune_heads:
        for m in attentions.values():
            num_heads[m.qkv] = m.num_heads
            k = min(round(cfg.ratio * m.num_heads), m.num_heads - 1)  # whole heads; one at least stays
            head_ratios[m.qkv] = (k - 0.5) / m.num_heads if k > 0 else 0.0  # torch-pruning removes ceil(r * h)
    importance = _SkipUnindexable(_importance(cfg.importance))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters")  # tokens/pos_embed: last dim, correct
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=importance,
            global_pruning=cfg.global_pruning,
            pruning_ratio=cfg.ratio,
            ignored_layers=[*_classifiers(model), *ignored, *_protected(model, cfg.prune_heads)],
            round_to=cfg.round_to,
            num_heads=num_heads,
            prune_num_heads=cfg.prune_heads,
            prune_head_dims=False,
            head_pruning_ratio=cfg.ratio if cfg.prune_heads else 0.0,
            head_pruning_ratio_dict=None if cfg.global_pruning else head_ratios,
        )
    if cfg.importance == "taylor":
        with torch.enable_grad():
            _accumulate_gradients(model, calib, cfg.calib_batches, cfg.batch_size)
    pruner.step()
    model.zero_grad(set_to_none=True)
    sync_widths_(model)
    _check_forward(model, example)

    widths_after = _widths(model)
    result = PruneResult(
        params_before=params_before,
        params_after=sum(p.numel() for p in model.parameters()),
        macs_before=macs_before,
        macs_after=_macs(model, example),
        heads={n: (heads_before[n], m.num_heads) for n, m in attentions.items()},
        widths={n: (widths_before[n], w) for n, w in widths_after.items() if w != widths_before[n]},
        skipped_groups=importance.skipped,
    )
    model.pruning = {"config": cfg.model_dump(), **{k: v for k, v in result.to_json().items() if k != "widths"}}
    model.train(was_training)
    return result


def _check_forward(model: nn.Module, example: torch.Tensor) -> None:
    """Run the pruned model at batch 1 and 2; a failure names the innermost module that failed and the way out."""
    stack: list[str] = []

    def leave(*_) -> None:
        stack.pop()

    hooks = []
    for name, m in model.named_modules():
        hooks.append(m.register_forward_pre_hook(lambda _m, _x, name=name: stack.append(name) and None))
        hooks.append(m.register_forward_hook(leave))
    try:
        with torch.no_grad():
            for batch in (example, torch.cat([example, example])):
                model(batch)
    except Exception as e:  # any shape error inside a module
        where = stack[-1] if stack else "the model"
        raise EdgeVitError(
            f"the pruned model's forward pass fails in {where} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}); add {where} (or its parent) to the prune config's ignore list"
        ) from e
    finally:
        for h in hooks:
            h.remove()


# -- unstructured sparsity ---------------------------------------------------------------------------------------


def _sparsity_targets(model: nn.Module, ignore: list[str]) -> dict[str, nn.Module]:
    """``Linear``/``Conv2d`` layers outside the classifier and the ignored subtrees, by name."""
    skipped = {
        id(m) for root in [*_classifiers(model), *_named(model, ignore, "sparsify ignore")] for m in root.modules()
    }
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and id(m) not in skipped}


def sparsify_(model: nn.Module, config: SparsityConfig | Mapping[str, Any] | None = None) -> SparsityResult:
    """Zero the smallest-magnitude weights of ``model``'s ``Linear``/``Conv2d`` layers in place, keeping masks.

    The masks (``torch.nn.utils.prune``: ``weight = weight_orig * weight_mask`` before every forward) keep the
    zeros through fine-tuning; call :func:`make_sparsity_permanent_` before saving or exporting.

    Returns:
        The achieved :class:`SparsityResult` (exact up to rounding: ``round(sparsity * n)`` weights).

    Raises:
        EdgeVitError: bad config, an ``ignore`` name the model lacks, or nothing left to sparsify.
    """
    cfg = _validated(SparsityConfig, config)
    targets = _sparsity_targets(model, cfg.ignore)
    if not targets:
        raise EdgeVitError("sparsify: no Linear or Conv2d layer left to sparsify (all ignored?)")
    if any(tprune.is_pruned(m) for m in targets.values()):
        raise EdgeVitError("sparsify: the model already has pruning masks; call make_sparsity_permanent_ first")
    if cfg.scope == "global":
        tprune.global_unstructured(
            [(m, "weight") for m in targets.values()], pruning_method=tprune.L1Unstructured, amount=cfg.sparsity
        )
    else:
        for m in targets.values():
            tprune.l1_unstructured(m, "weight", amount=cfg.sparsity)
    return sparsity(model, cfg.ignore)


def make_sparsity_permanent_(model: nn.Module) -> nn.Module:
    """Fold :func:`sparsify_`'s masks into the weights (plain ``weight`` parameters with zeros) and drop them."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and tprune.is_pruned(m):
            tprune.remove(m, "weight")
    return model


def sparsity(model: nn.Module, ignore: list[str] | None = None) -> SparsityResult:
    """The fraction of exactly-zero weights in the layers :func:`sparsify_` targets (masked or permanent)."""
    layers, zeros, total = {}, 0, 0
    for n, m in _sparsity_targets(model, ignore or []).items():
        w = m.weight.detach()  # with a mask: the masked weight computed by the last forward pre-hook / prune call
        z = int((w == 0).sum())
        layers[n] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    return SparsityResult(zeros / max(total, 1), layers, total)


__all__ = [
    "PruneConfig",
    "PruneResult",
    "SparsityConfig",
    "SparsityResult",
    "make_sparsity_permanent_",
    "prune_",
    "restore_pruned_",
    "sparsify_",
    "sparsity",
]
