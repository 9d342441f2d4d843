"""LossTeachingVectorEnv: the batched vector env steps exactly as gymnasium's SyncVectorEnv of
single envs (seeds, autoreset, divergence), through make_vec and the SB3 adapter."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the id)
from envs import ENV_ID, LossTeachingEnv, LossTeachingVectorEnv

SMALL = dict(
    student="mlp",
    loss="ce",
    horizon=3,
    interval=5,
    batch_size=32,
    dev_subset=64,
    device="cpu",
    dtype="float64",
    student_kwargs={"hidden": 16},
)
LRS = [0.1, 1e100, 0.05]  # the middle student overflows within its first interval


def pair(autoreset_mode="next-step"):
    vec = LossTeachingVectorEnv(len(LRS), autoreset_mode=autoreset_mode, lrs=LRS, **SMALL)
    fns = [lambda lr=lr: LossTeachingEnv(**{**SMALL, "lr": lr}) for lr in LRS]
    mode = vec.metadata["autoreset_mode"]
    return vec, gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def assert_same_infos(a, b, keys=("dev_accuracy", "dev_loss", "train_loss", "student_steps")):
    for key in (*keys, "student_seed", "diverged"):
        assert (key in a) == (key in b), key
        if key in a:
            np.testing.assert_array_equal(a[f"_{key}"], b[f"_{key}"])
            np.testing.assert_allclose(
                a[key][a[f"_{key}"]].astype(float), b[key][b[f"_{key}"]].astype(float), atol=1e-6
            )


@pytest.mark.parametrize("mode", ["next-step", "same-step"])
def test_steps_as_sync_vector_env_of_single_envs(mode):
    vec, sync = pair(mode)
    obs_v, info_v = vec.reset(seed=7)
    obs_s, info_s = sync.reset(seed=7)
    np.testing.assert_allclose(obs_v, obs_s, atol=1e-5)
    assert_same_infos(info_v, info_s)
    rng = np.random.default_rng(0)
    ends, terminated = 0, np.zeros(3, dtype=int)
    for _ in range(9):  # three episodes of 3 steps, the divergence, the autoresets
        actions = rng.uniform(-0.5, 0.5, vec.action_space.shape).astype(np.float32)
        out_v, out_s = vec.step(actions), sync.step(actions)
        for a, b in zip(out_v[:4], out_s[:4], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        assert_same_infos(out_v[4], out_s[4])
        if mode == "same-step" and "final_obs" in out_s[4]:
            np.testing.assert_array_equal(out_v[4]["_final_obs"], out_s[4]["_final_obs"])
            for i in np.flatnonzero(out_s[4]["_final_obs"]):
                np.testing.assert_allclose(
                    out_v[4]["final_obs"][i], out_s[4]["final_obs"][i], atol=1e-5
                )
        ends += int((out_v[2] | out_v[3]).sum())
        terminated += out_v[2]
    assert ends >= 6
    # the diverging student terminates (penalty -1) every episode; the others never do
    assert terminated[1] >= 3 and terminated[0] == terminated[2] == 0


def test_make_vec_vector_entry_point():
    env = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", **SMALL)
    assert isinstance(env.unwrapped, LossTeachingVectorEnv)
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 12) and env.observation_space.contains(obs)
    assert info["student_seed"].tolist() == [0, 1, 2, 3]
    obs, reward, term, trunc, info = env.step(env.action_space.sample())
    assert obs.shape == (4, 12) and reward.shape == (4,) and not (term | trunc).any()
    assert env.unwrapped.process.student_steps == 4 * SMALL["interval"]
    env.close()


def test_bad_actions_change_nothing():
    vec, _ = pair()
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros((2, 1), dtype=np.float32))
    bad = np.zeros(vec.action_space.shape, dtype=np.float32)
    bad[2, 0] = np.nan
    with pytest.raises(ValueError):
        vec.step(bad)
    assert vec.process.student_steps == 0 and vec.t.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="autoreset_mode"):
        LossTeachingVectorEnv(2, autoreset_mode="sometimes", **SMALL)
