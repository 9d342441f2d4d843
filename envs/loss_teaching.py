"""LossTeachingEnv: teach one student by setting its loss coefficients."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.config import DEFAULTS, DTYPES
from envs.losses import unknown_name_error
from envs.process import TeachingProcess
from envs.rewards import REWARDS, RewardFunction
from envs.state import STATE_BOUND, DefaultState, StateFunction
from students.optim import SGDConfig

D = DEFAULTS  # every default below is envs/config.py's (one place)


class LossTeachingEnv(gymnasium.Env):
    """Teach one student by setting the coefficients of its loss.

    ## Observation
    float32 Box in [-10, 10]^n, the state function's features (default: 12, listed in
    ``envs.state.DefaultState`` and the README): progress, train/dev loss and accuracy, best dev
    accuracy, learning-rate ratio, update size, coefficient summaries, the family loss.

    ## Action
    float32 Box in [-1, 1]^d, d = the loss family's dimension; the family maps it affinely (or
    through 2^a for temperatures) to coefficients. With ``lr_action``, one more entry a scales
    the student's lr to schedule(t) * 2^(2 a). Finite actions outside the box are clipped;
    NaN/inf, a wrong shape or a non-numeric action raise ``ValueError`` before anything changes.

    ## Transition
    ``interval`` momentum-SGD steps of the student on ``family(logits, y, coeffs)``.

    ## Reward
    ``reward`` (default ``"dev-accuracy-delta"``): change of dev-subset accuracy over the step, so an
    episode's return is final minus initial dev accuracy. ``"terminal"`` pays the final dev accuracy
    at the horizon only; ``"dev-loss-delta"`` pays the drop of dev cross-entropy; or pass a callable
    ``(prev_info, info, done) -> float``.

    ## Episode end
    ``terminated``: the student diverged (non-finite loss): reward = ``divergence_penalty``
    (default -1, below any accuracy change), ``info["termination_reason"] = "non-finite loss"``,
    the observation is clipped to finite values. ``truncated``: ``horizon`` actions taken.
    Stepping a finished episode raises ``RuntimeError``; ``reset`` always starts a clean student.

    ## Seeding
    ``reset(seed=s)`` draws the student's initial weights and data order from ``s`` alone, so the
    same seed and actions replay the same run. Without a seed, a seed is drawn from the env's RNG.

    ## Harder settings
    ``label_noise`` (fraction, ``label_noise_kind`` ``"symmetric"`` or ``"pairflip"``,
    ``noisy_dev``) and ``imbalance`` (max/min training class count) corrupt the training split
    once, seeded (``students.corruption``); test is never touched.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: str = D.dataset,
        student: str = D.student,
        loss: str = D.loss,
        *,
        horizon: int = D.horizon,
        interval: int = D.interval,
        batch_size: int = D.batch_size,
        lr: float = D.lr,
        momentum: float = D.momentum,
        weight_decay: float = D.weight_decay,
        schedule: str = D.schedule,
        reward: str | RewardFunction = D.reward,
        state_fn: StateFunction | None = None,
        divergence_penalty: float = -1.0,
        dev_subset: int = D.dev_subset,
        device: str = D.device,
        dtype: str = D.dtype,
        data_root: str | None = D.data_root,
        download: bool = False,
        student_kwargs: dict | None = None,
        loss_kwargs: dict | None = None,
        label_noise: float = D.label_noise,
        label_noise_kind: str = D.label_noise_kind,
        noisy_dev: bool = D.noisy_dev,
        imbalance: float = D.imbalance,
        lr_action: bool = D.lr_action,
    ) -> None:
        if horizon < 1 or interval < 1:
            raise ValueError(f"horizon and interval must be >= 1, got {horizon}, {interval}")
        if dtype not in DTYPES:
            raise unknown_name_error("dtype", dtype, DTYPES)
        if callable(reward):
            self.reward_fn = reward
        elif reward in REWARDS:
            self.reward_fn = REWARDS[reward]
        else:
            raise unknown_name_error("reward", reward, REWARDS)
        self.horizon, self.interval = horizon, interval
        self.divergence_penalty = float(divergence_penalty)
        optim = SGDConfig(lr, momentum, weight_decay, schedule, total_steps=horizon * interval)
        self.process = TeachingProcess(
            dataset,
            student,
            loss,
            batch_size=batch_size,
            optim=optim,
            dev_subset=dev_subset,
            device=device,
            dtype=DTYPES[dtype],
            data_root=data_root,
            download=download,
            student_kwargs=student_kwargs,
            loss_kwargs=loss_kwargs,
            label_noise=label_noise,
            label_noise_kind=label_noise_kind,
            noisy_dev=noisy_dev,
            imbalance=imbalance,
            lr_action=lr_action,
        )
        self.family = self.process.family
        self.state_fn = state_fn or DefaultState()
        n = len(self.state_fn.names)
        self.observation_space = spaces.Box(-STATE_BOUND, STATE_BOUND, (n,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.family.dim,), np.float32)
        self.t = 0
        self._done = True
        self._metrics: dict[str, Any] = {}

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        student_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        self.process.reset(student_seed)
        self.t = 0
        self._done = False
        obs, self._metrics = self._observe()
        return obs, {**self._metrics, "student_seed": student_seed}

    def step(self, action, *, tape=None):
        """Gymnasium's step: `interval` student steps under the action's coefficients. `tape`
        (a ``teachers.rmd.Tape``) is handed to ``process.advance`` to record the interval for a
        reverse pass (L2T-DLF); plain Gymnasium callers never pass it."""
        if self._done:
            raise RuntimeError("episode has ended (terminated or truncated): call reset() first")
        coeffs = self.family.action_to_coeffs(action)  # raises ValueError before any change
        self.process.advance(coeffs, self.interval, tape=tape)
        self.t += 1
        truncated = self.t >= self.horizon
        if bool(self.process.diverged):  # one host sync per env step, none per student step
            self._done = True
            obs = np.clip(
                np.nan_to_num(self._state_vector(), nan=0.0), -STATE_BOUND, STATE_BOUND
            ).astype(np.float32)
            info = {**self._metrics, "diverged": True, "termination_reason": "non-finite loss"}
            return obs, self.divergence_penalty, True, False, info
        prev = self._metrics
        obs, self._metrics = self._observe()
        reward = float(self.reward_fn(prev, self._metrics, truncated))
        self._done = truncated
        return obs, reward, False, truncated, dict(self._metrics)

    # -- helpers ------------------------------------------------------------------------------
    def _state_vector(self) -> np.ndarray:
        return self.state_fn(self.process).detach().cpu().numpy()

    def _observe(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The observation and the info metrics (``process.observe``, which also keeps the best
        dev accuracy), read from the device in one transfer."""
        metrics = self.process.observe(self.state_fn(self.process).detach())
        obs = metrics.pop("features")
        metrics.update(diverged=False, termination_reason="")
        return obs.astype(np.float32), metrics
