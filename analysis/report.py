"""``report.md`` for a results directory: the command, the settings, the table, the figures and the
wall time, so a committed result carries its own conditions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.tables import BASELINE, to_markdown


def write_report(
    root: str | Path,
    table: pd.DataFrame,
    figures: list[Path],
    *,
    command: str,
    wall_time: float,
    notes: list[str] | None = None,
) -> Path:
    root = Path(root)
    config = json.loads((root / "config.json").read_text())
    versions = json.loads((root / "versions.json").read_text())
    spec = config["spec"]
    lines = [
        f"# Comparison: {', '.join(config['teachers'])} on {spec['dataset']} / {spec['student']}",
        "",
        f"Command: `{command}`  ",
        f"Total wall time: {wall_time:.0f} s on {versions.get('cpu_count')} CPU core(s), "
        f"torch {versions.get('torch')} ({versions.get('torch_threads')} thread(s)), "
        f"device {spec['device']}, commit {str(versions.get('git_commit'))[:10]}"
        f"{' with uncommitted changes' if versions.get('git_dirty') else ''}.",
        "",
        f"Each teacher is fitted within **{', '.join(f'{b:,}' for b in config['budgets'])}** "
        f"student SGD steps on each of {config['seeds']} fitting seeds, then teaches "
        f"{config['students_per_seed']} fresh student(s) per seed (seeds disjoint from fitting; the "
        f"same students for every teacher, so differences against `{BASELINE}` are paired). An "
        f"episode is {spec['horizon']} teacher decisions x {spec['interval']} SGD steps "
        f"(lr {spec['lr']}, momentum {spec['momentum']}, {spec['schedule']} schedule, batch "
        f"{spec['batch_size']}). Errors are on the whole dev and test splits; CIs are 95% "
        f"t-intervals over seeds. Test numbers are reported only, never used to select.",
        "",
        to_markdown(table),
    ]
    for fig in figures:
        lines += [f"![{fig.stem}]({fig.name})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += [
        "Rebuild: `l2t table " + str(root) + "` and `l2t plot " + str(root) + "`; raw rows in "
        "`records/*.parquet` (tidy: one metric value a row), coefficients in `coeffs/`.",
        "",
    ]
    path = root / "report.md"
    path.write_text("\n".join(lines))
    return path
