"""Checkpoints: weights in safetensors, run state in a small JSON; written crash-safe, loaded safely.

A checkpoint ``NAME`` is ``NAME.safetensors`` (the model), ``NAME.json`` (run state) and optional
``NAME.<part>.safetensors`` files (``optim``: the optimizer's tensors; ``ema``: the EMA weights).

Saving first writes every file under a staging name (``NAME.next.*``, each atomically), the staging JSON
last; then the files are renamed into place, the JSON last. A process killed at any point leaves either the
previous checkpoint (staging JSON missing: the staged files are discarded) or the new one (staging JSON
present: the renames are finished by the next save or load). A half-written checkpoint is never read.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from edgevit.models.weights import load_state_dict, save_state_dict
from edgevit.utils import read_json, write_json_atomic


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    name: str = "last",
    parts: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Save ``model`` (and ``optimizer``, and extra tensor ``parts``) with the JSON-able run ``state``.

    Args:
        directory: the checkpoint directory (created if missing).
        model: its ``state_dict()`` goes to ``NAME.safetensors``. A tensor the state dict holds under several
            names (a submodule registered twice, e.g. the fake quantizers QAT shares between ops) is stored
            once; the JSON's ``aliases`` maps the other names to it.
        optimizer: its state goes to ``NAME.optim.safetensors`` and its param groups/scalars to the JSON.
        state: JSON-able run state (epoch, metrics, RNG states, ...).
        name: the checkpoint name.
        parts: more state dicts, each saved as ``NAME.<part>.safetensors`` (read with :func:`load_part`).

    Returns:
        The path of ``NAME.json``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _settle(directory, name)
    stage = f"{name}.next"
    tensors, aliases = _dedupe(model.state_dict())
    save_state_dict(tensors, directory / f"{stage}.safetensors")
    files = [""]
    if aliases:
        state = dict(state, aliases=aliases)
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_state_dict(tensors, directory / f"{stage}.optim.safetensors")
        state = dict(state, optimizer=meta)
        files.append(".optim")
    for part, sd in (parts or {}).items():
        save_state_dict(_dedupe(sd)[0], directory / f"{stage}.{part}.safetensors")
        files.append(f".{part}")
    write_json_atomic(directory / f"{stage}.json", dict(state, files=files))  # the commit record
    _settle(directory, name)
    return directory / f"{name}.json"


def load_checkpoint(
    directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, name: str = "last"
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``model`` (and ``optimizer``); return the run state.

    Raises:
        EdgeVitError: the checkpoint is missing or corrupt.
    """
    directory = Path(directory)
    _settle(directory, name)
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


def load_part(directory: str | Path, part: str, name: str = "last") -> dict[str, torch.Tensor] | None:
    """The ``parts[part]`` state dict saved with checkpoint ``name``, or ``None`` if it has none."""
    path = Path(directory) / f"{name}.{part}.safetensors"
    return load_state_dict(path) if path.is_file() else None


def jsonable(obj: Any) -> Any:
    """``obj`` (a state dict such as a scheduler's) with the dict values JSON cannot hold (tensors, generators, any
    other object) dropped and tuples made lists, for a checkpoint's JSON state."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if jsonable(v) is not _DROP}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return _DROP


_DROP = object()


def _settle(directory: Path, name: str) -> None:
    """Finish a committed save (rename the staged files into place) or drop an uncommitted one."""
    stage_json = directory / f"{name}.next.json"
    if stage_json.is_file():
        for suffix in read_json(stage_json, "staged checkpoint").get("files", [""]):
            staged = directory / f"{name}.next{suffix}.safetensors"
            if staged.is_file():  # absent when an earlier settle already moved it
                os.replace(staged, directory / f"{name}{suffix}.safetensors")
        os.replace(stage_json, directory / f"{name}.json")
    else:
        for staged in directory.glob(f"{name}.next*.safetensors"):
            staged.unlink()


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
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able metadata.

    Tensors in a param group (timm's LAMB keeps its step count there) go to the tensors as ``group.I.KEY``.
    """
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for k, v in pstate.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    groups = []
    for i, group in enumerate(sd["param_groups"]):
        for k, v in group.items():
            if isinstance(v, torch.Tensor):
                tensors[f"group.{i}.{k}"] = v
        groups.append({k: v for k, v in group.items() if not isinstance(v, torch.Tensor)})
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    groups = [dict(g) for g in meta["param_groups"]]
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        if pid == "group":
            i, k = k.split(".", 1)
            groups[int(i)][k] = v
        else:
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": groups}
