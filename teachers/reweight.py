"""Per-example reweighting from a clean set: the peers a user with noisy labels would pick.

Both weight the cross-entropy terms of each training minibatch by a one-step look-ahead on a
minibatch of dev's ``meta`` part (the clean labelled examples a teacher may learn from; never
``select`` or test), through ``TeachingProcess.advance_weighted``, which runs and charges them:

``l2rw``, Learning to Reweight Examples (Ren et al., ICML 2018, Algorithm 1), every step:

    eps = 0 in R^B;  theta'(eps) = SGD(theta, grad_theta sum_i eps_i l_i(theta))     (virtual)
    g_i = d L_meta(theta'(eps)) / d eps_i                       (a meta minibatch, at eps = 0)
    w_i = max(-g_i, 0) / sum_j max(-g_j, 0)   (all 0 if the sum is 0)
    theta <- SGD(theta, grad_theta sum_i w_i l_i(theta))                               (real)

``mw-net``, Meta-Weight-Net (Shu et al., NeurIPS 2019, Algorithm 1), an MLP V_psi: 1 -> 100 ->
1 with a sigmoid from an example's loss to its weight, carried across the student's steps:

    theta'(psi) = SGD(theta, grad_theta 1/B sum_i V_psi(l_i(theta)) l_i(theta))        (virtual)
    psi <- Adam(psi, grad_psi L_meta(theta'(psi)))          (lr 1e-3, weight decay 1e-4, official)
    theta <- SGD(theta, grad_theta 1/B sum_i V_psi(l_i(theta)) l_i(theta))   (new psi, constant)

V's input is the loss value, detached (the official code feeds ``cost_v.data``). Where we differ
from the papers: the virtual step is the student's own momentum SGD (its lr at step t, momentum
and weight decay), not plain SGD; the weights' direction is the same (the momentum and decay terms
do not depend on eps or psi), and L2RW's normalisation removes the scale. V starts afresh (seed
``init_seed``) with every student, as in the paper's joint training; nothing is fitted before
teaching, so these teachers spend no fit budget and their look-ahead passes are charged to the
taught student's ``process.cost`` at the counter's prices: per step one ``unroll`` (the virtual
step kept as a graph, with its backward) and ``meta_grad`` for the m / B meta minibatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from envs.process import StudentState, TeachingProcess
from teachers.base import Teacher, TeachingSpec
from teachers.fixed import _check_lr

Batch = tuple[torch.Tensor, torch.Tensor]


def virtual_meta_loss(
    process: TeachingProcess,
    state: StudentState,
    batch: Batch,
    meta_batch: Batch,
    coeffs: torch.Tensor,
    weights_of: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_meta(theta'), l(theta)): the meta minibatch's cross-entropy after one virtual step of
    the student (the process's own differentiable ``student_step``, not committed) on
    sum_i eps_i l_i(theta), eps = ``weights_of(l.detach())`` (a function of whatever the caller
    differentiates: L2RW's eps, MW-Net's psi), and the per-example losses l_i(theta) (detached).
    The process's state is not changed."""
    seen: list[torch.Tensor] = []

    def weights(terms: torch.Tensor) -> torch.Tensor:
        seen.append(terms)
        return weights_of(terms)

    start = StudentState(
        {k: p.detach() for k, p in state.params.items()},
        {k: v.detach() for k, v in state.velocity.items()},
        state.buffers,
        state.step,
    )
    with torch.enable_grad():
        virtual, _ = process.student_step(
            start, batch, coeffs, differentiable=True, with_stats=False, example_weights=weights
        )
        xm, ym = meta_batch
        buffers = {k: b.clone() for k, b in virtual.buffers.items()}
        _, meta_logits = process.student_loss(virtual.params, buffers, xm, ym, coeffs)
        return F.cross_entropy(meta_logits, ym), seen[0]


def _lookahead_cost(process: TeachingProcess, meta_batch: Batch) -> dict[str, float]:
    """Passes per student step, in the counter's units (``envs.cost.KINDS``): the virtual step,
    differentiated back to eps (an ``unroll``: a differentiable step plus its backward), and the
    meta minibatch's forward and backward (``meta_grad``, m / B batches)."""
    return {"unroll": 1.0, "meta_grad": len(meta_batch[1]) / process.batch_size}


class L2RWWeights:
    """L2RW's weights for one step (module docstring); ``cost`` is what it spent, read and
    charged by ``process.advance_weighted``."""

    def __init__(self) -> None:
        self.cost: dict[str, float] = {}

    def __call__(
        self,
        process: TeachingProcess,
        state: StudentState,
        batch: Batch,
        meta_batch: Batch,
        coeffs: torch.Tensor,
    ) -> torch.Tensor:
        eps = torch.zeros(len(batch[1]), dtype=process.dtype, device=process.device)
        eps.requires_grad_(True)
        with torch.enable_grad():
            meta, _ = virtual_meta_loss(process, state, batch, meta_batch, coeffs, lambda _: eps)
            (g,) = torch.autograd.grad(meta, eps)
        self.cost = _lookahead_cost(process, meta_batch)
        return normalise(-g)


def normalise(score: torch.Tensor) -> torch.Tensor:
    """w_i = max(s_i, 0) / sum_j max(s_j, 0), all zero when the sum is 0 (or not finite); no
    host sync."""
    w = score.clamp_min(0)
    total = w.sum()
    ok = (total > 0) & torch.isfinite(total)
    return torch.where(ok, w / torch.where(ok, total, torch.ones_like(total)), torch.zeros_like(w))


class WeightNet(nn.Module):
    """V_psi: loss -> weight in (0, 1), an MLP 1 -> hidden -> 1 with ReLU and a sigmoid."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(losses.unsqueeze(-1))).squeeze(-1)


class MWNetWeights:
    """Meta-Weight-Net's weights for one step, V_psi and its Adam carried across steps."""

    def __init__(self, net: WeightNet, lr: float, weight_decay: float) -> None:
        self.net = net
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        self.cost: dict[str, float] = {}

    def __call__(
        self,
        process: TeachingProcess,
        state: StudentState,
        batch: Batch,
        meta_batch: Batch,
        coeffs: torch.Tensor,
    ) -> torch.Tensor:
        n = len(batch[1])
        params = list(self.net.parameters())
        with torch.enable_grad():
            meta, losses = virtual_meta_loss(
                process, state, batch, meta_batch, coeffs, lambda losses: self.net(losses) / n
            )
            grads = torch.autograd.grad(meta, params)
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        for p, g in zip(params, grads, strict=True):  # a non-finite meta-gradient moves nothing
            p.grad = torch.where(finite, g, torch.zeros_like(g))
        self.opt.step()
        self.cost = _lookahead_cost(process, meta_batch)
        with torch.no_grad():
            return self.net(losses) / n


@dataclass
class L2RWConfig:
    """``l2rw``: per-example weights from a one-step look-ahead on a ``meta`` batch."""

    lr: float | None = None
    """the student's learning rate (None = the spec's), chosen on ``select`` like a fixed loss's"""

    def __post_init__(self) -> None:
        _check_lr(self.lr)


@dataclass
class MWNetConfig:
    """``mw-net``: a weighting net from an example's loss to its weight, trained online."""

    hidden: int = 100
    """width of the weighting net 1 -> hidden -> 1 (the paper's 100)"""
    meta_lr: float = 1e-3
    """Adam learning rate of the weighting net"""
    meta_weight_decay: float = 1e-4
    """its weight decay"""
    init_seed: int = 0
    """seed of the net's initial weights (it starts afresh with every student)"""
    lr: float | None = None
    """the student's learning rate (None = the spec's)"""

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {self.hidden!r}")
        if not self.meta_lr > 0 or not self.meta_weight_decay >= 0:
            raise ValueError(
                f"meta_lr must be > 0 and meta_weight_decay >= 0, got "
                f"{self.meta_lr!r}, {self.meta_weight_decay!r}"
            )
        _check_lr(self.lr)


class ReweightTeacher(Teacher):
    """Base of the per-example reweighting teachers: plain CE (tau = 1) whose minibatch terms
    are weighted every step by :meth:`make_weigh`'s function; nothing to fit."""

    family = "ce"
    acts_on_observation = False  # the weights come from the bound student, not the observation
    Config = L2RWConfig

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.lr = self.cfg.lr
        self._weigh: Callable[..., torch.Tensor] | None = None

    def spec_for(self, spec: TeachingSpec) -> TeachingSpec:
        """CE, and the student lr given (if any), as for the fixed losses."""
        spec = spec.replace(loss="ce")
        return spec if self.lr is None else spec.replace(lr=self.lr)

    def make_weigh(self, process: TeachingProcess) -> Callable[..., torch.Tensor]:
        raise NotImplementedError

    def begin_episode(self, env) -> None:
        self._action = env.unwrapped.family.default_action()
        self._weigh = self.make_weigh(env.unwrapped.process)

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self._action

    def rollout(self, env, seed: int, decide=None) -> Iterator:
        """:meth:`Teacher.rollout` with every student step weighted (``process.weighting``;
        the weighting function is made per student in :meth:`begin_episode`)."""
        with env.unwrapped.process.weighting(_CurrentWeigh(self)):
            yield from super().rollout(env, seed, decide)


class _CurrentWeigh:
    """The teacher's weighting function of the current student (made in ``begin_episode``,
    after the weighting block opens) and what its last call spent, which
    ``process.advance_weighted`` reads as ``cost`` and charges: a plain ``lambda`` in its place
    hid the look-ahead's cost, and these teachers were charged as plain CE (1.0x)."""

    def __init__(self, teacher: ReweightTeacher) -> None:
        self.teacher = teacher

    def __call__(self, *args: Any) -> torch.Tensor:
        return self.teacher._weigh(*args)

    @property
    def cost(self) -> dict[str, float]:
        return self.teacher._weigh.cost


class L2RWTeacher(ReweightTeacher):
    """Learning to Reweight Examples (Ren et al. 2018): module docstring."""

    name = "l2rw"

    def make_weigh(self, process: TeachingProcess) -> L2RWWeights:
        return L2RWWeights()


class MWNetTeacher(ReweightTeacher):
    """Meta-Weight-Net (Shu et al. 2019): module docstring. V starts afresh (seed `init_seed`)
    with every student."""

    name = "mw-net"
    Config = MWNetConfig

    def new_net(self, process: TeachingProcess) -> WeightNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config["init_seed"])
            net = WeightNet(self.config["hidden"])
        return net.to(process.device, process.dtype)

    def make_weigh(self, process: TeachingProcess) -> MWNetWeights:
        c = self.config
        return MWNetWeights(self.new_net(process), c["meta_lr"], c["meta_weight_decay"])


__all__ = [
    "L2RWTeacher",
    "L2RWWeights",
    "MWNetTeacher",
    "MWNetWeights",
    "WeightNet",
    "normalise",
    "virtual_meta_loss",
]
