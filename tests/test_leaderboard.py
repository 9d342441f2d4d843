"""analysis.leaderboard and experiments/fair_headline.py's summary: ranks per setting from the
settings' own summaries, the oracle shown but never ranked, "beats" only from the Holm-adjusted
test, the mean rank over the ranked settings only, and the LEADERBOARD.md / figures written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.leaderboard import leaderboard, setting_table, to_markdown, verdict
from analysis.runner import Grid, run_grid
from analysis.tables import summary
from students.data import from_tensors
from teachers.base import TeachingSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import fair_headline  # noqa: E402


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    """Three tiny settings of blobs (clean, noisy, noisier), teachers ce, gce, label-smoothing
    and the oracle, 3 seeds at budget 5 (fixed losses: the budget is only a label)."""
    root = tmp_path_factory.mktemp("fair")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 12)).astype(np.float32) + y[:, None]
    data = from_tensors(x[:240], y[:240], x[240:], y[240:], name="blobs")
    spec = TeachingSpec(data, horizon=2, interval=10, batch_size=16, device="cpu", meta_size=20)
    spec = spec.replace(student_kwargs={"hidden": 16})
    dirs = {}
    for name, noise in (("clean", 0.0), ("symmetric-40", 0.4), ("pairflip-40", 0.5)):
        grid = Grid(["ce", "gce", "label-smoothing", "oracle"], 3, [5],
                    spec.replace(label_noise=noise))  # fmt: skip
        dirs[name] = run_grid(grid, root / name, progress=False).root
    return root, dirs


def test_ranks_come_from_each_settings_summary_and_the_limit_is_not_ranked(settings):
    _, dirs = settings
    table = setting_table(dirs["symmetric-40"])
    from analysis.records import RecordStore

    own = summary(RecordStore(dirs["symmetric-40"]).read()).set_index("teacher")
    ranked = table[table["kind"] != "oracle"].set_index("teacher")
    assert (
        ranked["rank"].to_dict() == own.loc[ranked.index, "test_error"].rank(method="min").to_dict()
    )
    assert np.isnan(table.set_index("teacher").loc["oracle", "rank"])
    p = own["diff_vs_best_p_holm"].fillna(1.0)
    beats = (p < 0.05) & (own["diff_vs_best"] < 0)
    assert table.set_index("teacher")["beats_best"].to_dict() == beats.to_dict()


def test_the_overall_rank_averages_only_the_ranked_settings(settings):
    _, dirs = settings
    board = leaderboard(dirs, ranked=["symmetric-40", "pairflip-40"]).set_index("teacher")
    for teacher in ("ce", "gce", "label-smoothing"):
        mean = np.mean([board.loc[teacher, f"{s}:rank"] for s in ("symmetric-40", "pairflip-40")])
        assert board.loc[teacher, "mean_rank"] == pytest.approx(mean)
        assert board.loc[teacher, "ranked_in"] == 2
    assert np.isnan(board.loc["oracle", "mean_rank"]) and board.loc["oracle", "ranked_in"] == 0
    text = to_markdown(leaderboard(dirs, ranked=["symmetric-40"]))
    assert "clean (not ranked)" in text and "oracle (limit)" in text and "limit:" in text
    with pytest.raises(ValueError, match=r"ranked settings \['imbalance-100'\]"):
        leaderboard(dirs, ranked=["imbalance-100"])


def test_the_headline_summary_writes_the_leaderboard_and_across_settings(settings, monkeypatch):
    root, _ = settings
    monkeypatch.setattr(fair_headline, "SUMMARY_BUDGET", 5)
    path = fair_headline.summarise(root, "python experiments/fair_headline.py --summary-only")
    text = path.read_text()
    assert "ranked: symmetric-40, pairflip-40" in text and "Best baseline per setting" in text
    assert (root / "leaderboard.png").stat().st_size > 0
    across = pd.read_csv(root / "across" / "across_settings.csv")
    assert "p_improve_vs_best" in across and set(across["teacher"]) >= {"ce", "gce"}
    assert (root / "across" / "across_settings.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("chosen", "rows"),
    [("full", {"l2t-dlf", "l2t-dlf@lr"}), ("pes", {"l2t-dlf", "l2t-dlf@pes", "l2t-dlf@pes+lr"})],
)
def test_the_headline_commands_hold_every_teacher_once_and_refuse_unknown_settings(
    capsys, monkeypatch, chosen, rows
):
    monkeypatch.setattr(fair_headline, "CHOSEN_ESTIMATOR", chosen)
    args = fair_headline.main.__globals__["argparse"].Namespace(
        seeds=5, workers=2, backend="ray", address="auto", out="results/fair"
    )
    cmd = fair_headline.command("symmetric-40", args)
    teachers = cmd[cmd.index("--teachers") + 1].split(",")
    assert len(teachers) == len(set(teachers)) and "oracle" in teachers
    assert {t for t in teachers if t.startswith("l2t-dlf")} == rows
    assert {"l2t-dln", "reinforce", "ppo", "reinforce@lr", "ppo@lr"} <= set(teachers)
    configs = json.loads(cmd[cmd.index("--teacher-config") + 1])
    lr_rows = {t for t, c in configs.items() if c.get("env") == {"lr_action": True}}
    assert lr_rows == {t for t in teachers if t.endswith("lr")}
    assert cmd[cmd.index("--budget") + 1] == "16000,64000" and "--backend" in cmd
    assert "--lr-grid" not in cmd  # fair-1's own grid unless asked
    args.lr_grid = "0.03,0.1,0.3,1"
    wide = fair_headline.command("imbalance-100", args)
    assert wide[wide.index("--lr-grid") + 1] == "0.03,0.1,0.3,1"
    clean = fair_headline.command("clean", args)
    assert "oracle" not in clean[clean.index("--teachers") + 1].split(",")
    with pytest.raises(SystemExit):
        fair_headline.main(["--settings", "noisy", "--print"])
    assert "unknown settings ['noisy']" in capsys.readouterr().err


def test_the_verdict_says_who_beats_the_best_baseline_and_whether_a_learned_teacher_does(settings):
    _, dirs = settings
    board = leaderboard(dirs)
    cells = [c for c in board.columns if c.endswith(":beats_best")]
    board[cells] = False
    assert verdict(board).startswith("No teacher beats its setting's best baseline")
    fixed = board.index[board["teacher"] == "label-smoothing"][0]
    board.loc[fixed, cells[0]] = True
    text = verdict(board)
    setting = cells[0].split(":")[0]
    assert f"label-smoothing in {setting}" in text and "None of them is a learned" in text
    board.loc[fixed, "kind"] = "gradient"  # as if a learned teacher had won that cell
    assert "None of them" not in verdict(board)


def test_a_setting_still_running_is_not_summarised(settings, monkeypatch, tmp_path):
    """A setting with units missing would rank its teachers on fewer seeds: the summary leaves
    it out and says so."""
    import shutil

    root, _ = settings
    copy = tmp_path / "fair"
    shutil.copytree(root, copy)
    (copy / "pairflip-40" / "records" / "gce__b5__s2.parquet").unlink()
    assert fair_headline.units_done(copy / "pairflip-40") == (11, 12)
    monkeypatch.setattr(fair_headline, "SUMMARY_BUDGET", 5)
    text = fair_headline.summarise(copy, "summary").read_text()
    assert "still running, so not summarised: pairflip-40 (11 of 12 units)" in text
    assert "ranked: symmetric-40; still running" in text and "pairflip-40 |" not in text
