"""REINFORCE teacher: a Gaussian policy over the action box, learned from whole episodes.

In the spirit of L2T's data teacher (Fan et al., ICLR 2018: Monte-Carlo policy gradient, a
running-mean baseline, Adam), acting on loss coefficients instead of example selection. For each
batch of episodes (Williams 1992):

    G_t   = sum_{k >= t} gamma^(k - t) r_k                         returns-to-go
    G~_t  = (G_t - m_G) / sigma_G                                  return normalisation
    A_t   = G~_t - b(s_t)                                          baseline: learned V(s_t) or
                                                                   a running mean per step index t
    loss  = -mean_t[ log pi(a_t | s_t) A_t ] - c_H H[pi] + c_V mean_t (V(s_t) - G~_t)^2

m_G and sigma_G are the running mean and standard deviation of every return-to-go seen so far, so
the step size does not depend on the reward's units (dev-accuracy deltas are O(0.01) late in an
episode, O(1) in its first step). Centring matters too: with rewards of one sign (e.g. always
negative) and a baseline that starts at 0, every update pushes the mean away from the actions just
sampled; a tanh mean then drifts to the box edge, where its gradient vanishes (seen in
tests/test_policy_gradient.py's env before centring was added).

Policy: pi(a | s) = N(tanh(mu_theta(s)), diag(exp(2 log_sigma))) with a state-independent, learned
log-std (``mean="clip"`` drops the tanh and clips the mean when acting). The tanh keeps the mean
inside [-1, 1]; samples are clipped to the box before the env sees them (the
log-probability is that of the unclipped sample, as in SB3). The mean head starts with tiny
weights, so the untrained teacher acts at the centre of the box, as SB3's policies do.

Budget: whole episodes only, run by the fit skeleton (``Teacher.fit``): an update collects
``episodes_per_update`` episodes, or as many as the budget still holds (a last, smaller batch still
gets its update), charged by the processes' counters (an episode costs ``episode_steps`` training
steps). Training students come from the seed plan's stream (``SeedPlan.draw``), away from the
small evaluation seeds that :meth:`Teacher.teach` is given.

Students at once: by default (``n_envs=None``) the fit decides at setup, from its budget, how many
students it trains together in one batched process (teachers/fit_envs.py): the most, up to 8,
that leave ``min_updates`` updates of one batch each in the budget after the selection's share,
one batch of ``n_envs`` episodes per update; below two, the single env with 2 episodes per update
(the default before, which result directories made before keep: ``legacy_defaults``). The choice
is in every update's log row (``n_envs``, ``episodes_per_update``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from envs.cost import price
from envs.losses import unknown_name_error
from teachers.base import FitRun, SelectOptions, Teacher
from teachers.fit_envs import spec_batchable, students_at_once
from teachers.fixed import BoxCentreTeacher

BASELINES = ("learned", "running-mean", "none")
MEANS = ("tanh", "clip")


@dataclass
class ReinforceConfig(SelectOptions):
    """The teacher's options; ``ReinforceTeacher(**fields)`` or ``ReinforceTeacher(config)``."""

    family: str | None = "compact"
    """loss family acted on: 'compact' (5 knobs), 'bilinear' (C*C + C), ...; None = the spec's"""
    mean: str = "tanh"
    """'tanh': mean = tanh(mu(s)) stays inside the box; 'clip': mean = mu(s), clipped when acting"""
    hidden: int = 64
    """width of the policy's (and the value baseline's) two tanh hidden layers"""
    lr: float = 3e-3
    """Adam step size for the policy and the value baseline"""
    gamma: float = 1.0
    """discount; 1 makes the dense dev-accuracy-delta return telescope to final - initial"""
    baseline: str = "learned"
    """'learned' V(s), 'running-mean' of G~_t per step index t (L2T's), or 'none'"""
    baseline_momentum: float = 0.9
    """EMA factor of the running-mean baseline"""
    normalize_returns: bool = True
    """standardise returns with their running mean and standard deviation"""
    init_log_std: float = -0.5
    """initial log sigma of the Gaussian (sigma = 0.61 on the [-1, 1] box)"""
    min_log_std: float = -4.0
    """floor of log sigma, so exploration never collapses to a point mass"""
    entropy_coef: float = 0.0
    """c_H, the weight of the policy's entropy bonus in the loss"""
    value_coef: float = 0.5
    """c_V, the weight of the learned baseline's squared error in the loss"""
    episodes_per_update: int | None = None
    """episodes collected per policy update; None = n_envs (one batch each), 2 on a single env"""
    n_envs: int | None = None
    """students taught at once while fitting: > 1 runs n_envs episodes together in one batched
    process (envs/vector.py, one vmapped student step for all); 1 is the single env; None =
    decided at setup from the budget (module docstring; a divisor of episodes_per_update if
    that is given)"""
    min_updates: int = 8
    """policy updates the budget must still hold at the width n_envs=None picks"""
    max_grad_norm: float = 1.0
    """the gradient of policy and baseline is rescaled to at most this norm before each step"""

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise unknown_name_error("baseline", self.baseline, BASELINES)
        if self.mean not in MEANS:
            raise unknown_name_error("policy mean", self.mean, MEANS)
        counts = (self.episodes_per_update, self.hidden, self.n_envs, self.min_updates)
        if any(n is not None and (isinstance(n, bool) or int(n) != n or n < 1) for n in counts):
            raise ValueError(
                f"episodes_per_update, hidden, n_envs and min_updates must be integers >= 1 "
                f"(episodes_per_update and n_envs may be None: decided by the fit), got "
                f"{', '.join(map(repr, counts))}"
            )
        if None not in (self.episodes_per_update, self.n_envs) and (
            self.episodes_per_update % self.n_envs
        ):
            raise ValueError(
                f"episodes_per_update ({self.episodes_per_update}) must be a multiple of n_envs "
                f"({self.n_envs}): a batch of episodes is collected with one policy"
            )
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.baseline_momentum < 1.0:
            raise ValueError(
                f"gamma must lie in [0, 1] and baseline_momentum in [0, 1), got "
                f"{self.gamma}, {self.baseline_momentum}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, n_out),
    )


class GaussianPolicy(nn.Module):
    """pi(a | s) = N(tanh(mu(s)), diag(sigma^2)) (or N(mu(s), ...) when not `squash`),
    sigma = exp(log_std) learned and state-independent."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int,
        init_log_std: float,
        min_log_std: float,
        squash: bool = True,
    ) -> None:
        super().__init__()
        self.mu = mlp(obs_dim, hidden, act_dim)
        with torch.no_grad():  # start at the box centre with a nearly flat mean (CleanRL, SB3)
            self.mu[-1].weight.mul_(0.01)
            self.mu[-1].bias.zero_()
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        self.min_log_std = min_log_std
        self.squash = squash

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mu(obs)
        if self.squash:
            mean = torch.tanh(mean)
        std = self.log_std.clamp(self.min_log_std, 1.0).exp()
        return torch.distributions.Normal(mean, std.expand_as(mean))


class Episode(NamedTuple):
    obs: torch.Tensor
    """(T, obs_dim) observations the actions were taken in"""
    actions: torch.Tensor
    """(T, act_dim) unclipped samples"""
    rewards: np.ndarray


class RunningMeanStd:
    """Running mean and variance of a scalar stream (Chan et al.'s parallel update, as in SB3's
    RunningMeanStd, which this module does not import so REINFORCE runs without SB3)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        n, mean, var = len(x), float(np.mean(x)), float(np.var(x))
        total = self.count + n
        delta = mean - self.mean
        self.m2 += var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count > 1 else 1.0


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    out, acc = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return out


class ReinforceTeacher(Teacher):
    """Monte-Carlo policy gradient with a baseline (module docstring); config in ReinforceConfig."""

    name = "reinforce"
    Config = ReinforceConfig
    legacy_defaults: ClassVar[dict[str, Any]] = {"n_envs": 1, "episodes_per_update": 2}
    """the options' defaults before the budget-aware width: what a result directory made before
    its teachers' options were recorded (analysis/runner.py) resumes with"""

    def __init__(self, config: ReinforceConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.args: ReinforceConfig = self.cfg
        self.policy: GaussianPolicy | None = None
        self.value: nn.Sequential | None = None
        self.ret_rms = RunningMeanStd()
        self.running_baseline = np.zeros(0)

    def frozen_start(self) -> Teacher:
        """The box's centre on this teacher's family (:class:`~teachers.fixed.BoxCentreTeacher`):
        the untrained policy's mean is tanh(mu(s)) with mu's last layer scaled by 0.01 and its
        bias zero, so it acts within about 0.01 of action 0 whatever the state, not at the
        family's default (compact: plain CE), and the lr search must score that loss."""
        return BoxCentreTeacher(family=self.config["family"])

    # -- networks -----------------------------------------------------------------------------
    def _build(self, obs_dim: int, act_dim: int, seed: int) -> None:
        a = self.args
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            self.policy = GaussianPolicy(
                obs_dim, act_dim, a.hidden, a.init_log_std, a.min_log_std, a.mean == "tanh"
            )
            self.value = mlp(obs_dim, a.hidden, 1)

    def _parameters(self) -> list[nn.Parameter]:
        return [*self.policy.parameters(), *self.value.parameters()]

    # -- learning: the skeleton's hooks (teachers.base.Teacher.fit) -------------------------
    def setup(self, run: FitRun) -> None:
        spec = run.spec
        self._env = run.make_env()
        self._build(self._env.observation_space.shape[0], self._env.action_space.shape[0], run.seed)
        self.ret_rms, self.running_baseline = RunningMeanStd(), np.zeros(spec.horizon)
        self._optimizer = torch.optim.Adam(self._parameters(), lr=self.args.lr)
        self._noise = torch.Generator().manual_seed(run.seed)
        self._episode_cost = price("train", spec.episode_steps)
        self.n_envs, self.episodes_per_update = self.width(run)
        self._venv = None
        if self.n_envs > 1:
            from envs.vector import LossTeachingVectorEnv

            self._venv = LossTeachingVectorEnv(self.n_envs, **spec.to_dict())
            run.watch(self._venv.process)

    def width(self, run: FitRun) -> tuple[int, int]:
        """(n_envs, episodes_per_update) of this fit: as given, or decided once from the budget
        (module docstring): the widest batch up to 8 whose ``min_updates`` updates fit in the
        budget less the selection's expected share, on the spec's own env only."""
        a = self.args
        n, k = a.n_envs, a.episodes_per_update
        if n is None:
            left = max(0.0, run.budget - self.selection_budget(run))
            cap = students_at_once(left, self._episode_cost, a.min_updates)
            cap = cap if spec_batchable(run.spec) else 1
            n = cap if k is None else max(d for d in range(1, min(k, cap) + 1) if k % d == 0)
        if k is None:
            k = n if n > 1 else 2
        return n, k

    def _episodes_next(self, run: FitRun) -> int:
        """Whole episodes the next update collects: `episodes_per_update`, or as many as the
        budget still holds (a last, smaller batch still gets its update)."""
        return min(self.episodes_per_update, int(run.left() // self._episode_cost))

    def next_update(self, run: FitRun) -> float | None:
        k = self._episodes_next(run)
        return k * self._episode_cost if k else None

    def update(self, run: FitRun) -> list[dict]:
        """Collect the episodes (n_envs at a time in the batched process while a whole batch
        is wanted, then one at a time) and take one policy-gradient step."""
        k, n_envs = self._episodes_next(run), self.n_envs
        episodes: list[Episode] = []
        while len(episodes) < k:
            chunk = min(n_envs, k - len(episodes))
            seeds = [run.seeds.draw() for _ in range(chunk)]
            if chunk == n_envs > 1:
                episodes += self._sample_batch(self._venv, seeds)
            else:
                episodes += [self._sample_episode(self._env, s) for s in seeds]
        run.report.episodes += k
        row = self._update(episodes, self._optimizer)
        row.update(
            episodes=run.report.episodes,
            n_envs=self.n_envs,
            episodes_per_update=self.episodes_per_update,
        )
        return [row]

    def finish(self, run: FitRun) -> None:
        """Drop the fit's students and their data: acting needs only the policy."""
        if self._venv is not None:
            self._venv.close()
        self._env = self._venv = None

    def _sample(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(observation, unclipped sample a ~ pi(. | s)) from the fit's noise stream."""
        o = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            dist = self.policy(o)
            a = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=self._noise)
        return o, a

    def _sample_episode(self, env, seed: int) -> Episode:
        """One whole episode on a fresh student, actions sampled from the policy; the env sees
        them clipped to the box (the log-probability is the unclipped sample's, as in SB3)."""
        observations, actions = [], []

        def decide(obs: np.ndarray) -> np.ndarray:
            o, a = self._sample(obs)
            observations.append(o)
            actions.append(a)
            return a.clamp(-1.0, 1.0).numpy()

        rewards = [s.reward for s in self.rollout(env, seed, decide) if s.action is not None]
        return Episode(torch.stack(observations), torch.stack(actions), np.asarray(rewards))

    def _sample_batch(self, venv, seeds: list[int]) -> list[Episode]:
        """len(seeds) whole episodes at once on a LossTeachingVectorEnv, one fresh student each;
        a student that diverges ends its episode alone (its later steps are not recorded)."""
        n = len(seeds)
        observations, actions, rewards = ([[] for _ in range(n)] for _ in range(3))
        last: list[torch.Tensor] = []

        def decide(obs: np.ndarray, active: np.ndarray) -> np.ndarray:
            last[:] = self._sample(obs)
            return last[1].clamp(-1.0, 1.0).numpy()

        for step in self.rollout_batch(venv, seeds, decide):
            if step.actions is None:
                continue
            o, a = last
            for i in np.flatnonzero(step.active):
                observations[i].append(o[i])
                actions[i].append(a[i])
                rewards[i].append(step.rewards[i])
        return [
            Episode(torch.stack(observations[i]), torch.stack(actions[i]), np.asarray(rewards[i]))
            for i in range(n)
        ]

    def _update(self, episodes: list[Episode], optimizer: torch.optim.Optimizer) -> dict:
        a = self.args
        returns = [returns_to_go(e.rewards, a.gamma) for e in episodes]
        if a.normalize_returns:
            self.ret_rms.update(np.concatenate(returns))
        shift, scale = (self.ret_rms.mean, self.ret_rms.std) if a.normalize_returns else (0.0, 1.0)
        obs = torch.cat([e.obs for e in episodes])
        actions = torch.cat([e.actions for e in episodes])
        g = torch.as_tensor((np.concatenate(returns) - shift) / scale, dtype=torch.float32)
        t_index = np.concatenate([np.arange(len(e.rewards)) for e in episodes])

        dist = self.policy(obs)
        log_prob = dist.log_prob(actions).sum(-1)
        value_loss = torch.zeros(())
        if a.baseline == "learned":
            v = self.value(obs).squeeze(-1)
            value_loss = (v - g).pow(2).mean()
            advantage = g - v.detach()
        elif a.baseline == "running-mean":
            b = torch.as_tensor(self.running_baseline[t_index], dtype=torch.float32)
            advantage = g - b
            for t in np.unique(t_index):  # b_t <- m b_t + (1 - m) mean(G~_t), after use
                m = a.baseline_momentum
                self.running_baseline[t] = m * self.running_baseline[t] + (1 - m) * float(
                    g[t_index == t].mean()
                )
        else:
            advantage = g
        policy_loss = -(log_prob * advantage).mean()
        entropy = dist.entropy().sum(-1).mean()
        loss = policy_loss - a.entropy_coef * entropy + a.value_coef * value_loss

        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self._parameters(), a.max_grad_norm)
        optimizer.step()
        return {
            "mean_return": float(np.mean([e.rewards.sum() for e in episodes])),
            "policy_loss": float(policy_loss.detach()),
            "value_loss": float(value_loss.detach()),
            "entropy": float(entropy.detach()),
            "mean_std": float(self.policy.log_std.detach().exp().mean()),
        }

    # -- acting -------------------------------------------------------------------------------
    def _require_policy(self) -> GaussianPolicy:
        if self.policy is None:
            raise RuntimeError("ReinforceTeacher has no policy yet: call fit(...) or load(...)")
        return self.policy

    def begin_episode(self, env) -> None:
        policy = self._require_policy()
        want = (policy.mu[0].in_features, policy.mu[-1].out_features)
        got = (env.observation_space.shape[0], env.action_space.shape[0])
        if want != got:
            raise ValueError(
                f"this teacher was fitted for observations/actions of size {want}, the env has "
                f"{got}; teach on the family it was fitted on ({self.config['family']!r})"
            )

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The policy's mean action: deterministic once fitted."""
        policy = self._require_policy()
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32))
        if obs.shape != (policy.mu[0].in_features,):
            raise ValueError(
                f"expected one observation of shape ({policy.mu[0].in_features},), got "
                f"{tuple(obs.shape)}"
            )
        with torch.no_grad():
            return policy(obs).mean.clamp(-1.0, 1.0).numpy().astype(np.float32)

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.policy is None:
            return {}
        return {
            "obs_dim": self.policy.mu[0].in_features,
            "act_dim": self.policy.mu[-1].out_features,
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "ret_rms": vars(self.ret_rms).copy(),
            "running_baseline": self.running_baseline.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._build(state["obs_dim"], state["act_dim"], seed=0)
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        vars(self.ret_rms).update(state["ret_rms"])
        self.running_baseline = np.asarray(state["running_baseline"], dtype=np.float64)
