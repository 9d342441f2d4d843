"""analysis.across: IQM of normalised scores, probability of improvement over CE and their
stratified-bootstrap CIs across settings, on synthetic per-seed rows and through `l2t table/plot`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import across
from analysis.across import across_settings, probability_of_improvement, stratified_bootstrap
from analysis.cli import main
from analysis.runner import Grid, run_grid
from students.data import from_tensors
from teachers.base import TeachingSpec


def synthetic(seeds: int = 8) -> pd.DataFrame:
    """Three settings of different difficulty; 'half' makes half CE's errors everywhere, 'same'
    is drawn from CE's distribution, 'worse' is always worse."""
    rng = np.random.default_rng(0)
    rows = []
    for setting, level in (("clean", 0.05), ("noisy", 0.2), ("imbalanced", 0.1)):
        for seed in range(seeds):
            ce = level * (1 + 0.1 * rng.normal())
            for teacher, e in (
                ("ce", ce),
                ("half", ce / 2),
                ("same", level * (1 + 0.1 * rng.normal())),
                ("worse", 2 * level + 0.01 * rng.random()),
            ):
                rows.append(
                    {"teacher": teacher, "budget": 100, "seed": seed, "setting": setting}
                    | {"test_error": e}
                )
    return pd.DataFrame(rows)


def test_summary_ranks_teachers_as_constructed():
    table = across_settings(synthetic()).set_index("teacher")
    assert table.loc["half", "iqm_score"] == pytest.approx(0.5, abs=0.03)
    assert table.loc["half", "p_improve_vs_ce"] == 1.0 and table.loc["half", "p_low"] == 1.0
    assert table.loc["worse", "p_improve_vs_ce"] == 0.0 and table.loc["worse", "iqm_high"] < -0.8
    same = table.loc["same"]
    assert same["p_low"] < 0.5 < same["p_high"] and same["iqm_low"] < 0 < same["iqm_high"]
    assert abs(table.loc["ce", "iqm_score"]) < 0.05  # CE normalised by itself sits at 0
    assert (table["settings"] == 3).all() and (table["runs_per_setting"] == 8).all()


def test_builtin_estimators_match_their_definitions(monkeypatch):
    x = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.3], [0.7, 0.4]])
    y = np.array([[0.2, 0.3], [0.4, 0.3], [0.3, 0.1], [0.0, 0.5]])
    reference = (across.iqm(x), probability_of_improvement(x, y))  # rliable's, when installed
    monkeypatch.setattr(across, "_rly_metrics", None)
    flat = np.sort(x.ravel())[2:6]  # the middle half of 8 values
    assert across.iqm(x) == pytest.approx(flat.mean())
    # pairs with x > y, plus ties / 2, of 16: column 0: 1 + 4 + (2 + 0.5) + 4; column 1: 4 + 1 + (1 + 1) + 3
    p = probability_of_improvement(x, y)
    assert p == pytest.approx((11.5 / 16 + 10 / 16) / 2)
    assert (across.iqm(x), p) == pytest.approx(reference)  # rliable agrees when installed


def test_bootstrap_resamples_runs_within_each_setting():
    # each column is constant, so any within-column resample keeps its mean: a zero-width CI;
    # resampling across columns would not
    a = np.array([[0.0, 1.0]] * 5)
    point, low, high = stratified_bootstrap([a], lambda m: m[:, :, 0].mean(axis=1), reps=200)
    assert point == low == high == 0.0
    noisy = np.random.default_rng(0).normal(size=(10, 2))
    point, low, high = stratified_bootstrap([noisy], lambda m: m.mean(axis=(1, 2)), reps=500)
    assert low < point < high


def test_missing_baseline_is_a_clear_error():
    with pytest.raises(ValueError, match="baseline 'ce'"):
        across_settings(synthetic().query("teacher != 'ce'"), reps=10)


def test_table_and_plot_across_two_result_directories(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 12)).astype(np.float32) + y[:, None]
    data = from_tensors(x[:240], y[:240], x[240:], y[240:], name="blobs")
    spec = TeachingSpec(data, horizon=2, interval=10, batch_size=16, device="cpu")
    spec = spec.replace(student_kwargs={"hidden": 16})
    dirs = []
    for name, noise in (("clean", 0.0), ("noisy", 0.4)):
        grid = Grid(["ce", "gce"], 2, [5], spec.replace(label_noise=noise))
        dirs.append(str(run_grid(grid, tmp_path / name, progress=False).root))
    summary = tmp_path / "across"
    assert main(["table", *dirs, "--across-out", str(summary)]) == 0
    out, err = capsys.readouterr()
    assert "across settings:" not in err  # nothing dropped: nothing said
    assert "across 2 settings (clean, noisy)" in out and "P(> ce)" in out
    table = pd.read_csv(summary / "across_settings.csv")
    assert set(table["teacher"]) == {"ce", "gce"} and (table["settings"] == 2).all()
    assert main(["plot", *dirs, "--across-out", str(summary)]) == 0
    assert (summary / "across_settings.png").stat().st_size > 0
    # a teacher only one setting ran is named as dropped, by `table` and by `plot`
    extra = Grid(["ce", "gce", "label-smoothing"], 2, [5], spec)
    run_grid(extra, tmp_path / "clean3", progress=False)
    both = [str(tmp_path / "clean3"), dirs[1]]
    for command in ("table", "plot"):
        assert main([command, *both, "--across-out", str(summary)]) == 0
        err = capsys.readouterr().err
        assert (
            "l2t " + command + ": across settings: label-smoothing at budget 5: dropped, no "
            "rows in noisy" in err
        )
    with pytest.raises(SystemExit) as exit_:
        main(["plot", *dirs])
    assert exit_.value.code == 2 and "--across-out" in capsys.readouterr().err


def test_a_far_off_teacher_does_not_squash_the_iqm_panel(tmp_path, monkeypatch):
    """A teacher ten times CE's error (like `random`) is written in, and the axis keeps the rest
    readable."""
    rows = synthetic()
    far = rows[rows["teacher"] == "ce"].assign(teacher="random")
    far["test_error"] *= 10
    table = across_settings(pd.concat([rows, far], ignore_index=True))
    import matplotlib.pyplot as plt

    captured = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kw):
        captured["fig"] = fig
        return real_savefig(fig, *args, **kw)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    across.plot_across(table, tmp_path / "a.png")
    iqm_axis = captured["fig"].axes[0]
    assert iqm_axis.get_xlim()[0] > across.OFF_SCALE_SCORE
    assert any("off scale" in t.get_text() for t in iqm_axis.texts)


def test_what_the_summary_drops_is_said_and_the_figure_names_the_settings(tmp_path, monkeypatch):
    """`l2t table/plot A B --across-out` used to drop a teacher missing from one setting and cut
    seeds to the smallest count (3 -> 2) without a word."""
    rows = synthetic(seeds=3)
    rows = rows[~((rows["setting"] == "noisy") & (rows["seed"] == 2))]  # noisy: 2 seeds
    rows = rows[~((rows["setting"] == "clean") & (rows["teacher"] == "same"))]  # clean lacks it
    notes = across.coverage_notes(rows)
    assert (
        "same at budget 100: dropped, no rows in clean (the summary pools every setting)" in notes
    )
    cut = [n for n in notes if n.startswith("half at budget 100: seeds cut to the first 2")]
    assert cut and "clean 3, noisy 2, imbalanced 3" in cut[0]
    table = across_settings(rows, reps=50)
    assert "same" not in set(table["teacher"]) and (table["runs_per_setting"] == 2).all()
    import matplotlib.pyplot as plt

    captured = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kw):
        captured["fig"] = fig
        return real_savefig(fig, *args, **kw)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    across.plot_across(
        table, tmp_path / "a.png", settings=["clean", "noisy", "imbalanced"], notes=notes
    )
    fig = captured["fig"]
    assert "(clean, noisy, imbalanced)" in fig.get_suptitle()
    assert any("dropped, no rows in clean" in t.get_text() for t in fig.texts)


def test_improvement_over_each_settings_best_baseline():
    """`versus` compares against a different teacher per setting (its best baseline): 'half'
    beats 'same' everywhere, and 'same' is its own reference where it is the best baseline."""
    seeds = synthetic()
    versus = {"clean": "same", "noisy": "half", "imbalanced": "same"}
    table = across_settings(seeds, versus=versus).set_index("teacher")
    assert "p_improve_vs_best" in table and "p_improve_vs_ce" not in table
    # half beats 'same' in clean and imbalanced (P = 1), ties itself in noisy (P = 0.5)
    assert table.loc["half", "p_improve_vs_best"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert table.loc["worse", "p_improve_vs_best"] == 0.0
    # scores stay normalised by CE
    assert table.loc["half", "iqm_score"] == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="teachers to compare against"):
        across_settings(seeds, versus={"clean": "nobody"})
