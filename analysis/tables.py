"""Summary tables from tidy records: per teacher, final test error with its 95% t CI, dev error,
budget used, wall time, and the paired differences against the ``ce`` baseline and against the
setting's best fair baseline, with Holm-adjusted p-values, and the teaching cost per student
(step equivalents, and its ratio to plain CE's, which is the episode's student steps).

The dev error is on dev's ``select`` part (``teachers.base.REPORTED_SPLITS``), which no teacher
learns from. The best fair baseline of a setting (a budget of one table) is the non-learned,
non-oracle teacher with the lowest mean ``select`` error (:func:`best_baselines`): chosen on dev,
so its test number is a fair target. Each "vs" column's p-values form one Holm family over the
table's rows (``analysis.stats.holm``); a teacher "beats" another only when that adjusted p is
below 0.05 and the difference is negative. The CIs are per comparison (unadjusted). The
``oracle`` row (``kind`` "oracle") is the setting's limit, not a teacher: in no family, never the
best baseline.

Test error is reported, never used to select anything: the table is sorted by the registry's
order of the teachers as run, not by test numbers.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.records import RecordStore
from analysis.stats import Interval, holm, mean_ci, paired_difference
from teachers.registry import base_name

BASELINE = "ce"
KINDS = {
    "l2t-dlf": "gradient",
    "l2t-dln": "gradient",
    "reinforce": "rl",
    "ppo": "rl",
    "a2c": "rl",
    "l2rw": "reweight",
    "mw-net": "reweight",
    "oracle": "oracle",
}
"""teacher -> kind for the quality-vs-budget plot; anything else is a non-learning baseline"""
LEARNED_KINDS = ("gradient", "rl")
"""kinds of teachers fitted within the budget: not candidates for the best fair baseline"""
ALPHA = 0.05
"""level of the Holm-adjusted tests behind a "beats" (the tables star p below it)"""
FINAL_METRICS = ("test_error", "dev_error", "test_loss", "dev_loss", "diverged", "teach_wall_time")


def kind_of(teacher: str) -> str:
    """The kind of a teacher or of its variant (``l2t-dlf@pes`` is a gradient teacher)."""
    return KINDS.get(base_name(teacher), "baseline")


def per_seed(records: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (teacher, budget, seed): final metrics averaged over that seed's students,
    with the fit's budget used and wall time. The replicate unit of every CI. Teachers come in
    `order` (e.g. the command's), then any others alphabetically."""
    keys = ["teacher", "loss", "budget", "seed"]
    final = records[records["phase"] == "final"]
    if final.empty:
        raise ValueError("no final-phase records: no unit has completed yet")
    wide = (
        final.pivot_table(index=keys + ["episode"], columns="metric", values="value")
        .groupby(level=keys)
        .mean()
    )
    wide["students"] = final.groupby(keys)["episode"].nunique()
    fit = records[(records["phase"] == "fit") & (records["metric"] == "fit_wall_time")]
    wide["fit_wall_time"] = fit.set_index(keys)["value"]
    wide["budget_used"] = records.groupby(keys)["budget_used"].first()
    out = wide.reset_index()
    out.columns.name = None
    names = list(dict.fromkeys([*(order or []), *sorted(records["teacher"].unique())]))
    rank = {t: i for i, t in enumerate(names)}
    return out.sort_values(["budget", "teacher", "seed"], key=_order_key(rank)).reset_index(
        drop=True
    )


def summary(
    records: pd.DataFrame, baseline: str = BASELINE, order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per (teacher, budget): means with 95% CIs over seeds, and the paired test-error difference
    (teacher - baseline) over the seeds both have at that budget."""
    seeds = per_seed(records, order)
    rows = []
    for (teacher, budget), g in seeds.groupby(["teacher", "budget"], sort=False):
        test, dev = mean_ci(g["test_error"]), mean_ci(g["dev_error"])
        rows.append(
            {
                "teacher": teacher,
                "kind": kind_of(teacher),
                "loss": g["loss"].iloc[0],
                "budget": budget,
                "seeds": len(g),
                "students_per_seed": int(g["students"].max()),
                "test_error": test.mean,
                "test_error_ci": test.half,
                "dev_error": dev.mean,
                "dev_error_ci": dev.half,
                "diverged": g["diverged"].mean() if "diverged" in g else math.nan,
                "budget_used": g["budget_used"].mean(),
                "fit_wall_time": g["fit_wall_time"].mean(),
                "teach_wall_time": g["teach_wall_time"].mean(),
                # step equivalents per taught student (envs/cost.py) and over plain CE's (its
                # episode's student steps); NaN for records written before it was counted
                "teach_cost": g["teach_cost"].mean() if "teach_cost" in g else math.nan,
                "teach_cost_ratio": (
                    g["teach_cost_ratio"].mean() if "teach_cost_ratio" in g else math.nan
                ),
            }
        )
    table = pd.DataFrame(rows)
    best = best_baselines(table)
    table["best_baseline"] = table["budget"].map(best)
    table["is_best_baseline"] = table["teacher"] == table["best_baseline"]
    for name, against in ((baseline, lambda b: baseline), ("best", best.get)):
        diffs = [
            paired_difference(
                g[["teacher", "seed", "test_error"]], against(budget) or "", value="test_error"
            ).assign(budget=budget)
            for budget, g in seeds.groupby("budget")
        ]
        diff = pd.concat(diffs, ignore_index=True)
        diff.loc[diff["teacher"].map(kind_of) == "oracle", "diff_p"] = math.nan  # a limit
        diff["diff_p_holm"] = holm(diff["diff_p"].to_numpy())
        table = table.merge(
            diff.rename(columns={c: f"diff_vs_{name}{sfx}" for c, sfx in DIFF_COLUMNS.items()}),
            on=["teacher", "budget"],
            how="left",
        )
    return table


DIFF_COLUMNS = {
    "diff_mean": "",
    "diff_ci": "_ci",
    "diff_n": "_n",
    "diff_p": "_p",
    "diff_p_holm": "_p_holm",
}
"""paired_difference's columns -> suffix after ``diff_vs_<baseline>`` in the summary"""


def best_baselines(table: pd.DataFrame) -> dict:
    """budget -> the best fair baseline: the non-learned (not ``LEARNED_KINDS``), non-oracle
    teacher with the lowest mean dev (``select``) error; ties go to the earlier row."""
    fair = table[~table["kind"].isin([*LEARNED_KINDS, "oracle"]) & table["dev_error"].notna()]
    return {
        budget: g.loc[g["dev_error"].idxmin(), "teacher"] for budget, g in fair.groupby("budget")
    }


def write_summary(root: str | Path, baseline: str = BASELINE) -> pd.DataFrame:
    """Compute the summary of a results directory and write ``summary.csv`` beside the records."""
    store = RecordStore(root)
    table = summary(store.read(), baseline, order=store.config().get("teachers"))
    table.to_csv(Path(root) / "summary.csv", index=False)
    return table


def display_rows(
    table: pd.DataFrame, baseline: str = BASELINE
) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells shared by the console and the Markdown table."""
    header = [
        "teacher",
        "budget",
        "seeds",
        "test error (95% CI)",
        "select error (95% CI)",
        f"test error − {baseline} (paired 95% CI)",
        f"p vs {baseline} (Holm)",
        "test error − best baseline (paired 95% CI)",
        "p vs best (Holm)",
        "budget used",
        "fit s",
        "teach s/student",
        "teach cost (× CE)",
    ]
    cells = []
    for r in table.itertuples(index=False):
        d = r._asdict()
        diff = Interval(
            d[f"diff_vs_{baseline}"], d[f"diff_vs_{baseline}_ci"], int(d[f"diff_vs_{baseline}_n"])
        )
        best = Interval(d["diff_vs_best"], d["diff_vs_best_ci"], int(d["diff_vs_best_n"]))
        mark = (
            " (limit)" if r.kind == "oracle" else " (best baseline)" if r.is_best_baseline else ""
        )
        cells.append(
            [
                f"{r.teacher}{mark}",
                f"{r.budget:,}",
                str(r.seeds),
                _pct(Interval(r.test_error, r.test_error_ci, r.seeds)) + _diverged_mark(d),
                _pct(Interval(r.dev_error, r.dev_error_ci, r.seeds)),
                "—" if r.teacher == baseline else _pct(diff, signed=True),
                _p(d[f"diff_vs_{baseline}_p_holm"]),
                "—" if r.is_best_baseline else _pct(best, signed=True),
                _p(d["diff_vs_best_p_holm"]),
                f"{r.budget_used:,.0f}",
                f"{r.fit_wall_time:.1f}",
                f"{r.teach_wall_time:.2f}",
                _cost(r.teach_cost, r.teach_cost_ratio),
            ]
        )
    return header, cells


def to_markdown(table: pd.DataFrame, baseline: str = BASELINE) -> str:
    header, cells = display_rows(table, baseline)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def print_table(table: pd.DataFrame, baseline: str = BASELINE, title: str | None = None) -> None:
    """The summary as a rich console table."""
    from rich.console import Console
    from rich.table import Table

    header, cells = display_rows(table, baseline)
    out = Table(title=title)
    for i, h in enumerate(header):
        out.add_column(h, justify="left" if i == 0 else "right")
    for row in cells:
        out.add_row(*row)
    # a pipe or a log file gets the full width rather than rich's 80 columns
    Console(width=None if sys.stdout.isatty() else 160).print(out)


def diverged_students(row: dict) -> tuple[int, int]:
    """(diverged, taught) students of a summary row: `diverged` is the mean over seeds of each
    seed's fraction of students whose loss went non-finite."""
    taught = int(row["seeds"]) * int(row.get("students_per_seed", 1))
    fraction = row.get("diverged", math.nan)
    return (0 if fraction != fraction else round(float(fraction) * taught)), taught


def diverged_notes(table: pd.DataFrame) -> list[str]:
    """One line per (teacher, budget) with diverged students, for report.md: an error rate of a
    diverged network reads like a result, so it must never appear without the word."""
    notes = []
    for r in table.to_dict("records"):
        k, n = diverged_students(r)
        if k:
            notes.append(
                f"**{r['teacher']}** at budget {int(r['budget']):,}: {k} of {n} student(s) "
                f"diverged (non-finite loss; training stopped there), so its test error "
                f"{100 * r['test_error']:.2f} % is that of a broken network, not a loss's result"
            )
    return notes


def _diverged_mark(row: dict) -> str:
    k, n = diverged_students(row)
    return f" ({k}/{n} diverged)" if k else ""


def _pct(iv: Interval, signed: bool = False) -> str:
    """Error rates in percent: `4.93 ± 0.41 %`."""
    if iv.n == 0 or math.isnan(iv.mean):
        return "n/a"
    sign = "+" if signed else ""
    mean = f"{100 * iv.mean:{sign}.2f}"
    return f"{mean} %" if math.isnan(iv.half) else f"{mean} ± {100 * iv.half:.2f} %"


def _p(p: float) -> str:
    """An adjusted p-value, starred below ALPHA (the only "beats" the tables make)."""
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.3f}{' *' if p < ALPHA else ''}"


def _cost(cost: float, ratio: float) -> str:
    """Teaching cost per student: `2,760 (4.6×)` step equivalents and the ratio to plain CE."""
    return "n/a" if math.isnan(cost) else f"{cost:,.0f} ({ratio:.1f}×)"


def _order_key(order: dict[str, int]):
    def key(col: pd.Series) -> pd.Series:
        return col.map(order) if col.name == "teacher" else col

    return key
