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
from teachers.base import EnvSpec

FILE = "<an existing file>"
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
}
# more values a user could plausibly type, each also an error
MORE = [
    ("compare", "--device", "cuda:7"),
    ("compare", "--device", "cuda:x"),
    ("compare", "--teacher-config", "{oops"),
    ("compare", "--loss-kwargs", '{"bogus": 1}'),
    ("compare", "--lr", "nan"),
    ("demo", "--device", "gpu"),
]


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
    spec = EnvSpec(horizon=2, interval=5, dev_subset=32, device="cpu")
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
