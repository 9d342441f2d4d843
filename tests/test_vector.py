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
    assert env.unwrapped.process.cost.by_kind() == {"train": 4 * SMALL["interval"]}
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
    assert vec.process.cost.total == 0 and vec.t.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="autoreset_mode"):
        LossTeachingVectorEnv(2, autoreset_mode="sometimes", **SMALL)


def test_sb3_adapter_equals_dummy_vec_env():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs.sb3_vec import BatchedVecEnv

    ours = BatchedVecEnv(len(LRS), lrs=LRS, **SMALL)
    theirs = DummyVecEnv([lambda lr=lr: LossTeachingEnv(**{**SMALL, "lr": lr}) for lr in LRS])
    for v in (ours, theirs):
        v.seed(5)
    np.testing.assert_allclose(ours.reset(), theirs.reset(), atol=1e-5)
    assert [i["student_seed"] for i in ours.reset_infos] == [5, 6, 7]
    rng = np.random.default_rng(1)
    finished = 0
    for _ in range(7):
        actions = rng.uniform(-0.5, 0.5, (len(LRS), ours.action_space.shape[0]))
        (o1, r1, d1, i1), (o2, r2, d2, i2) = ours.step(actions), theirs.step(actions)
        np.testing.assert_allclose(o1, o2, atol=1e-5)
        np.testing.assert_allclose(r1, r2, atol=1e-5)
        np.testing.assert_array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert a.keys() >= {"dev_accuracy", "diverged"} and a["diverged"] == b["diverged"]
            assert ("terminal_observation" in a) == ("terminal_observation" in b)
            if "terminal_observation" in a:
                finished += 1
                np.testing.assert_allclose(
                    a["terminal_observation"], b["terminal_observation"], atol=1e-5
                )
                assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
    assert finished >= 5


def test_sb3_ppo_learns_on_the_adapter():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from envs.sb3_vec import BatchedVecEnv

    venv = VecNormalize(VecMonitor(BatchedVecEnv(4, **{**SMALL, "lr": 0.1})), norm_reward=False)
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(32)  # 2 rollouts of 4 x 4 env steps
    assert model.num_timesteps == 32
    assert venv.unwrapped.process.cost.by_kind() == {"train": 32 * SMALL["interval"]}
    assert len(model.ep_info_buffer) >= 4  # VecMonitor saw whole episodes end
