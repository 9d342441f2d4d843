"""The student's inner optimiser as a pure function, written once for every path.

SGD with momentum and weight decay in PyTorch's convention (``torch.optim.SGD`` with dampening 0,
no Nesterov), so a hand-written ``nn.Module`` loop and this code give the same trajectory:

    g'_t      = g_t + lambda * w_t               (weight decay)
    v_{t+1}   = mu * v_t + g'_t                  (momentum buffer; v_0 = 0)
    w_{t+1}   = w_t - eta_t * v_{t+1}

The fast path calls :func:`sgd_step` under ``torch.no_grad`` on plain tensors; the differentiable
path calls the same function on tensors that carry a graph; the RMD engine reverses exactly these
equations. The learning rate ``eta_t`` comes from :meth:`SGDConfig.lr_at`, a host-side function of
the integer step, so no device value is read in the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensors = dict[str, torch.Tensor]

SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class SGDConfig:
    """Hyper-parameters of the student's momentum SGD."""

    lr: float = 0.1
    """initial learning rate eta_0"""
    momentum: float = 0.9
    """mu; 0 gives plain SGD"""
    weight_decay: float = 5e-4
    """lambda, L2 penalty folded into the gradient"""
    schedule: str = "cosine"
    """'constant', 'cosine' (to 0 at `total_steps`) or 'step' (x0.1 at 50% and 75%)"""
    total_steps: int = 600
    """length of the schedule in student SGD steps (one episode)"""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; known: {list(SCHEDULES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")

    def lr_at(self, step: int) -> float:
        """eta_t for the 0-based step `step`; steps past `total_steps` keep the last value."""
        frac = min(step, self.total_steps) / self.total_steps
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        if self.schedule == "step":
            return self.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
        return self.lr


def init_velocity(params: Tensors) -> Tensors:
    """v_0 = 0 for every parameter."""
    return {k: torch.zeros_like(p) for k, p in params.items()}


def sgd_step(
    params: Tensors,
    velocity: Tensors,
    grads: Tensors,
    lr: float | torch.Tensor,
    momentum: float,
    weight_decay: float,
    *,
    inplace: bool = False,
    lr_scale: torch.Tensor | None = None,
    fresh_params: bool = False,
) -> tuple[Tensors, Tensors]:
    """One momentum-SGD step: returns (w_{t+1}, v_{t+1}).

    `lr` is eta_t, a float; or, for N students stacked along dim 0 of every tensor (the batched
    process, envs/batched.py), an (N,) tensor of per-student eta_t that stays on the device.

    Out of place by default, so that on the differentiable path w_t stays alive in the graph.
    ``inplace=True`` (the fast path, no graph) updates `params` and `velocity` where they are and
    overwrites `grads`, as torch.optim.SGD does: a fresh 0.8 MB buffer per tensor per step costs
    ~20% of an MLP step on the CPU. Both use the ``torch._foreach_*`` kernels of torch.optim
    (differentiable), one call per operation for all tensors.

    `lr_scale`, a teacher's lr action (envs.losses.LearningRateAction): a 0-d (or, stacked, (N,))
    tensor multiplying eta_t, on the device and, on the differentiable path, in the graph. It
    scales v_{t+1} before the usual update, w_{t+1} = w_t - eta_t (s v_{t+1}), so s = 1 leaves
    every bit of the step as it is without the action.

    ``fresh_params=True`` (with ``inplace``) returns w_{t+1} in new tensors and leaves `params`
    as they were (the momentum and `grads` still in place): an RMD tape keeps w_t as it is,
    where a copy would cost a pass over the weights. The same kernel, so the same bits.
    """
    keys = list(params)
    w, v, g = ([d[k] for k in keys] for d in (params, velocity, grads))
    stacked = isinstance(lr, torch.Tensor)
    if stacked:  # -eta_i broadcast over each stacked tensor's trailing dims
        neg_lr = [-lr.view(-1, *([1] * (t.dim() - 1))).to(t.dtype) for t in w]
    if lr_scale is not None:  # (N,) per stacked student, or one 0-d factor
        scales = [
            lr_scale.view(-1, *([1] * (t.dim() - 1))) if lr_scale.dim() else lr_scale for t in w
        ]
    if inplace:
        torch._foreach_add_(g, w, alpha=weight_decay)  # g + lambda w
        torch._foreach_mul_(v, momentum)
        torch._foreach_add_(v, g)
        step = v if lr_scale is None else torch._foreach_mul(v, scales)
        if fresh_params:
            w = (
                torch._foreach_addcmul(w, step, neg_lr)
                if stacked
                else torch._foreach_add(w, step, alpha=-lr)
            )
            return dict(zip(keys, w, strict=True)), velocity
        if stacked:
            torch._foreach_addcmul_(w, step, neg_lr)
        else:
            torch._foreach_add_(w, step, alpha=-lr)
        return params, velocity
    g = torch._foreach_add(g, w, alpha=weight_decay)
    v = torch._foreach_add(torch._foreach_mul(v, momentum), g)
    step = v if lr_scale is None else torch._foreach_mul(v, scales)
    w = (
        torch._foreach_addcmul(w, step, neg_lr)
        if stacked
        else torch._foreach_add(w, step, alpha=-lr)
    )
    return dict(zip(keys, w, strict=True)), dict(zip(keys, v, strict=True))
