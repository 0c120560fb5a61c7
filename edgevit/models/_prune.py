"""Pruned shapes: rebuild a structurally pruned model from its registry architecture and saved tensors.

A model pruned by :func:`edgevit.prune.prune_` has non-registry widths. :func:`restore_pruned_` gives a
freshly built registry model the saved tensors' shapes, then every module that caches a width re-reads it
from its layers through its ``sync_widths_()`` hook (:func:`sync_widths_`). No architecture is named here:
a model class that caches widths owns the hook (as in timm's ``timm/models/_prune.py``, the zoo owns how a
pruned model is rebuilt; the pruning algorithm in ``edgevit/prune.py`` imports this).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from edgevit.utils import EdgeVitError


def sync_widths_(model: nn.Module) -> None:
    """Update the width attributes forward passes read (heads, channel counts) from the layers' shapes.

    Calls ``sync_widths_()`` on every submodule that has one (``model`` itself included). A model without its
    own hook (a timm model) follows timm's conventions instead (:func:`_sync_timm_widths_`).
    """
    for m in model.modules():
        hook = getattr(m, "sync_widths_", None)
        if callable(hook):
            hook()
    if not callable(getattr(model, "sync_widths_", None)):
        _sync_timm_widths_(model)


def _sync_timm_widths_(model: nn.Module) -> None:
    """The widths a timm model's ``reset_classifier`` builds a new classifier from, read from its layers.

    ``embed_dim`` follows ``patch_embed.proj`` (ViTs); ``head_hidden_size`` (the classifier's input width) follows
    ``get_classifier()``, and so does ``num_features`` where it equals ``head_hidden_size`` (no pre-logits layer
    between the features and the classifier, as in ResNets and ViTs).
    """
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(getattr(model, "embed_dim", None), int) and hasattr(patch_embed, "proj"):
        model.embed_dim = patch_embed.proj.out_channels
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    if not isinstance(classifier, nn.Linear):
        return
    features, hidden = getattr(model, "num_features", None), getattr(model, "head_hidden_size", None)
    if isinstance(features, int) and (hidden is None or features == hidden):
        model.num_features = classifier.in_features
    if isinstance(hidden, int):
        model.head_hidden_size = classifier.in_features


def restore_pruned_(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Resize a freshly built registry model to a pruned ``state`` dict's shapes, then load it strictly.

    Each ``Linear``, ``Conv2d``, norm layer and free parameter whose saved tensor has another shape gets new
    (empty) tensors of that shape and matching width attributes; head counts follow from the qkv widths.

    Args:
        model: the registry model the pruned one was cut from, built with the same arguments.
        state: the pruned model's state dict.

    Returns:
        ``model``, resized and holding ``state``.

    Raises:
        EdgeVitError: ``state`` does not come from a pruned version of this architecture.
    """
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise EdgeVitError(
            f"pruned weights do not fit this architecture: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        changed = {
            k: state[prefix + k].shape
            for k, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
            if t is not None and state[prefix + k].shape != t.shape
        }
        if changed:
            _resize_module_(m, changed)
    sync_widths_(model)
    model.load_state_dict(dict(state), strict=True)
    return model


def _resize_module_(m: nn.Module, shapes: dict[str, torch.Size]) -> None:
    """Give ``m``'s tensors ``shapes`` (name -> shape) and set its width attributes to match."""
    for k, shape in shapes.items():
        old = getattr(m, k)
        new = torch.empty(shape, dtype=old.dtype)
        if isinstance(old, nn.Parameter):
            setattr(m, k, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            m._buffers[k] = new
    if isinstance(m, nn.Linear):
        m.out_features, m.in_features = m.weight.shape
    elif isinstance(m, nn.Conv2d):
        depthwise = m.groups == m.in_channels == m.out_channels and m.groups > 1
        m.out_channels = m.weight.shape[0]
        m.groups = m.out_channels if depthwise else m.groups
        m.in_channels = m.weight.shape[1] * m.groups
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.num_features = m.running_mean.shape[0] if m.running_mean is not None else m.weight.shape[0]
    elif isinstance(m, nn.LayerNorm):
        m.normalized_shape = (m.weight.shape[0],) if m.weight is not None else m.normalized_shape
    elif isinstance(m, nn.GroupNorm):
        m.num_channels = m.weight.shape[0]
    # any other module: only its own free parameters (class token, position embedding) change shape
