"""L2T-DLN: a memory teacher that rewrites a dynamic loss network (Hai et al., NeurIPS 2023).

The student minimises the loss network L_phi (the ``dln`` family: 5,000 weights phi). A
coordinate-wise LSTM T_psi (Andrychowicz et al. 2016) reads the *loss state*, the validation
gradient of phi taken through a K-step look-ahead of the student, and moves phi; its hidden state
(h, c) is the teacher's memory across the whole student run. One iteration (the official
``main.py``):

    stage 1  theta^(k) = SGD(theta^(k-1), grad L_phi_t(x_k, y_k)),  k = 1..K      (look-ahead)
             g_t = d CE_val(theta^(K)) / d phi_t                     (hypergradient, detached)
    stage 2  (Delta_t, h_{t+1}) = T_psi(preproc(g_t), h_t);  phi_{t+1}(psi) = phi_t - alpha Delta_t
    stage 3  theta~^(k) = SGD(theta~^(k-1), grad L_phi_{t+1}(psi)(x_k, y_k))  from theta_t,
             same K batches;  psi <- Adam(grad_psi CE_val(theta~^(K)))
    commit   theta_{t+1}: the env's step under phi_{t+1}, K student steps on the same batches
             (the fast path of stage 3's unroll: the process stays the only writer of its state);
             phi_{t+1}, h_{t+1} detached (truncated BPTT of length 1, as in the official code)

Where we differ from the released code (each a documented choice, see ``DLNConfig``):

* the student is our process's momentum SGD (the env spec's lr, momentum, weight decay and cosine
  schedule), not plain SGD(0.1, batch 25); the look-ahead differentiates through exactly that
  optimiser (``TeachingProcess.lookahead(..., differentiable=True)``);
* CE_val is the cross-entropy of the fixed dev subset (or the whole ``meta`` part of dev), carved
  from the training set: never ``select``, never test. It is evaluated with the look-ahead's own BatchNorm statistics in eval
  mode, and the commit carries the BatchNorm buffers forward (the official code may not);
* phi and (h, c) are reset at the start of every student run (fit trains psi online over several
  fresh students within the budget);
* phi starts from a fit of one-vs-all binary cross-entropy instead of the official random Kaiming
  draw (``warm_start``): under the random draw the student *unlearns* (0% dev accuracy after 600
  steps on mnist5k/mlp for two of three Kaiming seeds), and a 600-step run at the official
  alpha = 1e-3 cannot move phi far enough to undo it;
* the last LSTM cell starts at zero, so Delta = 0 until psi has learned (``identity_start``);
* K = 10 look-ahead steps of batch 64 by default (official: 15 of batch 25). The teacher acts
  every K student steps, so it runs on the spec's env with ``interval = K`` (:meth:`spec_for`;
  the episode length, the cosine schedule and the student are unchanged): a taught episode is
  the env's own loop (``Teacher.rollout``) with :meth:`act` doing stages 1-2, and its records
  have a row every K steps instead of every spec interval;
* optionally (``update_every`` = N > K; off by default) one iteration per window of N student
  steps instead of K: the look-ahead covers the window's first K steps and the window is
  committed under the phi it chose. The official code iterates every K steps, so every
  student step is looked ahead once; this trades that for cost (teaching ~7x plain training
  at N = K, benchmarks/README.md).

Measured (results/l2t_dln/README.md, mnist5k/mlp, 5 seeds, equal 4,800-step budgets): no gain
over plain cross-entropy (dev error +0.74 +- 0.72 points, test +0.00 +- 0.46, paired 95% CIs),
and none over the warm-start DLN with the teacher switched off.

Fit: psi learns online over fresh students of the common seed plan (``SeedPlan.nth``), one
iteration per env step of the base's episode loop: :meth:`L2TDLNTeacher.learn_step` (stages 1-3)
decides, the env's step commits. An iteration whose CE_val or psi gradient is not finite skips the
Adam step; the episode goes on unless the student itself diverged (the env then ends it).

Budget accounting: the process charges every pass (envs/cost.py). A fit iteration (the fit
skeleton's update) is stage 1's and stage 3's differentiable K-step look-aheads (``unroll``, each
with its backward), their two CE_val gradients (``dev_grad``) and the env's N committed steps
(``train``; N = K by default); a taught iteration (:meth:`L2TDLNTeacher.act` and the env's
step) is stage 1 and the N committed steps, and its cost is in every taught student's
``teach_cost``. Neither counts the LSTM (teacher compute, not a student pass), about 2x plain
training per K steps in wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from envs.cost import price
from envs.losses import DynamicLossNetwork
from envs.process import TeachingProcess
from envs.state import DefaultState
from students.optim import Tensors
from teachers.base import FitRun, SelectOptions, Teacher, TeachingSpec
from teachers.fixed import FixedTeacher

WARM_STARTS = ("bce", "none")


@dataclass
class DLNConfig(SelectOptions):
    """The L2T-DLN teacher's options (= its constructor's keyword arguments)."""

    lookahead: int = 10
    """K, student SGD steps per teacher iteration (official: 15) and the interval of the env the
    teacher acts on, so it must divide the episode length (horizon x interval)"""
    dln_step: float = 1e-3
    """alpha in phi_{t+1} = phi_t - alpha Delta_t, |Delta| < 1 (official 1e-3). At 1e-2, after a
    2,400-step fit, the next student ended at 97.1% dev error (seed 1; seed 2: 6.7%), at 1e-3 at
    6.9% and 6.8% (results/l2t_dln/probes.csv)"""
    teacher_lr: float = 1e-3
    """Adam learning rate of psi (official ``--lr_DLN``, 1e-3)"""
    hidden: int = 64
    """LSTM width; the stack is 4 LSTMCells in -> hidden -> hidden -> hidden -> 1 (official)"""
    preproc: float = 10.0
    """p of the gradient preprocessing (log|g|/p, sign g) or (-1, e^p g) (official: 10)"""
    full_dev: bool = False
    """CE_val on the whole ``meta`` part of dev (never ``select``) instead of the env's fixed dev
    subset"""
    student_features: bool = False
    """also feed the env's 12 student-state features (DefaultState) to every LSTM coordinate
    (the paper's input is the loss state only; this is the "additionally" option)"""
    warm_start: str = "bce"
    """'bce': phi_0 = the DLN regressed onto scaled one-vs-all binary CE (bce_warm_start, a loss
    a student learns from); 'none': phi_0 = the family's Kaiming draw, as in the official code"""
    dln_init_seed: int = 0
    """seed of the family's Kaiming draw (its default and the centre of the action box)"""
    action_range: float = 4.0
    """half-width of the env's action box around the Kaiming draw, so that act() can express
    the warm start and a run's drift (the family's own default is 0.1)"""
    init_seed: int = 0
    """seed of psi's initialisation"""
    update_every: int | None = None
    """student steps per teacher iteration, the interval of the env the teacher acts on; None =
    ``lookahead``, as in the paper and the official code, where every student step is looked
    ahead once. A window of N > K steps runs one iteration (stage 1's look-ahead over its first
    K steps, the LSTM, and in a fit stage 3 and psi's Adam step) and trains all N steps under the
    phi that iteration chose. Why: teaching costs about 7x plain training at N = K (the
    commit under the DLN ~1.8x, the look-ahead ~3.4x, the LSTM ~2x a step), and that part falls
    as K / N: 2.0-2.8x at N = 40-100 (benchmarks/README.md). It changes the algorithm: phi
    moves N / K times less often (alpha is per iteration), the LSTM's memory steps once per
    window, psi learns from fewer iterations; under 40 % label noise (budget 4,800, 2 fits x 2
    students) its students ended 3.9-7.5 points worse on dev's select part than the per-K
    teacher's, alpha scaled by N / K or not (none worse on clean labels). So the default keeps
    the per-K teacher, and a result directory made before this option resumes with the same
    teacher. Must be >= lookahead and divide the episode length"""
    identity_start: bool = True
    """zero the last LSTM cell so that Delta = 0 until psi has learned something: an untrained
    LSTM's Delta is not zero (max |Delta| 0.1-0.5 in a development run), so it would move phi in
    an arbitrary direction, and the untrained teacher is then exactly its warm-start loss (the
    ``dln-fixed`` baseline of results/l2t_dln); False = PyTorch's default init (official)"""

    @property
    def window(self) -> int:
        """N, student steps per teacher iteration (``update_every``, default K)."""
        return self.lookahead if self.update_every is None else self.update_every

    def __post_init__(self) -> None:
        for name in ("lookahead", "hidden"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("dln_step", "teacher_lr", "preproc", "action_range"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        every = self.update_every
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < self.lookahead
        ):
            raise ValueError(
                f"update_every must be None (= lookahead) or an int >= lookahead = "
                f"{self.lookahead} (student steps per teacher iteration), got {every!r}"
            )
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {WARM_STARTS}, got {self.warm_start!r}")


# -- the teacher network ----------------------------------------------------------------------
def preprocess(grad: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al. (2016, App. A): (log|g| / p, sign g) if |g| >= e^-p, else (-1, e^p g).

    Gradients of the DLN span many orders of magnitude; the log keeps the LSTM's input O(1)."""
    big = grad.abs() >= math.exp(-p)
    log_mag = grad.abs().clamp_min(math.exp(-p)).log() / p
    first = torch.where(big, log_mag, torch.full_like(grad, -1.0))
    second = torch.where(big, grad.sign(), math.exp(p) * grad)
    return torch.stack([first, second], dim=-1)


LSTMState = list[tuple[torch.Tensor, torch.Tensor]]


class CoordinateLSTM(nn.Module):
    """T_psi: a stack of LSTMCells applied to every DLN coordinate as one row of a batch, all rows
    sharing psi (so the teacher's size does not depend on the DLN's). The last cell's hidden
    output, in (-1, 1), is the update Delta of that coordinate."""

    def __init__(
        self,
        hidden: int = 64,
        n_extra: int = 0,
        preproc: float = 10.0,
        identity_start: bool = False,
    ) -> None:
        super().__init__()
        self.preproc = preproc
        self.n_extra = n_extra
        sizes = [2 + n_extra, hidden, hidden, hidden, 1]
        self.cells = nn.ModuleList(
            nn.LSTMCell(i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        if identity_start:
            # all-zero last cell: cell input tanh(0) = 0, so c = h = Delta = 0 at first, while
            # dDelta/dW_g = o * i * x = x / 4 != 0: psi still gets a gradient
            with torch.no_grad():
                for p in self.cells[-1].parameters():
                    p.zero_()

    def initial_state(self, n: int, dtype: torch.dtype, device) -> LSTMState:
        """Zero (h, c) for `n` coordinates: the memory at the start of a student run."""
        return [
            (
                torch.zeros(n, c.hidden_size, dtype=dtype, device=device),
                torch.zeros(n, c.hidden_size, dtype=dtype, device=device),
            )
            for c in self.cells
        ]

    def forward(
        self, grad: torch.Tensor, state: LSTMState, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        x = preprocess(grad.detach(), self.preproc)
        if self.n_extra:
            if extra is None or extra.shape != (self.n_extra,):
                raise ValueError(f"this teacher takes {self.n_extra} extra features, got {extra}")
            x = torch.cat([x, extra.to(x.dtype).expand(len(x), -1)], dim=-1)
        new_state = []
        for cell, hc in zip(self.cells, state, strict=True):
            h, c = cell(x, hc)
            new_state.append((h, c))
            x = h
        return x.squeeze(-1), new_state


# -- the warm start ---------------------------------------------------------------------------
@cache
@torch.enable_grad()
def bce_warm_start(
    num_classes: int, init_seed: int = 0, scale: float = 3.0, steps: int = 400
) -> torch.Tensor:
    """DLN weights regressed onto one-vs-all binary cross-entropy, split over the rival rows:

        g(s_y, s_j) ~= scale (-log s_y / (C - 1) - log(1 - s_j)),  so
        L_phi = 1/(B C) sum_b sum_{j != y} g = scale/C mean_b [-log s_y - sum_{j != y} log(1 - s_j)].

    A loss a student can learn from, so the teacher shapes a working loss instead of first
    undoing a random one (the official start). Deterministic (fixed grid, Adam from the family's
    Kaiming draw); cached per arguments; about a second on a CPU core. Measured on mnist5k/mlp,
    our default spec, dev accuracy after 600 steps under this loss alone (student seeds 0, 1, 2,
    10000): scale 3: 93.3-94.3% (plain CE: 94.0-94.7%); scale C = 10: 93.3, 93.7, 35.5,
    11.3% (momentum SGD at lr 0.1 blows up); scale 1: 92.2-92.4% (results/l2t_dln/probes.csv).
    The regression is sensitive to its grid and step count (a logit-spaced grid gave a much worse
    loss in a development run), so these are fixed."""
    family = DynamicLossNetwork(num_classes, init_seed=init_seed)
    grid = torch.linspace(1e-3, 1 - 1e-3, 24, dtype=torch.float64)
    s_y, s_j = torch.meshgrid(grid, grid, indexing="ij")
    s_y, s_j = s_y.flatten(), s_j.flatten()
    target = scale * (-torch.log(s_y) / (num_classes - 1) - torch.log1p(-s_j))
    rows = torch.stack([s_y, s_j, torch.ones_like(s_y), torch.zeros_like(s_y)], dim=-1)
    phi = family.default_coeffs(torch.float64).clone().requires_grad_(True)
    opt = torch.optim.Adam([phi], lr=1e-2)
    for _ in range(steps):
        h = rows
        layers = family.weights(phi)
        for w in layers[:-1]:
            h = F.leaky_relu(h @ w.T, 0.01)
        loss = ((h @ layers[-1].T).squeeze(-1) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return phi.detach()


class DLNStart(FixedTeacher):
    """L2T-DLN's starting loss held fixed: phi_0 (the warm start, or the Kaiming draw with
    ``warm_start='none'``) at every step, as the env's float64 action. With ``identity_start``
    (the default) the untrained teacher's Delta is 0, so this is the untrained teacher without
    the look-ahead it would pay for (and the ``dln-fixed`` baseline of results/l2t_dln)."""

    name = "dln-start"

    def __init__(self, teacher: L2TDLNTeacher) -> None:
        super().__init__(family="dln")
        self._initial_coeffs = teacher.initial_coeffs

    def begin_episode(self, env) -> None:
        family = env.unwrapped.family
        phi = self._initial_coeffs(family, torch.float64, "cpu")
        self._action = family.coeffs_to_action(phi).clamp(-1.0, 1.0).numpy()


# -- one iteration ----------------------------------------------------------------------------
def validation_loss(
    process: TeachingProcess, params: Tensors, buffers: Tensors, full: bool = False
) -> torch.Tensor:
    """CE_val of the look-ahead student: dev (never test) cross-entropy in eval mode, with the
    look-ahead's own BatchNorm statistics rather than the committed ones."""
    return process.dev_objective(params, kind="ce", full=full, buffers=buffers)


def lookahead_hypergradient(
    process: TeachingProcess, coeffs: torch.Tensor, steps: int, full: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: (g, CE_val) with g = d CE_val(theta^(K)(phi)) / d phi through `steps` look-ahead
    steps from the process's current student, which is left unchanged."""
    phi = coeffs.detach().to(process.device, process.dtype).requires_grad_(True)
    with torch.enable_grad():  # also under a caller's no_grad: this is a gradient
        state, _ = process.lookahead(phi, steps, differentiable=True)
        loss = validation_loss(process, state.params, state.buffers, full)
        (grad,) = torch.autograd.grad(loss, phi)
    return grad, loss.detach()


# -- the teacher ------------------------------------------------------------------------------
class L2TDLNTeacher(Teacher):
    """L2T-DLN: a coordinate-wise LSTM that updates the DLN's 5,000 weights online from their
    validation hypergradient, carrying its memory through the student run (module docstring)."""

    name = "l2t-dln"
    family = "dln"
    acts_on_observation = False  # act looks ahead from the bound student (begin_episode)

    Config = DLNConfig

    def __init__(self, config: DLNConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        n_extra = len(DefaultState.names) if self.cfg.student_features else 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.init_seed)
            self.lstm = CoordinateLSTM(
                self.cfg.hidden, n_extra, self.cfg.preproc, self.cfg.identity_start
            )
        self.adam = torch.optim.Adam(self.lstm.parameters(), lr=self.cfg.teacher_lr)
        self._state_fn = DefaultState()
        self.phi: torch.Tensor | None = None
        self.memory: LSTMState | None = None
        self._family: DynamicLossNetwork | None = None
        self._process: TeachingProcess | None = None

    # -- spec and episode state ---------------------------------------------------------------
    def spec_for(self, spec: TeachingSpec) -> TeachingSpec:
        """The spec with the ``dln`` family (its Kaiming seed and our wider action box) and an
        env step of N student steps (``update_every``, default K): the teacher decides once per
        iteration. The episode keeps its length, so the student's schedule and data order are
        the spec's."""
        n, steps = self.cfg.window, spec.episode_steps
        if spec.lr_action:
            raise ValueError(
                "l2t-dln does not act on the lr (its action is the loss network's weights, moved "
                "by its LSTM from the validation gradient): run it with lr_action=False"
            )
        if steps % n:
            name = "lookahead" if self.cfg.update_every is None else "update_every"
            raise ValueError(
                f"l2t-dln acts every {name}={n} student steps, which must divide the episode "
                f"length horizon x interval = {spec.horizon} x {spec.interval} = {steps}"
            )
        kwargs = {"init_seed": self.cfg.dln_init_seed, "action_range": self.cfg.action_range}
        return spec.replace(loss="dln", loss_kwargs=kwargs, interval=n, horizon=steps // n)

    def initial_coeffs(self, family: DynamicLossNetwork, dtype, device) -> torch.Tensor:
        """phi_0: the warm start or the family's Kaiming draw."""
        if self.cfg.warm_start == "bce":
            phi = bce_warm_start(family.num_classes, family.init_seed)
        else:
            phi = family.default_coeffs(torch.float64)
        return phi.to(dtype=dtype, device=device)

    def frozen_start(self) -> Teacher:
        """phi_0 held fixed (:class:`DLNStart`): what the lr search scores, not the family's
        Kaiming draw. Why: under the Kaiming draw students ended at 99.7-99.9 % select error at
        every lr (40 % noise, fair-1, results/fair before this fix), so the lr was chosen by
        noise, for a loss this teacher never teaches."""
        return DLNStart(self)

    def begin_episode(self, env) -> None:
        """A taught episode starts: bind the env's student (act reads it) and reset phi, (h, c)."""
        self._process = env.unwrapped.process
        self.start_run(self._process)

    def start_run(self, process: TeachingProcess) -> None:
        """A new student run: phi back to phi_0, the LSTM's memory to zero (psi is kept)."""
        self._family = process.family
        self.lstm.to(device=process.device, dtype=process.dtype)
        self.phi = self.initial_coeffs(process.family, process.dtype, process.device)
        self.memory = self.lstm.initial_state(self._family.dim, process.dtype, process.device)

    def act(self, observation: np.ndarray) -> np.ndarray:
        """One iteration's stages 1-2 with psi frozen: look ahead K steps from the bound env's
        student, move phi, and return the new DLN as the env's action for the next N steps
        (``update_every``, default K).

        The teacher's input is the loss state (the validation gradient of phi), not the
        observation: ``act`` reads the student the last :meth:`begin_episode` bound, and each
        call is one teacher iteration (K look-ahead steps, charged by the process). The
        action is float64 so that the env maps it back to exactly this phi (a float32 action
        would round the DLN at every iteration)."""
        if self._family is None or self.phi is None or self._process is None:
            raise RuntimeError("L2TDLNTeacher.act: call begin_episode(env) first")
        phi_next, _ = self.update_dln(self._process, self.cfg.lookahead, track_psi=False)
        self.phi = phi_next.detach()
        return self._family.coeffs_to_action(self.phi).clamp(-1.0, 1.0).numpy()

    # -- stages 1 and 2 -----------------------------------------------------------------------
    def _extra(self, process: TeachingProcess) -> torch.Tensor | None:
        return self._state_fn(process).detach() if self.cfg.student_features else None

    def update_dln(
        self, process: TeachingProcess, steps: int, track_psi: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stages 1-2: look ahead under phi_t, then phi_{t+1}(psi) = phi_t - alpha T_psi(g_t, h_t).

        Returns (phi_{t+1}, a function of psi if `track_psi`, and CE_val of the look-ahead); the
        memory advances (detached: truncated BPTT of length 1)."""
        grad, val = lookahead_hypergradient(process, self.phi, steps, self.cfg.full_dev)
        with torch.set_grad_enabled(track_psi):
            delta, memory = self.lstm(grad, self.memory, self._extra(process))
        self.memory = [(h.detach(), c.detach()) for h, c in memory]
        return self.phi - self.cfg.dln_step * delta, val

    # -- fit: online over fresh student runs (the skeleton's hooks, teachers.base.Teacher.fit) -
    def setup(self, run: FitRun) -> None:
        """Students of the seed plan one after another through the base's episode loop; each
        env step is one iteration: :meth:`learn_step` decides, the env commits."""
        self._env = run.make_env()
        process = self._env.unwrapped.process
        k = self.cfg.lookahead
        n_dev = len(process.data.y_dev) if self.cfg.full_dev else process.dev_subset
        self._iteration_cost = (
            price("unroll", 2 * k)
            + 2 * price("dev_grad", n_dev / process.batch_size)
            + price("train", self.cfg.window)
        )
        self._row: dict = {}
        self._stream = self.episodes(self._env, run.seeds.students(), self._learn_and_act)

    def student_cost(self, run: FitRun) -> float:
        """A taught student (a selection candidate's): per iteration, :meth:`act`'s stage 1
        (a differentiable K-step look-ahead and one CE_val gradient) and the N committed
        steps."""
        process, k = self._env.unwrapped.process, self.cfg.lookahead
        n_dev = len(process.data.y_dev) if self.cfg.full_dev else process.dev_subset
        iteration = (
            price("unroll", k)
            + price("dev_grad", n_dev / process.batch_size)
            + price("train", self.cfg.window)
        )
        return run.spec.horizon * iteration

    def next_update(self, run: FitRun) -> float | None:
        """One iteration: two differentiable K-step look-aheads, two CE_val gradients, N
        committed steps."""
        return self._iteration_cost

    def update(self, run: FitRun) -> list[dict]:
        step = next(self._stream)
        if step.action is None:  # a new student (rollout reset it and called begin_episode)
            run.report.episodes += 1
            step = next(self._stream)
        row = self._row
        row.update(episode=run.report.episodes - 1, step=self._process.step)
        return [row]

    def finish(self, run: FitRun) -> None:
        self._stream.close()
        self._stream = self._env = None

    def _learn_and_act(self, observation: np.ndarray) -> np.ndarray:
        """The fit's decision: stages 1-3 with psi learning, then phi_{t+1} as the action."""
        self._row = self.learn_step(self._process, self.cfg.lookahead)
        return self._family.coeffs_to_action(self.phi).clamp(-1.0, 1.0).numpy()

    @torch.enable_grad()
    def learn_step(self, process: TeachingProcess, k: int) -> dict:
        """Stages 1-3: phi_{t+1}(psi) from the look-ahead, then stage 3's look-ahead under it
        and one Adam step on psi; phi_{t+1} becomes :attr:`phi` (the caller commits it: the
        env's step). One host sync (the log row)."""
        phi_next, val_before = self.update_dln(process, k)
        state, _ = process.lookahead(phi_next, k, differentiable=True)
        val_after = validation_loss(process, state.params, state.buffers, self.cfg.full_dev)
        self.adam.zero_grad(set_to_none=True)
        val_after.backward()
        finite = (
            torch.isfinite(val_after)
            & torch.stack([torch.isfinite(p.grad).all() for p in self.lstm.parameters()]).all()
        )
        delta = (phi_next.detach() - self.phi).abs().max() / self.cfg.dln_step
        values = torch.stack([val_before, val_after.detach(), delta, finite.to(delta.dtype)])
        val_before, val_after, delta, ok = values.tolist()  # the iteration's one host sync
        if ok:
            self.adam.step()
        self.phi = phi_next.detach()
        return {
            "val_ce_lookahead": val_before,
            "val_ce_committed": val_after,
            "max_abs_delta": delta,
            "diverged": not ok,
        }

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"lstm": self.lstm.state_dict(), "adam": self.adam.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lstm.load_state_dict(state["lstm"])
        self.adam.load_state_dict(state["adam"])


__all__ = [
    "CoordinateLSTM",
    "DLNConfig",
    "L2TDLNTeacher",
    "bce_warm_start",
    "lookahead_hypergradient",
    "preprocess",
    "validation_loss",
]
