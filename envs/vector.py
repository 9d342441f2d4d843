"""LossTeachingVectorEnv: N students taught at once, over one BatchedTeachingProcess.

``gym.make_vec("l2t/LossTeaching-v0", num_envs=N, vectorization_mode="vector_entry_point")``
builds it (the registered id's ``vector_entry_point``). Sub-env i behaves exactly as a
:class:`~envs.loss_teaching.LossTeachingEnv` would in gymnasium's ``SyncVectorEnv`` (same seeds,
actions, observations, rewards, episode ends and info metrics; tests/test_vector.py), but the N
students train in one vmapped step instead of one after another.

Autoreset (``autoreset_mode``), as gymnasium defines it:

* ``"next-step"`` (default, gymnasium's ``AutoresetMode.NEXT_STEP``): the step that ends sub-env
  i's episode returns its last observation with terminated/truncated; the *next* step resets it,
  ignores its action and returns the fresh student's observation, reward 0 and
  terminated = truncated = False.
* ``"same-step"`` (``AutoresetMode.SAME_STEP``, what stable-baselines3 expects): the step that
  ends the episode already returns the fresh student's observation; the last one is in
  ``info["final_obs"][i]`` and its info in ``info["final_info"]``.

Seeding: ``reset(seed=s)`` gives sub-env i the seed s + i (gymnasium's convention), which is its
first student's seed; later students of sub-env i draw their seeds from sub-env i's own RNG,
seeded by s + i, as a single env does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.batched import BatchedTeachingProcess
from envs.loss_teaching import LossTeachingEnv
from envs.state import STATE_BOUND

AUTORESET_MODES = {"next-step": AutoresetMode.NEXT_STEP, "same-step": AutoresetMode.SAME_STEP}


class LossTeachingVectorEnv(gymnasium.vector.VectorEnv):
    """N :class:`LossTeachingEnv` students in one batched process.

    Args:
        num_envs: N.
        autoreset_mode: "next-step" (default) or "same-step"; see the module docstring.
        lrs: optional per-student initial learning rates (N floats); default the env's ``lr``.
        **env_kwargs: every keyword of :class:`LossTeachingEnv` (one place defines them).
    """

    def __init__(
        self,
        num_envs: int = 1,
        *,
        autoreset_mode: str | AutoresetMode = "next-step",
        lrs=None,
        **env_kwargs: Any,
    ) -> None:
        mode = AUTORESET_MODES.get(autoreset_mode, autoreset_mode)
        if mode not in AUTORESET_MODES.values():
            raise ValueError(
                f"autoreset_mode must be one of {list(AUTORESET_MODES)}, got {autoreset_mode!r}"
            )
        self.metadata = {"render_modes": [], "autoreset_mode": mode}
        # the single env validates the configuration and builds data, student and family once
        self.template = LossTeachingEnv(**env_kwargs)
        self.process = BatchedTeachingProcess.like(self.template.process, num_envs, lr=lrs)
        self.num_envs = self.process.n
        self.family, self.state_fn = self.template.family, self.template.state_fn
        self.horizon, self.interval = self.template.horizon, self.template.interval
        self.reward_fn = self.template.reward_fn
        self.divergence_penalty = self.template.divergence_penalty
        self.single_observation_space = self.template.observation_space
        self.single_action_space = self.template.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._metrics: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        self._started = False

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        student_seeds = [self._student_seed(i, s) for i, s in enumerate(seeds)]
        self.process.reset(student_seeds)
        self.t[:] = 0
        self._autoreset[:] = False
        self._started = True
        obs, metrics = self._observe()
        self._metrics = metrics
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            infos = self._add_info(infos, {**metrics[i], "student_seed": student_seeds[i]}, i)
        return obs, infos

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(
                f"actions must have shape {self.action_space.shape} (num_envs, action dim), "
                f"got {actions.shape}"
            )
        restarting = np.flatnonzero(self._autoreset)  # next-step mode: these reset now
        default = self.family.default_coeffs(torch.float64)
        # validate every row before anything changes; restarting sub-envs' actions are ignored
        coeffs = torch.stack(
            [
                default if self._autoreset[i] else self.family.action_to_coeffs(actions[i])
                for i in range(self.num_envs)
            ]
        )
        new_seeds = {int(i): self._student_seed(int(i), None) for i in restarting}
        if len(restarting):
            self.process.reset_students(list(new_seeds), list(new_seeds.values()))
            self.t[restarting] = 0
        if len(restarting) < self.num_envs:
            self.process.advance(coeffs, self.interval, skip=restarting.tolist())
        self.t[~self._autoreset] += 1
        diverged = self.process.diverged.cpu().numpy()  # one host read per env step
        obs, metrics = self._observe()
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            if i in new_seeds:
                info = {**metrics[i], "student_seed": new_seeds[i]}
            elif diverged[i]:
                terminated[i] = True
                rewards[i] = self.divergence_penalty
                metrics[i] = self._metrics[i]  # as the single env: the last finite metrics
                info = {**metrics[i], "diverged": True, "termination_reason": "non-finite loss"}
            else:
                truncated[i] = self.t[i] >= self.horizon
                rewards[i] = float(self.reward_fn(self._metrics[i], metrics[i], truncated[i]))
                info = dict(metrics[i])
            infos = self._add_info(infos, info, i)
        self._metrics = metrics
        done = terminated | truncated
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and done.any():
            infos = self._same_step_reset(np.flatnonzero(done), obs, infos)
            self._autoreset[:] = False
        else:
            self._autoreset = done
        return obs, rewards, terminated, truncated, infos

    # -- helpers ---------------------------------------------------------------------------------
    def _student_seed(self, i: int, seed: int | None) -> int:
        """Sub-env i's next student seed: `seed` itself, else a draw from its own RNG (as
        ``LossTeachingEnv.reset``: ``super().reset(seed)`` then ``np_random.integers``)."""
        if seed is not None:
            self._rngs[i], _ = seeding.np_random(seed)
            return int(seed)
        if self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random()
        return int(self._rngs[i].integers(2**31 - 1))

    def _same_step_reset(self, done: np.ndarray, obs: np.ndarray, infos: dict) -> dict:
        final_obs = np.full(self.num_envs, None, dtype=object)
        final_info: dict[str, Any] = {}
        for i in done:
            final_obs[i] = obs[i].copy()
            final_info = self._add_info(final_info, {k: v[i] for k, v in _rows(infos)}, int(i))
        seeds = [self._student_seed(int(i), None) for i in done]
        self.process.reset_students(done.tolist(), seeds)
        self.t[done] = 0
        fresh_obs, metrics = self._observe()
        obs[done] = fresh_obs[done]
        reset_infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            if i in done:
                self._metrics[i] = metrics[i]
                seed = seeds[list(done).index(i)]
                info = {**metrics[i], "student_seed": seed}
            else:
                info = {k: v[i] for k, v in _rows(infos)}
            reset_infos = self._add_info(reset_infos, info, i)
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[done] = True
        return {
            **reset_infos,
            "final_obs": final_obs,
            "_final_obs": mask,
            "final_info": final_info,
            "_final_info": mask,
        }

    def _observe(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Observations (N, n) and each sub-env's info metrics (``process.observe``, which also
        keeps the best dev accuracy), in one device-to-host transfer."""
        metrics = self.process.observe(self.state_fn(self.process).detach())
        obs = np.stack([m.pop("features") for m in metrics])
        obs = np.clip(np.nan_to_num(obs, nan=0.0), -STATE_BOUND, STATE_BOUND)
        for m in metrics:  # a diverged student's info is replaced by its last finite one
            m.update(diverged=False, termination_reason="")
        return obs.astype(np.float32), metrics

    def close_extras(self, **kwargs: Any) -> None:
        self.template.close()


def _rows(infos: dict[str, Any]):
    """The (key, array) pairs of a vector info dict, without its `_key` masks."""
    return ((k, v) for k, v in infos.items() if not k.startswith("_") and isinstance(v, np.ndarray))


def unbatch_info(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's vector info (arrays + `_key` masks) -> SB3's list of per-env dicts."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask: Sequence[bool] = infos.get(f"_{key}", np.ones(n, dtype=bool))
        for i in np.flatnonzero(mask):
            v = value[i]
            out[i][key] = v.item() if isinstance(v, np.generic) else v
    return out
