"""Sharpness-Aware Minimisation (Foret et al. 2021) and its adaptive variant ASAM (Kwon et al. 2021).

Follows davda54/sam: an optimiser wrapper whose ``param_groups`` *are* the base optimiser's, so LR schedulers
(timm's ``CosineLRScheduler``) drive it like any optimiser and its ``state_dict`` is the base optimiser's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn

from edgevit.utils import EdgeVitError


class SAM(torch.optim.Optimizer):
    """Wrap ``base_optimizer_cls`` to minimise the loss at the worst nearby point, ``max_{||e|| <= rho} L(w + e)``.

    Each step takes two forward/backward passes::

        loss_fn(model(x), y).backward()          # gradient g at w
        opt.first_step(zero_grad=True)           # w <- w + e(w),  e(w) = rho * g / ||g||
        with disable_running_stats(model):       # see "BatchNorm" below
            loss_fn(model(x), y).backward()      # gradient at w + e(w)
        opt.second_step(zero_grad=True)          # w restored exactly, then the base step with that gradient

    or ``opt.step(closure)`` with a closure that zeroes the grads, runs forward and backward and returns the loss.

    ``||g||`` is the 2-norm over all parameters with a gradient (every group). ``adaptive=True`` is ASAM:
    ``e(w) = rho * |w|^2 * g / || |w| * g ||`` (element-wise), which makes the neighbourhood scale-invariant;
    ASAM papers use a larger ``rho`` (e.g. 2.0) than SAM (0.05).

    BatchNorm: the second forward pass (at the perturbed weights) would update BN running statistics a second
    time per step, and with statistics of the perturbed network. The usual remedy, as in davda54/sam, is to
    keep the first pass's update only: wrap the second forward in :func:`disable_running_stats`, which sets
    every BN layer's momentum to 0 for the block. (LayerNorm/GroupNorm, as in ViT, have no running state.)

    Gradient clipping: clip before ``second_step`` (the gradient the base optimiser uses). Clipping by the
    global norm before ``first_step`` does not change ``e(w)``, which depends only on ``g``'s direction.
    AMP: with bf16 autocast nothing changes; with an fp16 ``GradScaler`` unscale before each step.

    Args:
        params: parameters or parameter groups (groups may set their own ``rho``/``adaptive``).
        base_optimizer_cls: e.g. ``torch.optim.AdamW`` or ``torch.optim.SGD``.
        rho: neighbourhood radius, > 0.
        adaptive: ASAM instead of SAM.
        **base_kwargs: the base optimiser's arguments (``lr``, ``betas``, ``momentum`` ...).

    Raises:
        EdgeVitError: ``rho`` is not positive.
    """

    def __init__(
        self,
        params: Any,
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ):
        if not rho > 0:
            raise EdgeVitError(f"SAM rho must be > 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups  # one list: schedulers see and set the same lr
        self.defaults.update(self.base_optimizer.defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimiser (and so to SAM), with SAM's ``rho``/``adaptive`` defaults."""
        if not hasattr(self, "base_optimizer"):  # during torch.optim.Optimizer.__init__
            return super().add_param_group(param_group)
        param_group.setdefault("rho", self.defaults["rho"])
        param_group.setdefault("adaptive", self.defaults["adaptive"])
        self.base_optimizer.add_param_group(param_group)

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [
            ((p.abs() * p.grad) if group["adaptive"] else p.grad).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not norms:
            raise EdgeVitError("SAM.first_step: no parameter has a gradient; call loss.backward() first")
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save ``w`` and move to ``w + e(w)`` (``e = rho * g / ||g||``; ASAM: ``rho * w^2 * g / ||w * g||``)."""
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                e_w = (p * p if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e_w)  # climb to the local worst point w + e(w)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` bit for bit, then step the base optimiser with the gradient taken at ``w + e(w)``."""
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None) if p in self.state else None
                if old is not None:
                    p.copy_(old)
        self.base_optimizer.step()
        self._opt_called = True  # what torch's LR schedulers' wrapped step() sets: "the optimizer has stepped"
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """Both passes: ``closure()`` at ``w``, :meth:`first_step`, ``closure()`` at ``w + e(w)``, :meth:`second_step`.

        Args:
            closure: zeroes the gradients, runs forward and backward, returns the loss (run with grad enabled).

        Returns:
            The loss at ``w`` (the first closure's).

        Raises:
            EdgeVitError: no closure (SAM needs two gradient evaluations per step).
        """
        if closure is None:
            raise EdgeVitError("SAM.step needs a closure (two gradient evaluations a step); or use first/second_step")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state dict (SAM's own state lives only between first and second step)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the base optimiser's state dict (as :meth:`state_dict` returns it) and re-share its groups."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


_BN = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def disable_running_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Freeze BatchNorm running statistics inside the block (for SAM's second forward pass).

    Sets every BatchNorm layer's momentum to 0, so ``running = (1 - 0) * running + 0 * batch`` stays put, and
    restores momentum and ``num_batches_tracked`` afterwards; normalisation still uses the batch statistics in
    train mode. Other layers are untouched.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, _BN):
            tracked = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
            saved.append((m, m.momentum, tracked))
            m.momentum = 0.0
    try:
        yield model
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


__all__ = ["SAM", "disable_running_stats"]
