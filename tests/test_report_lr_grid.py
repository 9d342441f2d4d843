"""The report's lr-search table flags a choice at an end of the grid (analysis/report.py)."""

from __future__ import annotations

import json

from analysis.report import protocol_section


def _search(root, teacher, chosen_lr, errors):
    trials = [
        {"lr": lr, "select_error": e, "chosen": lr == chosen_lr, "student_steps": 100}
        for lr, e in errors.items()
    ]
    body = {
        "teacher": teacher,
        "searched_in": teacher,
        "chosen": {"lr": chosen_lr},
        "split": "select",
        "seeds": [1, 2],
        "student_steps": 100 * len(trials),
        "trials": trials,
    }
    (root / "selection").mkdir(exist_ok=True)
    (root / "selection" / f"{teacher}.json").write_text(json.dumps(body))


def test_a_choice_at_either_end_of_the_grid_is_named_and_one_inside_is_not(tmp_path):
    _search(tmp_path, "ce", 0.001, {0.001: 0.10, 0.01: 0.12, 0.1: 0.20})
    _search(tmp_path, "gce", 0.01, {0.001: 0.15, 0.01: 0.11, 0.1: 0.13})
    _search(tmp_path, "oracle", 0.1, {0.001: 0.09, 0.01: 0.08, 0.1: 0.07})
    text = "\n".join(protocol_section(tmp_path, {"protocol": "fair-1"}))
    edge = next(line for line in text.splitlines() if line.startswith("Chosen at an end"))
    assert "ce (lr 0.001)" in edge and "oracle (lr 0.1)" in edge
    assert "gce" not in edge


def test_no_flag_when_every_choice_is_inside_the_grid(tmp_path):
    _search(tmp_path, "gce", 0.01, {0.001: 0.15, 0.01: 0.11, 0.1: 0.13})
    text = "\n".join(protocol_section(tmp_path, {}))
    assert "Chosen at an end" not in text and "| gce |" in text
