"""The policy-gradient teachers learn, not only run: on a LossTeachingEnv whose reward depends only
on the action, with a known best action a*, fitting must raise the episode return and move the
teacher's deterministic action towards a*.

The env is the real one (a student is trained, budgets are charged in its student steps) with the
reward replaced, built through an TeachingSpec subclass, so ``fit`` runs its ordinary code path.
Seeds 0-3 measured (first -> last fifth of the fit's returns; mean |a - a*| at a reset observation):
REINFORCE -0.89 -> -0.44, 0.03 ... -0.96 -> -0.40, 0.07; PPO -0.85 -> -0.40, 0.12 ... -0.97 -> -0.46,
0.09. (PPO's deterministic action drifts from a* on some later observations, which differ from
those seen while exploring, so only the reset observation's action is asserted.) These figures
are for the 4-knob compact family; since its 5th knob (GCE q) PPO needs 2,560 steps instead of
1,280 to pass at seed 0 (at 1,920: mean |a - a*| = 0.203).

The target lies well inside the box: with a clipped Gaussian, E[-(clip(a) - a*)^2] is maximised
beyond a* when sigma is large (at mu = 0.95 for a* = 0.5, sigma = 0.6), so a target near the
boundary would test the clipping, not the learning.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from teachers import TeachingSpec, make_teacher

TARGET = np.array([0.4, -0.4, 0.2, -0.2, 0.3], np.float32)
"""a* for the compact family (5 knobs)"""


class ActionReward(gymnasium.Wrapper):
    """r = -mean((a - a*)^2) of the action the env received (clipped): best return 0 at a*."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        return obs, -float(np.mean((a - TARGET) ** 2)), terminated, truncated, info


class ActionRewardSpec(TeachingSpec):
    def make_env(self, **overrides):
        return ActionReward(super().make_env(**overrides))


SPEC = ActionRewardSpec(
    horizon=4,
    interval=1,
    batch_size=16,
    dev_subset=32,
    device="cpu",
    student_kwargs={"hidden": 16},
)
CASES = {  # teacher: (config, budget in student steps = env steps here); no selection: the
    # reward here is the action's distance, which a student's select error does not measure
    "reinforce": ({"init_log_std": -1.0, "select_seeds": 0}, 800),
    "ppo": (
        {
            "log_std_init": -1.0,
            "n_steps": 64,
            "algo_kwargs": {"learning_rate": 3e-3},
            "select_seeds": 0,
        },
        2560,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_policy_gradient_teacher_learns_the_best_action(name):
    config, budget = CASES[name]
    teacher = make_teacher(name, family="compact", **config)
    report = teacher.fit(SPEC, budget, seed=0)
    assert report.student_steps == budget
    returns = np.array([row["mean_return"] for row in report.log])
    k = max(1, len(returns) // 5)
    first, last = returns[:k].mean(), returns[-k:].mean()
    # the untrained policy (mean 0, sigma 0.37) earns about -4 (0.137 + 0.1) = -0.95
    assert last > first + 0.25, f"return did not improve: first {first:.3f}, last {last:.3f}"
    env = teacher.spec_for(SPEC).make_env()
    obs, _ = env.reset(seed=11)
    error = np.abs(teacher.act(obs) - TARGET).mean()
    assert error < 0.2, f"mean |a - a*| = {error:.3f} (0.3 for the untrained mean)"
