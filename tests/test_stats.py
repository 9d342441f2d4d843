"""Holm-adjusted paired tests: the known textbook example, scipy's and statsmodels' answers, and
the summary table's "vs ce" / "vs best baseline" columns on records with hand-known numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.stats import holm, paired_difference, paired_p
from analysis.tables import best_baselines, summary, to_markdown


def test_holm_on_a_known_example():
    # sorted 0.01, 0.03, 0.04: 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; max(0.06, 1 x 0.04) = 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    out = holm([0.02, math.nan, 0.01])  # NaN: not a test, not in the family (m = 2)
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert math.isnan(out[1])
    assert np.isnan(holm([math.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.2])


def test_holm_agrees_with_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 20):
        p = rng.uniform(0, 0.2, m) ** 2
        p[rng.integers(m)] = p.min()  # a tie
        _, expected, _, _ = multitest.multipletests(p, method="holm")
        np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


def test_paired_p_is_the_paired_t_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.1, 0.02, 7), rng.normal(0.11, 0.02, 7)
    expected = scipy_stats.ttest_rel(a, b).pvalue
    assert paired_p(a - b) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(paired_p([0.1]))  # one pair: no test
    assert paired_p([0.0, 0.0, 0.0]) == 1.0  # no difference at all
    frame = pd.DataFrame(
        {"teacher": ["a"] * 7 + ["b"] * 7, "seed": list(range(7)) * 2, "value": [*a, *b]}
    )
    out = paired_difference(frame, "b").set_index("teacher")
    assert out.loc["a", "diff_p"] == pytest.approx(expected, rel=1e-12)
    assert math.isnan(out.loc["b", "diff_p"])  # the baseline against itself: no test


def records(errors: dict[str, tuple[list[float], list[float]]]) -> pd.DataFrame:
    """Tidy records, one student per seed: teacher -> (test errors, dev errors) by seed."""
    rows = []
    for teacher, (tests, devs) in errors.items():
        meta = dict(teacher=teacher, student="mlp", dataset="mnist5k", loss="ce", budget=100)
        for seed, (te, de) in enumerate(zip(tests, devs, strict=True)):
            common = dict(meta, seed=seed, wall_time=1.0, budget_used=90)
            rows.append(
                dict(
                    common,
                    student_seed=-1,
                    phase="fit",
                    episode=-1,
                    step=0.0,
                    metric="fit_wall_time",
                    value=1.0,
                )  # fmt: skip
            )
            for metric, value in (("test_error", te), ("dev_error", de), ("teach_wall_time", 1.0),
                                  ("diverged", 0.0)):  # fmt: skip
                rows.append(
                    dict(
                        common,
                        student_seed=seed,
                        phase="final",
                        episode=0,
                        step=10.0,
                        metric=metric,
                        value=value,
                    )  # fmt: skip
                )
    return pd.DataFrame(rows)


TESTS = {
    "ce": ([0.20, 0.22, 0.25, 0.21], [0.21, 0.23, 0.26, 0.22]),
    "gce": ([0.18, 0.21, 0.22, 0.20], [0.19, 0.22, 0.23, 0.21]),  # best select error of the fair
    "l2t-dln": ([0.15, 0.19, 0.20, 0.18], [0.10, 0.10, 0.10, 0.10]),  # learned: not a candidate
    "oracle": ([0.05, 0.06, 0.05, 0.06], [0.05, 0.05, 0.05, 0.05]),  # the limit: not a candidate
    "random": ([0.50, 0.55, 0.60, 0.52], [0.50, 0.55, 0.60, 0.52]),
}


def test_the_best_fair_baseline_is_a_named_row_chosen_on_select_error():
    table = summary(records(TESTS), order=list(TESTS))
    assert best_baselines(table) == {100: "gce"}
    t = table.set_index("teacher")
    assert t["is_best_baseline"].to_dict() == {n: n == "gce" for n in TESTS}
    assert (t["best_baseline"] == "gce").all()
    dln, gce = np.array(TESTS["l2t-dln"][0]), np.array(TESTS["gce"][0])
    assert t.loc["l2t-dln", "diff_vs_best"] == pytest.approx((dln - gce).mean())
    assert t.loc["l2t-dln", "diff_vs_best_p"] == pytest.approx(
        scipy_stats.ttest_rel(dln, gce).pvalue
    )
    md = to_markdown(table)
    assert "gce (best baseline)" in md and "oracle (limit)" in md


def test_each_vs_column_is_one_holm_family_without_the_oracle():
    table = summary(records(TESTS), order=list(TESTS)).set_index("teacher")
    for column in ("diff_vs_ce", "diff_vs_best"):
        raw = table[f"{column}_p"]
        assert math.isnan(raw["oracle"])  # a limit, not a tested teacher
        tested = raw.dropna()
        np.testing.assert_allclose(table.loc[tested.index, f"{column}_p_holm"], holm(tested))
        assert (table.loc[tested.index, f"{column}_p_holm"] >= tested - 1e-15).all()
    assert math.isnan(table.loc["ce", "diff_vs_ce_p"]) and math.isnan(
        table.loc["gce", "diff_vs_best_p"]
    )
    assert set(table["diff_vs_ce_p"].dropna().index) == {"gce", "l2t-dln", "random"}


def test_the_oracle_flag_and_the_tables_kind_agree():
    from analysis.tables import KINDS
    from teachers import TEACHERS, teacher_class

    flagged = {n for n in TEACHERS if getattr(teacher_class(n), "is_oracle", False)}
    assert flagged == {n for n, k in KINDS.items() if k == "oracle"} == {"oracle"}
