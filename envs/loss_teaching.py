"""LossTeachingEnv: teach one student by setting its loss coefficients."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.config import DEFAULTS, ENV_FIELDS, OPTIM_FIELDS, PROCESS_FIELDS, keywords, take
from envs.process import TeachingProcess
from envs.rewards import REWARDS
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

    @keywords(ENV_FIELDS)
    def __init__(
        self,
        dataset: str = D.dataset,
        student: str = D.student,
        loss: str = D.loss,
        *,
        state_fn: StateFunction | None = None,
        divergence_penalty: float = -1.0,
        download: bool = False,
        **config: Any,
    ) -> None:
        """Every field of ``envs.config.EnvConfig`` is a keyword (defaults, checks and help
        there); ``reward`` may also be a function ``(prev_info, info, done) -> float``."""
        c = take(
            "LossTeachingEnv",
            ENV_FIELDS,
            dict(dataset=dataset, student=student, loss=loss, **config),
        )
        self.config = c
        self.reward_fn = c.reward if callable(c.reward) else REWARDS[c.reward]
        self.horizon, self.interval = c.horizon, c.interval
        self.divergence_penalty = float(divergence_penalty)
        optim = SGDConfig(
            **{n: getattr(c, n) for n in OPTIM_FIELDS}, total_steps=c.horizon * c.interval
        )
        self.process = TeachingProcess(
            optim=optim, download=download, **{n: getattr(c, n) for n in PROCESS_FIELDS}
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

    def step(self, action):
        """Gymnasium's step: `interval` student steps under the action's coefficients, charged
        to ``process.cost``. A gradient teacher that needs the steps for a reverse pass records
        them through the process (``with env.process.recording(tape): env.step(a)``)."""
        if self._done:
            raise RuntimeError("episode has ended (terminated or truncated): call reset() first")
        coeffs = self.family.action_to_coeffs(action)  # raises ValueError before any change
        self.process.advance(coeffs, self.interval)
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
