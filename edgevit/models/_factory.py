"""The one factory: ``create_model`` (registry or ``timm/<name>``) and ``load_model`` (a saved model back).

As in timm's ``_factory.py``, building sits apart from the registry table (``_registry.py``), the file I/O
(``weights.py``) and the rebuilding of pruned shapes (``_prune.py``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch.nn as nn

from edgevit.models._prune import restore_pruned_
from edgevit.models._registry import model_entrypoint
from edgevit.models.weights import load_state_dict
from edgevit.utils import EdgeVitError, read_json


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
    else:
        entry = model_entrypoint(name)
        try:
            model = entry(**kwargs)
        except TypeError as e:
            raise EdgeVitError(f"model {name!r} does not take these arguments {sorted(kwargs)}: {e}") from e
        except ValueError as e:  # an architecture that cannot be built (img_size not a multiple of the patch, ...)
            raise EdgeVitError(f"model {name!r} cannot be built with {kwargs}: {e}") from e
    if weights is not None:
        state = load_state_dict(weights)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # tensors of other shapes: "size mismatch for head.weight: ..."
            first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
            raise EdgeVitError(
                f"weights {weights} do not fit model {name!r} with {kwargs or 'its default arguments'}: {first} "
                "(was it trained with other architecture arguments, e.g. num_classes or img_size?)"
            ) from None
        if missing or unexpected:
            raise EdgeVitError(
                f"weights {weights} do not fit model {name!r}: missing keys {missing[:5]}, unexpected keys "
                f"{unexpected[:5]} (was it trained with other architecture arguments?)"
            )
    return model


def _create_timm(name: str, **kwargs) -> nn.Module:
    """A timm model by name, random init (no download), with ``default_cfg`` matching ``img_size``."""
    import timm  # noqa: PLC0415 -- timm imports torchvision: seconds at start-up, needed only here

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


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`edgevit.models.save_model`; ``path`` is the ``.safetensors`` or a run dir.

    A pruned model (sidecar key ``"pruned"``) is rebuilt by resizing the registry model's layers to the saved
    tensors' shapes (:func:`edgevit.models._prune.restore_pruned_`); nothing but tensors and JSON is read.

    Returns:
        ``(model in eval mode, sidecar metadata)``.

    Raises:
        EdgeVitError: the sidecar is missing or does not name a model, or the weights do not fit it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    meta = read_json(path.with_suffix(".json"), "model metadata (the .json beside the weights)")
    if not isinstance(meta, dict) or "name" not in meta:
        raise EdgeVitError(f"{path.with_suffix('.json')} does not describe a model (no 'name')")
    if meta.get("pruned"):  # non-registry widths: resize the registry model to the saved tensors' shapes
        model = restore_pruned_(create_model(meta["name"], **meta.get("args", {})), load_state_dict(path))
        model.pruning = meta["pruned"]
    else:
        model = create_model(meta["name"], weights=path, **meta.get("args", {}))
    return model.eval(), meta
