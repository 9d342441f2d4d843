"""The `l2t` command line: bad arguments fail fast and clearly; a run killed midway resumes with no
lost and no duplicated rows; table and plot rebuild from the records."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import DEMO_TEACHERS, main
from analysis.records import COLUMNS, RecordStore
from analysis.runner import Grid, run_grid
from teachers.base import TeachingSpec
from teachers.registry import TEACHERS

ROOT = Path(__file__).resolve().parents[1]
KEY = ["teacher", "budget", "seed", "phase", "episode", "step", "metric"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["compare", "--teachers", "ce,rnadom"], "unknown teacher 'rnadom'.*'random'"),
        (["compare", "--teachers", "ce", "--dataset", "mnist6k"], "unknown dataset.*mnist5k"),
        (["compare", "--teachers", "ce", "--student", "mpl"], "unknown student.*'mlp'"),
        (["compare", "--teachers", "ce", "--seeds", "0"], "--seeds: expected a positive integer"),
        (["compare", "--teachers", "ce", "--budget", "600,-1"], "--budget: expected a positive"),
        (["compare", "--teachers", "ce", "--budget", "lots"], "--budget: expected a positive"),
        (["compare", "--teachers", "ce", "--teacher-config", "{oops"], "not valid JSON"),
        (["compare", "--teachers", ",", "--seeds", "2"], "comma-separated list"),
        (
            ["compare", "--teachers", "ce", "--label-noise", "1.2"],
            r"--label-noise: expected a fraction in \[0, 1\), got 1.2",
        ),
        (
            ["compare", "--teachers", "ce", "--label-noise", "-0.1"],
            r"--label-noise: expected a fraction in \[0, 1\), got -0.1",
        ),
        (
            ["compare", "--teachers", "ce", "--label-noise-kind", "pairs"],
            "--label-noise-kind: unknown noise kind 'pairs'.*'pairflip'",
        ),
        (
            ["compare", "--teachers", "ce", "--imbalance", "0.5"],
            "--imbalance: expected a ratio >= 1",
        ),
        (
            [
                "compare",
                "--teachers",
                "label-smoothing",
                "--teacher-config",
                '{"label-smoothing": {"eps": 0.2}}',
            ],
            "teacher 'label-smoothing' has no option 'eps'; its options: epsilon, lr. Did you mean 'epsilon'",
        ),
        (["table", "/nonexistent/dir"], "not a results directory"),
        (["plot", "/nonexistent/dir"], "not a results directory"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, match, capsys, tmp_path):
    if argv[0] == "compare":
        argv = [*argv, "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # nothing written before the arguments were checked


def test_demo_teachers_are_registered():
    assert set(DEMO_TEACHERS) <= set(TEACHERS)


ARGS = [
    "--teachers",
    "ce,label-smoothing",
    "--seeds",
    "3",
    "--budget",
    "7",
    "--horizon",
    "4",
    "--interval",
    "25",
    "--device",
    "cpu",
    "--quiet",
    "--no-plots",
]


def _l2t(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", "compare", *ARGS, "--out", str(out), *extra],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_run_resumes_without_lost_or_duplicated_rows(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _l2t(out)
    records = out / "records"
    deadline = time.monotonic() + 120
    while not list(records.glob("*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no unit finished in 120 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-write
    proc.wait()
    done_at_kill = len(list(records.glob("*.parquet")))
    assert 1 <= done_at_kill < 6, "the kill should land after the first unit, before the last"

    resumed = _l2t(out)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "test error" in stdout  # the printed table
    got = RecordStore(out).read()
    assert len(list(records.glob("*.parquet"))) == 6
    assert not got.duplicated(KEY).any()

    # the same grid, uninterrupted, in-process: identical rows except for timings
    spec = TeachingSpec(horizon=4, interval=25, device="cpu")
    ref_dir = tmp_path / "ref"
    run_grid(Grid(["ce", "label-smoothing"], 3, [7], spec), ref_dir, progress=False)
    ref = RecordStore(ref_dir).read()
    cols = [c for c in COLUMNS if c != "wall_time"]

    def canon(df: pd.DataFrame) -> pd.DataFrame:
        df = df[~df["metric"].str.endswith("wall_time")][cols]
        return df.sort_values(KEY).reset_index(drop=True)

    pd.testing.assert_frame_equal(canon(got), canon(ref))
    assert (out / "summary.csv").exists() and (out / "report.md").exists()

    # resuming with different settings would mix incomparable rows: refused before any work
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *ARGS, "--out", str(out), "--students-per-seed", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "students_per_seed: 1 on disk vs 2 now" in err


def test_table_and_plot_rebuild_from_records(tmp_path, capsys):
    spec = TeachingSpec(horizon=2, interval=5, dev_subset=64, device="cpu")
    run_grid(Grid(["ce", "random"], 2, [5], spec), tmp_path, progress=False)
    assert main(["table", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "random" in printed and "test error" in printed
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["teacher"].tolist() == ["ce", "random"]
    assert main(["plot", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    # one budget: no quality-vs-budget figure; random moves the bilinear Phi: its heatmaps
    assert "quality_vs_budget.png" not in pngs and "coefficients_phi.png" in pngs
    assert len(pngs) == 4 and all((tmp_path / p).stat().st_size > 10_000 for p in pngs)


def test_noisy_compare_records_the_setting(tmp_path):
    """--label-noise etc. reach the env (the flipped fraction is in the records) and the config."""
    out = tmp_path / "noisy"
    argv = ["compare", *ARGS, "--seeds", "1", "--teachers", "ce,gce", "--out", str(out)]
    main([*argv, "--label-noise", "0.4", "--label-noise-kind", "pairflip", "--imbalance", "2"])
    config = RecordStore(out).config()["spec"]
    assert config["label_noise"] == 0.4 and config["label_noise_kind"] == "pairflip"
    assert config["imbalance"] == 2.0 and config["noisy_dev"] is False
    records = RecordStore(out).read()
    flipped = records[records["metric"] == "train_flipped_fraction"]
    assert set(flipped["teacher"]) == {"ce", "gce"}
    assert flipped["value"].round(3).eq(0.4).all()
