"""A leaderboard over settings: one line per teacher, its rank in each setting and overall, what it
costs, and where a multiplicity-corrected test says it beats the setting's best baseline.

Each setting is one results directory (``l2t compare``); its summary (``analysis.tables``)
already holds the means, the CIs, the Holm-adjusted paired differences against CE and against
the best fair baseline (chosen on ``select``), and the costs. This module only reads those:

* **rank**: by mean test error at the setting's budget (1 = lowest; ties share the lower rank);
  the oracle is the setting's limit, shown, never ranked. Test error is what is reported, never
  what chose anything (the best baseline, lrs, checkpoints and fitted teachers are chosen on
  ``select``).
* **overall**: the mean rank over the ``ranked`` settings (the hard ones; a clean reference can be
  shown beside them without being averaged in), with the number of settings it ranked in.
* **beats**: the setting's Holm-adjusted paired p against its best baseline is below 0.05 and
  the difference is negative; otherwise a teacher "does not beat" it, whatever its mean.
* **fit cost**: the fit's wall time over what plain CE takes for as many student steps as the fit
  spent (CE's taught-student wall time per step, measured in the same run), and the teaching
  cost in student-step equivalents over plain CE's (``teach_cost_ratio``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.records import RecordStore
from analysis.tables import ALPHA, BASELINE, summary

LIMIT_KIND = "oracle"


def setting_table(root: str | Path, budget: int | None = None) -> pd.DataFrame:
    """One setting's summary rows at `budget` (default: the largest budget every teacher of the
    directory reached), with ``rank``, ``beats_best`` and ``fit_cost_ratio`` added."""
    store = RecordStore(root)
    table = summary(store.read(), BASELINE, order=store.config().get("teachers"))
    if budget is None:
        reached = table.groupby("teacher")["budget"].max()
        budget = int(reached.min())
    at = table[table["budget"] == budget].copy()
    if at.empty:
        raise ValueError(f"{root}: no rows at budget {budget:,} (budgets: {sorted(table.budget)})")
    ranked = at["kind"] != LIMIT_KIND
    at["rank"] = np.nan
    at.loc[ranked, "rank"] = at.loc[ranked, "test_error"].rank(method="min")
    p = at["diff_vs_best_p_holm"].astype(float)
    at["beats_best"] = (p < ALPHA) & (at["diff_vs_best"] < 0)
    ce = at[at["teacher"] == BASELINE]
    episode = store.config()["spec"]["horizon"] * store.config()["spec"]["interval"]
    per_step = float(ce["teach_wall_time"].iloc[0]) / episode if len(ce) else np.nan
    used = at["budget_used"].where(at["budget_used"] > 0)
    at["fit_cost_ratio"] = at["fit_wall_time"] / (used * per_step)
    return at.reset_index(drop=True)


def leaderboard(
    settings: Mapping[str, str | Path],
    ranked: Sequence[str] | None = None,
    budgets: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """One row per teacher: per setting its rank, test error (with its CI) and whether it beats
    that setting's best baseline; then its mean rank over the `ranked` settings (default all),
    the number it ranked in, and its median fit and teaching cost ratios. Sorted by mean rank."""
    ranked = list(settings) if ranked is None else list(ranked)
    unknown = sorted(set(ranked) - set(settings))
    if unknown:
        raise ValueError(f"ranked settings {unknown} are not among {list(settings)}")
    tables = {
        name: setting_table(root, (budgets or {}).get(name)) for name, root in settings.items()
    }
    teachers = list(dict.fromkeys(t for tab in tables.values() for t in tab["teacher"]))
    rows = []
    for teacher in teachers:
        row: dict = {"teacher": teacher}
        ranks, fit, teach = [], [], []
        for name, tab in tables.items():
            hit = tab[tab["teacher"] == teacher]
            if hit.empty:
                continue
            r = hit.iloc[0]
            row["kind"] = r["kind"]
            row[f"{name}:rank"] = r["rank"]
            row[f"{name}:test_error"] = r["test_error"]
            row[f"{name}:test_error_ci"] = r["test_error_ci"]
            row[f"{name}:beats_best"] = bool(r["beats_best"])
            row[f"{name}:best_baseline"] = r["best_baseline"]
            row[f"{name}:budget"] = int(r["budget"])
            fit.append(r["fit_cost_ratio"])
            teach.append(r["teach_cost_ratio"])
            if name in ranked and not np.isnan(r["rank"]):
                ranks.append(r["rank"])
        row["mean_rank"] = float(np.mean(ranks)) if ranks else np.nan
        row["ranked_in"] = len(ranks)
        row["fit_cost_ratio"] = float(np.nanmedian(fit)) if np.isfinite(fit).any() else np.nan
        row["teach_cost_ratio"] = float(np.nanmedian(teach)) if np.isfinite(teach).any() else np.nan
        rows.append(row)
    board = pd.DataFrame(rows)
    board.attrs["settings"], board.attrs["ranked"] = list(settings), ranked
    return board.sort_values(["mean_rank", "teacher"], na_position="last").reset_index(drop=True)


def to_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a markdown table: rank and test error per setting (a ✓ where the
    teacher beats that setting's best baseline), the mean rank, the costs."""
    settings, ranked = board.attrs["settings"], board.attrs["ranked"]
    head = ["teacher"] + [f"{s}{'' if s in ranked else ' (not ranked)'}" for s in settings]
    head += ["mean rank (settings)", "fit cost (x CE)", "teach cost (x CE)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in board.to_dict("records"):
        cells = [r["teacher"] + (" (limit)" if r.get("kind") == LIMIT_KIND else "")]
        for s in settings:
            if pd.isna(r.get(f"{s}:test_error")):
                cells.append("—")
                continue
            rank = r[f"{s}:rank"]
            mark = " ✓" if r[f"{s}:beats_best"] else ""
            where = "limit" if pd.isna(rank) else f"#{int(rank)}"
            err, ci = 100 * r[f"{s}:test_error"], 100 * r[f"{s}:test_error_ci"]
            cells.append(f"{where}: {err:.2f} ± {ci:.2f} %{mark}")
        mean = r["mean_rank"]
        cells.append("—" if pd.isna(mean) else f"{mean:.2f} ({r['ranked_in']})")
        cells += [_ratio(r["fit_cost_ratio"]), _ratio(r["teach_cost_ratio"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


LEARNED_KINDS = ("gradient", "rl")
"""the kinds of teacher that learn their loss (analysis.tables.kind_of)"""


def verdict(board: pd.DataFrame) -> str:
    """One sentence: which teachers beat their setting's best baseline (the ✓ cells), and
    whether any learned teacher does, so that a board without one says so in words."""
    wins = [
        (r["teacher"], s)
        for r in board.to_dict("records")
        for s in board.attrs["settings"]
        if r.get(f"{s}:beats_best") is True
    ]
    learned = [(t, s) for t, s in wins if _kind(board, t) in LEARNED_KINDS]
    if not wins:
        return (
            "No teacher beats its setting's best baseline (Holm-adjusted paired t-test, "
            "p < 0.05) in any setting here, and so no learned teacher does."
        )
    listed = "; ".join(f"{t} in {s}" for t, s in wins)
    tail = "" if learned else " None of them is a learned teacher."
    return f"Beats its setting's best baseline (Holm-adjusted, p < 0.05): {listed}.{tail}"


def _kind(board: pd.DataFrame, teacher: str) -> str:
    return str(board.loc[board["teacher"] == teacher, "kind"].iloc[0])


def _ratio(x: float) -> str:
    return "—" if pd.isna(x) else f"{x:.1f}"


def plot(board: pd.DataFrame, path: str | Path) -> Path:
    """Rank per setting, one line per teacher (the oracle, a limit, is not drawn), the ranked
    settings first; a filled marker where the teacher beats that setting's best baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    settings = board.attrs["settings"]
    order = [s for s in settings if s in board.attrs["ranked"]]
    order += [s for s in settings if s not in order]
    shown = board[board["kind"] != LIMIT_KIND]
    colours = sns.color_palette("tab20", len(shown))
    fig, ax = plt.subplots(figsize=(2.0 * len(order) + 4.5, 0.32 * len(shown) + 2.2))
    x = np.arange(len(order))
    for colour, r in zip(colours, shown.to_dict("records"), strict=True):
        ranks = np.array([r.get(f"{s}:rank", np.nan) for s in order], dtype=float)
        beats = np.array([bool(r.get(f"{s}:beats_best", False)) for s in order])
        ax.plot(x, ranks, "-", color=colour, lw=1.5, label=f"{r['teacher']}")
        ax.plot(x, ranks, "o", mfc="white", color=colour)
        ax.plot(x[beats], ranks[beats], "o", color=colour, ms=9)
    ax.set_xticks(x, [s if s in board.attrs["ranked"] else f"{s}\n(not ranked)" for s in order])
    ax.invert_yaxis()
    ax.set_ylabel("rank by mean test error (1 = best)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9)
    ax.set_title(
        "Teachers' ranks per setting (filled: beats the setting's best baseline, Holm p < 0.05)",
        fontsize=10,
    )
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
