"""analysis: t-intervals against hand computation, tidy records round-trip, the runner's rows and
seeds, summary numbers, non-empty figures, bad grids."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.plots import plot_all
from analysis.records import COEFF_COLUMNS, COLUMNS, RecordStore, tidy, unit_id
from analysis.runner import STUDENT_SEED_OFFSET, Grid, run_grid, run_unit
from analysis.stats import ci_bounds, mean_ci, paired_difference
from analysis.tables import per_seed, summary, to_markdown
from teachers.base import TeachingSpec

TINY = TeachingSpec(horizon=2, interval=5, dev_subset=64, device="cpu")
# t quantiles from a printed table (not from scipy, which the code uses)
T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}


# -- stats -------------------------------------------------------------------------------------
def test_mean_ci_matches_hand_computation():
    x = [0.10, 0.12, 0.11, 0.15]
    mean = sum(x) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / 3)
    iv = mean_ci(x)
    assert iv.n == 4
    assert iv.mean == pytest.approx(mean)
    assert iv.half == pytest.approx(T975[4] * sd / 2, rel=1e-3)
    assert ci_bounds(x) == pytest.approx((mean - iv.half, mean + iv.half))


def test_mean_ci_edge_cases():
    assert math.isnan(mean_ci([0.3]).half) and mean_ci([0.3]).mean == 0.3
    assert mean_ci([]).n == 0
    assert mean_ci([1.0, float("nan"), 3.0]).n == 2  # NaN dropped, not propagated
    assert mean_ci([2.0, 2.0, 2.0]).half == 0.0
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_paired_difference_pairs_on_seed():
    frame = pd.DataFrame(
        {
            "teacher": ["ce"] * 3 + ["x"] * 3,
            "seed": [0, 1, 2] * 2,
            "value": [0.10, 0.20, 0.30, 0.12, 0.21, 0.33],
        }
    )
    out = paired_difference(frame, "ce").set_index("teacher")
    d = np.array([0.02, 0.01, 0.03])
    assert out.loc["x", "diff_mean"] == pytest.approx(d.mean())
    assert out.loc["x", "diff_ci"] == pytest.approx(
        T975[3] * d.std(ddof=1) / math.sqrt(3), rel=1e-3
    )
    # unpaired CI would be far wider: the seeds' spread (0.1 .. 0.3) cancels in the pairing
    assert out.loc["x", "diff_ci"] < 0.1 * mean_ci(frame["value"][3:]).half
    assert out.loc["ce", "diff_mean"] == 0.0
    no_base = paired_difference(frame[frame.teacher == "x"], "ce")
    assert no_base["diff_n"].tolist() == [0]


# -- records -----------------------------------------------------------------------------------
def _rows(teacher: str, seed: int, test_errors: list[float], dev_errors: list[float]) -> list:
    rows = []
    meta = dict(teacher=teacher, student="mlp", dataset="mnist5k", loss="ce", budget=100, seed=seed)
    rows.append(
        dict(
            meta,
            student_seed=-1,
            phase="fit",
            episode=-1,
            step=0.0,
            metric="fit_wall_time",
            value=2.0,
            wall_time=2.0,
            budget_used=90,
        )
    )
    for j, (te, de) in enumerate(zip(test_errors, dev_errors, strict=True)):
        for metric, value in (
            ("test_error", te),
            ("dev_error", de),
            ("teach_wall_time", 1.0),
            ("diverged", 0.0),
        ):
            rows.append(
                dict(
                    meta,
                    student_seed=STUDENT_SEED_OFFSET + j,
                    phase="final",
                    episode=j,
                    step=10.0,
                    metric=metric,
                    value=value,
                    wall_time=1.0,
                    budget_used=90,
                )
            )
    return rows


def test_records_round_trip_and_resume_bookkeeping(tmp_path):
    store = RecordStore(tmp_path / "run")
    config = {
        "spec": TINY.to_dict(),
        "students_per_seed": 1,
        "teacher_configs": {},
        "student_seed_offset": 0,
        "teachers": ["ce"],
        "budgets": [100],
        "seeds": 1,
    }
    store.open(config)
    assert store.read().empty and list(store.read().columns) == COLUMNS
    records = tidy(_rows("ce", 0, [0.1, 0.2], [0.15, 0.25]))
    coeffs = tidy(
        [
            dict(
                teacher="ce",
                student="mlp",
                dataset="mnist5k",
                loss="ce",
                budget=100,
                seed=0,
                student_seed=5,
                episode=0,
                t=1,
                step=0,
                index=0,
                value=1.0,
            )
        ],
        COEFF_COLUMNS,
    )
    uid = unit_id("ce", 100, 0)
    store.write_unit(uid, records, coeffs)
    pd.testing.assert_frame_equal(store.read(), records)
    pd.testing.assert_frame_equal(store.read_coeffs(), coeffs)
    assert store.completed() == {uid}
    # a write cut short leaves a hidden temp file; reopening removes it and keeps the unit
    (store.records_dir / ".x.parquet.tmp").write_bytes(b"partial")
    store.open({**config, "teachers": ["ce", "random"], "seeds": 3})
    assert not list(store.records_dir.glob(".*.tmp"))
    assert store.config()["teachers"] == ["ce", "random"] and store.config()["seeds"] == 3
    assert (tmp_path / "run" / "versions.json").exists()
    with pytest.raises(ValueError, match=r"spec\.horizon: 2 on disk vs 3 now"):
        store.open({**config, "spec": TINY.replace(horizon=3).to_dict()})
    with pytest.raises(ValueError, match="columns"):
        store.write_unit("bad", records.drop(columns="wall_time"), None)


# -- runner ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """ce and random (bilinear, so the coefficient heatmaps are drawn), 2 seeds, 2 students."""
    grid = Grid(teachers=["ce", "random"], seeds=2, budgets=[10], spec=TINY, students_per_seed=2)
    out = tmp_path_factory.mktemp("run")
    run_grid(grid, out, progress=False)
    return grid, out


def test_runner_rows_cover_every_phase_and_metric(tiny_run):
    grid, out = tiny_run
    df = RecordStore(out).read()
    assert set(df["phase"]) == {"fit", "teach", "final"}
    assert not df.duplicated(
        ["teacher", "budget", "seed", "phase", "episode", "step", "metric"]
    ).any()
    teach = df[df["phase"] == "teach"]
    # one row per env step (t = 0 .. horizon) per student per metric
    n = teach[teach["metric"] == "dev_accuracy"].groupby(["teacher", "seed", "episode"]).size()
    assert (n == TINY.horizon + 1).all() and len(n) == 2 * 2 * 2
    assert sorted(teach[teach["metric"] == "dev_accuracy"]["step"].unique()) == [0, 5, 10]
    final = df[df["phase"] == "final"]
    assert {"test_error", "dev_error", "test_loss", "diverged"} <= set(final["metric"])
    assert final[final.metric == "test_error"]["value"].between(0, 1).all()


def test_taught_students_are_fresh_and_shared_across_teachers(tiny_run):
    grid, out = tiny_run
    final = RecordStore(out).read().query("phase == 'final' and metric == 'test_error'")
    seeds = final.groupby("teacher")["student_seed"].apply(sorted)
    assert seeds["ce"] == seeds["random"]  # same students for every teacher: pairing is valid
    assert len(set(seeds["ce"])) == 4 and min(seeds["ce"]) >= STUDENT_SEED_OFFSET == 2**31


def test_coefficients_are_recorded_per_action(tiny_run):
    _, out = tiny_run
    coeffs = RecordStore(out).read_coeffs()
    per = coeffs.groupby(["teacher", "seed", "episode", "t"]).size()
    assert per.xs("random").eq(110).all() and per.xs("ce").eq(1).all()  # C*C + C vs tau
    assert len(per) == 2 * 2 * 2 * TINY.horizon
    ce = coeffs[coeffs.teacher == "ce"]["value"]
    assert np.allclose(ce, 1.0)  # plain cross-entropy: tau = 1 throughout


def test_run_unit_is_deterministic_in_its_seeds():
    grid = Grid(teachers=["random"], seeds=1, budgets=[10], spec=TINY)
    a, ca, _ = run_unit(grid, "random", 10, 0)
    b, cb, _ = run_unit(grid, "random", 10, 0)
    timed = a["metric"].str.endswith("wall_time")
    assert timed.sum() == 2  # fit_wall_time and teach_wall_time: the only unreplayable values
    cols = [c for c in COLUMNS if c != "wall_time"]
    pd.testing.assert_frame_equal(a.loc[~timed, cols], b.loc[~timed, cols])
    pd.testing.assert_frame_equal(ca, cb)
    c, _, _ = run_unit(grid, "random", 10, 1)
    assert not np.allclose(
        c.query("phase == 'final'")["value"], a.query("phase == 'final'")["value"]
    )


def test_summary_numbers_match_hand_computation():
    records = tidy(
        _rows("ce", 0, [0.10, 0.12], [0.2, 0.2])
        + _rows("ce", 1, [0.20, 0.20], [0.3, 0.3])
        + _rows("ce", 2, [0.30, 0.30], [0.4, 0.4])
        + _rows("x", 0, [0.08, 0.08], [0.2, 0.2])
        + _rows("x", 1, [0.19, 0.19], [0.3, 0.3])
        + _rows("x", 2, [0.26, 0.26], [0.4, 0.4])
    )
    seeds = per_seed(records)
    assert seeds.loc[
        (seeds.teacher == "ce") & (seeds.seed == 0), "test_error"
    ].item() == pytest.approx(0.11)
    table = summary(records, order=["x", "ce"]).set_index("teacher")
    assert list(table.index) == ["x", "ce"]
    ce = np.array([0.11, 0.20, 0.30])
    assert table.loc["ce", "test_error"] == pytest.approx(ce.mean())
    assert table.loc["ce", "test_error_ci"] == pytest.approx(
        T975[3] * ce.std(ddof=1) / math.sqrt(3), rel=1e-3
    )
    d = np.array([0.08, 0.19, 0.26]) - ce
    assert table.loc["x", "diff_vs_ce"] == pytest.approx(d.mean())
    assert table.loc["x", "diff_vs_ce_ci"] == pytest.approx(
        T975[3] * d.std(ddof=1) / math.sqrt(3), rel=1e-3
    )
    assert table.loc["x", "budget_used"] == 90 and table.loc["x", "seeds"] == 3
    md = to_markdown(table.reset_index())
    assert md.count("\n") == 4 and f"{100 * d.mean():+.2f}" in md


# -- plots -------------------------------------------------------------------------------------
def test_plots_are_non_empty_pngs(tiny_run):
    _, out = tiny_run
    paths = plot_all(out)
    # one budget: no quality-vs-budget figure (the final-test-error figure says it all)
    assert {p.name for p in paths} == {
        "learning_curves.png",
        "final_test_error.png",
        "coefficients.png",
        "coefficients_phi.png",  # a bilinear teacher that moves Phi ran
    }
    assert not (out / "quality_vs_budget.png").exists()
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, p


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"teachers": ["ce", "rnadom"]}, "unknown teacher 'rnadom'.*Did you mean 'random'"),
        ({"teachers": []}, "no teachers"),
        ({"teachers": ["ce", "ce"]}, "twice"),
        ({"seeds": 0}, "seeds must be a positive integer"),
        ({"budgets": [0]}, "budget .* positive integer"),
        ({"budgets": []}, "no budgets"),
        ({"students_per_seed": -1}, "students per seed"),
        ({"spec": TeachingSpec(dataset="mnist6k")}, "unknown dataset 'mnist6k'.*known"),
        ({"spec": TeachingSpec(student="resnet9")}, "unknown student 'resnet9'.*known"),
        ({"spec": TeachingSpec(loss="bilin")}, "unknown loss 'bilin'.*known"),
        ({"teacher_configs": {"ppo": {}}}, "not among the teachers"),
    ],
)
def test_bad_grids_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Grid(**{"teachers": ["ce"], **kwargs})


def test_bad_teacher_config_is_caught_before_running(tmp_path):
    with pytest.raises(ValueError, match="'label-smoothing' has no option 'eps'.*'epsilon'"):
        Grid(["label-smoothing"], teacher_configs={"label-smoothing": {"eps": 0.1}}, spec=TINY)
    grid = Grid(
        teachers=["label-smoothing"],
        teacher_configs={"label-smoothing": {"epsilon": 2.0}},
        spec=TINY,
    )
    with pytest.raises(ValueError, match="rejects its config: .*epsilon must lie in"):
        run_grid(grid, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_parallel_workers_write_the_same_rows(tiny_run, tmp_path):
    """The demo runs units in 2 processes; a unit's seeds, not the schedule, fix its rows."""
    grid, out = tiny_run
    run_grid(grid, tmp_path, progress=False, workers=2)
    key = ["teacher", "seed", "phase", "episode", "step", "metric"]

    def canon(df: pd.DataFrame) -> pd.DataFrame:
        df = df[~df["metric"].str.endswith("wall_time")].drop(columns="wall_time")
        return df.sort_values(key).reset_index(drop=True)

    pd.testing.assert_frame_equal(
        canon(RecordStore(tmp_path).read()), canon(RecordStore(out).read())
    )


def test_a_directory_made_before_a_setting_existed_resumes_at_its_default(tmp_path):
    """Settings added later (spec.meta_size, checkpoint) read as their defaults in an old
    directory: the default resumes it, any other value is refused naming the setting."""
    store = RecordStore(tmp_path / "run")
    old_spec = {k: v for k, v in TINY.to_dict().items() if k != "meta_size"}
    old = {"spec": old_spec, "students_per_seed": 1, "teacher_configs": {}, "teachers": ["ce"]}
    store.open(old)
    defaults = {"spec": TeachingSpec().to_dict(), "checkpoint": "last", "checks": 10}
    new = {**old, "spec": TINY.to_dict(), "checkpoint": "last", "checks": 10}
    store.open(new, defaults=defaults)  # resumes
    with pytest.raises(ValueError, match="checkpoint: 'last' on disk vs 'best-select' now"):
        store.open({**new, "checkpoint": "best-select"}, defaults=defaults)
    with pytest.raises(ValueError, match="spec.meta_size: 256 on disk vs 64 now"):
        store.open({**new, "spec": {**TINY.to_dict(), "meta_size": 64}}, defaults=defaults)
