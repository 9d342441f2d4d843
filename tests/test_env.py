"""LossTeachingEnv: both env checkers, vector envs, reward sign, bad input, divergence, seeding."""

import warnings

import gymnasium
import numpy as np
import pytest
import torch
from torch.func import functional_call

import envs
from envs import ENV_ID, LossTeachingEnv
from envs.rewards import REWARDS

SMALL = {"horizon": 3, "interval": 5, "dev_subset": 64, "device": "cpu"}


def small_env(**kw) -> LossTeachingEnv:
    return LossTeachingEnv(**{**SMALL, **kw})


def test_gymnasium_env_checker_passes_without_warnings():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(small_env(), skip_render_check=True)


def test_sb3_env_checker_passes_without_warnings():
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(small_env(loss="compact"), warn=True)


def test_registered_id_makes_the_default_env():
    env = gymnasium.make(ENV_ID, **SMALL)
    assert isinstance(env.unwrapped, LossTeachingEnv)
    assert env.unwrapped.process.family.name == "bilinear"
    assert env.unwrapped.process.student_name == "mlp"
    assert env.action_space.shape == (10 * 10 + 10,)
    assert env.observation_space.shape == (len(envs.DefaultState.names),)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode):
    vec = gymnasium.make_vec(ENV_ID, num_envs=2, vectorization_mode=mode, **SMALL)
    try:
        obs, info = vec.reset(seed=[0, 1])
        assert obs.shape == (2, len(envs.DefaultState.names))
        actions = np.zeros((2, *vec.single_action_space.shape), np.float32)
        obs, rew, term, trunc, info = vec.step(actions)
        assert obs.shape[0] == 2 and rew.shape == (2,)
        assert not np.array_equal(obs[0], obs[1])  # different seeds, different students
        assert "dev_accuracy" in info
    finally:
        vec.close()


def dev_subset_accuracy_by_hand(env) -> float:
    """The current student's accuracy on the env's dev subset, by a plain forward pass: an
    account of the student independent of the env's metrics and reward code."""
    proc = env.unwrapped.process
    n = proc.dev_subset
    with torch.no_grad():
        proc.model.eval()
        logits = functional_call(proc.model, (proc.params, proc.buffers), (proc.data.x_dev[:n],))
        proc.model.train()
    return (logits.argmax(-1) == proc.data.y_dev[:n]).double().mean().item()


def run_episode(env, action, seed=0, per_step=None):
    """(return, first and last dev-subset accuracy by hand); `per_step` (a list) receives each
    step's (reward, change of the hand-measured accuracy)."""
    obs, info = env.reset(seed=seed)
    first_acc, total, done = dev_subset_accuracy_by_hand(env), 0.0, False
    acc = first_acc
    while not done:
        obs, r, term, trunc, info = env.step(action)
        total += r
        done = term or trunc
        new_acc = dev_subset_accuracy_by_hand(env)
        if per_step is not None:
            per_step.append((r, new_acc - acc))
        acc = new_acc
    return total, first_acc, dev_subset_accuracy_by_hand(env)


def test_reward_sign_better_student_earns_more():
    """Dense dev-accuracy reward: the return is the final minus the initial dev accuracy as
    measured outside the env, so the student taught with the plain default loss earns more than
    the one taught with a loss that pushes against the true class."""
    env = small_env(loss="compact", horizon=4, interval=15)
    steps = []
    good, first_good, last_good = run_episode(env, env.family.default_action(), per_step=steps)
    # tau = 0.5 on logits with the margin knob pushing against the true class: a worse loss
    bad_action = np.array([-1.0, 1.0, 1.0, 1.0, -1.0], np.float32)
    bad, first_bad, last_bad = run_episode(env, bad_action)
    assert first_good == first_bad  # same seed, same initial student
    assert good == pytest.approx(last_good - first_good, abs=1e-6)
    assert bad == pytest.approx(last_bad - first_bad, abs=1e-6)
    assert last_good > last_bad  # the default loss really teaches better (59 vs 57 of 64)
    # each step pays that step's change, not a neighbour's (a sum would hide a shifted reward)
    for reward, change in steps:
        assert reward == pytest.approx(change, abs=1e-6)
    assert len({round(c, 6) for _, c in steps}) > 1  # the changes differ, so the check has teeth


def test_step_has_gymnasiums_signature():
    """``step(action)`` and nothing else: a recording teacher goes through the process."""
    import inspect

    assert list(inspect.signature(LossTeachingEnv.step).parameters) == ["self", "action"]


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_reward_is_monotone_in_the_dev_metric(name):
    fn = REWARDS[name]
    prev = {"dev_accuracy": 0.5, "dev_loss": 1.0}
    better = {"dev_accuracy": 0.6, "dev_loss": 0.8}
    worse = {"dev_accuracy": 0.4, "dev_loss": 1.2}
    assert fn(prev, better, True) > fn(prev, worse, True)


def test_terminal_reward_pays_only_at_the_horizon():
    env = small_env(reward="terminal")
    env.reset(seed=0)
    rewards = [env.step(env.family.default_action())[1] for _ in range(3)]
    assert rewards[0] == rewards[1] == 0.0 and rewards[2] > 0


@pytest.mark.parametrize(
    "action, match",
    [
        (np.full(110, np.nan, np.float32), "non-finite"),
        (np.full(110, np.inf, np.float32), "non-finite"),
        (np.zeros(5, np.float32), "shape"),
        (np.zeros((2, 110), np.float32), "shape"),
        ("up", "numeric"),
    ],
)
def test_bad_actions_raise_and_leave_the_env_usable(action, match):
    env = small_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    assert env.t == 0 and env.process.step == 0  # nothing advanced
    env.step(np.zeros(110, np.float32))  # still works
    assert env.process.step == SMALL["interval"]


def test_out_of_box_actions_are_clipped():
    env = small_env()
    env.reset(seed=0)
    a = env.step(np.full(110, 3.0, np.float32))[0]
    env.reset(seed=0)
    b = env.step(np.ones(110, np.float32))[0]
    np.testing.assert_array_equal(a, b)


def test_diverging_student_terminates_with_penalty_then_resets_cleanly():
    env = small_env(loss="ce", lr=1e12, momentum=0.0, divergence_penalty=-2.0)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.ones(1, np.float32))
    assert terminated and not truncated and reward == -2.0
    assert info["diverged"] and info["termination_reason"] == "non-finite loss"
    assert env.observation_space.contains(obs)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.ones(1, np.float32))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and not env.process.diverged


def test_truncated_at_horizon_and_info_metrics():
    env = small_env()
    env.reset(seed=0)
    for t in range(3):
        obs, r, term, trunc, info = env.step(env.family.default_action())
        assert trunc == (t == 2) and not term
        assert env.observation_space.contains(obs)
    for key in ("dev_accuracy", "dev_loss", "train_loss", "train_accuracy", "student_steps", "lr"):
        assert key in info
    assert info["student_steps"] == 15


def test_seed_replays_and_other_seed_differs():
    env = small_env()
    runs = []
    for seed in (4, 4, 5):
        obs, _ = env.reset(seed=seed)
        seq = [obs] + [env.step(np.zeros(110, np.float32))[0] for _ in range(2)]
        runs.append(np.stack(seq))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_unknown_names_raise_listing_valid_ones():
    for kw, valid in (
        ({"dataset": "mnist6k"}, "mnist5k"),
        ({"student": "resnet9"}, "resnet8"),
        ({"loss": "bilnear"}, "bilinear"),
        ({"reward": "accuracy"}, "dev-accuracy-delta"),
    ):
        with pytest.raises(ValueError, match=valid):
            small_env(**kw)


def test_custom_state_and_reward_functions_plug_in():
    import torch

    class Progress:
        names = ("progress",)

        def __call__(self, process):
            return torch.tensor([process.step / process.optim.total_steps])

    env = small_env(state_fn=Progress(), reward=lambda prev, cur, done: 1.0)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (1,)
    obs, r, *_ = env.step(np.zeros(110, np.float32))
    assert r == 1.0 and obs[0] == pytest.approx(5 / 15)
