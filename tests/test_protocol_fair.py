"""The ``fair-1`` comparison protocol (issue 19): its fields reach the grid, each teacher's student
lr is chosen on select before any unit (the lower select error wins; cached, so a resumed run
repeats no trial), and ``--protocol`` checks its name and the flags that conflict with it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from analysis import cli, selection
from analysis.protocols import (
    COMPARE_PROTOCOLS,
    FAIR_1,
    FAIR_LRS,
    get_compare_protocol,
    validate_compare,
)
from analysis.runner import Grid, choose_lrs, learns, run_unit
from teachers.base import TeachingSpec
from teachers.fixed import BoxCentreTeacher
from teachers.registry import make_teacher

TINY = TeachingSpec(device="cpu", horizon=1, interval=20, label_noise=0.4)
ONE = (2**31 - 1,)  # the first selection student (selection_students=1)


def protocol_grid(*words: str) -> tuple[Grid, list[str]]:
    """The grid `l2t compare --protocol fair-1 ...` would run, without running it."""
    argv = ["compare", "--protocol", "fair-1", "--teachers", "ce,l2t-dlf,reinforce",
            "--device", "cpu", "--out", "unused", *words]  # fmt: skip
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    grid, _ = cli._grid(parser, args)
    return cli.apply_protocol(
        parser, grid, args.protocol, cli.explicit_flags(argv), lr_grid=args.lr_grid
    )


def test_the_protocols_fields_reach_the_grid_and_its_config():
    grid, notes = protocol_grid()
    assert grid.protocol == "fair-1" and grid.protocol_overrides == {}
    assert (grid.spec.meta_size, grid.spec.horizon, grid.spec.interval) == (256, 30, 100)
    assert grid.spec.episode_steps == 3000
    assert (grid.checkpoint, grid.checks) == ("best-select", 10)
    assert grid.lr_grids == {t: list(FAIR_LRS) for t in ("ce", "l2t-dlf", "reinforce")}
    assert grid.starts == ["log-c", "zero"] and grid.selection_students == 2
    config = grid.to_config()
    assert config["protocol"] == "fair-1" and config["lr_grids"]["ce"] == list(FAIR_LRS)
    assert any("fair-1" in n for n in notes)
    assert FAIR_1.baselines[0] == "ce" and "oracle" in FAIR_1.limit
    assert set(FAIR_1.choices) >= {
        "information",
        "student_lr",
        "compute",
        "selection",
        "statistics",
    }


def test_every_comparison_protocol_names_real_teachers_fields_and_rules():
    for protocol in COMPARE_PROTOCOLS.values():
        validate_compare(protocol)
    with pytest.raises(ValueError, match="unknown teacher 'cee'"):
        validate_compare(dataclasses.replace(FAIR_1, baselines=("cee",)))
    with pytest.raises(ValueError, match="not spec fields"):
        validate_compare(dataclasses.replace(FAIR_1, spec={"horizn": 30}))


def test_a_flag_that_changes_the_protocol_is_applied_and_recorded(capsys):
    grid, notes = protocol_grid("--horizon", "5", "--checkpoint", "last")
    assert grid.spec.horizon == 5 and grid.spec.interval == 100  # only what was typed
    assert grid.protocol_overrides == {"horizon": [30, 5], "checkpoint": ["best-select", "last"]}
    assert grid.to_config()["protocol_overrides"]["horizon"] == [30, 5]
    assert "overrides fair-1's 30" in capsys.readouterr().err
    # typing the protocol's own value is no override
    grid, _ = protocol_grid("--horizon", "30")
    assert grid.protocol_overrides == {}


def test_a_wider_lr_grid_replaces_the_protocols_for_every_teacher_and_is_recorded(capsys):
    """--lr-grid: the lr search of every teacher runs on the user's grid (sorted, deduplicated),
    recorded as an override, so a directory made with fair-1's grid refuses to resume with it
    (records.FIXED_KEYS holds both); the protocol's own grid typed out is no override."""
    grid, notes = protocol_grid("--lr-grid", "1.0,0.03,0.1,0.3,0.1")
    assert grid.lr_grids == {t: [0.03, 0.1, 0.3, 1.0] for t in ("ce", "l2t-dlf", "reinforce")}
    assert grid.protocol_overrides == {"lr_grid": [list(FAIR_LRS), [0.03, 0.1, 0.3, 1.0]]}
    assert "--lr-grid [0.03, 0.1, 0.3, 1.0] overrides fair-1's" in capsys.readouterr().err
    assert any("[0.03, 0.1, 0.3, 1.0]" in n for n in notes)
    grid, _ = protocol_grid("--lr-grid", ",".join(map(str, FAIR_LRS)))
    assert grid.protocol_overrides == {} and grid.lr_grids["ce"] == list(FAIR_LRS)


@pytest.mark.parametrize("text", ["0.1", "0.1,0.1", "-0.1,0.1", "0.1,nan", "0.1,fast"])
def test_a_bad_lr_grid_is_one_line(text, capsys):
    with pytest.raises(SystemExit) as exit_:
        protocol_grid("--lr-grid", text)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--lr-grid" in err and "Traceback" not in err


def test_an_lr_grid_without_a_protocol_is_refused(capsys):
    argv = ["compare", "--teachers", "ce", "--lr-grid", "0.1,0.3", "--out", "unused"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "sets the lr search of a --protocol" in err


def test_lr_flag_and_a_fixed_teachers_lr_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        protocol_grid("--lr", "0.01")
    assert exit_.value.code == 2 and "chooses each teacher's student lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        protocol_grid("--teacher-config", '{"ce": {"lr": 0.01}}')
    assert "drop 'lr' from its config" in capsys.readouterr().err
    grid, _ = protocol_grid("--teacher-config", '{"reinforce": {"lr": 0.01}}')  # its policy's lr
    assert grid.teacher_configs == {"reinforce": {"lr": 0.01}}


def test_an_unknown_protocol_gets_a_did_you_mean(capsys):
    with pytest.raises(ValueError, match="Did you mean 'fair-1'"):
        get_compare_protocol("fair1")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--protocol", "fiar-1", "--teachers", "ce", "--out", "unused"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Did you mean 'fair-1'" in err and "Traceback" not in err
    assert list(COMPARE_PROTOCOLS) == ["fair-1"]


def test_the_lr_chosen_has_the_lower_select_error_and_reaches_the_students(tmp_path):
    """Can fail: the choice is checked against the same students taught through another path
    (Teacher.teach, whose dev error is on select), and the unit must train at it."""
    lrs = [0.003, 0.1]
    grid = Grid(teachers=["ce"], seeds=1, budgets=[1], spec=TINY, lr_grids={"ce": lrs},
                selection_students=1)  # fmt: skip
    tuned = choose_lrs(grid, tmp_path, progress=False)
    errors = {lr: make_teacher("ce", lr=lr).teach(TINY, ONE[0]).final["dev_error"] for lr in lrs}
    assert abs(errors[0.003] - errors[0.1]) > 0.01  # the case tells the two apart
    best = min(errors, key=errors.get)
    assert tuned.tuned == {"ce": {"lr": best}}
    assert tuned.search_cost == {"ce": 2 * TINY.episode_steps}  # counted, every candidate
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["tuned"] == {"ce": {"lr": best}} and written["search_cost"]["ce"] == 40
    records, _, _ = run_unit(tuned, "ce", 1, 0)
    row = records[records.metric == "student_lr"]
    assert row.value.tolist() == [best]
    assert records[records.metric == "lr_search_student_steps"].value.tolist() == [40.0]


def test_learned_teachers_are_searched_at_their_familys_start(tmp_path, monkeypatch):
    """l2t-dlf: start x lr on the bilinear family's untrained start; reinforce: the centre of
    compact's box, where its untrained policy acts (not the family's default, plain CE); the
    chosen values land in that teacher's spec only."""
    seen = []
    original = selection.evaluate_trial

    def spy(teacher, spec, changes, seeds):
        seen.append((type(teacher).__name__, teacher.spec_for(spec).loss, dict(changes)))
        return original(teacher, spec, changes, seeds)

    monkeypatch.setattr(selection, "evaluate_trial", spy)
    grid = Grid(teachers=["ce", "l2t-dlf", "reinforce"], seeds=1, budgets=[1], spec=TINY,
                lr_grids={"l2t-dlf": [0.03, 0.1], "reinforce": [0.03, 0.1]},
                starts=["log-c", "zero"], selection_students=1)  # fmt: skip
    assert learns("l2t-dlf") and learns("reinforce") and not learns("l2rw")
    tuned = choose_lrs(grid, tmp_path, progress=False)
    dlf = [c for name, loss, c in seen if loss == "bilinear"]
    assert sorted(map(str, dlf)) == sorted(
        str({"start": s, "lr": lr}) for s in ("log-c", "zero") for lr in (0.03, 0.1)
    )
    assert {(n, loss) for n, loss, _ in seen} == {
        ("FixedTeacher", "bilinear"),
        ("BoxCentreTeacher", "compact"),
    }
    assert set(tuned.tuned) == {"l2t-dlf", "reinforce"}  # ce keeps the spec's lr
    assert tuned.spec_of("ce") == TINY
    assert tuned.spec_of("l2t-dlf").loss_kwargs == {"start": tuned.tuned["l2t-dlf"]["start"]}
    assert tuned.spec_of("reinforce").lr == tuned.tuned["reinforce"]["lr"]


def test_a_resumed_run_repeats_no_trial(tmp_path, monkeypatch):
    grid = Grid(teachers=["ce", "gce"], seeds=1, budgets=[1], spec=TINY,
                lr_grids={"ce": [0.01, 0.1], "gce": [0.01, 0.1]}, selection_students=1)  # fmt: skip
    first = choose_lrs(grid, tmp_path, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run repeated a trial of the lr search")

    monkeypatch.setattr(selection, "evaluate_trial", refuse)
    again = choose_lrs(grid, tmp_path, progress=False)
    assert (again.tuned, again.search_cost) == (first.tuned, first.search_cost)
    # a trial cut short before its file was written is redone, alone
    (tmp_path / "selection" / "gce" / "lr=0.1.json").unlink()
    calls = []
    monkeypatch.setattr(
        selection,
        "evaluate_trial",
        lambda *a: calls.append(a[2]) or selection.Trial(a[2], (0.5,), 20),
    )
    choose_lrs(grid, tmp_path, progress=False)
    assert calls == [{"lr": 0.1}]


def test_rl_search_matches_the_box_centre_on_the_family(tmp_path):
    """reinforce's lr search scores exactly what action 0 on compact gives."""
    grid = Grid(teachers=["reinforce"], seeds=1, budgets=[1], spec=TINY,
                lr_grids={"reinforce": [0.1]}, selection_students=1)  # fmt: skip
    choose_lrs(grid, tmp_path, progress=False)
    body = json.loads((tmp_path / "selection" / "reinforce.json").read_text())
    direct, _ = selection.held_out_errors(
        BoxCentreTeacher(family="compact"), TINY.replace(loss="compact"), ONE
    )
    assert np.isclose(body["trials"][0]["select_error"], direct[0])
