"""PPO and A2C teachers from stable-baselines3, on the registered LossTeachingEnv.

The env is SB3's own vector env over ``spec.make_env`` (``DummyVecEnv`` of ``Monitor``-wrapped
envs: students are trained in-process, so subprocesses would only add pickling) under
``VecNormalize(norm_obs=True, norm_reward=False)``: observations are standardised with running
statistics while fitting; those statistics are saved with the teacher and used, frozen, in
:meth:`act`. Rewards are left alone: an episode's return stays "final minus initial dev accuracy".

Budget, in student-step equivalents: one env step costs ``spec.interval`` training steps, and SB3
learns in whole rollouts of ``n_steps * n_envs`` env steps. The fit skeleton (``Teacher.fit``)
runs one ``learn`` call per rollout and policy update (``reset_num_timesteps=False`` after the
first, so SB3 continues its timesteps and episodes) while the next rollout fits in the budget:

    rollouts = floor(budget / (interval * rollout))

charged by the processes' counters. ``n_steps`` (when not given) is derived from the budget,

    n_steps = clip(budget / interval / (min_updates * n_envs), 2, algorithm default)

so that a small budget still completes ``min_updates`` policy updates (PPO's default rollout of
2,048 env steps is 102,400 student steps at interval 50; A2C keeps its default of 5).

Students at once: by default (``n_envs=None``) the fit decides at setup, from its budget, how many
students it trains together (teachers/fit_envs.py): the most, up to 8, whose rollouts still give
``min_updates`` updates of at least 2 env steps per env (of ``n_steps`` when that is given), in
one batched process (``batched=None``: envs/sb3_vec.py, one vmapped step for all) where the spec's
env allows; 1, the single env, when even two do not fit (the default before, which result
directories made before keep: ``legacy_defaults``). The choice is in every update's log row.

Cost: on the default spec (mnist5k, mlp, 12 x 50) a budget of 12,000 student steps (240 env steps,
20 episodes; PPO 4 rollouts of 60, A2C 48 of 5) fits in 45-50 s on 2 CPU cores shared with other
jobs (load ~6), nearly all of it student training.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from envs.cost import price
from teachers.base import FitRun, SelectOptions, Teacher
from teachers.fit_envs import spec_batchable, students_at_once
from teachers.fixed import BoxCentreTeacher


@dataclass
class SB3Config(SelectOptions):
    """The options of the SB3 teachers (``ppo`` and ``a2c`` share them)."""

    family: str | None = "compact"
    """loss family acted on ('compact' default, 'bilinear', ...; None = the spec's)"""
    n_envs: int | None = None
    """students trained at once, each by its own env copy; None = decided at setup from the
    budget (module docstring)"""
    batched: bool | None = None
    """train the n_envs students in one batched process (envs/sb3_vec.py, one vmapped step for
    all) instead of a DummyVecEnv of single envs; same students, same seeds; None = batched
    when n_envs > 1 and the spec's own env is used (teachers.fit_envs.spec_batchable)"""
    n_steps: int | None = None
    """env steps per env per rollout; None = derived from the budget (module docstring)"""
    min_updates: int = 4
    """policy updates a budget must allow when n_steps is derived"""
    log_std_init: float = -0.5
    """initial log sigma of the Gaussian policy (SB3's default is 0: sigma = 1, half the
    [-1, 1] box; -0.5 explores a little less)"""
    net_arch: list[int] | None = None
    """hidden layers of the policy and value networks; None = [64, 64]"""
    device: str = "cpu"
    """where SB3 runs its (small) networks; 'cpu' is fastest for MLP policies"""
    progress_bar: bool = False
    """SB3's progress bar (tqdm + rich) during fit"""
    verbose: int = 0
    """SB3's verbosity"""
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    """any other keyword for the SB3 algorithm (learning_rate, gamma, n_epochs, ...)"""

    def __post_init__(self) -> None:
        n_steps, n_envs, min_updates = self.n_steps, self.n_envs, self.min_updates
        if (
            (n_envs is not None and n_envs < 1)
            or min_updates < 1
            or (n_steps is not None and n_steps < 2)
        ):
            raise ValueError(
                f"need n_envs >= 1 (or None), min_updates >= 1 and n_steps >= 2 (or None), got "
                f"n_envs={n_envs}, min_updates={min_updates}, n_steps={n_steps}"
            )
        self.net_arch = [64, 64] if self.net_arch is None else list(map(int, self.net_arch))
        self.batched = None if self.batched is None else bool(self.batched)
        self.algo_kwargs = dict(self.algo_kwargs or {})


class _Returns(BaseCallback):
    """Collects the returns of the episodes that finish during one ``learn`` call (Monitor's
    record of each), for that rollout's log row."""

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
        return True


def largest_divisor_at_most(n: int, cap: int) -> int:
    """PPO's minibatch: the largest divisor of the rollout size <= cap, so no minibatch is ragged."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


class SB3Teacher(Teacher):
    """Shared base of the SB3 teachers: subclasses name the algorithm and its default rollout;
    options in :class:`SB3Config`."""

    algo: ClassVar[type[BaseAlgorithm]]
    default_n_steps: ClassVar[int]
    Config = SB3Config
    legacy_defaults: ClassVar[dict[str, Any]] = {"n_envs": 1, "batched": False}
    """the options' defaults before the budget-aware width: what a result directory made before
    its teachers' options were recorded (analysis/runner.py) resumes with"""

    def __init__(self, config: SB3Config | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.model: BaseAlgorithm | None = None
        self.obs_stats: dict[str, Any] | None = None

    def frozen_start(self) -> Teacher:
        """The box's centre on this teacher's family (:class:`~teachers.fixed.BoxCentreTeacher`):
        SB3's policies initialise the action head orthogonally with gain 0.01 and zero bias, so
        the untrained mean acts within about 0.01 of action 0, not at the family's default
        (compact: plain CE), and the lr search must score that loss."""
        return BoxCentreTeacher(family=self.config["family"])
        """VecNormalize's observation statistics (mean, var, epsilon, clip_obs), frozen for act"""

    def rollout_steps(self, budget: float, interval: int, n_envs: int | None = None) -> int:
        """n_steps per env of `n_envs` envs (default: the config's, 1 if undecided): as given,
        or derived from the budget (module docstring)."""
        if self.config["n_steps"] is not None:
            return self.config["n_steps"]
        n_envs = n_envs or self.config["n_envs"] or 1
        per_update = int(budget // interval) // (self.config["min_updates"] * n_envs)
        return int(np.clip(per_update, 2, self.default_n_steps))

    def width(self, budget: float, spec) -> tuple[int, bool]:
        """(n_envs, batched) of a fit: as given, or decided from the budget its rollouts may
        spend (module docstring): the most envs, up to 8, that still give ``min_updates``
        rollouts of ``n_steps`` (or 2) env steps each."""
        cfg = self.config
        n = cfg["n_envs"]
        if n is None:
            per_env = spec.interval * (cfg["n_steps"] or 2)
            n = students_at_once(budget, per_env, cfg["min_updates"])
            n = n if spec_batchable(spec) else 1
        batched = cfg["batched"]
        if batched is None:
            batched = n > 1 and spec_batchable(spec)
        return n, batched

    def _algo_kwargs(self, rollout: int) -> dict[str, Any]:
        return {}

    # -- learning: the skeleton's hooks (teachers.base.Teacher.fit) -------------------------
    def setup(self, run: FitRun) -> None:
        """The vector env (its processes watched by the fit) and the SB3 model; one update is
        one rollout and one policy update (``n_steps`` env steps per env)."""
        spec, cfg = run.spec, self.config
        # the rollouts share the budget with the selection's candidates (teachers.base.Selection)
        budget = max(0, run.budget - self.selection_budget(run))
        self.n_envs, self.batched = self.width(budget, spec)
        if self.batched:
            from envs.sb3_vec import BatchedVecEnv

            inner = VecMonitor(BatchedVecEnv(self.n_envs, **spec.to_dict()))
            run.watch(inner.venv.process)
        else:
            inner = DummyVecEnv([lambda: Monitor(run.make_env())] * self.n_envs)
        self._venv = VecNormalize(
            inner, norm_obs=True, norm_reward=False, gamma=cfg["algo_kwargs"].get("gamma", 0.99)
        )
        n_steps = self.rollout_steps(budget, spec.interval, self.n_envs)
        self._rollout = n_steps * self.n_envs
        kwargs = {
            "n_steps": n_steps,
            "policy_kwargs": {"log_std_init": cfg["log_std_init"], "net_arch": cfg["net_arch"]},
            **self._algo_kwargs(self._rollout),
            **cfg["algo_kwargs"],
        }
        self.model = self.algo(
            "MlpPolicy",
            self._venv,
            seed=run.seed,
            device=cfg["device"],
            verbose=cfg["verbose"],
            **kwargs,
        )
        self._venv.seed(run.seeds.draw())  # training students: the seed plan's stream

    def next_update(self, run: FitRun) -> float | None:
        """A rollout of ``n_steps * n_envs`` env steps, each ``interval`` training steps."""
        return price("train", self._rollout * run.spec.interval)

    def update(self, run: FitRun) -> list[dict]:
        """One SB3 ``learn`` call of one rollout (collect_rollouts + train), continuing the
        model's timestep count and its envs' episodes (reset_num_timesteps=False)."""
        returns = _Returns()
        first = self.model.num_timesteps == 0
        self.model.learn(
            self._rollout,
            callback=returns,
            reset_num_timesteps=first,
            progress_bar=self.config["progress_bar"],
        )
        run.report.episodes += len(returns.returns)
        return [
            {
                "rollout": len(run.report.log) + 1,
                "env_steps": int(self.model.num_timesteps),
                "episodes": run.report.episodes,
                "mean_return": float(np.mean(returns.returns)) if returns.returns else math.nan,
                "episode_returns": returns.returns,
                "n_envs": self.n_envs,
                "batched": self.batched,
            }
        ]

    def finish(self, run: FitRun) -> None:
        """Freeze the observation statistics for :meth:`act` and drop the students."""
        self._freeze_obs_stats()
        self._venv.close()
        self.model.env = None  # act needs only the policy
        self._venv = None

    def _freeze_obs_stats(self) -> None:
        """Copy VecNormalize's running observation statistics for :meth:`act`."""
        rms = self._venv.obs_rms
        self.obs_stats = {
            "mean": rms.mean.copy(),
            "var": rms.var.copy(),
            "count": float(rms.count),
            "epsilon": self._venv.epsilon,
            "clip_obs": self._venv.clip_obs,
        }

    # -- acting -------------------------------------------------------------------------------
    def normalize(self, observation: np.ndarray) -> np.ndarray:
        """VecNormalize._normalize_obs with the statistics frozen at the end of fit."""
        s = self.obs_stats
        obs = np.asarray(observation, dtype=np.float32)
        if obs.shape != s["mean"].shape:
            raise ValueError(
                f"expected one observation of shape {s['mean'].shape}, got {obs.shape}"
            )
        z = (obs - s["mean"]) / np.sqrt(s["var"] + s["epsilon"])
        return np.clip(z, -s["clip_obs"], s["clip_obs"]).astype(np.float32)

    def begin_episode(self, env) -> None:
        self._require_model()
        want = self.model.action_space.shape
        if env.action_space.shape != want:
            raise ValueError(
                f"this teacher was fitted for actions of shape {want}, the env takes "
                f"{env.action_space.shape}; teach on the family it was fitted on "
                f"({self.config['family']!r})"
            )

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The policy's deterministic (mean) action, clipped to the box by SB3."""
        self._require_model()
        action, _ = self.model.predict(self.normalize(observation), deterministic=True)
        return np.asarray(action, dtype=np.float32)

    def _require_model(self) -> None:
        if self.model is None:
            raise RuntimeError(
                f"{type(self).__name__} has no policy yet: call fit(...) or load(...)"
            )

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            return {}
        if getattr(self, "_venv", None) is not None:  # mid-fit (a selection snapshot): the
            self._freeze_obs_stats()  # statistics so far, as act would use them frozen now
        buf = io.BytesIO()
        self.model.save(buf)  # SB3's own zip format, kept as bytes inside the teacher's file
        return {"sb3_zip": buf.getvalue(), "obs_stats": self.obs_stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.model = self.algo.load(io.BytesIO(state["sb3_zip"]), device=self.config["device"])
        self.obs_stats = state["obs_stats"]


class PPOTeacher(SB3Teacher):
    """SB3's PPO (clip 0.2, GAE 0.95, 10 epochs); minibatches divide the rollout."""

    name = "ppo"
    algo = PPO
    default_n_steps = 2048

    def _algo_kwargs(self, rollout: int) -> dict[str, Any]:
        return {"batch_size": largest_divisor_at_most(rollout, 64)}


class A2CTeacher(SB3Teacher):
    """SB3's A2C (RMSprop, one update per 5-step rollout by default)."""

    name = "a2c"
    algo = A2C
    default_n_steps = 5
