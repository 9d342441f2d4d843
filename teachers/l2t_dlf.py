"""L2T-DLF (Wu et al., NeurIPS 2018): a teacher that outputs the student's loss coefficients and
is trained by gradient, through the student's whole training run (reverse-mode differentiation).

Teacher model, attention form (the paper's Fig. 2 caption): Phi_t = mu_theta(s_t) = W softmax(V s_t),
a memory of N coefficient settings mixed by state-dependent attention. We work in the action
space of the ``bilinear`` family, whose coefficients are an affine map of the action
(coeffs = center + half_range * a, ``Bilinear.center_and_half_range``):

    alpha_t = softmax(V [s_t, 1])        V in R^{N x (n+1)}, s_t the env's observation
    a_t     = M^T alpha_t                M in [-1, 1]^{N x d}: a memory of N actions
    Phi_t   = center + half * a_t = (center 1^T + half * M^T) alpha_t   = W' softmax(V s_t)

so the paper's form holds exactly in coefficient space, and a_t, a convex combination of points
of the box, is always a valid action (``act`` needs no squashing). M is clipped to [-1, 1] after
each Adam step. Initialisation: M_i small *distinct* noise around 0 (= the family's default loss)
and V small noise, so every parameter gets a non-zero hypergradient from the first episode. (The
official demo's gate starts at exactly zero, so its state pathway never learns.) Option ``form="mlp"``: a_t = tanh(W2 tanh(W1 [s_t, 1])), a
correction to the default loss, W2 small but non-zero for the same reason.

Training (Algorithm 1): each episode trains a fresh student (its own seed) under the current
teacher through the env; the RMD engine (teachers/rmd.py) returns dM/dPhi_k for every env step k,
one autograd call carries them into theta, the gradient is clipped to norm ``clip`` (the hyper-
gradient of a 600-step run at a large student learning rate measured 1e2-1e3), and
Adam updates theta. M is a smooth dev objective (``objective``: dev cross-entropy by default,
the demo's sigmoid-smoothed error, or the expected error) on the env's fixed dev subset; test data
is never touched. Selection is the fit skeleton's, the same for every learning teacher
(``teachers.base.Selection``, options ``select_every`` / ``select_every_updates`` / ``select_seeds``
inherited from ``SelectOptions``): candidates, the untrained teacher included, teach held-out
students (``SeedPlan.held_out``), scored by their error on dev's ``select`` part; the best is
kept. ``select_every_updates=5`` is this teacher's former rule (every 5 episodes).

Budget: the fit skeleton (``Teacher.fit``) runs the updates while the next fits, charged by the
process: a training episode costs its T forward steps, T reverse steps, the dev gradient and any
recomputed steps (:meth:`L2TDLFTeacher.episode_cost`: 1,982 = 3.3 T on the default spec, so a
budget buys about a third of the episodes it bought when only the forward steps were counted;
benchmarks/budget_episodes.py), a selection its students' training steps.

Estimators (option ``estimator``; teachers/estimators.py): the whole-run hypergradient is exact
but chaotic on long high-lr runs, so an update may instead use K-step windows (``truncated``,
continuing along a run or restarting from a checkpoint), learn while teaching (``online``), or
antithetic persistent ES (``pes``). Each windowed update declares its cost from the counter's
prices (:meth:`L2TDLFTeacher._window_cost`) before it runs; an "episode" for the selection
cadence is ceil(T / K) windows. ``family="compact"`` (a non-affine map: tau = 2^a) sends the
hypergradient through the family's own action map (:func:`backward_through_family`), so a
gradient teacher and the RL teachers can act on the same action space.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from envs.cost import price
from envs.loss_teaching import LossTeachingEnv
from envs.process import DEV_OBJECTIVES
from teachers import estimators, rmd
from teachers.base import FitRun, SelectOptions, Teacher

FORMS = ("attention", "mlp")
FAMILIES = ("bilinear", "compact")
"""families L2T-DLF can act on: any point of [-1, 1]^d is a valid action (the attention form's
convex mixes stay in the box); the hypergradient goes through the family's own action map"""
ESTIMATORS = ("full", "truncated", "online", "pes")
"""hypergradient estimators (teachers/estimators.py; the ``estimator`` option)"""


@dataclass
class L2TDLFConfig(SelectOptions):
    """The L2T-DLF teacher's options (= its constructor's keywords)."""

    form: str = "attention"
    """"attention" (the paper's W softmax(V s)) or "mlp" """
    memory: int = 8
    """N, the number of memorised actions (attention form)"""
    hidden: int = 32
    """width of the MLP form"""
    init_scale: float = 0.01
    """standard deviation of the initial memory / output weights around the default loss;
    non-zero so that every parameter gets a gradient, small because the noise itself costs
    accuracy (0.05 -> 9.3 % dev error, 0.01 -> 6.4 %, mnist5k/mlp at lr 0.4;
    results/l2t_dlf/README.md)"""
    teacher_lr: float = 0.002
    """Adam learning rate on theta (2e-3; 1e-2 wrecked students in results/l2t_dlf)"""
    clip: float = 1.0
    """the theta-gradient is rescaled to at most this norm before each Adam step"""
    objective: str = "ce"
    """dev surrogate M differentiated by RMD: "ce", "smooth-error" or "expected-error" """
    sharpness: float = 50.0
    """k of the smooth error, 2 sigmoid(k (max_j p_j - p_y)) - 1"""
    full_dev: bool = False
    """M on the whole ``meta`` part of dev (never ``select``) instead of the env's fixed dev subset"""
    window: int | None = None
    """None = full-episode RMD; w = update theta after every w env steps by RMD through that
    window only (truncated, biased towards greedy losses)"""
    checkpoint_every: int = 1
    """RMD memory mode: 1 = every-step checkpoints; k > 1 = recompute"""
    init_seed: int = 0
    """seed of the teacher's initial parameters"""
    family: str = "bilinear"
    """the loss family acted on: "bilinear" (the paper's) or "compact" (the RL teachers' five
    knobs: gradient vs RL on one action space); either with the env's ``lr_action``"""
    estimator: str = "full"
    """the hypergradient of one update (teachers/estimators.py): "full" (RMD through a whole
    episode, the paper's and the default: old results replay), "truncated" (RMD through the next
    ``K`` steps of a run, or from a checkpoint: ``restart_at``), "online" (fitted as
    "truncated", and it keeps learning while it teaches: every ``K`` steps of a taught student
    theta moves by the window's hypergradient on ``meta`` at ``meta_lr``), "pes" (antithetic
    persistent ES over ``K``-step truncations, ``pairs`` and ``sigma``)"""
    K: int = 200
    """student steps per window of "truncated", "online" and "pes" (a multiple of the env's
    interval for "online")"""
    restart_at: int | None = None
    """"truncated": None = windows continue along each student's run; s = every window restarts
    from one checkpoint, a student trained s steps with the family's default loss (the L2T-DLF
    demo's recipe: 200-step windows from a pre-trained student)"""
    pairs: int = 2
    """"pes": antithetic pairs of students per estimate"""
    sigma: float = 0.1
    """"pes": standard deviation of the perturbation of theta"""
    normalize: bool = False
    """each update's theta-gradient scaled to unit norm (then ``teacher_lr`` is the Adam step
    on a direction); else clipped to ``clip``"""
    meta_lr: float | None = None
    """"online": Adam learning rate of the updates made while teaching (None = ``teacher_lr``;
    0 = the fitted teacher frozen, to the bit)"""

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown teacher form {self.form!r}; known: {list(FORMS)}")
        if self.family not in FAMILIES:
            raise ValueError(
                f"L2T-DLF teaches the {' or '.join(map(repr, FAMILIES))} loss family, "
                f"got family={self.family!r}"
            )
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; known: {list(ESTIMATORS)}")
        if self.form == "mlp" and self.family != "bilinear":
            raise ValueError(
                "the mlp form corrects the default action 0 of 'bilinear'; use form='attention' "
                f"on {self.family!r}"
            )
        for key in ("K", "pairs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if self.restart_at is not None and (
            not isinstance(self.restart_at, int) or self.restart_at < 0
        ):
            raise ValueError(f"restart_at must be None or an int >= 0, got {self.restart_at!r}")
        if self.restart_at is not None and self.estimator != "truncated":
            raise ValueError(
                f"restart_at is an option of estimator='truncated', not {self.estimator!r}"
            )
        if self.estimator != "full" and self.window is not None:
            raise ValueError(
                f"window is the full estimator's option; use K with estimator={self.estimator!r}"
            )
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be positive and finite, got {self.sigma}")
        if self.meta_lr is not None and not (self.meta_lr >= 0 and math.isfinite(self.meta_lr)):
            raise ValueError(f"meta_lr must be None or >= 0 and finite, got {self.meta_lr}")
        if self.objective not in DEV_OBJECTIVES:
            raise ValueError(
                f"unknown dev objective {self.objective!r}; known: {list(DEV_OBJECTIVES)}"
            )
        for key in ("memory", "hidden", "checkpoint_every"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise ValueError(
                f"window must be None (full episode) or an int >= 1, got {self.window!r}"
            )
        if not (self.init_scale > 0 and self.teacher_lr > 0 and self.clip > 0):
            raise ValueError(
                f"init_scale, teacher_lr and clip must be positive, got {self.init_scale}, "
                f"{self.teacher_lr}, {self.clip}"
            )


def backward_through_family(family, actions: list[torch.Tensor], coeff_grads: torch.Tensor):
    """Accumulate sum_k (dM/dPhi_k) (dPhi_k/da_k) (da_k/dtheta) into theta's ``.grad``: an affine
    family (bilinear) by its half-range, any other (compact's 2^a temperature) through its own
    action map, differentiably."""
    grads = coeff_grads.to("cpu", torch.float64)
    a = torch.stack(actions)
    try:
        _, half = family.center_and_half_range()
    except AttributeError:
        coeffs = torch.stack([family._action_to_coeffs(x.clamp(-1.0, 1.0)) for x in a.unbind()])
        torch.autograd.backward(coeffs, grads)
        return
    torch.autograd.backward(a, grads * half.to(torch.float64))  # d coeffs / d a = half_range


def resident_mb() -> float:
    """Current resident set (Linux), for the memory-does-not-grow check; NaN elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


class L2TDLFTeacher(Teacher):
    """The L2T-DLF teacher on the ``bilinear`` loss family; options in :class:`L2TDLFConfig`."""

    name = "l2t-dlf"
    family = "bilinear"
    Config = L2TDLFConfig

    def __init__(self, config: L2TDLFConfig | None = None, /, **options) -> None:
        super().__init__(config, **options)
        self.params: dict[str, torch.Tensor] = {}
        self.best_dev_error: float | None = None

    # -- the teacher model --------------------------------------------------------------------
    def build(self, obs_dim: int, action_dim: int, center: np.ndarray | None = None) -> None:
        """Draw theta for an observation of `obs_dim` features and `action_dim` coefficients;
        the memories start around `center` (the family's default action; 0 = bilinear's)."""
        c = self.config
        gen = torch.Generator().manual_seed(c["init_seed"])
        n_in = obs_dim + 1  # + a constant feature: attention/activations get a bias

        def normal(*shape: int, std: float) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

        if c["form"] == "attention":
            self.params = {
                "V": normal(c["memory"], n_in, std=1.0 / math.sqrt(n_in)),
                "M": self._around(normal(c["memory"], action_dim, std=c["init_scale"]), center),
            }
        else:
            self.params = {
                "W1": normal(c["hidden"], n_in, std=1.0 / math.sqrt(n_in)),
                "W2": normal(action_dim, c["hidden"], std=c["init_scale"] / math.sqrt(c["hidden"])),
            }
        for p in self.params.values():
            p.requires_grad_(True)

    @staticmethod
    def _around(noise: torch.Tensor, center: np.ndarray | None) -> torch.Tensor:
        if center is not None and np.any(center != 0):  # 0 + noise would be noise to the bit
            noise = noise + torch.as_tensor(center, dtype=torch.float64)
        return noise.clamp(-1, 1)

    def action(self, obs: torch.Tensor) -> torch.Tensor:
        """a_t = mu_theta(s_t) in [-1, 1]^d, differentiable in theta (float64)."""
        if not self.params:
            raise RuntimeError("the teacher has no parameters yet: fit() it, or load() one")
        s = torch.cat([obs.to(torch.float64).flatten(), obs.new_ones(1, dtype=torch.float64)])
        if s.shape[0] != self._obs_dim() + 1:
            raise ValueError(
                f"this teacher reads observations of {self._obs_dim()} features, "
                f"got {s.shape[0] - 1}; was it fitted on another state function?"
            )
        if self.config["form"] == "attention":
            alpha = torch.softmax(self.params["V"] @ s, dim=0)  # softmax(V s_t)
            return self.params["M"].T @ alpha  # M^T alpha: a convex mix of memorised actions
        h = torch.tanh(self.params["W1"] @ s)
        return torch.tanh(self.params["W2"] @ h)

    def _obs_dim(self) -> int:
        first = self.params["V"] if "V" in self.params else self.params["W1"]
        return first.shape[1] - 1

    def act(self, observation: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            a = self.action(torch.as_tensor(np.asarray(observation, dtype=np.float64)))
        return a.numpy().astype(np.float32)

    # -- fitting: the skeleton's hooks (teachers.base.Teacher.fit) --------------------------
    def setup(self, run: FitRun) -> None:
        """The env, theta (unless loaded) and Adam."""
        self._env = env = run.make_env()
        if not self.params:
            self.build(env.observation_space.shape[0], env.family.dim, env.family.default_action())
        self._opt = torch.optim.Adam(list(self.params.values()), lr=self.config["teacher_lr"])
        self._setup_estimator(run, env)
        self._episodes = 0
        self._train_cost = self.episode_cost(env.unwrapped.process, run.spec)

    def episode_cost(self, process, spec) -> float:
        """What one training episode is charged: its forward steps, then per RMD window the dev
        gradient, the reverse steps and (checkpoint_every = k > 1) the recomputed steps,
        w - ceil(w / k) for a window of w steps."""
        c = self.config
        steps, per_window = spec.episode_steps, (c["window"] or spec.horizon) * spec.interval
        n_dev = len(process.data.y_dev) if c["full_dev"] else process.dev_subset
        cost = price("train", steps) + price("reverse", steps)
        for start in range(0, steps, per_window):
            w = min(per_window, steps - start)
            cost += price("recompute", w - math.ceil(w / c["checkpoint_every"]))
            cost += price("dev_grad", n_dev / process.batch_size)
        return cost

    def student_cost(self, run: FitRun) -> float:
        """A taught student: its episode's steps, and for ``online`` the reverse pass (with its
        recompute and dev gradient) of every K-step window but the last, which teaching runs."""
        cost = price("train", run.spec.episode_steps)
        c = self.config
        if c["estimator"] != "online":
            return cost
        process, k = self._env.unwrapped.process, c["K"]
        n_dev = len(process.data.y_dev) if c["full_dev"] else process.dev_subset
        updates = math.ceil(run.spec.episode_steps / k) - 1
        window = (
            price("reverse", k)
            + price("recompute", k - math.ceil(k / c["checkpoint_every"]))
            + price("dev_grad", n_dev / process.batch_size)
        )
        return cost + updates * window

    def next_update(self, run: FitRun) -> float | None:
        """One training episode (Algorithm 1), or one window of a windowed estimator; the
        skeleton scores candidates around them."""
        return self._train_cost if self._est is None else self._window_cost()

    def update(self, run: FitRun) -> list[dict]:
        t0 = time.perf_counter()
        if self._est is None:
            rows = self.train_episode(self._env, run.seeds.nth(self._episodes), self._opt)
            self._episodes += 1
        else:
            rows = self._estimated_update(run)
            if rows[0]["kind"] == "checkpoint":
                return rows
            self._windows += 1
            self._episodes = self._windows // self._per_episode  # whole episodes of windows
        run.report.episodes = self._episodes
        for r in rows:
            r.update(
                kind="train",
                episode=self._episodes,
                episode_time=time.perf_counter() - t0,
                rss_mb=resident_mb(),
            )
        return rows

    def finish(self, run: FitRun) -> None:
        self._env = self._opt = self._est = None

    def train_episode(
        self, env: LossTeachingEnv, seed: int, opt: torch.optim.Optimizer
    ) -> list[dict]:
        """One fresh student (seed `seed`) under the current teacher, and a theta update by
        `opt` per RMD window (one window = the whole episode unless ``window`` is set): the
        base's episode loop, each window's env steps recorded on a tape through the process.
        The clipped gradient stays in ``p.grad`` for inspection. One row per window."""
        c = self.config
        proc = env.unwrapped.process
        window = c["window"] or env.horizon
        actions: list[torch.Tensor] = []

        def decide(obs: np.ndarray) -> np.ndarray:
            a = self.action(torch.as_tensor(obs))  # a function of theta
            actions.append(a)
            return a.detach().numpy().astype(np.float32)

        steps = self.rollout(env, seed, decide)
        next(steps)  # the reset row
        rows = []
        done = False
        while not done:
            tape = rmd.tape_for(proc, c["checkpoint_every"])
            actions.clear()
            with proc.recording(tape):
                for step in itertools.islice(steps, window):
                    done, info = step.done, step.info
            row = {"seed": seed, "diverged": bool(info["diverged"]), "updated": False}
            row["dev_subset_accuracy"] = info["dev_accuracy"]
            row["tape_mb"] = tape.nbytes() / 2**20
            if not row["diverged"]:
                h, stepped = self._reverse_and_step(proc, tape, env.family, actions, opt)
                row.update(objective=float(h.objective), objective_kind=h.kind, **stepped)
            rows.append(row)
            del tape
        return rows

    def _reverse_and_step(self, proc, tape: rmd.Tape, family, actions, opt) -> tuple:
        """dM/dPhi by RMD over the recorded window, carried through the family's map and the
        teacher to theta (``backward_through_family``), then one conditioned step: (the
        hypergradient, the step's log row)."""
        c = self.config
        h = rmd.reverse(
            proc, tape, objective=c["objective"], sharpness=c["sharpness"], full_dev=c["full_dev"]
        )
        opt.zero_grad(set_to_none=True)
        backward_through_family(family, actions, h.coeff_grads)
        return h, self._step(opt)

    def _step(self, opt: torch.optim.Optimizer) -> dict:
        """Condition the gradient in ``p.grad`` (clip to ``clip``, or unit norm with
        ``normalize``), take the optimiser's step unless it is non-finite, keep M in the box."""
        params = list(self.params.values())
        if self.config["normalize"]:
            norm = torch.nn.utils.clip_grad_norm_(params, math.inf)
            if math.isfinite(norm) and norm > 0:
                for p in params:
                    p.grad.div_(norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config["clip"])
        row = {"grad_norm": float(norm), "updated": False}
        if math.isfinite(row["grad_norm"]):
            opt.step()
            row["updated"] = True
            if "M" in self.params:
                with torch.no_grad():
                    self.params["M"].clamp_(-1.0, 1.0)
        return row

    # -- the estimators other than "full" (teachers/estimators.py) -----------------------------
    def _setup_estimator(self, run: FitRun, env: LossTeachingEnv) -> None:
        """The estimator object of a windowed ``estimator`` (None for "full", which is
        :meth:`train_episode`), on the fit's env and the seed plan's students."""
        c, spec = self.config, run.spec
        self._est, self._windows, self._start = None, 0, None
        if c["estimator"] == "full":
            return
        T = spec.episode_steps
        if c["estimator"] == "online" and c["K"] % spec.interval:
            raise ValueError(
                f"online updates every K = {c['K']} steps: a multiple of the interval "
                f"({spec.interval}) is needed, the teacher acts once per interval"
            )
        if c["restart_at"] is not None and c["restart_at"] >= T:
            raise ValueError(
                f"restart_at = {c['restart_at']} is not before the episode's end ({T})"
            )
        self._policy, _ = estimators.teacher_policy(self)
        seeds = (run.seeds.nth(i) for i in itertools.count())
        rmd_options = {k: c[k] for k in ("objective", "sharpness", "full_dev")}
        raw = env.unwrapped
        if c["estimator"] == "pes":
            self._est = estimators.PES(
                raw,
                self._policy,
                c["K"],
                pairs=c["pairs"],
                sigma=c["sigma"],
                seeds=seeds,
                noise_seed=run.seed,
                **rmd_options,
            )
        else:  # truncated, and online's fit
            self._est = estimators.Truncated(
                raw,
                self._policy,
                c["K"],
                seeds=seeds,
                checkpoint_every=c["checkpoint_every"],
                **rmd_options,
            )
        span = T - (c["restart_at"] or 0)
        self._per_episode = math.ceil(span / c["K"])
        """windows per episode (``report.episodes`` counts whole episodes of them)"""

    def _window_cost(self) -> float:
        """The declared cost of the next estimate, from the counter's prices: its forward steps
        (2 N particles for PES) and, for RMD, its reverse and recomputed steps and dev gradient;
        PES reads M before (new students) and after each truncation."""
        c, est = self.config, self._est
        proc, spec_T = self._env.unwrapped.process, self._est_steps()
        n_dev = len(proc.data.y_dev) if c["full_dev"] else proc.dev_subset
        m = price("dev_grad", n_dev / proc.batch_size)
        if c["restart_at"] is not None and self._start is None:
            return price("train", c["restart_at"])  # the checkpoint
        if isinstance(est, estimators.PES):
            new = est.xi is None or any(p.done for p in est.particles)
            at = 0 if new else max(p.step for p in est.particles if not p.done)
            w = min(c["K"], spec_T - at)
            return 2 * c["pairs"] * (price("train", w) + m * (2 if new else 1))
        unroll = est.unroll
        at = 0 if unroll.done else unroll.step  # continuing: where the run stands
        if c["restart_at"] is not None:
            at = c["restart_at"]
        w = min(c["K"], spec_T - at)
        k = c["checkpoint_every"]
        return (
            price("train", w) + price("reverse", w) + price("recompute", w - math.ceil(w / k)) + m
        )

    def _est_steps(self) -> int:
        env = self._env.unwrapped
        return env.horizon * env.interval

    def _estimated_update(self, run: FitRun) -> list[dict]:
        """One estimate of the windowed estimator at the current theta, then one conditioned
        Adam step (or, first, the restart checkpoint: a student trained ``restart_at`` steps
        with the family's default loss)."""
        c = self.config
        if c["restart_at"] is not None and self._start is None:
            proc = self._env.unwrapped.process
            proc.reset(run.seeds.draw())
            default = proc.family.action_to_coeffs(proc.family.default_action())
            if c["restart_at"]:
                proc.advance(default, c["restart_at"])
            self._start = self._est.start = proc.state.clone()
            return [{"kind": "checkpoint", "step": c["restart_at"]}]
        theta = torch.cat([p.detach().flatten() for p in self.params.values()])
        e = self._est.estimate(theta)
        row = {
            "kind": "train",
            "estimator": c["estimator"],
            "diverged": e.diverged,
            "objective": e.objective,
            "window_steps": e.steps,
            "updated": False,
        }
        if not e.diverged:
            self._opt.zero_grad(set_to_none=True)
            for p, g in zip(
                self.params.values(),
                torch.split(e.grad, [p.numel() for p in self.params.values()]),
                strict=True,
            ):
                p.grad = g.view_as(p).clone()
            row.update(self._step(self._opt))
        return [row]

    # -- online: learning while teaching -------------------------------------------------------
    def rollout(self, env, seed, decide=None):
        """The base's episode loop; an ``online`` teacher teaching as it is (no `decide`) also
        learns while it teaches: every ``K`` student steps theta moves by the RMD hypergradient
        of the window just taught (M on ``meta``, charged to the process), by Adam at
        ``meta_lr``. Each student starts from the fitted theta, which is restored after it."""
        if decide is not None or self.config["estimator"] != "online" or not self.params:
            yield from super().rollout(env, seed, decide)
            return
        c = self.config
        proc = env.unwrapped.process
        per = c["K"] // env.unwrapped.interval
        if per < 1 or c["K"] % env.unwrapped.interval:
            raise ValueError(
                f"online updates every K = {c['K']} steps: a multiple of the interval "
                f"({env.unwrapped.interval}) is needed"
            )
        fitted = self._snapshot()
        meta_lr = c["teacher_lr"] if c["meta_lr"] is None else c["meta_lr"]
        opt = torch.optim.Adam(list(self.params.values()), lr=meta_lr)
        actions: list[torch.Tensor] = []

        def act(obs: np.ndarray) -> np.ndarray:
            a = self.action(torch.as_tensor(obs))
            actions.append(a)
            return a.detach().numpy().astype(np.float32)

        steps = super().rollout(env, seed, act)
        try:
            yield next(steps)
            done = False
            while not done:
                tape = rmd.tape_for(proc, c["checkpoint_every"])
                actions.clear()
                with proc.recording(tape):
                    for step in itertools.islice(steps, per):
                        done, diverged = step.done, step.info["diverged"]
                        yield step
                if done or diverged:  # an update after the last window would teach nobody
                    continue
                self._reverse_and_step(proc, tape, env.unwrapped.family, actions, opt)
        finally:  # in place: a fit's optimiser holds these tensors
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(fitted[k])

    # -- persistence --------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in self.params.items()}

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        self.params = {k: v.clone().requires_grad_(True) for k, v in state.items()}

    def state_dict(self) -> dict:
        return {"params": self._snapshot(), "best_dev_error": self.best_dev_error}

    def load_state_dict(self, state: dict) -> None:
        expected = {"attention": {"V", "M"}, "mlp": {"W1", "W2"}}[self.config["form"]]
        if set(state["params"]) != expected:
            raise ValueError(
                f"a {self.config['form']!r} teacher has parameters {sorted(expected)}, "
                f"the state has {sorted(state['params'])}"
            )
        self._restore(state["params"])
        self.best_dev_error = state.get("best_dev_error")
