"""Weights on disk: safetensors written atomically; ``.pth`` loaded only with ``weights_only=True``.

A saved model is ``NAME.safetensors`` plus a ``NAME.json`` sidecar recording the registry name and the
arguments it was built with, so :func:`edgevit.models.load_model` rebuilds it without the user repeating
them. This module only reads and writes files; building models is ``_factory.py``'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edgevit.utils import EdgeVitError, atomic_path, write_json_atomic


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a tensor dict to ``path`` as safetensors, atomically.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or, safely (``weights_only=True``), from ``.pth``/``.pt``/``.bin``.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper (common in training checkpoints) is unwrapped.

    Raises:
        EdgeVitError: the file is missing, corrupt, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeVitError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise EdgeVitError(f"checkpoint {path} is corrupt or not a safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors have many types; all mean the same to the user
        raise EdgeVitError(f"checkpoint {path} is corrupt or not a PyTorch state dict ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgeVitError(f"checkpoint {path} does not hold a state dict of tensors")
    return obj


def save_model(model: torch.nn.Module, name: str, args: dict[str, Any], path: str | Path, **extra: Any) -> Path:
    """Save weights to ``path`` (``.safetensors``) and ``{"name", "args", **extra}`` to the ``.json`` beside it.

    A structurally pruned model (``edgevit.prune.prune_`` sets ``model.pruning``) also records ``"pruned"``,
    so :func:`edgevit.models.load_model` resizes the registry model to the saved shapes.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    pruned = getattr(model, "pruning", None)
    save_state_dict(model.state_dict(), path)
    meta = {"name": name, "args": args, **({"pruned": pruned} if pruned else {}), **extra}
    write_json_atomic(path.with_suffix(".json"), meta)
    return path
