"""A stable-baselines3 ``VecEnv`` over the batched vector env: SB3 agents teach N students that
train in one vmapped step.

SB3 does not take gymnasium vector envs: it has its own ``VecEnv`` API (``step_async`` /
``step_wait``, a list of info dicts, ``dones`` with the reset folded in). This adapter runs a
:class:`~envs.vector.LossTeachingVectorEnv` in gymnasium's same-step autoreset mode, which is
SB3's convention: a finished sub-env's last observation is in ``infos[i]["terminal_observation"]``,
``infos[i]["TimeLimit.truncated"]`` says whether the horizon (not divergence) ended it, and the
returned observation is already the next student's. It gives what ``DummyVecEnv`` over N single
envs gives for the same seeds and actions (tests/test_vector.py).

    from envs.sb3_vec import BatchedVecEnv
    venv = BatchedVecEnv(num_envs=8, dataset="mnist5k", student="mlp", loss="compact")
    PPO("MlpPolicy", VecMonitor(venv)).learn(...)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from envs.vector import LossTeachingVectorEnv, unbatch_info


class BatchedVecEnv(VecEnv):
    """SB3 ``VecEnv`` of `num_envs` students in one batched process (``**env_kwargs``: those of
    :class:`~envs.loss_teaching.LossTeachingEnv`; ``lrs``: optional per-student lrs)."""

    def __init__(self, num_envs: int = 1, **env_kwargs: Any) -> None:
        self.venv = LossTeachingVectorEnv(num_envs, autoreset_mode="same-step", **env_kwargs)
        self.process = self.venv.process
        super().__init__(
            num_envs, self.venv.single_observation_space, self.venv.single_action_space
        )
        self._actions: np.ndarray | None = None

    def reset(self):
        seeds = self._seeds
        seed = None if all(s is None for s in seeds) else seeds
        obs, infos = self.venv.reset(seed=seed)
        self.reset_infos = unbatch_info(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        out = unbatch_info(infos, self.num_envs)
        if dones.any():
            finals = unbatch_info(infos["final_info"], self.num_envs)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = out[i]  # the next student's reset info
                out[i] = {
                    **finals[i],
                    "terminal_observation": infos["final_obs"][i],
                    "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                }
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        self.venv.close()

    # SB3's attribute plumbing: every sub-env is the same env, so attributes are the vector env's
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args, indices: VecEnvIndices = None, **kwargs):
        raise NotImplementedError("sub-envs of a batched env have no methods of their own")

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
