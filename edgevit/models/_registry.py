"""The model registry: ``register_model``, ``create_model``, ``list_models``.

Architectures register thin entry points (``@register_model def vit_tiny_patch16(**kw)``) that look
their config up in a dict of dataclasses, as timm does. ``create_model`` is the one factory.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from edgevit._utils import EdgeVitError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; ``fn(**kwargs)`` must return an ``nn.Module``."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def register_family(configs: dict[str, Any], build: Callable[..., nn.Module], family: str) -> None:
    """Register one thin entry point per config: ``create_model(name, **kw)`` calls ``build(configs[name], **kw)``."""
    for name, cfg in configs.items():
        register_model(_entry(name, cfg, build, family))


def _entry(name: str, cfg: Any, build: Callable[..., nn.Module], family: str) -> Callable[..., nn.Module]:
    def entry(**kwargs) -> nn.Module:
        return build(cfg, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"{family} {name}: {cfg}"
    return entry


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"vit_*"``), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, *, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered name (see ``list_models()``), or ``"timm/<name>"`` for any timm architecture
            (built with random weights; pass ``weights=`` to load a checkpoint).
        weights: optional path to a ``.safetensors`` (or ``.pth``/``.pt``) state dict to load.
        **kwargs: architecture overrides such as ``num_classes``, ``img_size``, ``patch_size``, ``depth``.

    Returns:
        The model, in train mode, on CPU.

    Raises:
        EdgeVitError: unknown name (with the closest names), bad override, or unloadable weights.
    """
    if name.startswith("timm/"):
        model = _create_timm(name.removeprefix("timm/"), **kwargs)
    elif name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EdgeVitError(f"unknown model {name!r}{hint} (`edgevit models` lists all {len(_MODELS)})")
    else:
        try:
            model = _MODELS[name](**kwargs)
        except TypeError as e:
            raise EdgeVitError(f"model {name!r} does not take these arguments {sorted(kwargs)}: {e}") from e
    if weights is not None:
        from edgevit.models.weights import load_state_dict

        state = load_state_dict(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise EdgeVitError(
                f"weights {weights} do not fit model {name!r}: missing keys {missing[:5]}, unexpected keys "
                f"{unexpected[:5]} (was it trained with other architecture arguments?)"
            )
    return model


def _create_timm(name: str, **kwargs) -> nn.Module:
    """A timm model by name, random init (no download), with ``default_cfg`` matching ``img_size``."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('timm/' + c for c in close)}?" if close else ""
        raise EdgeVitError(f"unknown timm model {name!r}{hint}")
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as e:
        raise EdgeVitError(f"timm model {name!r} does not take these arguments {sorted(kwargs)}: {e}") from e
    cfg = dict(model.pretrained_cfg)
    if "img_size" in kwargs:
        size = kwargs["img_size"]
        cfg["input_size"] = (cfg["input_size"][0], *((size, size) if isinstance(size, int) else size))
    model.pretrained_cfg = model.default_cfg = cfg
    return model
