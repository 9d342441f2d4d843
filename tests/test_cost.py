"""The counter (envs/cost.py) and the teaching cost it puts in every record and table."""

from __future__ import annotations

import math

import pytest

from analysis.runner import Grid, run_grid
from analysis.tables import display_rows, summary
from envs.cost import KINDS, Meter, price
from teachers import TeachingSpec


def test_meter_sums_by_kind_and_refuses_bad_charges():
    m = Meter()
    m.add("train", 3.0)
    m.charge("reverse", 2)  # two passes at their price
    m.charge("train", 1)
    assert m.by_kind() == {"train": 4.0, "reverse": 2 * KINDS["reverse"]}
    assert m.total == pytest.approx(4.0 + 2 * KINDS["reverse"])
    assert price("dev_grad", 4) == 4 * KINDS["dev_grad"]
    with pytest.raises(ValueError, match="unknown cost kind 'revers'.*Did you mean 'reverse'"):
        m.add("revers", 1.0)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="finite number >= 0"):
            m.add("train", bad)
    assert m.by_kind()["train"] == 4.0  # a refused charge changed nothing


def test_records_and_the_summary_carry_the_teaching_cost(tmp_path):
    """Every taught student's record has its cost from the process's counter; the summary shows
    it per teacher with its ratio to plain CE: 1 for CE, more for L2T-DLN, whose look-ahead
    every K steps is charged while it teaches."""
    spec = TeachingSpec(
        horizon=2, interval=10, batch_size=32, dev_subset=64, device="cpu",
        student_kwargs={"hidden": 16},
    )  # fmt: skip
    store = run_grid(Grid(["ce", "l2t-dln"], 1, [1], spec), tmp_path, progress=False)
    table = summary(store.read()).set_index("teacher")
    assert table.loc["ce", "teach_cost"] == spec.episode_steps
    assert table.loc["ce", "teach_cost_ratio"] == 1.0
    # K = 10: two iterations, each a differentiable 10-step look-ahead, its CE_val gradient
    # (64 dev examples at batch 32) and the 10 committed steps
    per_iteration = 10 * KINDS["unroll"] + 64 / 32 * KINDS["dev_grad"] + 10 * KINDS["train"]
    assert table.loc["l2t-dln", "teach_cost"] == pytest.approx(2 * per_iteration)
    assert table.loc["l2t-dln", "teach_cost_ratio"] == pytest.approx(2 * per_iteration / 20)
    header, cells = display_rows(table.reset_index())
    column = header.index("teach cost (× CE)")
    dln = f"{2 * per_iteration:,.0f} ({2 * per_iteration / 20:.1f}×)"
    assert [row[column] for row in cells] == ["20 (1.0×)", dln]
