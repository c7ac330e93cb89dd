"""Optimiser, learning-rate schedule and parameter groups with CLIP4Clip's behaviour.

CLIP4Clip (and InternVideo's retrieval fork) train with a BERT-style Adam ("BertAdam") whose
learning rate follows ``warmup_cosine`` over the whole run, with four parameter groups:
{weight decay, no weight decay} x {CLIP backbone at ``lr * coef_lr``, new heads at ``lr``}.
This module rebuilds that as a standard ``torch.optim`` optimiser plus a ``LambdaLR``:

* ``build_optimizer(...) -> (optimizer, scheduler)``; call ``optimizer.step()`` then
  ``scheduler.step()`` once per optimiser update (not per micro-batch), then
  ``clamp_logit_scale(model)``.
* Optimiser update k (counting from 0) uses ``lr * lr_multiplier(k / total_steps)``, which is
  exactly when BertAdam applied ``schedule(state['step'] / t_total)``.

Decisions (each one either differs from the published code or pins its behaviour down):

1. Schedule ``"warmup_cosine"`` (default) reproduces CLIP4Clip bit for bit: linear warmup
   ``x / warmup`` for ``x < warmup``, else ``0.5 * (1 + cos(pi * x))`` with ``x`` the progress of the
   *whole* run. The cosine is not rescaled after warmup, so the multiplier drops from
   ``~1`` to ``0.5 * (1 + cos(pi * warmup))`` (0.9755 for warmup 0.1) at the boundary, and the
   very first update has learning rate 0. Kept because the published numbers were trained with it.
   ``"warmup_cosine_continuous"`` is the fixed variant (cosine over the post-warmup part, 1 at
   the boundary). Both clamp progress to [0, 1] so that steps past ``total_steps`` stay at 0
   (CLIP4Clip's would rise again; it never runs past ``t_total``).
2. Weight decay (0.2, the value both published codes hard-wire): CLIP4Clip and InternVideo exempt
   names containing ``bias``, ``LayerNorm.bias`` or ``LayerNorm.weight``. CLIP's norms are named
   ``ln_1/ln_2/ln_pre/ln_post/ln_final``, so their weights *are* decayed there. The default
   ``no_decay="clip4clip"`` reproduces that grouping; ``no_decay="bias_and_norm"`` (ours) exempts
   biases and every parameter of a normalisation module (found by module type, so any naming
   works). Embeddings, ``proj`` matrices and ``logit_scale`` are decayed in both. The numerical
   effect is tiny (lr * wd ~ 1e-6 per step on the backbone).
3. ``clip.`` rule: a parameter whose name contains ``clip.`` (case-sensitive; so
   ``transformerClip.*`` is a head) gets ``lr * coef_lr``; exactly CLIP4Clip's rule.
4. Optimiser ``"bertadam"`` (default): our re-implementation of the published BertAdam update (no
   bias correction, the decay inside the update, each parameter's gradient clipped to
   ``max_grad_norm`` inside the step as CLIP4Clip's ``clip_grad_norm_(p, 1.0)`` does, on top of
   the train loop's global clip). ``"adamw"`` (ours): ``torch.optim.AdamW`` with the same betas
   (0.9, 0.98), eps 1e-6 and decoupled decay form (``p -= lr_t * wd * p``); the one difference is
   Adam's bias correction, which keeps the first updates from being ~1/sqrt(1 - b2^k) too small
   or large. The per-parameter clip is a no-op after the global clip to the same norm (each
   tensor's norm is at most the global norm), so AdamW loses nothing there.
5. Frozen parameters (``requires_grad=False``) are left out of the optimiser (CLIP4Clip passes
   them in, where they are skipped for lack of gradients). All four groups always exist, even
   when empty, so optimiser state dicts of one model always line up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

logger = logging.getLogger(__name__)

SCHEDULES = ("warmup_cosine", "warmup_cosine_continuous")
NO_DECAY_RULES = ("bias_and_norm", "clip4clip")
OPTIMIZERS = ("adamw", "bertadam")
GROUP_NAMES = ("clip_decay", "clip_no_decay", "head_decay", "head_no_decay")
# CLIP4Clip's BertAdam settings.
BETAS = (0.9, 0.98)
EPS = 1e-6
LOGIT_SCALE_MAX = math.log(100.0)


# ----------------------------------------------------------------------------- schedule
def lr_multiplier(progress: float, warmup: float, schedule: str = "warmup_cosine") -> float:
    """Learning-rate multiplier at ``progress`` = step / total_steps (clamped to [0, 1])."""
    x = min(max(progress, 0.0), 1.0)
    if x < warmup:
        return x / warmup
    if schedule == "warmup_cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    if schedule == "warmup_cosine_continuous":
        span = 1.0 - warmup
        return 0.5 * (1.0 + math.cos(math.pi * (x - warmup) / span)) if span > 0 else 0.0
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


class WarmupCosine:
    """``LambdaLR`` multiplier for optimiser step k. A class (not a lambda) so that
    ``scheduler.state_dict()`` records ``total_steps``/``warmup``/``schedule`` (plain numbers and
    a string, loadable with ``weights_only=True``) and a resumed run continues the same curve."""

    def __init__(self, total_steps: float, warmup: float, schedule: str = "warmup_cosine"):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
        if not total_steps > 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup_proportion must be in [0, 1), got {warmup}")
        self.total_steps = float(total_steps)
        self.warmup = float(warmup)
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        return lr_multiplier(step / self.total_steps, self.warmup, self.schedule)


# ----------------------------------------------------------------------------- groups
def _is_norm_module(module: nn.Module) -> bool:
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
    return isinstance(module, norm_types) or "norm" in type(module).__name__.lower()


def _norm_parameter_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        if _is_norm_module(module):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def _clip4clip_no_decay(name: str) -> bool:
    return any(key in name for key in ("bias", "LayerNorm.bias", "LayerNorm.weight"))


def group_name(name: str, no_decay: bool) -> str:
    """One of GROUP_NAMES for a parameter name (the ``clip.`` substring decides the lr)."""
    tower = "clip" if "clip." in name else "head"
    return f"{tower}_{'no_decay' if no_decay else 'decay'}"


def parameter_groups(model: nn.Module, lr: float, coef_lr: float = 1.0, weight_decay: float = 0.2,
                     no_decay: str = "clip4clip") -> list[dict]:
    """Four named groups (GROUP_NAMES order) with their ``lr`` and ``weight_decay``.

    Each group dict also has ``param_names`` (list of str) for logging and tests."""
    if no_decay not in NO_DECAY_RULES:
        raise ValueError(f"unknown no_decay rule {no_decay!r}; expected one of {NO_DECAY_RULES}")
    norm_names = _norm_parameter_names(model) if no_decay == "bias_and_norm" else set()
    groups = {
        g: {"name": g, "params": [], "param_names": [],
            "lr": lr * coef_lr if g.startswith("clip") else lr,
            "weight_decay": 0.0 if g.endswith("no_decay") else weight_decay}
        for g in GROUP_NAMES
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = _clip4clip_no_decay(name) or name in norm_names
        group = groups[group_name(name, exempt)]
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def _log_groups(groups: Iterable[dict]) -> None:
    for g in groups:
        count = sum(p.numel() for p in g["params"])
        logger.info("param group %-13s %4d tensors %12d values lr=%.3g wd=%g",
                    g["name"], len(g["params"]), count, g["lr"], g["weight_decay"])


# ----------------------------------------------------------------------------- BertAdam
class BertAdam(torch.optim.Optimizer):
    """CLIP4Clip's Adam variant: no bias correction, decoupled weight decay scaled by the lr.

    Per parameter: optionally clip its own gradient norm to ``max_grad_norm``;
    ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g^2``; ``u = m / (sqrt(v) + eps) + wd * p``;
    ``p -= lr * u``. The learning rate comes from the group (set by the scheduler), unlike the
    original which evaluated its schedule inside ``step``."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = BETAS, eps: float = EPS,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid BertAdam settings lr={lr} betas={betas} eps={eps}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                self._update(p, group, beta1, beta2)
        return loss

    def _update(self, p: torch.Tensor, group: dict, beta1: float, beta2: float) -> None:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        grad = p.grad
        if group["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = state["exp_avg"] / (state["exp_avg_sq"].sqrt() + group["eps"])
        if group["weight_decay"] > 0:
            update.add_(p, alpha=group["weight_decay"])
        p.add_(update, alpha=-group["lr"])
        state["step"] += 1


# ----------------------------------------------------------------------------- build
def build_optimizer(model: nn.Module, lr: float, coef_lr: float = 1.0, weight_decay: float = 0.2,
                    warmup_proportion: float = 0.1, total_steps: float = 1, *,
                    optimizer: str = "bertadam", schedule: str = "warmup_cosine",
                    no_decay: str = "clip4clip", betas: tuple[float, float] = BETAS,
                    eps: float = EPS, max_grad_norm: float = 1.0) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """CLIP4Clip's optimiser as ``(optimizer, scheduler)``.

    ``total_steps`` counts optimiser updates: ``batches // accumulation * epochs``, since the
    training loop drops a partial accumulation window at the end of an epoch. ``max_grad_norm``
    is BertAdam's per-parameter clip (ignored by AdamW; clip globally in the loop)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    multiplier = WarmupCosine(total_steps, warmup_proportion, schedule)
    groups = parameter_groups(model, lr, coef_lr, weight_decay, no_decay)
    _log_groups(groups)
    if not any(g["params"] for g in groups):
        raise ValueError("model has no trainable parameters")
    if optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    else:
        opt = BertAdam(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                       max_grad_norm=max_grad_norm)
    scheduler = LambdaLR(opt, [multiplier] * len(groups))
    logger.info("optimizer %s, schedule %s over %s steps (warmup %.3g), no_decay rule %s",
                optimizer, schedule, total_steps, warmup_proportion, no_decay)
    return opt, scheduler


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Learning rate each named group will use at the next update (for logging)."""
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}


@torch.no_grad()
def clamp_logit_scale(model: nn.Module, max_value: float = LOGIT_SCALE_MAX) -> int:
    """Clamp every parameter named ``logit_scale`` to at most ``max_value`` (ln 100, i.e. a
    temperature of at least 0.01, as CLIP and CLIP4Clip do after each update).

    Returns how many ``logit_scale`` tensors it found; raises if the model has none."""
    found = 0
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "logit_scale":
            param.clamp_(max=max_value)
            found += 1
    if not found:
        raise ValueError(f"{type(model).__name__} has no parameter named 'logit_scale'")
    return found
