"""The runner teaches a fitted teacher's students in one batched process where that gives what
teaching them one at a time gives; a directory made before the setting resumes one at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest

import teachers.batch_eval as batch_eval
from analysis.runner import Grid, prepare, run_unit
from teachers import TeachingSpec, make_teacher
from teachers.batch_eval import batchable

TINY = TeachingSpec(horizon=2, interval=5, dev_subset=64, device="cpu")


def test_batched_records_equal_one_at_a_time_and_use_one_batch(monkeypatch):
    calls = []
    real = batch_eval.teach_batch

    def counting(teacher, spec, seeds):
        calls.append(list(seeds))
        return real(teacher, spec, seeds)

    monkeypatch.setattr("analysis.runner.teach_batch", counting)
    grid = Grid(
        teachers=["label-smoothing"],
        seeds=1,
        budgets=[10],
        spec=TINY,
        students_per_seed=3,
        batched_teaching=True,
    )
    batched, bc, _ = run_unit(grid, "label-smoothing", 10, 0)
    assert calls == [[grid.student_seed(0, j) for j in range(3)]]  # one batch of the 3 students
    single, sc, _ = run_unit(
        Grid(**{**grid.__dict__, "batched_teaching": False}), "label-smoothing", 10, 0
    )
    assert len(calls) == 1
    assert list(batched.columns) == list(single.columns) and len(batched) == len(single)
    for col in ("test_error", "dev_error", "reward", "student_steps", "teach_cost"):
        if col in batched:
            a, b = batched[col].to_numpy(float), single[col].to_numpy(float)
            np.testing.assert_allclose(a, b, atol=1e-3, equal_nan=True, err_msg=col)
    np.testing.assert_allclose(bc["value"].to_numpy(), sc["value"].to_numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ce", True), ("reinforce", True), ("random", False), ("large-margin", False)],
)
def test_batchable_refuses_order_dependent_and_head_reading_teachers(name, expected):
    assert batchable(make_teacher(name), TINY) is expected


def test_l2t_dln_is_not_batchable():
    assert not batchable(make_teacher("l2t-dln", hidden=8, lookahead=5), TINY)


def ce_grid(**setting) -> Grid:
    """One CE unit teaching two students per fitted teacher."""
    return Grid(teachers=["ce"], seeds=1, budgets=[10], spec=TINY, students_per_seed=2, **setting)


def test_a_directory_made_before_the_setting_resumes_one_at_a_time(tmp_path):
    grid = ce_grid(batched_teaching=True)
    prepare(grid, tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    assert grid.batched_teaching and saved["batched_teaching"] is True
    old = {k: v for k, v in saved.items() if k != "batched_teaching"}  # as written before
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    resumed = ce_grid(batched_teaching=True)
    prepare(resumed, tmp_path / "old")
    assert resumed.batched_teaching is False
    assert json.loads((tmp_path / "old" / "config.json").read_text())["batched_teaching"] is False
    again = ce_grid()
    prepare(again, tmp_path / "new")  # a resume keeps the recorded True over the default
    assert again.batched_teaching is True


def test_bad_setting_is_refused():
    with pytest.raises(ValueError, match="batched_teaching must be True or False"):
        Grid(teachers=["ce"], spec=TINY, batched_teaching="yes")
