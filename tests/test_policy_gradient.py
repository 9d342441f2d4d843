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

import json

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
    # the batched process would not wrap the spec's own env (the reward): one env at a time
    assert {row["n_envs"] for row in report.log} == {1}
    returns = np.array([row["mean_return"] for row in report.log])
    k = max(1, len(returns) // 5)
    first, last = returns[:k].mean(), returns[-k:].mean()
    # the untrained policy (mean 0, sigma 0.37) earns about -4 (0.137 + 0.1) = -0.95
    assert last > first + 0.25, f"return did not improve: first {first:.3f}, last {last:.3f}"
    env = teacher.spec_for(SPEC).make_env()
    obs, _ = env.reset(seed=11)
    error = np.abs(teacher.act(obs) - TARGET).mean()
    assert error < 0.2, f"mean |a - a*| = {error:.3f} (0.3 for the untrained mean)"


# -- how many students an RL fit trains at once (teachers/fit_envs.py) ---------------------------
TINY = TeachingSpec(
    horizon=2, interval=5, batch_size=16, dev_subset=32, device="cpu", student_kwargs={"hidden": 16}
)
EPISODE = TINY.episode_steps
SELECTION = 6 * 2 * EPISODE
"""the default selection's expected share: 6 candidates (every 0.2 of the budget, the untrained
and the last) of 2 students each"""


def update_rows(report) -> list[dict]:
    return [row for row in report.log if row.get("kind") != "select"]


def widths(report, *keys) -> set[tuple]:
    return {tuple(row[k] for k in keys) for row in update_rows(report)}


def test_reinforce_fits_on_the_batched_env_by_default_at_a_budget_of_several_episodes():
    """24 episodes and no selection: the widest batch that leaves 8 updates is 3 students,
    collected together, one batch per update; at a larger budget, with the default selection,
    the full 8."""
    report = make_teacher("reinforce", hidden=16, select_seeds=0).fit(TINY, 24 * EPISODE + 3)
    assert widths(report, "n_envs", "episodes_per_update") == {(3, 3)}
    assert len(update_rows(report)) == 8 and report.episodes == 24
    assert report.student_steps == 24 * EPISODE
    wide = make_teacher("reinforce", hidden=16).fit(TINY, SELECTION + 64 * EPISODE)
    assert widths(wide, "n_envs", "episodes_per_update") == {(8, 8)}
    assert wide.student_steps <= SELECTION + 64 * EPISODE


def test_a_given_episodes_per_update_gets_a_width_that_divides_it():
    report = make_teacher("reinforce", hidden=16, select_seeds=0, episodes_per_update=6).fit(
        TINY, 64 * EPISODE
    )
    assert widths(report, "n_envs", "episodes_per_update") == {(6, 6)}
    report = make_teacher("reinforce", hidden=16, select_seeds=0, episodes_per_update=4).fit(
        TINY, 64 * EPISODE
    )
    assert widths(report, "n_envs", "episodes_per_update") == {(4, 4)}


def test_a_tiny_budget_still_fits_one_student_at_a_time():
    """Below two students' worth of updates the default is the single env, 2 episodes an update
    (the old default): one episode's budget still makes an update, and a budget that the
    selection takes whole still fits."""
    one = make_teacher("reinforce", hidden=16, select_seeds=0).fit(TINY, EPISODE)
    assert widths(one, "n_envs", "episodes_per_update") == {(1, 2)}
    assert one.episodes == 1 and one.student_steps == EPISODE
    quick = make_teacher("reinforce", hidden=16).fit(TINY, 2 * EPISODE)
    assert quick.student_steps <= 2 * EPISODE
    for name in ("ppo", "a2c"):
        teacher = make_teacher(name, net_arch=[16])
        assert teacher.width(0, TINY) == (1, False)
        assert teacher.width(8 * 4 * 2 * TINY.interval, TINY) == (8, True)
        assert teacher.width(8 * 4 * 2 * TINY.interval - 1, TINY) == (7, True)
        assert teacher.width(8 * 4 * 2 * TINY.interval, ActionRewardSpec(**vars(TINY))) == (
            1,
            False,
        )
        report = teacher.fit(TINY, 2 * EPISODE)
        assert report.student_steps <= 2 * EPISODE
        assert widths(report, "n_envs", "batched") <= {(1, False)}


def test_ppo_fits_on_the_batched_env_by_default():
    report = make_teacher("ppo", net_arch=[16], select_seeds=0).fit(TINY, 8 * 4 * 2 * TINY.interval)
    assert widths(report, "n_envs", "batched") == {(8, True)}
    assert len(update_rows(report)) == 4 and report.student_steps == 8 * 4 * 2 * TINY.interval


def test_a_result_directory_made_before_the_default_resumes_with_the_old_width(tmp_path):
    """A directory whose config.json lacks the teachers' resolved options (the runner wrote none
    before) fits its units at the old defaults (one env, 2 episodes an update), also on a later
    resume; a new directory fits at the budget's width. Both directories record `{}` as the
    teacher's config."""
    from analysis.runner import Grid, RecordStore, prepare, run_grid

    budget = SELECTION + 24 * EPISODE

    def grid(seeds=1):
        return Grid(["reinforce"], seeds=seeds, budgets=[budget], spec=TINY)

    def fitted_widths(root):
        frame = RecordStore(root).read()
        fit = frame[(frame.phase == "fit") & frame.metric.isin(["n_envs", "episodes_per_update"])]
        return {
            (seed, metric): set(rows.value)
            for (seed, metric), rows in fit.groupby(["seed", "metric"])
        }

    run_grid(grid(), tmp_path / "new", progress=False)
    assert fitted_widths(tmp_path / "new") == {
        (0, "n_envs"): {3.0},
        (0, "episodes_per_update"): {3.0},
    }
    prepare(grid(), tmp_path / "old")  # config.json as the runner wrote it before: no options
    path = tmp_path / "old" / "config.json"
    config = json.loads(path.read_text())
    del config["teacher_options"]
    path.write_text(json.dumps(config))
    run_grid(grid(), tmp_path / "old", progress=False)
    recorded = json.loads(path.read_text())["teacher_options"]["reinforce"]
    assert (recorded["n_envs"], recorded["episodes_per_update"]) == (1, 2)
    run_grid(grid(seeds=2), tmp_path / "old", progress=False)  # a later resume adds a seed
    assert fitted_widths(tmp_path / "old") == {
        (s, m): {v} for s in (0, 1) for m, v in (("n_envs", 1.0), ("episodes_per_update", 2.0))
    }
    assert json.loads(path.read_text())["teacher_configs"] == {}


# -- where an untrained RL teacher starts: what its lr search scores -----------------------------
@pytest.mark.parametrize("name", ["reinforce", "ppo"])
def test_lr_search_scores_where_the_untrained_policy_acts(name, tmp_path):
    """An untrained policy acts near action 0, the box's centre, not at the family's default
    (compact: plain CE); the lr search (analysis.runner.search_teacher) scores the centre."""
    from analysis.runner import Grid, search_teacher
    from analysis.selection import evaluate_trial
    from teachers.fixed import BoxCentreTeacher, FixedTeacher

    teacher = make_teacher(name, select_seeds=0)
    teacher.fit(TINY, 1, seed=0)  # sets the policy up; a budget of 1 makes no update
    env = teacher.spec_for(TINY).make_env()
    obs, _ = env.reset(seed=0)
    centre = np.zeros(env.action_space.shape, np.float32)
    default = env.unwrapped.family.default_action()
    assert np.abs(teacher.act(obs) - centre).max() < 0.05
    assert np.abs(default - centre).max() > 0.5  # so the two starts are different losses

    grid = Grid(teachers=[name], spec=TINY, lr_grids={name: [0.1]}, selection_students=1)
    chosen = search_teacher(grid, name, tmp_path)
    own = teacher.spec_for(TINY)
    at = lambda start: evaluate_trial(start, own, {"lr": 0.1}, [2**31 - 1]).errors  # noqa: E731
    assert isinstance(teacher.frozen_start(), BoxCentreTeacher)
    assert chosen.trials[0].errors == at(BoxCentreTeacher(family="compact"))
    assert chosen.trials[0].errors != at(FixedTeacher(family="compact"))
