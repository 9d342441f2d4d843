"""A newcomer's first hour: every option's malformed value is a one-line error with exit status
2 (the sweep below must name every option, so a new one needs its case), listings with a line per
name, reports that tell the truth after a resume, and the demo's check against its reference."""

import json
import re

import pytest
import torch

from analysis import reference
from analysis.catalog import listing
from analysis.cli import build_parser, main
from analysis.records import RecordStore
from analysis.runner import Grid, run_grid
from teachers.base import TeachingSpec

FILE = "<an existing file>"
LABELS_1_TO_10 = "<an .npz whose labels are 1..10>"
STRING_LABELS = "<an .npz whose labels are strings>"
# option -> a malformed value (None: a flag, given a value it does not take)
MALFORMED = {
    "--teachers": "ce,rnadom",
    "--seeds": "0",
    "--budget": "lots",
    "--dataset": "mnist6k",
    "--student": "mpl",
    "--loss": "bilin",
    "--horizon": "-2",
    "--interval": "x",
    "--students-per-seed": "0",
    "--checkpoint": "best-test",
    "--checks": "0",
    "--lr-grid": "0.1",
    "--teacher-config": "@/nonexistent/config.json",
    "--data-root": "/nonexistent/data",
    "--download": None,
    "--out": FILE,
    "--device": "gpu",
    "--threads": "0",
    "--workers": "-1",
    "--no-plots": None,
    "--quiet": None,
    "--lr": "-0.1",
    "--batch-size": "0",
    "--momentum": "1.5",
    "--weight-decay": "-1",
    "--schedule": "linear",
    "--dev-subset": "zero",
    "--meta-size": "0",
    "--student-kwargs": '{"width": 3}',  # a keyword the student does not take: found late
    "--loss-kwargs": "[1, 2]",
    "--reference": "/nonexistent/results",
    "--label-noise": "1.2",
    "--label-noise-kind": "diagonal",
    "--noisy-dev": None,
    "--lr-action": None,
    "--imbalance": "0.5",
    "--backend": "dask",
    "--address": "no-port",
    "--cpus-per-unit": "-1",
    "--gpus-per-unit": "nan",
    "--reward": "dev-acc",
    "--dtype": "float16",
    "--protocol": "fair1",
}
# more values a user could plausibly type, each also an error
MORE = [
    ("compare", "--device", "cuda:7"),
    ("compare", "--device", "cuda:x"),
    ("compare", "--teacher-config", "{oops"),
    ("compare", "--loss-kwargs", '{"bogus": 1}'),
    ("compare", "--lr", "nan"),
    ("demo", "--device", "gpu"),
    ("compare", "--dataset", LABELS_1_TO_10),
    ("compare", "--dataset", STRING_LABELS),
]


def _npz(path, labels):
    """A small .npz dataset with the given label values (cycled over 40 + 20 rows)."""
    import numpy as np

    y = np.resize(np.asarray(labels), 60)
    x = np.arange(60 * 4, dtype=np.float32).reshape(60, 4)
    np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    return str(path)


def _options(command: str) -> list[str]:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return [a.option_strings[-1] for a in sub._actions if a.option_strings and a.dest != "help"]


def test_the_sweep_names_every_option():
    for command in ("compare", "demo"):
        missing = set(_options(command)) - set(MALFORMED)
        assert not missing, f"add a malformed value for {command} {sorted(missing)}"


CASES = [(c, o, MALFORMED[o]) for c in ("compare", "demo") for o in _options(c)] + MORE


@pytest.mark.parametrize("command, option, value", CASES)
def test_every_malformed_value_is_a_one_line_error_with_status_2(
    command, option, value, tmp_path, capsys
):
    out = tmp_path / "out"
    if value == FILE:
        out = tmp_path / "a-file"
        out.write_text("not a directory")
        value = str(out)
    says = None
    if value == LABELS_1_TO_10:  # used to train 11 classes, class 0 empty, exit 0
        value, says = _npz(tmp_path / "labels.npz", range(1, 11)), "labels are 1..10, not 0..C-1"
    elif value == STRING_LABELS:  # used to blame --student-kwargs
        value, says = _npz(tmp_path / "labels.npz", ["cat", "dog"]), "strings ('cat', 'dog')"
    argv = [command, "--quiet"] + ([] if option == "--out" else ["--out", str(out)])
    if command == "compare":
        argv += ["--teachers", "ce", "--device", "cpu"]
    argv += [f"{option}=yes"] if value is None else [option, value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.match(rf"l2t( {command})?: error: ", last), err
    assert option.lstrip("-").split("-")[0].rstrip("s") in err.lower() or "keyword" in err, err
    assert out.is_file() or not out.exists()  # nothing written before the arguments were checked
    if says is not None:
        assert says in last and "--student-kwargs" not in last, last


def test_missing_dataset_message_uses_the_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--teachers", "ce", "--dataset", "cifar10", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "--data-root" in err and "--download" in err and "data_root=" not in err


def test_listings_give_every_name_a_line(capsys):
    for kind in ("teachers", "datasets", "students", "losses"):
        rows = listing(kind)
        assert rows and all(what.strip() for _, what, _ in rows), kind
        assert main([kind]) == 0
        printed = capsys.readouterr().out
        assert all(name in printed for name, _, _ in rows)
        assert "teachers.fixed:" not in printed  # descriptions, not module paths
    assert "hidden=256" in dict((n, o) for n, _, o in listing("students"))["mlp"]


TINY = [
    "--seeds",
    "1",
    "--budget",
    "20",
    "--horizon",
    "2",
    "--interval",
    "5",
    "--dev-subset",
    "32",
    "--device",
    "cpu",
    "--quiet",
    "--no-plots",
]


def test_a_resumed_report_credits_rows_to_the_run_that_made_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compare", "--teachers", "ce", *TINY, "--out", str(out)]) == 0
    assert torch.are_deterministic_algorithms_enabled()  # analysis.repro, set by the CLI
    meta = json.loads((out / "units" / "ce__b20__s0.json").read_text())
    assert meta["wall_time"] > 0 and "git_commit" in meta
    # rewrite the unit's recorded time: the report must show the unit's, not the resuming run's
    (out / "units" / "ce__b20__s0.json").write_text(json.dumps({**meta, "wall_time": 4321.0}))
    assert main(["compare", "--teachers", "ce,label-smoothing", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", "--teachers", "ce", *TINY, "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "computing 0 unit(s)" in report
    assert re.search(r"Rows: 2 unit\(s\); 2 computed in 43\d\d s", report)
    # the folder holds a teacher this command did not ask for: the report says so
    assert "also holds rows of teachers label-smoothing" in report
    assert "also holds rows" in capsys.readouterr().err
    # a unit made before units/*.json existed: its time and commit are unknown, not invented
    (out / "units" / "ce__b20__s0.json").unlink()
    main(["compare", "--teachers", "ce,label-smoothing", *TINY, "--out", str(out)])
    assert "1 unit(s) were made before units/*.json" in (out / "report.md").read_text()


def test_a_budget_below_one_episode_is_warned_about(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--seeds", "1", "--budget", "5", "--horizon", "2", "--interval", "5"]
    main(["compare", "--teachers", "ce,l2t-dlf", *args, *TINY[8:], "--out", str(out)])
    err = capsys.readouterr().err
    assert "budget 5 is smaller than one episode (2 x 5 = 10 student steps)" in err
    assert "l2t-dlf" in err and "smaller than one episode" in (out / "report.md").read_text()


def test_reference_comparison_reports_matches_and_differences(tmp_path):
    spec = TeachingSpec(horizon=2, interval=5, dev_subset=32, device="cpu")
    grid = Grid(["ce", "label-smoothing"], 2, [20], spec)
    run_grid(grid, tmp_path / "a", progress=False)
    run_grid(grid, tmp_path / "b", progress=False)
    lines, ok = reference.compare(tmp_path / "a", tmp_path / "b")
    assert ok is True and "2 of 2 within 0.5 points or" in "\n".join(lines)
    assert "(2 bit-identical)" in "\n".join(lines)
    store = RecordStore(tmp_path / "b")
    import pandas as pd

    for path in store.records_dir.glob("ce__*.parquet"):  # ce far off on every seed
        frame = pd.read_parquet(path)
        frame.loc[frame["metric"] == "test_error", "value"] += 2.0
        frame.to_parquet(path, index=False)
    lines, ok = reference.compare(tmp_path / "a", tmp_path / "b")
    assert ok is False and "| ce | 20 |" in "\n".join(lines) and "**no**" in "\n".join(lines)
    other = Grid(["ce"], 1, [20], spec.replace(horizon=3))
    run_grid(other, tmp_path / "c", progress=False)
    assert reference.compare(tmp_path / "a", tmp_path / "c")[1] is None  # not comparable


def test_capitalised_names_get_a_did_you_mean(tmp_path, capsys):
    for option, value, meant in (("--teachers", "CE", "ce"), ("--loss", "CE", "ce")):
        with pytest.raises(SystemExit):
            argv = ["compare", "--teachers", "ce", option, value, "--out", str(tmp_path / "o")]
            main(argv)
        assert f"Did you mean {meant!r}?" in capsys.readouterr().err


def test_the_npz_path_is_named_where_datasets_are(capsys):
    assert main(["datasets"]) == 0
    assert ".npz" in capsys.readouterr().out
    compare = build_parser()._subparsers._group_actions[0].choices["compare"]
    dataset = next(a for a in compare._actions if "--dataset" in a.option_strings)
    assert ".npz" in dataset.help


def test_a_diverged_teacher_says_so_in_the_table_and_the_report(tmp_path, capsys):
    """`--lr 1000` used to show a plain '90 %' in the terminal and report.md; `diverged` was only
    in summary.csv."""
    out = tmp_path / "run"
    lr = ["--lr", "1000", "--interval", "25"]  # 50 steps: enough for the loss to go non-finite
    assert main(["compare", "--teachers", "ce", *TINY, *lr, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(1/1" in printed and "diverged)" in printed  # the terminal table may wrap the cell
    report = (out / "report.md").read_text()
    assert "(1/1 diverged)" in report and "Diverged: **ce** at budget 20: 1 of 1" in report


CTRL_C_GRID = [
    "--teachers",
    "ce,label-smoothing",
    "--seeds",
    "2",
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


def _compare(out, extra):
    """`python -m analysis.cli compare` in its own process group with SIGINT at its default
    (a shell's background job ignores it, which a child would inherit)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", "compare", *CTRL_C_GRID, "--out", str(out), *extra],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--workers", "2"],
        # a Ray of its own, as a user's first `--backend ray` starts: ~2 min on 2 loaded cores
        pytest.param(["--backend", "ray"], marks=pytest.mark.slow),
    ],
    ids=["local", "workers2", "ray"],
)
def test_ctrl_c_is_one_line_exit_130_and_a_rerun_resumes(tmp_path, extra):
    """Ctrl-C used to print 45 traceback lines (86 and three tracebacks with --workers 2) and no
    word on resuming. A terminal's Ctrl-C reaches the whole process group: so does this one."""
    import os
    import signal
    import time

    if "ray" in extra:
        pytest.importorskip("ray")
    out = tmp_path / "run"
    proc = _compare(out, extra)
    records = out / "records"
    deadline = time.monotonic() + 600  # a hang guard for a loaded 2-core machine
    while not list(records.glob("*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no unit finished in 600 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    kept = len(list(records.glob("*.parquet")))
    assert proc.returncode == 130, err
    for noise in ("Traceback", "KeyboardInterrupt", "leaked"):
        assert noise not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert re.fullmatch(
        rf"l2t compare: interrupted; {kept} of 4 unit\(s\) are kept in \S+ \({kept} computed by "
        r"this run; .*\): re-run the same command to resume",
        lines[-1],
    ), err
    if "ray" not in extra:  # Ray may log its own start-up warnings before
        assert len(lines) == 1, err
    assert 1 <= kept < 4, "the interrupt should land after the first unit, before the last"

    resumed = _compare(out, extra)
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    assert len(list(records.glob("*.parquet"))) == 4
    meta = RecordStore(out).read_unit_meta()
    assert (
        len(meta) == 4
        and not RecordStore(out)
        .read()
        .duplicated(
            ["teacher", "budget", "seed", "student_seed", "phase", "episode", "step", "metric"]
        )
        .any()
    )
