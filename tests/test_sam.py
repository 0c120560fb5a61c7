"""SAM / ASAM: the ascent step, the exact restore, the update from the perturbed gradient, state and schedules."""

import pytest
import torch
import torch.nn as nn

from edgevit import EdgeVitError
from edgevit.train.sam import SAM, disable_running_stats


def _problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    return model, x, y


def _grads(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("adaptive", [False, True])
def test_first_step_moves_to_the_sam_point_and_second_step_restores_and_uses_its_gradient(adaptive):
    rho, lr = 0.3, 0.1
    model, x, y = _problem()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)

    g = _grads(model, x, y)
    opt.first_step(zero_grad=True)
    if adaptive:  # Kwon et al. / davda54: e = rho * w^2 g / || |w| g ||, the norm over all parameters at once
        norm = torch.sqrt(sum(((w.abs() * gi) ** 2).sum() for w, gi in zip(w0, g, strict=True)))
        expected = [w + rho * w * w * gi / norm for w, gi in zip(w0, g, strict=True)]
    else:  # e = rho * g / ||g||, the global 2-norm
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        expected = [w + rho * gi / norm for w, gi in zip(w0, g, strict=True)]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())  # zero_grad=True

    g_adv = _grads(model, x, y)  # the gradient at the perturbed point
    opt.second_step()
    # SGD from the *original* weights with the *perturbed-point* gradient (restore is exact, so the only
    # rounding is SGD's own)
    for p, w, ga in zip(model.parameters(), w0, g_adv, strict=True):
        torch.testing.assert_close(p.detach(), w - lr * ga, rtol=0, atol=1e-7)
    assert not any("old_p" in s for s in opt.state.values())


def test_restore_is_bit_exact():
    model, x, y = _problem(1)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.0)  # lr 0: second_step must land on w0 exactly
    _grads(model, x, y)
    opt.first_step(zero_grad=True)
    assert any(not torch.equal(p, w) for p, w in zip(model.parameters(), w0, strict=True))
    _grads(model, x, y)
    opt.second_step(zero_grad=True)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), w0, strict=True))


def test_step_with_closure_equals_the_two_explicit_steps():
    a, x, y = _problem(2)
    b, _, _ = _problem(2)
    opt_a = SAM(a.parameters(), torch.optim.AdamW, rho=0.1, lr=1e-2, betas=(0.9, 0.99))
    opt_b = SAM(b.parameters(), torch.optim.AdamW, rho=0.1, lr=1e-2, betas=(0.9, 0.99))

    def closure():
        opt_a.zero_grad()
        loss = nn.functional.cross_entropy(a(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        loss_a = opt_a.step(closure)
        loss_b = nn.functional.cross_entropy(b(x), y)
        loss_b.backward()
        opt_b.first_step(zero_grad=True)
        nn.functional.cross_entropy(b(x), y).backward()
        opt_b.second_step(zero_grad=True)
        assert torch.equal(loss_a, loss_b.detach())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(EdgeVitError, match="closure"):
        opt_a.step()


def test_state_dict_round_trips_the_base_optimizer_and_groups_stay_shared():
    model, x, y = _problem(3)
    opt = SAM(model.parameters(), torch.optim.AdamW, rho=0.05, lr=1e-3)
    assert opt.param_groups is opt.base_optimizer.param_groups
    _grads(model, x, y)
    opt.first_step(zero_grad=True)
    _grads(model, x, y)
    opt.second_step(zero_grad=True)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["rho"] == 0.05 and len(sd["state"]) == 4  # AdamW's exp_avg etc. per tensor

    other = SAM(model.parameters(), torch.optim.AdamW, rho=0.05, lr=1e-3)
    other.load_state_dict(sd)
    assert other.param_groups is other.base_optimizer.param_groups
    for k, s in sd["state"].items():
        for name, t in s.items():
            assert torch.equal(other.base_optimizer.state_dict()["state"][k][name], t)


def test_timm_scheduler_drives_the_base_optimizer_lr():
    from timm.scheduler import CosineLRScheduler

    model, _, _ = _problem()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    sched = CosineLRScheduler(opt, t_initial=10, lr_min=0.0, t_in_epochs=False)
    sched.step_update(5)
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_torch_scheduler_works_without_a_step_order_warning():
    import warnings

    model, x, y = _problem()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            _grads(model, x, y)
            opt.first_step(zero_grad=True)
            _grads(model, x, y)
            opt.second_step(zero_grad=True)
            sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_rho_must_be_positive():
    model, _, _ = _problem()
    for rho in (0.0, -0.1):
        with pytest.raises(EdgeVitError, match="rho must be > 0"):
            SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.1)


def test_disable_running_stats_freezes_batchnorm_buffers_only_inside():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    x = torch.randn(8, 3, 8, 8)
    model(x)
    bn = model[1]
    before = {k: v.clone() for k, v in bn.named_buffers()}
    with disable_running_stats(model):
        out = model(x + 1.0)
    assert all(torch.equal(v, before[k]) for k, v in bn.named_buffers())
    assert bn.momentum == 0.1
    # still normalised with the batch's statistics (train mode)
    torch.testing.assert_close(out, model(x + 1.0), rtol=0, atol=0)
    assert not torch.equal(bn.running_mean, before["running_mean"])  # outside the block it updates again
