"""Every learning teacher is chosen among snapshots of its own fit on dev's ``select`` part, by one
rule in the fit skeleton (teachers.base.Selection): the fitted teacher is the snapshot with the
lowest logged select error (the untrained one included), the selection students are charged and
the fit stays within its budget, selection reads ``select`` and never ``test``, and every teacher
gets the same number of selection students per candidate."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from envs.cost import price
from envs.process import TeachingProcess
from teachers import TEACHERS, Teacher, TeachingSpec, make_teacher, teacher_class
from teachers.base import SeedPlan, SelectOptions

TINY = TeachingSpec(
    horizon=2, interval=5, batch_size=32, dev_subset=64, device="cpu", student_kwargs={"hidden": 32}
)
LEARNING = ("a2c", "l2t-dlf", "l2t-dln", "ppo", "reinforce")
SMALL = {  # small networks: the selection is under test, not the learning; one env at a time,
    # so every process is built by the spec's make_env, which the test counts
    "reinforce": {"hidden": 16, "n_envs": 1},
    "ppo": {"net_arch": [16], "n_envs": 1},
    "a2c": {"net_arch": [16], "n_envs": 1},
    "l2t-dln": {"hidden": 8, "lookahead": 5},
}


IGNORED = {"best_dev_error"}
"""L2T-DLF saves the kept candidate's error beside its parameters: not part of the snapshot"""


def same(a, b) -> bool:
    """Nested state_dicts equal, tensor by tensor; an SB3 model by its policy's tensors (its zip
    holds a timestamp) and its observation statistics."""
    if isinstance(a, dict) and "sb3_zip" in a:
        return same(sb3_policy(a), sb3_policy(b)) and same(a["obs_stats"], b["obs_stats"])
    if isinstance(a, dict):
        keys = a.keys() - IGNORED
        return (
            isinstance(b, dict)
            and keys == b.keys() - IGNORED
            and all(same(a[k], b[k]) for k in keys)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def sb3_policy(state: dict) -> dict:
    import io

    from stable_baselines3.common.save_util import load_from_zip_file

    _, params, _ = load_from_zip_file(io.BytesIO(state["sb3_zip"]))
    return params


def recording_snapshots(teacher: Teacher) -> list[dict]:
    """Every state_dict the fit takes (the selection's snapshots, in the order of its rows)."""
    snaps: list[dict] = []
    original = teacher.state_dict

    def spy():
        state = original()
        snaps.append(copy.deepcopy(state))
        return state

    teacher.state_dict = spy
    return snaps


# -- a teacher whose updates make it worse on select ---------------------------------------------
@dataclass
class SlowerConfig(SelectOptions):
    step: float = 0.5
    """each update moves the lr action this far down (the student lr shrinks 2^(2 step)-fold)"""


class SlowerTeacher(Teacher):
    """Acts with the default loss and an lr action x; every update trains one student (charged)
    and lowers x, so a 20-step student learns less: each update makes it worse on select."""

    name = "slower"
    Config = SlowerConfig

    def __init__(self, config=None, /, **options) -> None:
        super().__init__(config, **options)
        self.x = 0.0

    def setup(self, run):
        self.env = run.make_env()

    def begin_episode(self, env):
        self.default = env.unwrapped.family.default_action()

    def act(self, observation):
        a = np.array(self.default, dtype=np.float32)
        a[-1] = self.x
        return a

    def next_update(self, run):
        return price("train", run.spec.episode_steps)

    def update(self, run):
        for _ in self.rollout(self.env, run.seeds.nth(len(run.report.log))):
            pass
        self.x = max(-1.0, self.x - self.cfg.step)
        return [{"x": self.x}]

    def finish(self, run):
        self.env = None

    def student_cost(self, run):
        return price("train", run.spec.episode_steps)

    def state_dict(self):
        return {"x": self.x}

    def load_state_dict(self, state):
        self.x = state["x"]


LR_SPEC = TINY.replace(lr_action=True, interval=10, loss="compact")


def test_the_fitted_teacher_is_the_best_snapshot_the_untrained_one_included():
    teacher = SlowerTeacher(select_every_updates=1, select_seeds=2)
    snaps = recording_snapshots(teacher)
    budget = 14 * LR_SPEC.episode_steps
    report = teacher.fit(LR_SPEC, budget, seed=0)
    del teacher.state_dict
    selects = [r for r in report.log if r.get("kind") == "select"]
    errors = [r["select_error"] for r in selects]
    assert len(selects) == len(snaps) >= 4 and selects[0]["updates"] == 0
    assert [s["x"] for s in snaps] == [-min(1.0, 0.5 * r["updates"]) for r in selects]
    # lowering the lr made every candidate worse than the untrained teacher
    assert errors[0] < min(errors[1:])
    best = int(np.argmin(errors))
    assert best == 0 and teacher.x == 0.0 and same(teacher.state_dict(), snaps[best])
    assert teacher.best_dev_error == errors[0] == selects[-1]["best_select_error"]
    assert report.selection["best_updates"] == 0 and report.selection["candidates"] == len(snaps)
    # the candidates' students were charged: updates and selection make up the spend exactly
    updates = sum(r.get("kind") != "select" for r in report.log)
    per_candidate = 2 * LR_SPEC.episode_steps
    assert all(r["select_cost"] == per_candidate for r in selects)
    spent = updates * LR_SPEC.episode_steps + len(selects) * per_candidate
    assert report.student_steps == pytest.approx(spent)
    assert report.student_steps <= budget < report.student_steps + per_candidate


def test_candidates_every_fraction_of_the_budget():
    """select_every=0.25: the untrained teacher, one candidate at the first update after each
    quarter of the budget is spent, and the last teacher (each quarter holds several updates)."""
    T = LR_SPEC.episode_steps
    teacher = SlowerTeacher(select_every=0.25, select_seeds=1, step=0.0)
    budget = 40 * T
    report = teacher.fit(LR_SPEC, budget, seed=0)
    selects = [r for r in report.log if r.get("kind") == "select"]
    spent_before = [r["student_steps"] - r["select_cost"] for r in selects]
    assert spent_before[0] == 0
    for k, spent in enumerate(spent_before[1:-1], start=1):
        assert k * budget / 4 <= spent < k * budget / 4 + T  # the first update past the point
    assert len(selects) == 5 and report.student_steps == budget  # the last one fits exactly


def test_a_budget_below_one_candidate_selects_nothing_and_keeps_the_fit():
    teacher = SlowerTeacher(select_seeds=3)
    report = teacher.fit(LR_SPEC, 2 * LR_SPEC.episode_steps, seed=0)
    assert not [r for r in report.log if r.get("kind") == "select"]
    assert teacher.x == -1.0 and teacher.best_dev_error is None  # two updates, kept
    assert report.selection["candidates"] == 0


def test_select_options_are_checked():
    for bad in ({"select_every": 0}, {"select_every": 5}, {"select_every_updates": 0}):
        with pytest.raises(ValueError, match="select_every"):
            SlowerTeacher(**bad)
    with pytest.raises(ValueError, match="select_seeds"):
        make_teacher("reinforce", select_seeds=-1)


# -- every registered learning teacher ------------------------------------------------------------
def test_every_teacher_that_learns_selects_with_the_same_options():
    """A teacher that declares updates (overrides next_update) has the selection options, with the
    base's defaults: the same number of selection students for every teacher."""
    learning = {n for n in TEACHERS if teacher_class(n).next_update is not Teacher.next_update}
    assert learning == set(LEARNING)
    defaults = {f.name: f.default for f in dataclasses.fields(SelectOptions)}
    for name in learning:
        assert issubclass(teacher_class(name).Config, SelectOptions), name
        config = make_teacher(name).config
        assert {k: config[k] for k in defaults} == defaults, name


@pytest.mark.parametrize("name", LEARNING)
def test_every_learning_teacher_selects_on_select_charged_within_budget(name, monkeypatch):
    splits: list[str] = []
    evaluate = TeachingProcess.evaluate

    def guarded(self, split="select"):
        if split == "test":
            raise AssertionError(f"{name} read test while fitting")
        splits.append(split)
        return evaluate(self, split)

    monkeypatch.setattr(TeachingProcess, "evaluate", guarded)
    students: list[int] = []
    rollout = Teacher.rollout

    def recording(self, env, seed, decide=None):
        if decide is None:  # a frozen teacher's student: only the selection's while fitting
            students.append(seed)
        return rollout(self, env, seed, decide)

    monkeypatch.setattr(Teacher, "rollout", recording)
    built = []
    make_env = TeachingSpec.make_env

    def counted_env(self, **overrides):
        env = make_env(self, **overrides)
        built.append(env)
        return env

    monkeypatch.setattr(TeachingSpec, "make_env", counted_env)
    budget = 30 * TINY.episode_steps + 7
    teacher = make_teacher(name, **SMALL.get(name, {}))
    snaps = recording_snapshots(teacher)
    report = teacher.fit(TINY, budget, seed=3)
    del teacher.state_dict

    counted = sum(env.unwrapped.process.cost.total for env in built)
    assert report.student_steps == pytest.approx(counted) and counted <= budget
    selects = [r for r in report.log if r.get("kind") == "select"]
    assert len(selects) >= 2 and selects[0]["updates"] == 0 and selects[-1]["updates"] > 0
    seeds = SelectOptions().select_seeds
    held_out = [SeedPlan(3).held_out(j) for j in range(seeds)]
    assert students == held_out * len(selects)  # the same held-out students for every candidate
    assert all(r["select_seeds"] == seeds and r["select_cost"] > 0 for r in selects)
    assert "select" in splits
    best = int(np.argmin([r["select_error"] for r in selects]))  # earliest on ties, as the rule
    keys = [(r["select_error"], r["select_loss"]) for r in selects]
    best = min(range(len(keys)), key=lambda i: (keys[i], i))
    assert (
        selects[best].get("best") and report.selection["best_updates"] == selects[best]["updates"]
    )
    assert same(teacher.state_dict(), snaps[best])


@pytest.mark.parametrize("name", ["reinforce", "l2t-dln"])
def test_a_teacher_wrecked_by_a_huge_lr_is_its_best_snapshot(name):
    """A huge teacher lr makes later snapshots worse (or no better); the fit returns the
    snapshot with the lowest select error, whichever it is, not its last state."""
    options = {
        "reinforce": {"lr": 5.0, "hidden": 16},
        "l2t-dln": {"teacher_lr": 10.0, "dln_step": 1.0, "hidden": 8, "lookahead": 5},
    }[name]
    teacher = make_teacher(name, select_every_updates=1, **options)
    snaps = recording_snapshots(teacher)
    report = teacher.fit(TINY, 40 * TINY.episode_steps, seed=0)
    del teacher.state_dict
    selects = [r for r in report.log if r.get("kind") == "select"]
    keys = [(r["select_error"], r["select_loss"]) for r in selects]
    best = min(range(len(keys)), key=lambda i: (keys[i], i))
    assert len(selects) == len(snaps) >= 3
    assert best < len(selects) - 1  # measured: the untrained teacher (the fit's last is worse)
    assert same(teacher.state_dict(), snaps[best])
    assert not same(teacher.state_dict(), snaps[-1])
    assert teacher.best_dev_error == selects[best]["select_error"]


def test_an_l2t_dlf_saved_before_the_common_selection_loads(tmp_path):
    """Its select_every counted episodes: it becomes select_every_updates."""
    teacher = make_teacher("l2t-dlf")
    env = teacher.spec_for(TINY).make_env()
    teacher.build(env.observation_space.shape[0], env.family.dim)
    old = {k: v for k, v in teacher.config.items() if k not in ("select_every_updates",)}
    old["select_every"] = 5
    torch.save({"name": "l2t-dlf", "config": old, "state": teacher.state_dict()}, tmp_path / "t.pt")
    loaded = Teacher.load(tmp_path / "t.pt")
    assert loaded.config["select_every_updates"] == 5 and loaded.config["select_every"] == 0.2
    obs = np.zeros(env.observation_space.shape, np.float32)
    np.testing.assert_array_equal(loaded.act(obs), teacher.act(obs))
