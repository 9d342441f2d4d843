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

Budget: whole episodes only, ``while spent + episode_steps <= budget``, where ``spent`` is read
from the process's own student-step counter; a last partial batch of episodes still gets its update.
Training students are seeded from their own stream (``[seed, 0x5EED]``), away from the small
evaluation seeds that :meth:`Teacher.teach` is given. On the default spec a budget of 12,000
steps is 20 episodes, 10 updates, 42-53 s on 2 shared CPU cores (load ~6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from envs.losses import unknown_name_error
from teachers.base import FitRun, Teacher

BASELINES = ("learned", "running-mean", "none")
MEANS = ("tanh", "clip")


@dataclass
class ReinforceConfig:
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
    episodes_per_update: int = 2
    """episodes collected per policy update"""
    n_envs: int = 1
    """students taught at once while fitting: > 1 runs n_envs episodes together in one batched
    process (envs/vector.py, one vmapped student step for all); 1 is the single env"""
    max_grad_norm: float = 1.0
    """the gradient of policy and baseline is rescaled to at most this norm before each step"""

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise unknown_name_error("baseline", self.baseline, BASELINES)
        if self.mean not in MEANS:
            raise unknown_name_error("policy mean", self.mean, MEANS)
        if self.episodes_per_update < 1 or self.hidden < 1 or self.n_envs < 1:
            raise ValueError(
                f"episodes_per_update, hidden and n_envs must be >= 1, got "
                f"{self.episodes_per_update}, {self.hidden}, {self.n_envs}"
            )
        if self.episodes_per_update % self.n_envs:
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
    student_steps: int


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


def student_steps_of(env) -> int:
    """The lifetime student-SGD-step counter of the env's process: what budgets are charged."""
    return int(env.unwrapped.process.student_steps)


def run_episode(
    env, policy: GaussianPolicy, student_seed: int, generator: torch.Generator
) -> Episode:
    """One whole episode on a fresh student, actions sampled from the policy."""
    before = student_steps_of(env)
    obs, _ = env.reset(seed=student_seed)
    observations, actions, rewards = [], [], []
    done = False
    while not done:
        o = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            dist = policy(o)
            a = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=generator)
        obs, reward, terminated, truncated, _ = env.step(a.clamp(-1.0, 1.0).numpy())
        observations.append(o)
        actions.append(a)
        rewards.append(reward)
        done = terminated or truncated
    spent = student_steps_of(env) - before
    return Episode(torch.stack(observations), torch.stack(actions), np.asarray(rewards), spent)


def run_episodes(venv, policy: GaussianPolicy, seeds: list[int], generator) -> list[Episode]:
    """len(seeds) whole episodes at once on a LossTeachingVectorEnv, one fresh student each; a
    student that diverges ends its episode alone (its later steps are not recorded)."""
    before = venv.process.student_steps
    obs, _ = venv.reset(seed=seeds)
    n = len(seeds)
    observations, actions, rewards = ([[] for _ in range(n)] for _ in range(3))
    active = np.ones(n, dtype=bool)
    while active.any():
        o = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            dist = policy(o)
            a = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=generator)
        obs, reward, terminated, truncated, _ = venv.step(a.clamp(-1.0, 1.0).numpy())
        for i in np.flatnonzero(active):
            observations[i].append(o[i])
            actions[i].append(a[i])
            rewards[i].append(reward[i])
        active &= ~(terminated | truncated)
    # budgets: the batch's steps as the process counted them, shared out so that they sum exactly
    spent, extra = divmod(venv.process.student_steps - before, n)
    return [
        Episode(
            torch.stack(observations[i]),
            torch.stack(actions[i]),
            np.asarray(rewards[i]),
            spent + (i < extra),
        )
        for i in range(n)
    ]


class ReinforceTeacher(Teacher):
    """Monte-Carlo policy gradient with a baseline (module docstring); config in ReinforceConfig."""

    name = "reinforce"
    Config = ReinforceConfig

    def __init__(self, config: ReinforceConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.args: ReinforceConfig = self.cfg
        self.policy: GaussianPolicy | None = None
        self.value: nn.Sequential | None = None
        self.ret_rms = RunningMeanStd()
        self.running_baseline = np.zeros(0)

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

    # -- learning -----------------------------------------------------------------------------
    def _fit(self, run: FitRun) -> None:
        """Whole episodes while they fit in the budget; one update per `episodes_per_update`;
        a callback's stop ends the fit after the update it saw."""
        spec, budget, report = run.spec, run.budget, run.report
        env = spec.make_env()
        self._build(env.observation_space.shape[0], env.action_space.shape[0], run.seed)
        self.ret_rms, self.running_baseline = RunningMeanStd(), np.zeros(spec.horizon)
        optimizer = torch.optim.Adam(self._parameters(), lr=self.args.lr)
        noise = torch.Generator().manual_seed(run.seed)

        n_envs = self.args.n_envs
        if n_envs > 1:
            from envs.vector import LossTeachingVectorEnv

            venv = LossTeachingVectorEnv(n_envs, **spec.to_dict())
        batch, pending = [], []
        while not run.stopped and report.student_steps + spec.episode_steps <= budget:
            if n_envs == 1:
                episode = run_episode(env, self.policy, run.seeds.draw(), noise)
            else:  # n_envs episodes at once while the budget holds them all, then one at a time
                if not pending:
                    k = min(n_envs, (budget - report.student_steps) // spec.episode_steps)
                    seeds_ = [run.seeds.draw() for _ in range(k)]
                    if k == n_envs:
                        pending = run_episodes(venv, self.policy, seeds_, noise)
                    else:
                        pending = [run_episode(env, self.policy, s_, noise) for s_ in seeds_]
                episode = pending.pop(0)
            report.episodes += 1
            report.student_steps += episode.student_steps
            batch.append(episode)
            last = report.student_steps + spec.episode_steps > budget
            if len(batch) == self.args.episodes_per_update or last:
                row = self._update(batch, optimizer)
                row.update(episodes=report.episodes, student_steps=report.student_steps)
                run.log(row)
                batch = []

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
