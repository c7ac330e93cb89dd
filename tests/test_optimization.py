"""Optimiser groups, the warmup_cosine schedule and BertAdam against CLIP4Clip's definitions."""

import itertools
import math

import pytest
import torch
from torch import nn

from modules.optimization import (
    BertAdam,
    WarmupCosine,
    build_optimizer,
    clamp_logit_scale,
    current_lrs,
    lr_multiplier,
    parameter_groups,
)


class BertLayerNorm(nn.Module):
    """A hand-written norm as in BERT-style cross encoders (attribute named ``LayerNorm``)."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))


class ToyCLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.ln_1 = nn.LayerNorm(4)
        self.class_embedding = nn.Parameter(torch.zeros(4))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class ToyRetrieval(nn.Module):
    def __init__(self):
        super().__init__()
        self.clip = ToyCLIP()
        self.head = nn.Linear(4, 4)
        self.transformerClip = nn.Linear(4, 4)  # capital C: not "clip." -> full lr, as in CLIP4Clip
        self.cross = nn.Module()
        self.cross.LayerNorm = BertLayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


LR, COEF, WD = 1e-3, 1e-2, 0.2
CLIP_LR = LR * COEF

# name -> (lr, weight decay) under our rule (biases and every norm parameter exempt)
EXPECTED_NORMS_EXEMPT = {
    "clip.proj.weight": (CLIP_LR, WD),
    "clip.proj.bias": (CLIP_LR, 0.0),
    "clip.ln_1.weight": (CLIP_LR, 0.0),
    "clip.ln_1.bias": (CLIP_LR, 0.0),
    "clip.class_embedding": (CLIP_LR, WD),
    "clip.logit_scale": (CLIP_LR, WD),
    "head.weight": (LR, WD),
    "head.bias": (LR, 0.0),
    "transformerClip.weight": (LR, WD),
    "transformerClip.bias": (LR, 0.0),
    "cross.LayerNorm.weight": (LR, 0.0),
    "cross.LayerNorm.bias": (LR, 0.0),
}
# CLIP4Clip's name rule ("bias", "LayerNorm.bias", "LayerNorm.weight") decays CLIP's ln_1 weight.
EXPECTED_CLIP4CLIP = {**EXPECTED_NORMS_EXEMPT, "clip.ln_1.weight": (CLIP_LR, WD)}


def _name_map(groups):
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}


def _assert_same_map(got, expected):
    assert sorted(got) == sorted(expected)
    for name, (lr, wd) in expected.items():
        assert got[name] == (pytest.approx(lr), pytest.approx(wd)), name


@pytest.mark.parametrize("rule, expected", [("bias_and_norm", EXPECTED_NORMS_EXEMPT), ("clip4clip", EXPECTED_CLIP4CLIP)])
def test_parameter_groups_names_to_lr_and_decay(rule, expected):
    groups = parameter_groups(ToyRetrieval(), LR, COEF, WD, no_decay=rule)
    assert [g["name"] for g in groups] == ["clip_decay", "clip_no_decay", "head_decay", "head_no_decay"]
    _assert_same_map(_name_map(groups), expected)
    assert not any(n.startswith("frozen.") for g in groups for n in g["param_names"])


@pytest.mark.parametrize("kind, rule, expected", [("adamw", "bias_and_norm", EXPECTED_NORMS_EXEMPT),
                                                   ("bertadam", "clip4clip", EXPECTED_CLIP4CLIP)])
def test_built_optimizer_carries_the_groups(kind, rule, expected):
    model = ToyRetrieval()
    opt, sched = build_optimizer(model, LR, COEF, WD, 0.1, 100, optimizer=kind, no_decay=rule)
    assert isinstance(opt, BertAdam) == (kind == "bertadam")
    names = {id(p): n for n, p in model.named_parameters()}
    got = {names[id(p)]: (g["initial_lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    _assert_same_map(got, expected)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    assert current_lrs(opt) == {"clip_decay": 0.0, "clip_no_decay": 0.0, "head_decay": 0.0, "head_no_decay": 0.0}


# BertAdam's warmup_cosine(x = step / t_total, warmup=0.1), values worked out by hand from
# CLIP4Clip's definition: x / warmup for x < warmup else 0.5 * (1 + cos(pi * x)), t_total = 100.
BERTADAM_VALUES = {
    0: 0.0,  # the very first update has lr 0
    1: 0.1,
    5: 0.5,
    9: 0.9,
    10: 0.9755282581475768,  # 0.5 * (1 + cos(0.1 pi)): drop from 0.9 -> ~1 -> 0.9755 at the boundary
    50: 0.5,
    75: 0.14644660940672627,  # 0.5 * (1 - sqrt(2) / 2)
    99: 0.0002467198171342,
    100: 0.0,
}


@pytest.mark.parametrize("step, value", sorted(BERTADAM_VALUES.items()))
def test_warmup_cosine_matches_bertadam_values(step, value):
    assert WarmupCosine(100, 0.1)(step) == pytest.approx(value, abs=1e-12)


def test_scheduler_drives_the_lr_of_each_update_like_bertadam():
    """Update k (from 0) must use lr * warmup_cosine(k / t_total): BertAdam's state['step'] = k."""
    model = ToyRetrieval()
    opt, sched = build_optimizer(model, LR, COEF, WD, warmup_proportion=0.1, total_steps=100)
    used = []
    for _ in range(101):
        used.append({g["name"]: g["lr"] for g in opt.param_groups})
        model.head(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    for step, value in BERTADAM_VALUES.items():
        assert used[step]["head_decay"] == pytest.approx(LR * value, abs=1e-15)
        assert used[step]["clip_no_decay"] == pytest.approx(CLIP_LR * value, abs=1e-15)


def test_continuous_variant_has_no_drop_and_ends_at_zero():
    f = WarmupCosine(100, 0.1, "warmup_cosine_continuous")
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    values = [f(k) for k in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_progress_past_the_end_stays_at_zero():
    assert WarmupCosine(100, 0.1)(150) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(1.5, 0.1, "warmup_cosine_continuous") == pytest.approx(0.0, abs=1e-12)


def test_no_warmup_starts_at_full_lr():
    assert WarmupCosine(10, 0.0)(0) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(total_steps=0),
        dict(warmup_proportion=1.0),
        dict(schedule="linear"),
        dict(optimizer="sgd"),
        dict(no_decay="everything"),
    ],
)
def test_invalid_settings_are_refused(kwargs):
    base = dict(lr=LR, coef_lr=COEF, weight_decay=WD, warmup_proportion=0.1, total_steps=10)
    with pytest.raises(ValueError):
        build_optimizer(ToyRetrieval(), **{**base, **kwargs})


def test_defaults_are_the_published_optimizer():
    """BertAdam with CLIP4Clip's no-decay names (CLIP's ln_* weights decayed), as both originals."""
    model = ToyRetrieval()
    opt, _ = build_optimizer(model, LR, COEF, WD, 0.1, 100)
    assert isinstance(opt, BertAdam) and opt.defaults["max_grad_norm"] == 1.0
    names = {id(p): n for n, p in model.named_parameters()}
    got = {names[id(p)]: (g["initial_lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    _assert_same_map(got, EXPECTED_CLIP4CLIP)


def test_bertadam_update_matches_reference_formula():
    """Two updates worked out from CLIP4Clip's BertAdam: no bias correction, wd inside the update."""
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = BertAdam([p], lr=0.1, weight_decay=0.2, max_grad_norm=-1)
    grads = [[0.5, -0.25], [0.1, 0.3]]
    m, v, ref = [0.0, 0.0], [0.0, 0.0], [1.0, -2.0]
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        for i in range(2):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.98 * v[i] + 0.02 * g[i] ** 2
            ref[i] -= 0.1 * (m[i] / (math.sqrt(v[i]) + 1e-6) + 0.2 * ref[i])
    assert p.detach().tolist() == pytest.approx(ref, rel=1e-12)
    assert opt.state[p]["step"] == 2


def test_bertadam_clips_each_parameter_gradient():
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = BertAdam([p], lr=1.0, max_grad_norm=1.0)
    p.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)  # norm 5 -> scaled to norm 1
    opt.step()
    assert opt.state[p]["exp_avg"].tolist() == pytest.approx([0.1 * 0.6, 0.1 * 0.8])


def test_clamp_logit_scale():
    model = ToyRetrieval()
    with torch.no_grad():
        model.clip.logit_scale.fill_(10.0)
    assert clamp_logit_scale(model) == 1
    assert model.clip.logit_scale.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        model.clip.logit_scale.fill_(2.0)
    clamp_logit_scale(model)
    assert model.clip.logit_scale.item() == 2.0
    with pytest.raises(ValueError, match="logit_scale"):
        clamp_logit_scale(nn.Linear(2, 2))
