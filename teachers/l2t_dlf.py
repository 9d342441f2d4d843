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
is never touched. Selection: every ``select_every`` episodes (and before the first) the current
teacher teaches ``select_seeds`` fresh students, scored by their error on dev's ``select`` part; the best
candidate, the untrained teacher included, is kept. Selection students count against the budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from envs.loss_teaching import LossTeachingEnv
from envs.process import DEV_OBJECTIVES
from teachers import rmd
from teachers.base import FitRun, Teacher

FORMS = ("attention", "mlp")


@dataclass
class L2TDLFConfig:
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
    select_every: int = 5
    """candidate evaluation every this many training episodes"""
    select_seeds: int = 2
    """fresh students per candidate evaluation (error on dev's ``select`` part)"""
    init_seed: int = 0
    """seed of the teacher's initial parameters"""
    family: str = "bilinear"
    """the loss family; only "bilinear" is supported"""

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown teacher form {self.form!r}; known: {list(FORMS)}")
        if self.family != "bilinear":
            raise ValueError(
                f"L2T-DLF teaches the 'bilinear' loss family, got family={self.family!r}"
            )
        if self.objective not in DEV_OBJECTIVES:
            raise ValueError(
                f"unknown dev objective {self.objective!r}; known: {list(DEV_OBJECTIVES)}"
            )
        for key in ("memory", "hidden", "checkpoint_every", "select_every", "select_seeds"):
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
    def build(self, obs_dim: int, action_dim: int) -> None:
        """Draw theta for an observation of `obs_dim` features and `action_dim` coefficients."""
        c = self.config
        gen = torch.Generator().manual_seed(c["init_seed"])
        n_in = obs_dim + 1  # + a constant feature: attention/activations get a bias

        def normal(*shape: int, std: float) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

        if c["form"] == "attention":
            self.params = {
                "V": normal(c["memory"], n_in, std=1.0 / math.sqrt(n_in)),
                "M": normal(c["memory"], action_dim, std=c["init_scale"]).clamp(-1, 1),
            }
        else:
            self.params = {
                "W1": normal(c["hidden"], n_in, std=1.0 / math.sqrt(n_in)),
                "W2": normal(action_dim, c["hidden"], std=c["init_scale"] / math.sqrt(c["hidden"])),
            }
        for p in self.params.values():
            p.requires_grad_(True)

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

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, run: FitRun) -> None:
        """Train theta by RMD over fresh-student episodes within the budget (forward steps of
        training and selection episodes; the reverse pass's recomputation is compute, counted in
        wall time only). Keeps the best candidate on dev. A callback's stop ends the fit after
        the update (or selection) it saw: no further episode, and no last selection."""
        c = self.config
        env = run.spec.make_env()
        proc = env.process
        episode = run.spec.episode_steps
        if not self.params:
            self.build(env.observation_space.shape[0], env.family.dim)
        opt = torch.optim.Adam(list(self.params.values()), lr=c["teacher_lr"])
        budget, report = run.budget, run.report
        base = proc.student_steps
        spent = lambda: proc.student_steps - base  # noqa: E731
        select_cost = c["select_seeds"] * episode

        best: tuple[float, float] | None = None
        best_state = self._snapshot()
        updates = 0

        def select() -> None:
            nonlocal best, best_state
            score = self._dev_score(
                env, [run.seeds.nth(5_000 + j) for j in range(c["select_seeds"])]
            )
            row = {"kind": "select", "updates": updates, "student_steps": spent(), **score}
            if best is None or (score["dev_error"], score["dev_loss"]) < best:
                best, best_state = (score["dev_error"], score["dev_loss"]), self._snapshot()
                row["best"] = True
            run.log(row)

        if spent() + select_cost <= budget:
            select()  # the untrained teacher is the first candidate
        ep = 0
        while not run.stopped and spent() + episode <= budget:
            t0 = time.perf_counter()
            rows = self.train_episode(env, run.seeds.nth(ep), opt)
            ep += 1
            updates += sum(r["updated"] for r in rows)
            for r in rows:
                r.update(
                    kind="train",
                    episode=ep,
                    student_steps=spent(),
                    episode_time=time.perf_counter() - t0,
                    rss_mb=resident_mb(),
                )
                run.log(r)
            if not run.stopped and ep % c["select_every"] == 0 and spent() + select_cost <= budget:
                select()
        last_unscored = updates and ep % c["select_every"] != 0
        if (
            best is not None
            and last_unscored
            and not run.stopped
            and spent() + select_cost <= budget
        ):
            select()  # the last candidate too
        self._restore(best_state)
        self.best_dev_error = None if best is None else best[0]
        report.student_steps = spent()
        report.episodes = ep

    def train_episode(
        self, env: LossTeachingEnv, seed: int, opt: torch.optim.Optimizer
    ) -> list[dict]:
        """One fresh student (seed `seed`) under the current teacher, and a theta update by
        `opt` per RMD window (one window = the whole episode unless ``window`` is set). The
        clipped gradient stays in ``p.grad`` for inspection. One row per window."""
        c = self.config
        proc = env.process
        _, half = env.family.center_and_half_range()
        half = half.to(torch.float64)
        obs, _ = env.reset(seed=seed)
        window = c["window"] or env.horizon
        rows = []
        done = False
        while not done:
            tape = rmd.Tape(c["checkpoint_every"])
            actions = []
            for _ in range(window):
                a = self.action(torch.as_tensor(obs))
                actions.append(a)
                obs, _, terminated, truncated, info = env.step(
                    a.detach().numpy().astype(np.float32), tape=tape
                )
                done = terminated or truncated
                if done:
                    break
            row = {"seed": seed, "diverged": bool(info["diverged"]), "updated": False}
            row["dev_subset_accuracy"] = info["dev_accuracy"]
            row["tape_mb"] = tape.nbytes() / 2**20
            if not row["diverged"]:
                h = rmd.reverse(
                    proc,
                    tape,
                    objective=c["objective"],
                    sharpness=c["sharpness"],
                    full_dev=c["full_dev"],
                )
                grad_a = h.coeff_grads.to(torch.float64) * half  # d coeffs / d a = half_range
                opt.zero_grad(set_to_none=True)
                torch.autograd.backward(torch.stack(actions), grad_a)
                params = list(self.params.values())
                norm = torch.nn.utils.clip_grad_norm_(params, c["clip"])
                row.update(
                    objective=float(h.objective), objective_kind=h.kind, grad_norm=float(norm)
                )
                if math.isfinite(row["grad_norm"]):
                    opt.step()
                    row["updated"] = True
                    if "M" in self.params:
                        with torch.no_grad():
                            self.params["M"].clamp_(-1.0, 1.0)
            rows.append(row)
            del tape
        return rows

    def _dev_score(self, env: LossTeachingEnv, seeds: list[int]) -> dict:
        """Mean error and loss on dev's ``select`` part of fresh students taught by the current
        teacher: selection reads the held-out part (the fit's hypergradients read ``meta``), never
        test."""
        errors, losses = [], []
        for s in seeds:
            *_, (_, _, info) = self.rollout(env, s)
            diverged = info["diverged"]
            m = env.process.evaluate("select")
            errors.append(1.0 if diverged else m["error"])
            losses.append(math.inf if diverged else m["loss"])
        return {"dev_error": float(np.mean(errors)), "dev_loss": float(np.mean(losses))}

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
