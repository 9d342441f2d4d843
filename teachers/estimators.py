"""Hypergradient estimators for a gradient teacher, as functions of the teacher's parameters.

A gradient teacher is a policy ``a_t = pi(theta, s_t)`` in ``[-1, 1]^d`` (the loss family's
action) that wants ``grad_theta M``, M a smooth dev objective of the student it teaches (dev
cross-entropy on the process's fixed dev subset, the ``meta`` examples). The whole-run answer is
exact but chaotic on long runs (the README's L2T-DLF section: norms 4 -> 8e14 in six updates), so
the estimators here trade bias, variance and cost differently. Each one answers
``estimate(theta) -> Estimate``, keeps its own students, and runs every student-sized pass through
the process (``advance`` for forward steps, ``teachers.rmd.reverse`` for reverse steps,
``dev_objective`` for M), so a process that counts (``process.cost``) charges all of it:

| name        | one estimate                                                    | bias                   |
|-------------|-----------------------------------------------------------------|------------------------|
| ``full``    | RMD through one whole episode (T steps; today's L2T-DLF)         | none                   |
| ``truncated`` | RMD through the next K steps of a run (``continuing``), or K steps from a fixed checkpoint (``restart``, the L2T-DLF demo's recipe) | short-horizon (greedy), Wu et al. 2018 |
| ``pes``     | antithetic persistent ES over the next K steps of N particle pairs (Vicol et al., ICML 2021), forward passes only | none for the ES-smoothed whole-run objective |

and :func:`online`, a teaching procedure: while one student is taught, theta moves every K steps
by the truncated estimate of the window just taught (L2T-DLN's 15-step online updates, L2RW,
MW-Net: the same ``meta`` information).

Windows and the objective. The run of T = horizon x interval student steps is cut into windows of
K student steps; a window need not end at a decision (the policy acts every ``interval`` steps and
its action is held in between). Window k's loss is the change of M over it,

    L_k = M(w_{end_k}) - M(w_{start_k}),    sum_k L_k = M(w_T) - M(w_0),

so the windows' losses telescope to the whole-run objective (M(w_0) does not depend on theta).
An RMD window differentiates L_k holding w_{start_k} fixed, i.e. dM(w_{end_k})/d(actions of the
window): with K = T it is ``full``. PES sums its window estimates to an unbiased estimate of
grad E_eps[M(w_T)] (smoothing sigma), because the accumulator xi carries every earlier window's
perturbation: E[sum_k xi_k (L_k^+ - L_k^-)] / (2 sigma^2) = grad of the smoothed sum of L_k.
Truncated ES (``persistent=False``: xi = the current perturbation only) drops those terms and is
biased; the tests check both.

As in teachers/rmd.py, the state s_t the policy reads is a constant of the RMD estimators (no
gradient through the student's accuracies); ES and PES see the total effect of theta.

Per-update conditioning (:func:`condition`): clip to a norm, or normalise to unit length, for any
estimator; non-finite estimates become zero updates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from envs.process import DEV_OBJECTIVES, StudentState, TeachingProcess
from teachers import rmd

Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""pi(theta, s) -> a: theta a flat float64 vector, s the float64 observation, a in [-1, 1]^d
(float64, differentiable in theta)"""


# -- policies ------------------------------------------------------------------------------------
def teacher_policy(teacher) -> tuple[Policy, torch.Tensor]:
    """(pi, theta_0) for a teacher with a ``params`` dict and an ``action(obs)`` method (L2T-DLF):
    pi evaluates the teacher's own ``action`` at the parameters unflattened from theta, so the
    estimators see exactly the actions ``teacher.act`` takes."""
    names = list(teacher.params)
    shapes = [teacher.params[k].shape for k in names]
    sizes = [math.prod(s) for s in shapes]
    theta0 = torch.cat([teacher.params[k].detach().flatten() for k in names]).to(torch.float64)

    def policy(theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        saved = teacher.params
        teacher.params = {k: p.view(s) for k, p, s in zip(names, parts, shapes, strict=True)}
        try:
            return teacher.action(obs)
        finally:
            teacher.params = saved

    return policy, theta0


def affine_policy(center: torch.Tensor, basis: torch.Tensor, *, progress: bool = False) -> Policy:
    """a = clip(center + basis @ theta_0 [+ (2 t/T - 1) basis @ theta_1], -1, 1): a constant
    (or, with `progress`, a linear-in-time) action in the span of `basis`'s m columns; theta has m
    (2 m) entries. Ignores the student's state, so RMD's gradient is the total derivative: the
    small smooth problems of the tests and the benchmark."""
    center = center.to(torch.float64)
    basis = basis.to(torch.float64)
    m = basis.shape[1]

    def policy(theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        a = center + basis @ theta[:m]
        if progress:  # obs[0] is the progress t/T of envs.state.DefaultState
            a = a + (2 * obs[0] - 1) * (basis @ theta[m : 2 * m])
        return a.clamp(-1.0, 1.0)

    return policy


# -- results -------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """One hypergradient estimate: a descent direction for theta (theta -= lr * grad)."""

    grad: torch.Tensor
    """(P,) float64, the estimate of dM/dtheta (zeros if the student diverged)"""
    objective: float
    """M at the end of the estimate's window (mean over particles for PES); NaN if diverged"""
    steps: int
    """student steps advanced, all students of the estimate together"""
    cost: float
    """student-step equivalents spent, read from ``process.cost`` (shared by a PES's particles)"""
    diverged: bool = False
    episode_end: bool = False
    """the window reached the end of its episode (the next estimate starts new students)"""


class _Spend:
    """Cost of a block of work: the change of ``process.cost.total`` over it (a PES's particles
    share the meter of the process they were forked from)."""

    def __init__(self, process: TeachingProcess) -> None:
        self.meter = process.cost
        self.start = self.meter.total

    def total(self) -> float:
        return float(self.meter.total - self.start)


def condition(
    grad: torch.Tensor, *, clip: float | None = None, normalize: bool = False
) -> tuple[torch.Tensor, float]:
    """Per-update conditioning of a hypergradient: (the direction to apply, its raw norm).

    ``normalize``: unit length (the meta-lr is then the step length in theta: the norm of a long
    unroll's hypergradient spans orders of magnitude between updates). ``clip``: rescale to at
    most this norm. A non-finite estimate gives a zero update (and a non-finite norm to log).
    """
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive or None, got {clip}")
    norm = float(torch.linalg.vector_norm(grad))
    if not math.isfinite(norm):
        return torch.zeros_like(grad), norm
    if normalize and norm > 0:
        grad = grad / norm
    elif clip is not None and norm > clip:
        grad = grad * (clip / norm)
    return grad, norm


# -- one student taught by a policy, cut anywhere --------------------------------------------------
@dataclass
class _Decision:
    leaf: torch.Tensor
    """the theta the action was computed from (a leaf of its own)"""
    action: torch.Tensor
    """float64, in the graph of `leaf` (detached on forward-only unrolls)"""
    coeffs: torch.Tensor
    """what the process trains on: the family's coefficients of the float32 action"""
    step: int


class Unroll:
    """One student taught by a policy, advanced any number of student steps: the process-level
    twin of ``LossTeachingEnv.step``, which moves one whole interval per action.

    The policy acts at every decision step (a multiple of ``env.interval``) on the observation the
    env would give (``process.observe`` of the env's state function), its action goes through the
    float32 action space and the family's map as in ``env.step``, and it is held until the next
    decision. An unroll cut at decisions only is the env's run to the bit. Cut inside an interval,
    the train-statistics features the next decision reads average the last cut's minibatches
    (``envs.process.STATS_WINDOW``), so a cut shorter than that changes them.
    """

    def __init__(self, env, policy: Policy, process: TeachingProcess | None = None) -> None:
        self.env = env
        self.policy = policy
        self.process = process if process is not None else env.process
        self.family = self.process.family
        self.interval = env.interval
        self.episode_steps = env.horizon * env.interval
        self.decision: _Decision | None = None
        self.obs: np.ndarray | None = None
        self.diverged = True  # until reset

    def reset(self, seed: int, start: StudentState | None = None) -> None:
        """A fresh student from `seed`; or, with `start`, that student continued from `start` (a
        checkpoint; its data order goes on from ``start.step``)."""
        self.process.reset(seed)
        if start is not None:
            if start.step >= self.episode_steps:
                raise ValueError(
                    f"the checkpoint is at step {start.step}, at or past the episode's end "
                    f"({self.episode_steps})"
                )
            self.process.restore(start.clone())
        self.decision = None
        self.diverged = False
        self._observe()

    @property
    def step(self) -> int:
        return self.process.step

    @property
    def done(self) -> bool:
        return self.diverged or self.process.step >= self.episode_steps

    def _observe(self) -> None:
        metrics = self.process.observe(self.env.state_fn(self.process).detach())
        self.obs = metrics["features"].astype(np.float32)
        self.diverged = bool(metrics["diverged"])

    def run(
        self, theta: torch.Tensor, steps: int, *, tape: rmd.Tape | None = None, grad: bool = True
    ) -> list[_Decision]:
        """Advance up to `steps` student steps (fewer at the episode's end or on divergence);
        returns the decision in force for each ``advance`` call, in order (one tape segment each).
        `grad`: keep each new action in the graph of a fresh leaf copy of theta."""
        segments: list[_Decision] = []
        left = steps
        proc = self.process
        while left > 0 and not self.done:
            t = proc.step
            fresh = self.decision is None  # also a checkpoint between decisions: act at once
            if fresh or (t % self.interval == 0 and self.decision.step != t):
                self.decision = self._decide(theta, t, grad)
            n = min(left, self.interval - t % self.interval, self.episode_steps - t)
            if tape is None:
                proc.advance(self.decision.coeffs, n)
            else:
                with proc.recording(tape):
                    proc.advance(self.decision.coeffs, n)
            segments.append(self.decision)
            left -= n
            if proc.step % self.interval == 0 or proc.step >= self.episode_steps:
                self._observe()  # what env.step reads after an interval (one host transfer)
            elif left == 0:
                self.diverged = bool(proc.diverged)  # a cut inside an interval: one host read
        return segments

    def _decide(self, theta: torch.Tensor, t: int, grad: bool) -> _Decision:
        leaf = theta.detach().clone().requires_grad_(grad)
        obs = torch.as_tensor(np.asarray(self.obs, dtype=np.float64))
        with torch.set_grad_enabled(grad):
            a = self.policy(leaf, obs)
        a32 = a.detach().numpy().astype(np.float32)  # the env's action space
        return _Decision(leaf, a, self.family.action_to_coeffs(a32), t)


def _theta_grad(
    family, segments: list[_Decision], coeff_grads: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """sum_k (dM/dPhi_k) (dPhi_k/da_k) (da_k/dtheta): one autograd call over the window's
    segments. Actions held across windows are read again by the next window: graphs retained."""
    if len(segments) != coeff_grads.shape[0]:
        raise RuntimeError(
            f"{len(segments)} advance calls but {coeff_grads.shape[0]} tape segments"
        )
    total = 0.0
    for seg, g in zip(segments, coeff_grads, strict=True):
        # the family's map, differentiably (action_to_coeffs validates on the host)
        coeffs = family._action_to_coeffs(seg.action.clamp(-1.0, 1.0))
        total = total + (coeffs * g.to("cpu", torch.float64)).sum()  # theta lives on the host
    leaves = list({id(s.leaf): s.leaf for s in segments}.values())
    grads = torch.autograd.grad(total, leaves, retain_graph=True, allow_unused=True)
    out = torch.zeros_like(like, dtype=torch.float64)
    for g in grads:
        if g is not None:
            out = out + g
    return out


@dataclass
class _RMDOptions:
    objective: str = "ce"
    sharpness: float = 50.0
    full_dev: bool = False
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        if self.objective not in DEV_OBJECTIVES:
            raise ValueError(
                f"unknown dev objective {self.objective!r}; known: {list(DEV_OBJECTIVES)}"
            )


def _rmd_window(unroll: Unroll, theta: torch.Tensor, steps: int, opts: _RMDOptions) -> Estimate:
    """The next `steps` steps of `unroll` with a tape, then one reverse pass: dM(w_end)/dtheta
    through the window's actions (the window's start held fixed)."""
    proc = unroll.process
    spend = _Spend(proc)
    tape = rmd.tape_for(proc, opts.checkpoint_every)
    segments = unroll.run(theta, steps, tape=tape)
    if unroll.diverged:
        cost = spend.total()
        return Estimate(
            torch.zeros_like(theta, dtype=torch.float64),
            math.nan,
            tape.steps,
            cost,
            True,
            True,
        )
    h = rmd.reverse(
        proc, tape, objective=opts.objective, sharpness=opts.sharpness, full_dev=opts.full_dev
    )
    grad = _theta_grad(unroll.family, segments, h.coeff_grads, theta)
    cost = spend.total()
    return Estimate(
        grad,
        float(h.objective),
        tape.steps,
        cost,
        False,
        unroll.done,
    )


def _seed_stream(seeds: Iterable[int] | None) -> Iterator[int]:
    return iter(itertools.count(0) if seeds is None else seeds)


# -- the estimators ------------------------------------------------------------------------------
class Full:
    """``full``: one fresh student per estimate, a whole episode through ``env.step`` with one RMD
    tape, then one reverse pass (teachers/l2t_dlf.py's default, the teacher class aside).
    Exact dM(w_T)/dtheta (states held constant); chaotic on long, high-lr runs."""

    name = "full"

    def __init__(self, env, policy: Policy, *, seeds: Iterable[int] | None = None, **rmd_options):
        self.env, self.policy = env, policy
        self.seeds = _seed_stream(seeds)
        self.opts = _RMDOptions(**rmd_options)

    def estimate(self, theta: torch.Tensor) -> Estimate:
        env, proc = self.env, self.env.process
        obs, _ = env.reset(seed=next(self.seeds))
        spend = _Spend(proc)
        tape = rmd.tape_for(proc, self.opts.checkpoint_every)
        segments, done, info = [], False, {}
        while not done:
            leaf = theta.detach().clone().requires_grad_(True)
            a = self.policy(leaf, torch.as_tensor(np.asarray(obs, dtype=np.float64)))
            with proc.recording(tape):
                obs, _, terminated, truncated, info = env.step(
                    a.detach().numpy().astype(np.float32)
                )
            segments.append(_Decision(leaf, a, env.process.coeffs, tape.start + tape.steps))
            done = terminated or truncated
        if info["diverged"]:
            cost = spend.total()
            zeros = torch.zeros_like(theta, dtype=torch.float64)
            return Estimate(zeros, math.nan, tape.steps, cost, True, True)
        o = self.opts
        h = rmd.reverse(
            proc, tape, objective=o.objective, sharpness=o.sharpness, full_dev=o.full_dev
        )
        grad = _theta_grad(env.family, segments, h.coeff_grads, theta)
        cost = spend.total()
        return Estimate(grad, float(h.objective), tape.steps, cost, False, True)


class Truncated:
    """``truncated``: RMD through K-step windows.

    ``continuing`` (no `start`): each estimate is the next K steps of the current student's run
    under the theta it is given (a teacher updating between estimates moves the run on with the
    new theta); at the episode's end the next estimate starts a fresh student from `seeds`.
    ``restart`` (`start`, a StudentState, e.g. a pre-trained checkpoint): each estimate is K steps
    from `start`, on the next seed's data order (the L2T-DLF demo's 200-step windows).
    With K = T (and no `start`) one window is the whole episode: ``full``, by another path.
    """

    name = "truncated"

    def __init__(
        self,
        env,
        policy: Policy,
        K: int,
        *,
        seeds: Iterable[int] | None = None,
        start: StudentState | None = None,
        **rmd_options,
    ):
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"K must be an int >= 1 (student steps per window), got {K!r}")
        self.K, self.start = K, start
        self.seeds = _seed_stream(seeds)
        self.opts = _RMDOptions(**rmd_options)
        self.unroll = Unroll(env, policy)

    def estimate(self, theta: torch.Tensor) -> Estimate:
        if self.start is not None or self.unroll.done:
            self.unroll.reset(next(self.seeds), self.start)
        return _rmd_window(self.unroll, theta, self.K, self.opts)


class PES:
    """``pes``: antithetic persistent evolution strategies over K-step truncations (Vicol, Metz,
    Sohl-Dickstein, ICML 2021, Alg. 2), forward passes only.

    `pairs` antithetic pairs of students (2 N particles) run in lock step; pair i shares its
    student seed (common random numbers) and, each truncation, draws eps_i ~ N(0, sigma^2 I):
    its particles run K steps under theta + eps_i and theta - eps_i, and the accumulator
    xi_i += eps_i (reset with the students at the episode's end). With L^+-_i the change of M
    over the truncation (module docstring),

        g = 1 / (2 N sigma^2) sum_i xi_i (L^+_i - L^-_i).

    ``persistent=False`` is truncated ES (xi_i = eps_i): the PES paper's biased baseline. A pair
    whose student diverges contributes zero and restarts at the next episode.
    """

    name = "pes"

    def __init__(
        self,
        env,
        policy: Policy,
        K: int,
        *,
        pairs: int = 4,
        sigma: float = 0.1,
        seeds: Iterable[int] | None = None,
        persistent: bool = True,
        noise_seed: int = 0,
        objective: str = "ce",
        sharpness: float = 50.0,
        full_dev: bool = False,
    ):
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"K must be an int >= 1 (student steps per truncation), got {K!r}")
        if not isinstance(pairs, int) or pairs < 1:
            raise ValueError(f"pairs must be an int >= 1, got {pairs!r}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be positive and finite, got {sigma}")
        if objective not in DEV_OBJECTIVES:
            raise ValueError(f"unknown dev objective {objective!r}; known: {list(DEV_OBJECTIVES)}")
        self.env, self.K, self.sigma, self.persistent = env, K, sigma, persistent
        self.seeds = _seed_stream(seeds)
        self.gen = torch.Generator().manual_seed(noise_seed)
        self.m_kwargs = {"kind": objective, "sharpness": sharpness, "full": full_dev}
        base = env.process
        # particle 2i runs theta + eps_i, particle 2i + 1 theta - eps_i
        self.particles = [Unroll(env, policy, base.fork()) for _ in range(2 * pairs)]
        self.pairs = pairs
        self.xi: torch.Tensor | None = None
        self.m_start: list[torch.Tensor] = []

    def _objective(self, proc: TeachingProcess) -> torch.Tensor:
        with torch.no_grad():
            return proc.dev_objective(**self.m_kwargs)

    def _new_episode(self, theta: torch.Tensor, spend: _Spend) -> None:
        for i in range(self.pairs):
            seed = next(self.seeds)
            for p in self.particles[2 * i : 2 * i + 2]:
                p.reset(seed)
        m0 = [self._objective(p.process) for p in self.particles]
        self.m_start = m0
        self.xi = torch.zeros(self.pairs, theta.numel(), dtype=torch.float64)

    def estimate(self, theta: torch.Tensor) -> Estimate:
        theta = theta.detach().to(torch.float64)
        spend = _Spend(self.env.process)
        if self.xi is None or any(p.done for p in self.particles):
            self._new_episode(theta, spend)
        eps = self.sigma * torch.randn(self.pairs, theta.numel(), generator=self.gen).double()
        self.xi = self.xi + eps if self.persistent else eps
        steps = 0
        for j, p in enumerate(self.particles):
            sign = 1.0 if j % 2 == 0 else -1.0
            before = p.step
            p.run(theta + sign * eps[j // 2], self.K, grad=False)
            steps += p.step - before
        m_end = [self._objective(p.process) for p in self.particles]
        losses = (torch.stack(m_end) - torch.stack(self.m_start)).double().cpu()
        self.m_start = m_end
        diverged = torch.tensor([p.diverged for p in self.particles]) | ~torch.isfinite(losses)
        bad = (diverged[0::2] | diverged[1::2]).tolist()
        diff = torch.where(
            torch.tensor(bad),
            torch.zeros(self.pairs, dtype=torch.float64),
            losses[0::2] - losses[1::2],
        )
        per_pair = self.xi * diff.unsqueeze(1) / (2 * self.sigma**2)
        self.last_pair_estimates = per_pair
        """(pairs, P): each pair's estimate of the last call; their mean is ``grad``"""
        grad = per_pair.mean(0)
        ok = [not b for b in bad]
        finite = torch.stack(m_end).double().cpu()[[2 * i for i in range(self.pairs) if ok[i]]]
        objective = float(finite.mean()) if len(finite) else math.nan
        episode_end = any(p.done for p in self.particles)
        cost = spend.total()
        return Estimate(grad, objective, steps, cost, all(bad), episode_end)


ESTIMATORS: dict[str, type] = {"full": Full, "truncated": Truncated, "pes": PES}
"""estimator name -> class; each takes (env, policy, ...) and answers ``estimate(theta)``"""


def make_estimator(name: str, env, policy: Policy, **options):
    """An estimator by name (``online`` is a teaching procedure: :func:`online`)."""
    if name not in ESTIMATORS:
        from envs.losses import unknown_name_error

        raise unknown_name_error("estimator", name, [*ESTIMATORS, "online"])
    return ESTIMATORS[name](env, policy, **options)


# -- learning while teaching ---------------------------------------------------------------------
@dataclass
class OnlineResult:
    """What :func:`online` leaves besides the taught student (in ``env.process``)."""

    theta: torch.Tensor
    """the teacher's parameters after the last update"""
    rows: list[dict] = field(default_factory=list)
    """one per update: step, objective, raw grad norm, cost"""
    cost: float = 0.0
    diverged: bool = False


class _Adam:
    """Adam as a function of values (theta is never updated in place: actions held from an
    earlier theta still need their graphs)."""

    def __init__(self, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = self.v = None
        self.t = 0

    def __call__(self, theta: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.m is None:
            self.m, self.v = torch.zeros_like(g), torch.zeros_like(g)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        return theta - self.lr * m_hat / (v_hat.sqrt() + self.eps)


def online(
    env,
    policy: Policy,
    theta: torch.Tensor,
    seed: int,
    *,
    K: int,
    meta_lr: float,
    optimizer: str = "adam",
    clip: float | None = None,
    normalize: bool = False,
    **rmd_options,
) -> OnlineResult:
    """``online``: teach one fresh student (seed `seed`) and learn while teaching: every K student
    steps, the truncated RMD estimate of the window just taught (M on the process's dev subset,
    the ``meta`` examples) moves theta by `optimizer` ("adam" or "sgd") at `meta_lr`, after
    :func:`condition`. The student ends in ``env.process``. With ``meta_lr = 0`` theta never
    moves and the student is the untrained teacher's, to the bit (for K whose cuts before each
    decision are at least ``STATS_WINDOW`` steps: :class:`Unroll`)."""
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an int >= 1 (student steps per update), got {K!r}")
    if not (meta_lr >= 0 and math.isfinite(meta_lr)):
        raise ValueError(f"meta_lr must be >= 0 and finite, got {meta_lr}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}; known: ['adam', 'sgd']")
    opts = _RMDOptions(**rmd_options)
    step = _Adam(meta_lr) if optimizer == "adam" else (lambda th, g: th - meta_lr * g)
    theta = theta.detach().to(torch.float64)
    unroll = Unroll(env, policy)
    unroll.reset(seed)
    result = OnlineResult(theta)
    while not unroll.done:
        e = _rmd_window(unroll, theta, K, opts)
        result.cost += e.cost
        if e.diverged:
            result.diverged = True
            break
        g, norm = condition(e.grad, clip=clip, normalize=normalize)
        theta = step(theta, g)
        result.rows.append(
            {"step": unroll.step, "objective": e.objective, "grad_norm": norm, "cost": e.cost}
        )
    result.theta = theta
    return result
