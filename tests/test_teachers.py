"""Every registered teacher, one interface: fits within its budget on a tiny spec, acts in the
box, teaches a fresh student, and comes back from save/load acting identically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from teachers import TEACHERS, Teacher, TeachingSpec, make_teacher, teacher_class


class RecordingSpec(TeachingSpec):
    """An TeachingSpec that keeps every env it builds, so the test reads the processes' own
    counters (``process.cost``) instead of trusting the teacher's report."""

    built: list = []

    def make_env(self, **overrides):
        env = super().make_env(**overrides)
        RecordingSpec.built.append(env)
        return env


TINY = RecordingSpec(
    horizon=2, interval=5, batch_size=32, dev_subset=64, device="cpu", student_kwargs={"hidden": 32}
)
BUDGET = 20 * TINY.episode_steps + 7  # not a multiple of anything a teacher rounds to; holds
# the untrained candidate (2 students), an update and another candidate of every learning teacher
LEARNERS = ("reinforce", "ppo", "a2c")  # teachers of this issue that must spend their budget
TINY_CONFIGS = {  # small networks: the interface is under test here, not the learning
    "reinforce": {"hidden": 16},
    "ppo": {"net_arch": [16]},
    "a2c": {"net_arch": [16]},
    "l2t-dln": {"hidden": 8, "lookahead": 5},  # an iteration (29 step equivalents) fits BUDGET
}


def importable(name: str) -> bool:
    try:
        teacher_class(name)
    except ImportError:
        return False
    return True


NAMES = [
    pytest.param(n, marks=pytest.mark.skipif(not importable(n), reason=f"{n} does not import"))
    for n in sorted(TEACHERS)
]
_FITTED: dict[str, tuple[Teacher, object, int]] = {}


def fitted(name: str) -> tuple[Teacher, object, int]:
    """(teacher, report, student steps the built envs counted), fitted once per session."""
    if name not in _FITTED:
        RecordingSpec.built = []
        teacher = make_teacher(name, **TINY_CONFIGS.get(name, {}))
        report = teacher.fit(TINY, BUDGET, seed=0)
        counted = sum(env.unwrapped.process.cost.total for env in RecordingSpec.built)
        _FITTED[name] = teacher, report, counted
    return _FITTED[name]


def observations(teacher: Teacher, n: int = 3) -> tuple[object, list[np.ndarray]]:
    env = teacher.spec_for(TINY).make_env()
    obs, _ = env.reset(seed=5)
    teacher.begin_episode(env)
    rng = np.random.default_rng(0)
    noisy = [obs + rng.normal(0, 0.5, obs.shape).astype(np.float32) for _ in range(n - 1)]
    return env, [obs, *noisy]


@pytest.mark.parametrize("name", NAMES)
def test_the_skeleton_stops_every_teacher_at_its_budget(name, monkeypatch):
    """Over the whole registry: every update a teacher ran cost, by its processes' own counters,
    no more than it declared; the report is what the processes were charged; and the fit ended
    because the next declared update did not fit in what was left (or nothing was left to
    learn), so no teacher stops early or overshoots."""
    cls = teacher_class(name)
    original_next, original_update = cls.next_update, cls.update
    declared, ran = [], []

    def spy_next(self, run):
        cost = original_next(self, run)
        declared.append((run.spent, cost))
        return cost

    def spy_update(self, run):
        before = run.spent
        rows = original_update(self, run)
        ran.append((before, run.spent, declared[-1][1]))
        return rows

    monkeypatch.setattr(cls, "next_update", spy_next)
    monkeypatch.setattr(cls, "update", spy_update)
    RecordingSpec.built = []
    report = make_teacher(name, **TINY_CONFIGS.get(name, {})).fit(TINY, BUDGET, seed=0)
    counted = sum(env.unwrapped.process.cost.total for env in RecordingSpec.built)
    assert report.student_steps == pytest.approx(counted) and counted <= BUDGET
    for before, after, cost in ran:
        assert after - before <= cost + 1e-9  # an update never costs more than declared
    spent, last = declared[-1] if declared else (0.0, None)
    selects = [r for r in report.log if r.get("kind") == "select"]
    reserved = selects[-1]["select_cost"] if selects else 0.0  # the last candidate's students
    assert last is None or spent + last + reserved > BUDGET  # stopped only when nothing fit
    # what is spent besides the updates is the selection's candidates, and only that
    selected = sum(r["select_cost"] for r in report.log if r.get("kind") == "select")
    updates = sum(after - before for before, after, _ in ran)
    assert report.student_steps == pytest.approx(updates + selected)
    if name in LEARNERS or name in ("l2t-dlf", "l2t-dln"):
        assert ran and counted > 0 and len(report.log) >= 1
    else:  # nothing to learn: nothing spent
        assert not ran and counted == 0 and not report.log


@pytest.mark.parametrize("name", NAMES)
def test_acts_in_the_box_and_teaches_a_fresh_student(name):
    teacher, _, _ = fitted(name)
    env, obs = observations(teacher)
    for o in obs:
        a = teacher.act(o)
        # l2t-dln: float64, so that the env maps the action back to exactly its DLN
        assert a.shape == env.action_space.shape
        assert a.dtype == (np.float64 if name == "l2t-dln" else np.float32)
        assert np.isfinite(a).all() and (np.abs(a) <= 1).all()
    env = teacher.spec_for(TINY).make_env()
    result = teacher.teach(TINY, seed=3, env=env)
    assert len(result.coeffs) == env.unwrapped.horizon  # l2t-dln: one decision per look-ahead
    assert result.final["student_steps"] == TINY.episode_steps
    # the reported test error is the taught student's, recomputed here by hand
    proc = env.unwrapped.process
    x, y = proc.data.split("test")
    with torch.no_grad():
        proc.model.eval()
        logits = functional_call(proc.model, (proc.params, proc.buffers), (x,))
        proc.model.train()
    hand_error = 1.0 - (logits.argmax(-1) == y).double().mean().item()
    assert result.final["test_error"] == pytest.approx(hand_error, abs=1e-6)
    env.reset(seed=3)  # the same student untrained: teaching moved it
    assert result.final["test_error"] != proc.evaluate("test")["error"]


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_actions(name, tmp_path):
    teacher, _, _ = fitted(name)
    env, obs = observations(teacher)
    teacher.save(tmp_path / "teacher.pt")
    loaded = Teacher.load(tmp_path / "teacher.pt")
    assert type(loaded) is type(teacher) and loaded.config == teacher.config
    loaded.begin_episode(env)
    for o in obs:  # the random teacher continues its generator: same draws in the same order
        np.testing.assert_array_equal(loaded.act(o), teacher.act(o))


@pytest.mark.parametrize("name", LEARNERS)
def test_learning_teachers_refuse_to_act_before_fit(name):
    with pytest.raises(RuntimeError, match="fit"):
        make_teacher(name).act(np.zeros(12, np.float32))


@pytest.mark.parametrize("name", LEARNERS)
def test_rl_teachers_run_on_the_full_bilinear_family(name):
    """Item 4: the action space is a parameter, recorded in the config and the saved teacher."""
    teacher = make_teacher(name, family="bilinear", **TINY_CONFIGS[name])
    spec = TINY.replace(horizon=1)
    report = teacher.fit(spec, 2 * spec.episode_steps, seed=1)
    assert report.cost == {"train": 2 * spec.episode_steps}  # two 1-step episodes fit exactly
    assert teacher.config["family"] == "bilinear"
    env = teacher.spec_for(spec).make_env()
    obs, _ = env.reset(seed=0)
    assert teacher.act(obs).shape == (10 * 10 + 10,)  # Phi (C x C) and b (C) on MNIST
    with pytest.raises(ValueError, match="fitted"):  # a compact env does not fit this teacher
        teacher.begin_episode(TINY.replace(loss="compact").make_env())


@pytest.mark.parametrize("name", LEARNERS)
def test_a_budget_below_one_update_spends_nothing(name):
    teacher = make_teacher(name, **TINY_CONFIGS[name])
    report = teacher.fit(TINY, TINY.interval - 1)
    assert report.student_steps == 0
    with pytest.raises(ValueError, match="budget"):
        teacher.fit(TINY, -1)


def test_ppo_rollouts_are_derived_from_the_budget():
    """A budget of 48 env steps still gives PPO its min_updates = 4 updates (not one 2,048-step
    rollout that never completes), and a given n_steps is kept."""
    ppo = make_teacher("ppo")
    assert ppo.rollout_steps(48 * 50, 50) == 12
    assert ppo.rollout_steps(10**9, 50) == 2048
    assert make_teacher("ppo", n_steps=7).rollout_steps(10**9, 50) == 7
    _, report, _ = fitted("ppo")
    rollouts = [r for r in report.log if r.get("kind") != "select"]  # beside the candidates
    assert len(rollouts) >= ppo.config["min_updates"]


def test_fixed_teachers_act_on_their_own_families():
    ce, ls = make_teacher("ce"), make_teacher("label-smoothing", epsilon=0.2)
    assert ce.spec_for(TINY).loss == "ce" and ls.spec_for(TINY).loss == "label-smoothing"
    env = ls.spec_for(TINY).make_env()
    ls.begin_episode(env)
    coeffs = env.unwrapped.family.action_to_coeffs(ls.act(None))
    np.testing.assert_allclose(coeffs.numpy(), [0.2])
    fixed = make_teacher("fixed")  # the default action follows each env's family
    for loss in ("compact", "bilinear"):
        env = TINY.replace(loss=loss).make_env()
        fixed.begin_episode(env)
        np.testing.assert_array_equal(fixed.act(None), env.unwrapped.family.default_action())
    with pytest.raises(ValueError, match="shape"):
        make_teacher("fixed", action=[0.0, 0.0]).begin_episode(env)


def test_fixed_teachers_may_bring_their_own_student_lr():
    """Baselines tuned per loss on dev: `lr` overrides the spec's for that teacher only."""
    for name, extra in (("ce", {}), ("label-smoothing", {"epsilon": 0.2}), ("gce", {"q": 0.5})):
        teacher = make_teacher(name, lr=0.03, **extra)
        assert teacher.spec_for(TINY).lr == 0.03 and teacher.config == {**extra, "lr": 0.03}
        assert make_teacher(name, **extra).spec_for(TINY).lr == TINY.lr
        env = teacher.spec_for(TINY).make_env()
        assert env.unwrapped.process.optim.lr == 0.03
    with pytest.raises(ValueError, match="lr"):
        make_teacher("ce", lr=-1.0)


def test_unknown_teacher_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown teacher 'reinforc'") as err:
        make_teacher("reinforc")
    for name in TEACHERS:
        assert repr(name) in str(err.value)
    assert "Did you mean 'reinforce'?" in str(err.value)


def test_bad_rl_configs_are_clear_errors():
    with pytest.raises(ValueError, match="baseline"):
        make_teacher("reinforce", baseline="median")
    with pytest.raises(TypeError):
        make_teacher("reinforce", learning_rate=1e-3)  # a typo of lr is not silently ignored
    with pytest.raises(ValueError, match="n_envs"):
        make_teacher("ppo", n_envs=0)


@pytest.mark.parametrize("name", ["ppo", "a2c"])
def test_sb3_teachers_fit_on_the_batched_vec_env_as_on_dummy_vec_env(name):
    """n_envs students in one batched process: the same budget, rollouts and (up to float32
    noise in the students) the same episode returns as a DummyVecEnv of single envs."""
    reports = [
        make_teacher(name, n_envs=3, batched=b, select_seeds=0, **TINY_CONFIGS[name]).fit(
            TINY, BUDGET, seed=1
        )  # no selection: the rollouts are under test
        for b in (False, True)
    ]
    assert reports[0].student_steps == reports[1].student_steps > 0
    assert [r["env_steps"] for r in reports[0].log] == [r["env_steps"] for r in reports[1].log]
    assert reports[0].episodes == reports[1].episodes > 0
    for a, b in zip(reports[0].log, reports[1].log, strict=True):
        np.testing.assert_allclose(a["episode_returns"], b["episode_returns"], atol=1e-3)


@pytest.mark.parametrize("name", ["ce", "l2t-dlf", "reinforce", "ppo"])
def test_teach_batch_equals_teaching_one_student_at_a_time(name):
    from teachers.batch_eval import teach_batch

    teacher = make_teacher(name) if name == "ce" else fitted(name)[0]
    seeds = [3, 8, 21]
    batch = teach_batch(teacher, TINY, seeds)
    for seed, got in zip(seeds, batch, strict=True):
        want = teacher.teach(TINY, seed=seed)
        assert got.seed == seed and len(got.steps) == len(want.steps) == TINY.horizon + 1
        np.testing.assert_allclose(np.stack(got.coeffs), np.stack(want.coeffs), atol=1e-4)
        for a, b in zip(got.steps, want.steps, strict=True):
            assert a.keys() == b.keys()
            for key in ("reward", "dev_accuracy", "train_loss", "student_steps"):
                np.testing.assert_allclose(a[key], b[key], atol=1e-4)
        for key in ("test_error", "dev_error", "student_steps", "diverged", "teach_cost"):
            assert got.final[key] == pytest.approx(want.final[key], abs=1e-3)


def test_teach_batch_refuses_a_teacher_that_reads_its_bound_student():
    from teachers.batch_eval import teach_batch

    with pytest.raises(ValueError, match="acts on the one student it is bound to"):
        teach_batch(make_teacher("l2t-dln"), TINY, [0, 1])


def test_reinforce_fits_n_envs_students_at_once():
    """n_envs=2: episodes come two at a time from one batched process; the budget holds exactly
    as the processes count it."""
    RecordingSpec.built = []
    teacher = make_teacher("reinforce", n_envs=2, episodes_per_update=2, hidden=16, select_seeds=0)
    report = teacher.fit(TINY, 4 * TINY.episode_steps + 7, seed=0)  # no selection: 4 episodes
    assert report.episodes == 4 and len(report.log) == 2
    assert report.student_steps == 4 * TINY.episode_steps <= BUDGET
    with pytest.raises(ValueError, match="multiple of n_envs"):
        make_teacher("reinforce", n_envs=3, episodes_per_update=2)


STOP_BUDGET = 20 * TINY.episode_steps
UPDATE_COST = {  # step equivalents one update of each learning teacher may spend on TINY
    "l2t-dlf": 2 * TINY.episode_steps,  # the first update: a selection of 2 students
    "l2t-dln": 29,  # two differentiable 5-step look-aheads, two CE_val gradients, 5 steps
    "reinforce": 2 * TINY.episode_steps,  # episodes_per_update = 2
    "ppo": make_teacher("ppo").rollout_steps(STOP_BUDGET, TINY.interval) * TINY.interval,
    "a2c": make_teacher("a2c").rollout_steps(STOP_BUDGET, TINY.interval) * TINY.interval,
}


@pytest.mark.parametrize("name", NAMES)
def test_a_callback_returning_false_stops_every_learning_teacher(name):
    """The fit skeleton's rule (teachers.base.FitRun): the first row's callback returns False,
    the teacher stops within one update of it, never over budget, and the callback is not
    called again; teachers with nothing to learn never call it."""
    seen = []

    def stop(row: dict) -> bool:
        seen.append(dict(row))
        return False

    RecordingSpec.built = []
    config = TINY_CONFIGS.get(name, {})
    report = make_teacher(name, **config).fit(TINY, STOP_BUDGET, seed=0, callback=stop)
    counted = sum(env.unwrapped.process.cost.total for env in RecordingSpec.built)
    assert report.student_steps == pytest.approx(counted) and counted <= STOP_BUDGET
    if not seen:  # a fixed teacher: nothing learned, nothing spent
        assert name not in UPDATE_COST and report.student_steps == 0 and not report.log
        return
    assert len(seen) == 1 and report.log[0]["student_steps"] == seen[0]["student_steps"]
    assert "wall_time" in seen[0]
    assert seen[0]["student_steps"] <= report.student_steps
    assert report.student_steps <= seen[0]["student_steps"] + UPDATE_COST[name] < STOP_BUDGET
    assert report.wall_time > 0


def test_the_skeleton_refuses_a_fit_over_its_budget():
    """A teacher whose update costs more than it declared is a bug, not a silent unequal
    comparison: the skeleton reads the processes' counters and refuses the fit; it also checks
    the budget before any work."""

    class Overspender(Teacher):
        name = "overspender"

        def act(self, observation):
            return np.zeros(1, np.float32)

        def setup(self, run):
            self.env = run.make_env()
            self.env.reset(seed=0)

        def next_update(self, run):
            return 1.0  # declares one step ...

        def update(self, run):
            process = self.env.unwrapped.process
            process.advance(process.family.default_coeffs(), 11)  # ... and runs eleven
            return [{}]

    with pytest.raises(RuntimeError, match="over its budget of 10"):
        Overspender().fit(TINY, 10)
    with pytest.raises(ValueError, match="budget"):
        Overspender().fit(TINY, 2.5)
