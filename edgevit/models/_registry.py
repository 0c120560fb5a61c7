"""The model registry: ``register_model``, ``register_family``, ``list_models``, ``model_entrypoint``.

Architectures register thin entry points (``@register_model def vit_tiny_patch16(**kw)``) that look
their config up in a dict of dataclasses, as timm does. Building, loading and resizing models live in
``_factory.py`` and ``_prune.py``; this module only keeps the table.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from edgevit.utils import EdgeVitError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; ``fn(**kwargs)`` must return an ``nn.Module``.

    Returns:
        ``fn`` itself, so this works as a decorator.

    Raises:
        ValueError: a model of that name is already registered.
    """
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def register_family(configs: dict[str, Any], build: Callable[..., nn.Module], family: str) -> None:
    """Register one thin entry point per config: ``create_model(name, **kw)`` calls ``build(configs[name], **kw)``.

    Raises:
        ValueError: a name in ``configs`` is already registered.
    """
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


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The function registered as ``name`` (timm's ``model_entrypoint``); calling it builds the model.

    Unlike :func:`edgevit.models.create_model`, it neither loads weights nor turns an architecture's
    ``TypeError`` for a bad keyword into an :class:`EdgeVitError`.

    Args:
        name: a registered name (see :func:`list_models`).

    Returns:
        The entry point: ``entry(**kwargs) -> nn.Module``.

    Raises:
        EdgeVitError: ``name`` is not registered (the message names the closest registered names).
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EdgeVitError(f"unknown model {name!r}{hint} (`edgevit models` lists all {len(_MODELS)})")
    return _MODELS[name]
