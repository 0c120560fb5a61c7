"""Checkpoints: weights in safetensors, run state in a small JSON; both written atomically, loaded safely."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from edgevit._utils import read_json, write_json_atomic
from edgevit.models.weights import load_state_dict, save_state_dict


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    name: str = "last",
) -> Path:
    """Save ``name.safetensors`` (model), ``name.optim.safetensors`` (optimizer tensors) and ``name.json``.

    The JSON is written last, so a checkpoint whose JSON exists is complete. A tensor the state dict holds
    under several names (a submodule registered twice, e.g. the fake quantizers QAT shares between ops) is
    stored once; the JSON's ``aliases`` maps the other names to it.
    """
    directory = Path(directory)
    tensors, aliases = _dedupe(model.state_dict())
    save_state_dict(tensors, directory / f"{name}.safetensors")
    if aliases:
        state = dict(state, aliases=aliases)
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_state_dict(tensors, directory / f"{name}.optim.safetensors")
        state = dict(state, optimizer=meta)
    write_json_atomic(directory / f"{name}.json", state)
    return directory / f"{name}.json"


def load_checkpoint(
    directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, name: str = "last"
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``model`` (and ``optimizer``); return the run state."""
    directory = Path(directory)
    state = read_json(directory / f"{name}.json", "checkpoint state")
    tensors = OrderedDict(load_state_dict(directory / f"{name}.safetensors"))
    for alias, key in state.get("aliases", {}).items():
        tensors[alias] = tensors[key]
    # safetensors keeps no per-module state-dict versions, and without one some modules take the file for an
    # old format (torchao's observers then reset their eps); the checkpoint was written by this model's code
    tensors._metadata = getattr(model.state_dict(), "_metadata", None)
    model.load_state_dict(tensors)
    if optimizer is not None and "optimizer" in state:
        tensors = load_state_dict(directory / f"{name}.optim.safetensors")
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    return state


def _dedupe(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop names that repeat a tensor (same storage, offset, shape, stride: safetensors refuses to store both).

    Returns ``(tensors, {alias: name kept})``.
    """
    tensors, aliases, seen = {}, {}, {}
    for key, t in sd.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
        if t.numel() and ident in seen:
            aliases[key] = seen[ident]
        else:
            seen.setdefault(ident, key)
            tensors[key] = t
    return tensors, aliases


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able metadata."""
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for k, v in pstate.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}
