"""Summary tables from tidy records: per teacher, final test error with its 95% t CI, dev error,
budget used, wall time, and the paired difference against the ``ce`` baseline.

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
from analysis.stats import Interval, mean_ci, paired_difference

BASELINE = "ce"
KINDS = {
    "l2t-dlf": "gradient",
    "l2t-dln": "gradient",
    "reinforce": "rl",
    "ppo": "rl",
    "a2c": "rl",
}
"""teacher -> kind for the quality-vs-budget plot; anything else is a non-learning baseline"""
FINAL_METRICS = ("test_error", "dev_error", "test_loss", "dev_loss", "diverged", "teach_wall_time")


def kind_of(teacher: str) -> str:
    return KINDS.get(teacher, "baseline")


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
            }
        )
    table = pd.DataFrame(rows)
    diffs = [
        paired_difference(
            g[["teacher", "seed", "test_error"]], baseline, value="test_error"
        ).assign(budget=budget)
        for budget, g in seeds.groupby("budget")
    ]
    diff = pd.concat(diffs, ignore_index=True).rename(
        columns={
            "diff_mean": f"diff_vs_{baseline}",
            "diff_ci": f"diff_vs_{baseline}_ci",
            "diff_n": f"diff_vs_{baseline}_n",
        }
    )
    return table.merge(diff, on=["teacher", "budget"], how="left")


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
        "dev error (95% CI)",
        f"test error − {baseline} (paired 95% CI)",
        "budget used",
        "fit s",
        "teach s/student",
    ]
    cells = []
    for r in table.itertuples(index=False):
        d = r._asdict()
        diff = Interval(
            d[f"diff_vs_{baseline}"], d[f"diff_vs_{baseline}_ci"], int(d[f"diff_vs_{baseline}_n"])
        )
        cells.append(
            [
                str(r.teacher),
                f"{r.budget:,}",
                str(r.seeds),
                _pct(Interval(r.test_error, r.test_error_ci, r.seeds)) + _diverged_mark(d),
                _pct(Interval(r.dev_error, r.dev_error_ci, r.seeds)),
                "—" if r.teacher == baseline else _pct(diff, signed=True),
                f"{r.budget_used:,.0f}",
                f"{r.fit_wall_time:.1f}",
                f"{r.teach_wall_time:.2f}",
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


def _order_key(order: dict[str, int]):
    def key(col: pd.Series) -> pd.Series:
        return col.map(order) if col.name == "teacher" else col

    return key
