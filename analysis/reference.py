"""Compare a fresh run with committed reference results (``make demo`` against ``results/demo``).

Same command, same machine, same torch build: the numbers are bit-identical. Another machine or
torch build changes float rounding, and the difference grows over a student's training: per
teacher and budget, the mean test error over seeds moves by up to ~0.4 points on the demo (the
README's "Reproducibility"). :data:`TOLERANCE` is that bound, with some margin; teachers that
sample (RL, random) diverge further and are held to the two runs' combined CI instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.records import FIXED_KEYS, RecordStore
from analysis.stats import mean_ci
from analysis.tables import per_seed

DEMO_REFERENCE = "results/demo"
"""the committed demo results a fresh `make demo` is compared against"""
TOLERANCE = 0.005
"""|mean test error - reference| per (teacher, budget) that still counts as reproduced: 0.5
points, the cross-machine drift we saw on the demo (float rounding, not a different method)"""


def compare(
    out: str | Path, reference: str | Path, tolerance: float = TOLERANCE
) -> tuple[list[str], bool | None]:
    """Markdown lines (a section for report.md) and whether every shared (teacher, budget)
    matched within `tolerance` (None when there is nothing comparable)."""
    out, reference = Path(out), Path(reference)
    head = [f"## Against the reference results in `{reference}`", ""]
    if out.resolve() == reference.resolve():
        return [], None
    ref_store, new_store = RecordStore(reference), RecordStore(out)
    try:
        ref_config, new_config = ref_store.config(), new_store.config()
    except FileNotFoundError:
        return head + [f"No reference: `{reference}` is not a results directory.", ""], None
    differ = [k for k in FIXED_KEYS if ref_config.get(k) != new_config.get(k)]
    if differ:
        return head + [f"Not comparable: the runs differ in {differ}.", ""], None
    ref, new = _means(ref_store), _means(new_store)
    both = new.merge(ref, left_index=True, right_index=True, suffixes=("_new", "_ref"))
    if both.empty:
        return head + ["No (teacher, budget) in common with the reference.", ""], None
    both["diff"] = both["test_error_new"] - both["test_error_ref"]
    # a teacher that samples (RL, random) takes another trajectory once floats differ: its
    # numbers then differ like another draw of seeds, which the two runs' CIs measure
    both["allowed"] = np.maximum(tolerance, np.hypot(both["half_new"], both["half_ref"]))
    both["ok"] = both["diff"].abs() <= both["allowed"]
    identical = int((both["diff"] == 0).sum())
    ok = bool(both["ok"].all())
    lines = head + [
        f"Mean test error over seeds, this run vs the reference, per teacher and budget: "
        f"**{int(both['ok'].sum())} of {len(both)} within {100 * tolerance:.1f} points or the "
        f"two runs' combined 95% CI half-width, whichever is larger**"
        f" ({identical} bit-identical). On the machine and torch build that made the reference "
        f"every number is identical; elsewhere float rounding moves them (README, "
        f"Reproducibility).",
        "",
        "| teacher | budget | test error, this run | reference | difference | allowed | within |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for (teacher, budget), r in both.iterrows():
        lines.append(
            f"| {teacher} | {budget:,} | {100 * r['test_error_new']:.2f} % | "
            f"{100 * r['test_error_ref']:.2f} % | {100 * r['diff']:+.2f} | "
            f"{100 * r['allowed']:.2f} | "
            f"{'yes' if r['ok'] else '**no**'} |"
        )
    return lines + [""], ok


def _means(store: RecordStore) -> pd.DataFrame:
    seeds = per_seed(store.read())
    rows = {
        key: {"test_error": iv.mean, "half": 0.0 if np.isnan(iv.half) else iv.half}
        for key, g in seeds.groupby(["teacher", "budget"], sort=False)
        for iv in [mean_ci(g["test_error"])]
    }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["teacher", "budget"])
    return frame
