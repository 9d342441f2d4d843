"""Teacher variants, ``base@label``: several settings of one teacher in one comparison (its rows
paired against the same students and in one Holm family), a variant's own env changes (the lr
action), the lr search shared where the start is the same, and bad names or env keys refused."""

from __future__ import annotations

import json

import pytest

from analysis import selection
from analysis.records import RecordStore
from analysis.report import protocol_section
from analysis.runner import Grid, choose_lrs, run_unit, search_folder
from analysis.tables import kind_of
from teachers.base import TeachingSpec
from teachers.registry import base_name, teacher_class

TINY = TeachingSpec(device="cpu", horizon=2, interval=10, label_noise=0.4)


def test_a_variant_runs_its_base_class_with_its_own_options():
    assert base_name("l2t-dlf@pes") == "l2t-dlf" and base_name("ce") == "ce"
    assert teacher_class("l2t-dlf@pes") is teacher_class("l2t-dlf")
    assert kind_of("l2t-dlf@pes") == "gradient" and kind_of("ppo@lr") == "rl"
    grid = Grid(teachers=["label-smoothing", "label-smoothing@big"], seeds=1, budgets=[1],
                spec=TINY, teacher_configs={"label-smoothing@big": {"epsilon": 0.5}})  # fmt: skip
    plain, _, _ = run_unit(grid, "label-smoothing", 1, 0)
    variant, _, teacher = run_unit(grid, "label-smoothing@big", 1, 0)
    assert teacher.config["epsilon"] == 0.5
    assert set(variant.teacher) == {"label-smoothing@big"}
    # the same student seed, another teacher: a different student (the option reached it)
    final = lambda r: r[(r.phase == "final") & (r.metric == "test_error")].value.item()  # noqa: E731
    assert final(plain) != final(variant)


def test_bad_variant_names_and_env_keys_get_one_line_errors():
    with pytest.raises(ValueError, match="unknown teacher 'ppoo'.*Did you mean 'ppo'"):
        Grid(teachers=["ppoo@lr"], spec=TINY)
    with pytest.raises(ValueError, match="label after '@'"):
        Grid(teachers=["ce@"], spec=TINY)
    with pytest.raises(ValueError, match=r"may change only \['lr_action'\].*'label_noise'"):
        Grid(teachers=["ce@x"], spec=TINY, teacher_configs={"ce@x": {"env": {"label_noise": 0}}})
    with pytest.raises(ValueError, match="no option 'estimatr'"):
        Grid(teachers=["l2t-dlf@x"], spec=TINY,
             teacher_configs={"l2t-dlf@x": {"estimatr": "pes"}})  # fmt: skip


def test_a_variants_env_changes_reach_its_spec_and_only_its():
    grid = Grid(teachers=["ppo", "ppo@lr"], seeds=1, budgets=[1], spec=TINY,
                teacher_configs={"ppo@lr": {"env": {"lr_action": True}}})  # fmt: skip
    assert grid.spec_of("ppo@lr").lr_action and not grid.spec_of("ppo").lr_action
    with pytest.raises(ValueError, match="lr_action"):
        Grid(teachers=["ppo@lr"], spec=TINY,
             teacher_configs={"ppo@lr": {"env": {"lr_action": "yes"}}})  # fmt: skip


def test_a_learned_variant_shares_its_bases_lr_search_unless_it_starts_elsewhere(
    tmp_path, monkeypatch
):
    configs = {
        "l2t-dlf@pes": {"estimator": "pes", "K": 10},
        "l2t-dlf@compact": {"family": "compact"},
        "reinforce@lr": {"env": {"lr_action": True}},
    }
    grid = Grid(teachers=["l2t-dlf", *configs], seeds=1, budgets=[1], spec=TINY,
                teacher_configs=configs, selection_students=1,
                lr_grids={t: [0.1] for t in ["l2t-dlf", *configs]}, starts=["zero"])  # fmt: skip
    assert search_folder(grid, "l2t-dlf@pes") == "l2t-dlf"
    assert search_folder(grid, "l2t-dlf@compact") == "l2t-dlf@compact"
    assert search_folder(grid, "reinforce@lr") == "reinforce@lr"
    # teachers that start alike share the first one's search, whatever their class: on the
    # bilinear family's grid of starts every learned teacher; elsewhere those with the same
    # frozen start (the RL teachers at the box's centre, l2t-dlf at the family's default)
    alike = Grid(teachers=["ce", "reinforce", "ppo", "ppo@bilinear", "l2t-dlf", "l2t-dlf@c"],
                 spec=TINY, starts=["zero"], teacher_configs={"ppo@bilinear": {"family": "bilinear"},
                 "l2t-dlf@c": {"family": "compact"}})  # fmt: skip
    folders = {t: search_folder(alike, t) for t in alike.teachers}
    assert folders == {"ce": "ce", "reinforce": "reinforce", "ppo": "reinforce",
                       "ppo@bilinear": "ppo@bilinear", "l2t-dlf": "ppo@bilinear",
                       "l2t-dlf@c": "l2t-dlf@c"}  # fmt: skip
    calls = []
    original = selection.evaluate_trial

    def count(teacher, spec, changes, seeds):
        calls.append((spec.loss, spec.lr_action))
        return original(teacher, spec, changes, seeds)

    monkeypatch.setattr(selection, "evaluate_trial", count)
    tuned = choose_lrs(grid, tmp_path, progress=False)
    # l2t-dlf's one trial serves l2t-dlf@pes; compact and the lr-action variant run their own
    assert sorted(calls) == [("bilinear", False), ("compact", False), ("compact", True)]
    assert tuned.tuned["l2t-dlf@pes"] == tuned.tuned["l2t-dlf"]
    assert (tmp_path / "selection" / "l2t-dlf@pes.json").exists()
    # the report counts the shared search once, on the teacher it is named after
    lines = protocol_section(tmp_path, {})
    steps = {t: json.loads((tmp_path / "selection" / f"{t}.json").read_text())["student_steps"]
             for t in grid.teachers}  # fmt: skip
    assert steps["l2t-dlf@pes"] == steps["l2t-dlf"] > 0
    row = next(line for line in lines if line.startswith("| l2t-dlf@pes |"))
    assert row.endswith("| shared with l2t-dlf |")
    once = steps["l2t-dlf"] + steps["l2t-dlf@compact"] + steps["reinforce@lr"]
    assert any(f"{once:,} in all" in line for line in lines)


def test_a_resumed_directory_takes_a_new_variant_but_not_a_changed_config(tmp_path):
    store = RecordStore(tmp_path)
    first = Grid(teachers=["ce"], spec=TINY).to_config()
    store.open(first)
    added = Grid(teachers=["ce", "l2t-dlf@pes"], spec=TINY,
                 teacher_configs={"l2t-dlf@pes": {"estimator": "pes"}}).to_config()  # fmt: skip
    store.open(added)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["teachers"] == ["ce", "l2t-dlf@pes"]
    assert written["teacher_configs"] == {"l2t-dlf@pes": {"estimator": "pes"}}
    changed = Grid(teachers=["ce", "l2t-dlf@pes"], spec=TINY,
                   teacher_configs={"l2t-dlf@pes": {"estimator": "online"}}).to_config()  # fmt: skip
    with pytest.raises(ValueError, match="teacher_configs.l2t-dlf@pes.estimator"):
        store.open(changed)
