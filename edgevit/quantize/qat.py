"""Quantization-aware training (QAT) with PT2E: prepare, fine-tune with the normal loop, convert.

::

    backend = get_backend("executorch")                                              # edgevit.backends
    prepared, result = train_qat(fp32_model, data, QATConfig(epochs=3), "run/qat", backend=backend)
    converted = convert_qat(prepared, example)                                       # q/dq graph, batch 1
    export(converted, example, "executorch", "model.pte", "int8")                   # lowered as it is

``prepare_qat`` captures a copy of the float model with ``torch.export`` and a dynamic batch dimension
(training runs on batches, the artifact at batch 1), then ``prepare_qat_pt2e`` inserts fake-quantize modules
where the backend's own quantizer (the one PTQ uses, configured for QAT) annotates the graph: int8 per-channel
weights and int8 per-tensor activations for linear and conv layers (and adds, muls, concats). The forward
pass then sees the rounding the int8 artifact will do, and training adapts the weights to it.

The prepared graph is an ordinary ``nn.Module`` for :func:`edgevit.train.train`: ``model.train()`` /
``model.eval()`` switch batch norm between batch and running statistics and turn the observers off in eval,
so validation does not move the quantization ranges. Dropout and stochastic depth are captured in their eval
form (off): a QAT fine-tune is short and starts from a trained model, and captured random ops could not be
switched off again for export. The state dict (weights, fake-quant scales and zero points, observer min/max,
on/off flags) is what the checkpoints hold, so an interrupted run resumes bit-identically: the graph is rebuilt
from the same float model and the state loaded into it.

QAT needs a PT2E quantizer with a QAT configuration, which the backend gives: every function here takes the
backend (an :class:`edgevit.backends.Backend`, e.g. ``get_backend("executorch")``) and asks it for
``quantizer("int8", qat=True)`` and how ``convert_pt2e`` should store weights (``fold_quantize``). ExecuTorch
(``XNNPACKQuantizer``) and TFLite (litert-torch's ``PT2EQuantizer``) have one; Core ML and ONNX are quantized after
training only (their ``quantizer(..., qat=True)`` says why).
"""

from __future__ import annotations

import copy
import types
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open

from edgevit.data import DataSplits
from edgevit.train import TrainConfig, TrainResult, load_checkpoint, train
from edgevit.train.distill import distillation_loss
from edgevit.utils import EdgeVitError, read_json


class QATBackend(Protocol):
    """What QAT needs from a backend (:class:`edgevit.backends.Backend` provides it)."""

    name: str
    fold_quantize: bool  # convert_pt2e: int8 weight constants (True) or float weights behind quantize nodes

    def quantizer(self, precision: str, qat: bool = False): ...


_META = "edgevit_qat"  # GraphModule.meta key: backend and what is frozen; convert_pt2e keeps graph meta


class QATConfig(BaseModel):
    """Quantization-aware fine-tuning settings (the ``qat:`` section of a recipe).

    Batch size, weight decay, label smoothing and threads come from the training config
    (:meth:`train_config`); the schedule is QAT's own: a short cosine decay from a small ``lr``.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-4, gt=0, description="peak learning rate; about a tenth of the float run's")
    min_lr: float = Field(1e-6, ge=0)
    warmup_epochs: float = Field(0.0, ge=0)
    freeze_observers_epoch: int | None = Field(
        None, ge=1, description="observers update during the first N QAT epochs, then the scales stay fixed"
    )
    freeze_bn_epoch: int | None = Field(
        None, ge=1, description="batch norm uses batch statistics for N epochs, then its running statistics"
    )
    distill: bool = Field(False, description="add a KD loss on the logits of the float model (the teacher)")
    distill_weight: float = Field(0.5, ge=0, le=1, description="KD's share of the loss; the rest is cross-entropy")
    temperature: float = Field(2.0, gt=0, description="softens both logit distributions for the KD loss")

    def train_config(self, base: TrainConfig | None = None) -> TrainConfig:
        """``base`` (default :class:`TrainConfig`) with this config's epochs and learning-rate schedule."""
        base = base or TrainConfig()
        return base.model_copy(
            update={"epochs": self.epochs, "lr": self.lr, "min_lr": self.min_lr, "warmup_epochs": self.warmup_epochs}
        )


def prepare_qat(model: nn.Module, example: torch.Tensor, backend: QATBackend) -> torch.fx.GraphModule:
    """Capture a copy of ``model`` with a dynamic batch and insert the backend's fake-quantize modules.

    Args:
        model: a float classifier ``[B, C, H, W] -> [B, K]``, usually trained; it is not modified.
        example: an input of the artifact's shape, ``[1, C, H, W]`` (any batch; the batch is made dynamic).
        backend: the backend whose QAT quantizer sets the fake quantization (``get_backend("executorch")`` or
            ``get_backend("tflite")``; :func:`edgevit.backends.qat_backends`).

    Returns:
        The prepared graph, in train mode, ready for :func:`edgevit.train.train`. The same ``model`` and
        ``example`` always give the same graph and state-dict keys (which is what resuming relies on).

    Raises:
        EdgeVitError: no QAT quantizer for ``backend``, ``torch.export`` failed, or nothing was quantized.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e  # noqa: PLC0415 -- optional package

    quantizer = backend.quantizer("int8", qat=True)
    model = copy.deepcopy(model)  # the captured graph shares the module's tensors; training must not touch them
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    graph = _capture_for_training(model, example)
    prepared = prepare_qat_pt2e(graph, quantizer)
    if not fake_quantizers(prepared):
        raise EdgeVitError(f"the {backend.name} quantizer found nothing to quantize in this model")
    prepared.meta[_META] = {
        "backend": backend.name,
        "fold_quantize": backend.fold_quantize,
        "observers_frozen": False,
        "bn_frozen": False,
    }
    names = {n for n, _ in prepared.named_parameters()}
    prepared.no_weight_decay = lambda: skip & names  # same parameter names as the module: no decay on tokens
    prepared.train = types.MethodType(_set_mode, prepared)  # prepare_qat_pt2e disallows train()/eval()
    prepared.eval = types.MethodType(_eval, prepared)
    return prepared.train()


def _capture_for_training(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``torch.export`` with batch dim 0 dynamic: eval mode (no dropout), batch norm in its training form.

    Batch norm captured in training form is what ``prepare_qat_pt2e`` fuses into the preceding conv (QAT
    conv-BN folding); ``eval()`` later switches it to running statistics.
    """
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    x = example[:1].expand(2, *example.shape[1:]).clone()  # batch 1 would be specialised to a constant
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.export.export(model, (x,), dynamic_shapes=({0: batch},)).module()
    except Exception as e:
        raise EdgeVitError(
            f"torch.export could not capture the model with a dynamic batch for QAT: {type(e).__name__}: "
            f"{str(e).splitlines()[0][:500]}"
        ) from e


def _eval(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    return graph.train(False)


def _set_mode(prepared: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    """``train()``/``eval()`` for a prepared graph: batch statistics and observers on in train mode only.

    Batch norm is switched by its node's ``training`` argument, as torchao's QAT tutorial freezes it. Not with
    ``move_exported_model_to_train/eval``: their pattern rewrite resets every dropout to ``p=0.5`` (also the
    ``p=0`` ones a ViT is full of) and batch norm to the default momentum and eps (torchao 0.18).
    """
    from torchao.quantization.pt2e import disable_observer, enable_observer  # noqa: PLC0415 -- optional package (edgevit[executorch])

    state = prepared.meta[_META]
    _set_bn_training(prepared, mode and not state["bn_frozen"])
    prepared.apply(enable_observer if mode and not state["observers_frozen"] else disable_observer)
    nn.Module.train(prepared, mode)
    return prepared


def _set_bn_training(prepared: torch.fx.GraphModule, training: bool) -> int:
    """Set the ``training`` argument of every batch-norm node; return how many there are."""
    nodes = [
        n
        for n in prepared.graph.nodes
        if n.op == "call_function"
        and n.target in (torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit.default)
    ]
    changed = [n for n in nodes if n.args[5] != training]  # (input, weight, bias, mean, var, training, ...)
    for n in changed:
        n.args = (*n.args[:5], training, *n.args[6:])
    if changed:
        prepared.recompile()
    return len(nodes)


def _state(prepared: torch.fx.GraphModule) -> dict[str, Any]:
    if not isinstance(prepared, torch.fx.GraphModule) or _META not in prepared.meta:
        raise EdgeVitError("expected a graph from edgevit.quantize.qat.prepare_qat")
    return prepared.meta[_META]


def freeze_observers(prepared: torch.fx.GraphModule, frozen: bool = True) -> None:
    """Stop (or restart) updating activation ranges and weight scales; fake quantization stays on.

    Late in QAT the ranges have settled and the weights keep adapting to fixed quantization grids.
    The on/off flags are buffers, so checkpoints keep them.
    """
    from torchao.quantization.pt2e import disable_observer, enable_observer  # noqa: PLC0415 -- optional package (edgevit[executorch])

    _state(prepared)["observers_frozen"] = frozen
    prepared.apply(disable_observer if frozen or not prepared.training else enable_observer)


def freeze_bn_stats(prepared: torch.fx.GraphModule, frozen: bool = True) -> None:
    """Normalise with batch norm's running statistics (and stop updating them) in train mode too."""
    _state(prepared)["bn_frozen"] = frozen
    _set_bn_training(prepared, prepared.training and not frozen)


def fake_quantizers(prepared: torch.fx.GraphModule) -> dict[str, nn.Module]:
    """The fake-quantize modules of a prepared graph by name (``activation_post_process_N``)."""
    from torchao.quantization.pt2e import FakeQuantizeBase  # noqa: PLC0415 -- optional package (edgevit[executorch])

    return {n: m for n, m in prepared.named_children() if isinstance(m, FakeQuantizeBase)}


def convert_qat(prepared: torch.fx.GraphModule, example: torch.Tensor | None = None) -> torch.fx.GraphModule:
    """Turn a QAT-trained graph into the backend's quantized (quantize/dequantize) graph.

    ``prepared`` itself is left as it is (still trainable). ``convert_pt2e`` runs on an eval-mode copy, with
    int8 weight constants for ExecuTorch and float weights behind quantize nodes for litert-torch.

    Args:
        prepared: from :func:`prepare_qat`, trained.
        example: the artifact's ``[1, C, H, W]`` input. When given, the graph is re-captured at that static
            shape and broadcasts that became no-ops there (the class token's ``expand`` at batch 1) are
            dropped, so the backend delegates every op; without it the batch stays dynamic.

    Returns:
        A converted graph: :func:`edgevit.export.export` with precision ``int8`` lowers it as it is.

    Raises:
        EdgeVitError: ``prepared`` did not come from :func:`prepare_qat`.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e  # noqa: PLC0415 -- optional package (edgevit[executorch])

    state = _state(prepared)
    was_training = prepared.training
    prepared.eval()
    graph = copy.deepcopy(prepared)
    prepared.train(was_training)
    converted = convert_pt2e(graph, fold_quantize=state["fold_quantize"])
    if example is not None:
        converted = _specialize(converted, example)
    converted.meta[_META] = {"backend": state["backend"], "converted": True}
    # an inference graph (batch norm already in eval form): train()/eval() only set the flag, so that
    # edgevit.train.predict can score it and converters do not warn about a training-mode model
    converted.train = types.MethodType(_set_flag, converted)
    converted.eval = types.MethodType(_eval, converted)
    return converted.eval()


def _set_flag(graph: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    return nn.Module.train(graph, mode)


def _specialize(graph: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """Re-capture ``graph`` at ``example``'s shape and drop ``expand`` nodes whose output shape is the input's."""
    gm = torch.export.export(graph, (example,)).module()
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n.target == torch.ops.aten.expand.default:
            src = n.args[0]
            if isinstance(src, torch.fx.Node) and src.meta["val"].shape == n.meta["val"].shape:
                n.replace_all_uses_with(src)
                gm.graph.erase_node(n)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def train_qat(
    model: nn.Module,
    data: DataSplits,
    cfg: QATConfig,
    out_dir: str | Path,
    example: torch.Tensor | None = None,
    backend: QATBackend | None = None,
    train_cfg: TrainConfig | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> tuple[torch.fx.GraphModule, TrainResult]:
    """Prepare ``model`` for QAT and fine-tune it with :func:`edgevit.train.train`.

    Args:
        model: the trained float model; not modified (with ``cfg.distill`` it is the teacher).
        data: the dataset splits the float model was trained on.
        cfg: QAT epochs, schedule, freezing and distillation.
        out_dir: the QAT run directory (``checkpoints/``, ``metrics.csv``); keep it apart from the float run's.
        example: the artifact's ``[1, C, H, W]`` input; default the first training image.
        backend: the backend whose QAT quantizer sets the fake quantization (see :func:`prepare_qat`); required.
        train_cfg: batch size, weight decay, label smoothing, threads (default :class:`TrainConfig`).
        seed: data order.
        resume: continue an interrupted QAT run from ``out_dir/checkpoints``. Pass the same float ``model``
            and ``example``: the graph is rebuilt from them, then weights, scales and observer state load.

    Returns:
        ``(prepared graph, TrainResult)``; hand the graph to :func:`convert_qat`.

    Raises:
        EdgeVitError: see :func:`prepare_qat`; ``resume`` with no checkpoint or a checkpoint of another graph.
    """
    if backend is None:
        raise EdgeVitError("train_qat needs the backend whose QAT quantizer to use, e.g. get_backend('executorch')")
    if example is None:
        example = data.train[0][0][None]
    prepared = prepare_qat(model, example, backend)
    tcfg = cfg.train_config(train_cfg)
    if resume:
        _check_resumable(prepared, Path(out_dir) / "checkpoints")
    loss_fn = None
    if cfg.distill:
        teacher = copy.deepcopy(model)
        loss_fn = distillation_loss(teacher, cfg.temperature, cfg.distill_weight, tcfg.label_smoothing)

    def on_epoch_start(epoch: int) -> None:
        if cfg.freeze_observers_epoch is not None and epoch >= cfg.freeze_observers_epoch:
            freeze_observers(prepared)
        if cfg.freeze_bn_epoch is not None and epoch >= cfg.freeze_bn_epoch:
            freeze_bn_stats(prepared)

    result = train(
        prepared, data, tcfg, out_dir, seed, resume, progress, loss_fn=loss_fn, on_epoch_start=on_epoch_start
    )
    return prepared, result


def load_qat(
    model: nn.Module, example: torch.Tensor, checkpoint_dir: str | Path, backend: QATBackend
) -> torch.fx.GraphModule:
    """Rebuild a QAT-trained graph from its float model and a QAT run's ``checkpoints/`` (e.g. to export later).

    Args:
        model, example, backend: the ones the QAT run was prepared with (see :func:`prepare_qat`).
        checkpoint_dir: the run's ``checkpoints`` directory; its ``last`` checkpoint is loaded.

    Returns:
        The prepared graph with the trained weights and quantization ranges; hand it to :func:`convert_qat`.

    Raises:
        EdgeVitError: no checkpoint there, or one of another model, example or backend.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / "last.json").is_file():
        raise EdgeVitError(f"no QAT checkpoint found in {checkpoint_dir}")
    prepared = prepare_qat(model, example, backend)
    _check_resumable(prepared, checkpoint_dir)
    load_checkpoint(checkpoint_dir, prepared)
    return prepared


def _check_resumable(prepared: torch.fx.GraphModule, ckpt_dir: Path) -> None:
    """Refuse a checkpoint whose tensors are not this prepared graph's (e.g. the float run's)."""
    path = ckpt_dir / "last.safetensors"
    if not (ckpt_dir / "last.json").is_file() or not path.is_file():
        return  # train() reports the missing checkpoint
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys()) | set(read_json(ckpt_dir / "last.json", "checkpoint state").get("aliases", {}))
    expected = set(prepared.state_dict())
    if keys != expected:
        missing, extra = sorted(expected - keys)[:3], sorted(keys - expected)[:3]
        raise EdgeVitError(
            f"{path} is not a QAT checkpoint of this model and backend (missing {missing}, unexpected {extra}); "
            "resume with the same float model, example and backend, or start the QAT run in a new directory"
        )


__all__ = [
    "QATBackend",
    "QATConfig",
    "convert_qat",
    "fake_quantizers",
    "freeze_bn_stats",
    "freeze_observers",
    "load_qat",
    "prepare_qat",
    "train_qat",
]
