"""Optimiser groups (weight-decay exclusions, layer-wise LR decay), create_optimizer, drop-path, DeiT distillation."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgevit import EdgeVitError, create_model
from edgevit.train.distill import deit_distillation_loss
from edgevit.train.optim import create_optimizer, layer_ids, param_groups
from edgevit.train.sam import SAM


def _vit(distilled=False, depth=3, **kw):
    torch.manual_seed(0)
    return create_model(
        "vit_tiny_patch16", img_size=32, patch_size=8, depth=depth, num_classes=10, distilled=distilled, **kw
    )


def _names(model, params):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def test_weight_decay_exclusions_and_the_loop_semantics():
    model = _vit(distilled=True)
    groups = param_groups(model, 0.05)
    decay, no_decay = (_names(model, g["params"]) for g in groups)
    assert {"pos_embed", "cls_token", "dist_token", "norm.weight", "norm.bias", "head.bias"} <= no_decay
    assert {"blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "patch_embed.proj.bias"} <= no_decay
    assert {"blocks.0.attn.qkv.weight", "blocks.2.mlp.fc1.weight", "head.weight", "head_dist.weight"} <= decay
    assert {"patch_embed.proj.weight"} <= decay
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    # the train loop's layout (its optimizer checkpoints depend on it): [decay, no decay], each in
    # named_parameters order, keys params + weight_decay only
    params = [(n, p) for n, p in model.named_parameters()]
    skip = {"pos_embed", "cls_token", "dist_token"}
    assert [id(p) for p in groups[0]["params"]] == [id(p) for n, p in params if p.ndim > 1 and n not in skip]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for n, p in params if p.ndim <= 1 or n in skip]
    assert [set(g) for g in groups] == [{"params", "weight_decay"}] * 2


def test_frozen_parameters_are_left_out():
    model = _vit()
    model.patch_embed.requires_grad_(False)
    names = set().union(*(_names(model, g["params"]) for g in param_groups(model, 0.05, layer_decay=0.7)))
    assert not any(n.startswith("patch_embed") for n in names) and "head.weight" in names


def test_layer_decay_scales_follow_depth():
    depth, decay = 3, 0.5
    model = _vit(depth=depth)
    ids, num_layers = layer_ids(model)
    assert num_layers == depth + 2
    assert ids["cls_token"] == ids["pos_embed"] == ids["patch_embed.proj.weight"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.2.mlp.fc2.bias"] == 3
    assert ids["norm.weight"] == ids["head.weight"] == depth + 1

    scale_of = {}
    for g in param_groups(model, 0.05, layer_decay=decay):
        for n in _names(model, g["params"]):
            scale_of[n] = g["lr_scale"]
            assert g["weight_decay"] == (
                0.0 if n in ("cls_token", "pos_embed") or n.endswith("bias") or "norm" in n else 0.05
            )
    assert scale_of["head.weight"] == 1.0 and scale_of["norm.bias"] == 1.0
    assert scale_of["blocks.2.attn.proj.weight"] == decay
    assert scale_of["blocks.0.attn.proj.weight"] == decay**3
    assert scale_of["pos_embed"] == scale_of["patch_embed.proj.weight"] == decay**4
    assert len(scale_of) == sum(1 for _ in model.parameters())


def test_layer_decay_lr_scale_is_applied_by_timm_scheduler():
    from timm.scheduler import CosineLRScheduler

    model = _vit(depth=2)
    opt = create_optimizer(model, "adamw", lr=1e-3, layer_decay=0.5)
    CosineLRScheduler(opt, t_initial=100, t_in_epochs=False).step_update(0)
    lrs = sorted({round(g["lr"], 12) for g in opt.param_groups})
    assert lrs == [round(1e-3 * 0.5**k, 12) for k in (3, 2, 1, 0)]


def test_layer_decay_needs_blocks_and_a_valid_factor():
    with pytest.raises(EdgeVitError, match="blocks.N"):
        param_groups(nn.Sequential(nn.Linear(2, 2)), 0.05, layer_decay=0.7)
    with pytest.raises(EdgeVitError, match="layer_decay"):
        param_groups(_vit(), 0.05, layer_decay=1.5)
    for name in ("mobilevit_xxs", "mobile_former_26m"):  # stages.N / blocks.N of the hybrid models
        ids, n = layer_ids(create_model(name, num_classes=10))
        assert sorted(set(ids.values())) == list(range(n))


def test_create_optimizer_kinds():
    model = _vit(depth=1)
    adamw = create_optimizer(model, "adamw", lr=2e-3, weight_decay=0.1, betas=(0.8, 0.9))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.9)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    sgd = create_optimizer(model, "sgd", lr=0.1, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    sam = create_optimizer(model, "sgd", lr=0.1, sam={"rho": 0.1, "adaptive": True})
    assert isinstance(sam, SAM) and isinstance(sam.base_optimizer, torch.optim.SGD)
    assert sam.param_groups[0]["rho"] == 0.1 and sam.param_groups[0]["adaptive"] is True
    with pytest.raises(EdgeVitError, match="unknown optimizer"):
        create_optimizer(model, "lars")
    with pytest.raises(EdgeVitError, match="sam key"):
        create_optimizer(model, sam={"radius": 0.1})
    with pytest.raises(EdgeVitError, match="rho"):
        create_optimizer(model, sam={"rho": -1.0})


def _lamb_grads(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def test_lamb_step_equals_timm_lamb_with_the_adamw_exclusions():
    from timm.optim import Lamb

    model = _vit(depth=1, init_values=1e-4)  # LayerScale gammas are 1-D: not decayed either
    ref = copy.deepcopy(model)
    opt = create_optimizer(model, "lamb", lr=4e-3, weight_decay=0.05, betas=(0.9, 0.99))
    assert isinstance(opt, Lamb)
    # the reference: timm's Lamb on groups written out by name, as DeiT III excludes them
    excluded = {"pos_embed", "cls_token"}
    decay = [p for n, p in ref.named_parameters() if p.ndim > 1 and n not in excluded]
    no_decay = [p for n, p in ref.named_parameters() if p.ndim <= 1 or n in excluded]
    ref_opt = Lamb(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=4e-3, betas=(0.9, 0.99)
    )
    assert (
        _names(model, opt.param_groups[1]["params"])
        == _names(ref, no_decay)
        >= {"pos_embed", "cls_token", "blocks.0.ls1.gamma", "blocks.0.norm1.weight", "head.bias"}
    )
    for _ in range(2):  # the second step uses the moments of the first
        _lamb_grads(model), _lamb_grads(ref)
        opt.step(), ref_opt.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q), name
    # with a zero gradient only weight decay moves a parameter: the excluded ones stay put
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fresh = create_optimizer(model, "lamb", lr=1e-2, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    fresh.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == _names(model, fresh.param_groups[0]["params"]) and "pos_embed" not in moved
    for n in moved:  # decay shrinks: w <- w - lr * trust * wd * w, trust = |w| / |wd * w| = 1 / wd
        assert torch.allclose(dict(model.named_parameters())[n], before[n] * (1 - 1e-2), atol=1e-7), n


def test_lamb_inside_sam_steps_with_the_gradient_at_the_perturbed_point():
    from timm.optim import Lamb

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    opt = create_optimizer(model, "lamb", lr=1e-2, weight_decay=0.05, sam={"rho": 0.1})
    assert isinstance(opt, SAM) and isinstance(opt.base_optimizer, Lamb)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    # by hand: the gradient at w + rho * g / |g|, then timm's Lamb from w
    F.cross_entropy(ref(x), y).backward()
    g = torch.cat([p.grad.flatten() for p in ref.parameters()])
    w0 = [p.detach().clone() for p in ref.parameters()]
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * p.grad / g.norm())
    ref.zero_grad()
    F.cross_entropy(ref(x), y).backward()
    with torch.no_grad():
        for p, w in zip(ref.parameters(), w0, strict=True):
            p.copy_(w)
    Lamb(param_groups(ref, 0.05), lr=1e-2).step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("vit_tiny_patch16", {"img_size": 32, "patch_size": 8, "depth": 2}),
        ("mobilevit_xxs", {"img_size": 32}),
        ("mobile_former_26m", {"img_size": 32}),
    ],
)
def test_drop_path_is_the_identity_in_eval(name, kw, one_thread):
    torch.manual_seed(0)
    dropped = create_model(name, num_classes=10, drop_path_rate=0.5, **kw)
    plain = create_model(name, num_classes=10, drop_path_rate=0.0, **kw)
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(2, 3, kw["img_size"], kw["img_size"])
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain.eval()(x))
        dropped.train()
        plain.train()
        torch.manual_seed(1)
        assert not torch.allclose(dropped(x), plain(x))  # and it does drop paths in training


def test_hard_distillation_equals_the_formula_on_known_logits():
    cls = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    dist = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
    teacher_logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]])  # argmax: 1, 0
    labels = torch.tensor([0, 1])
    teacher = _Fixed(teacher_logits)
    loss = deit_distillation_loss(teacher, "hard")((cls, dist), labels, torch.zeros(2, 3, 4, 4))

    def ce(logits, target):  # by hand: mean of -log softmax at the target
        return -torch.stack([logits[i].log_softmax(-1)[t] for i, t in enumerate(target)]).mean()

    expected = 0.5 * ce(cls, labels) + 0.5 * ce(dist, torch.tensor([1, 0]))
    torch.testing.assert_close(loss, expected)
    # 1/2 each: swapping which head sees which target changes the loss
    assert not torch.isclose(loss, 0.5 * ce(cls, torch.tensor([1, 0])) + 0.5 * ce(dist, labels))


def test_soft_distillation_equals_the_deit_formula():
    torch.manual_seed(0)
    cls, dist, t = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 3])
    tau, alpha = 3.0, 0.3
    loss = deit_distillation_loss(_Fixed(t), "soft", tau=tau, alpha=alpha)((cls, dist), labels, torch.zeros(4))
    p_t, log_p_s = (t / tau).softmax(-1), (dist / tau).log_softmax(-1)
    kl = (p_t * (p_t.log() - log_p_s)).sum() / dist.numel()  # DeiT: sum / (batch x classes)
    expected = (1 - alpha) * F.cross_entropy(cls, labels) + alpha * tau * tau * kl
    torch.testing.assert_close(loss, expected)


def test_deit_distillation_with_a_distilled_student_and_soft_targets():
    from timm.loss import SoftTargetCrossEntropy

    student, teacher = _vit(distilled=True, depth=1), _vit(depth=1)
    student.distilled_training = True
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    out = student.train()(x)
    assert isinstance(out, tuple) and len(out) == 2
    soft = F.one_hot(y, 10).float()
    a = deit_distillation_loss(teacher, "hard", base_criterion=SoftTargetCrossEntropy())(out, soft, x)
    b = deit_distillation_loss(teacher, "hard")(out, y, x)
    torch.testing.assert_close(a, b)  # one-hot soft targets == hard labels
    a.backward()
    assert student.head_dist.weight.grad is not None and student.head.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(EdgeVitError, match="distilled_training"):
        deit_distillation_loss(teacher)(student.eval()(x), y, x)
    with pytest.raises(EdgeVitError, match="kind"):
        deit_distillation_loss(teacher, "medium")


class _Fixed(nn.Module):
    """A 'teacher' that returns fixed logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits
