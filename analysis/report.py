"""``report.md`` for a results directory: the command, the settings, the table, the figures and the
wall time, so a committed result carries its own conditions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.records import RecordStore
from analysis.tables import BASELINE, diverged_notes, to_markdown


def write_report(
    root: str | Path,
    table: pd.DataFrame,
    figures: list[Path],
    *,
    command: str,
    wall_time: float,
    notes: list[str] | None = None,
    ran_units: int | None = None,
    sections: list[str] | None = None,
) -> Path:
    """`wall_time` and `ran_units` are this invocation's; the compute time and code version of
    the rows come from each unit's own metadata (``units/*.json``), so a resumed run does not
    claim rows an earlier run made."""
    root = Path(root)
    config = json.loads((root / "config.json").read_text())
    versions = json.loads((root / "versions.json").read_text())
    spec = config["spec"]
    lines = [
        f"# Comparison: {', '.join(config['teachers'])} on {spec['dataset']} / {spec['student']}",
        "",
        f"Last command: `{command}`  ",
        _this_run(wall_time, ran_units, versions, spec),
        "",
        *provenance(RecordStore(root)),
        "",
        f"Each teacher is fitted within **{', '.join(f'{b:,}' for b in config['budgets'])}** "
        f"student SGD steps on each of {config['seeds']} fitting seeds, then teaches "
        f"{config['students_per_seed']} fresh student(s) per seed (seeds disjoint from fitting; the "
        f"same students for every teacher, so differences against `{BASELINE}` are paired). An "
        f"episode is {spec['horizon']} teacher decisions x {spec['interval']} SGD steps "
        f"({_lr_words(spec, config)}, momentum {spec['momentum']}, {spec['schedule']} schedule, batch "
        f"{spec['batch_size']}). {_dev_parts(spec)} CIs are 95% t-intervals over seeds, each "
        f"alone; p-values are paired t-tests, Holm-adjusted within each column, and a teacher "
        f"beats another only where that p is below 0.05. Test numbers are reported only, never "
        f"used to select.",
        "",
        to_markdown(table),
        "",
        *protocol_section(root, config),
        *[f"Diverged: {n}.  " for n in diverged_notes(table)],
        *([""] if diverged_notes(table) else []),
        *(sections or []),
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


def protocol_section(root: Path, config: dict) -> list[str]:
    """The protocol followed and each teacher's lr search (``selection/<teacher>.json``, written
    by analysis.runner.choose_lrs): the grid, the choice, its select error and its cost."""
    lines = []
    if config.get("protocol"):
        lines.append(f"Protocol: **{config['protocol']}** (analysis/protocols.py)")
        overrides = config.get("protocol_overrides") or {}
        if overrides:
            changed = ", ".join(f"{k} {u} (protocol: {t})" for k, (t, u) in overrides.items())
            lines[-1] += f", with the user's changes: {changed}"
        lines[-1] += "."
        lines.append("")
    found = sorted((root / "selection").glob("*.json")) if (root / "selection").is_dir() else []
    if not found:
        return lines
    rows = [
        "| teacher | grid | chosen | select error (chosen) | search cost (student steps) |",
        "|---|---|---|---:|---:|",
    ]
    bodies = [json.loads(path.read_text()) for path in found]
    # one search serves every teacher that names its folder (analysis.runner.search_folder; a
    # file written before the folder was recorded is its own search): its cost is counted once,
    # on the teacher the folder is named after
    names = {b["teacher"] for b in bodies}
    first_of = {b["searched_in"]: b["searched_in"] for b in bodies if b.get("searched_in") in names}
    total = 0
    at_edge = []
    for body in bodies:
        chosen = body["chosen"]
        trials = body["trials"]
        grid = sorted({t["lr"] for t in trials})
        if len(grid) > 1 and chosen.get("lr") in (grid[0], grid[-1]):
            at_edge.append(f"{body['teacher']} (lr {chosen['lr']})")
        starts = sorted({str(t["start"]) for t in trials if "start" in t})
        shown = f"lr {grid}" + (f" x start {starts}" if starts else "")
        error = next(t[f"{body['split']}_error"] for t in trials if t["chosen"])
        folder = body.get("searched_in", body["teacher"])
        shared = first_of.setdefault(folder, body["teacher"])
        if shared == body["teacher"]:
            total += int(body["student_steps"])
            cost = f"{int(body['student_steps']):,}"
        else:
            cost = f"shared with {shared}"
        what = ", ".join(f"{k} {v}" for k, v in chosen.items())
        rows.append(f"| {body['teacher']} | {shown} | {what} | {100 * error:.2f}% | {cost} |")
    lines += [
        f"### Student lr chosen on `{body['split']}`",
        "",
        f"Each candidate trains {len(body['seeds'])} fresh student(s) for one episode (frozen "
        "teacher: fixed losses as themselves, learned teachers at their starting loss); "
        "the lowest mean select error is chosen. The cost is in student-step "
        "equivalents from the process counter, paid once per search (learned teachers that "
        "start alike share one) and not taken from the fit budget; "
        f"{total:,} in all.",
        "",
        *rows,
        "",
    ]
    if at_edge:  # the grid may not hold the best lr: the search only knows it is not inside
        lines += [
            "Chosen at an end of the grid: " + ", ".join(at_edge) + ". The search cannot tell "
            "whether an lr beyond that end would score better; a wider grid may choose another.",
            "",
        ]
    return lines


def _lr_words(spec: dict, config: dict) -> str:
    """The student lr: the spec's, or each teacher's own chosen on select (its table below)."""
    tuned = config.get("tuned") or {}
    if not tuned:
        return f"lr {spec['lr']}"
    rest = [t for t in config["teachers"] if t not in tuned]
    also = f"; the others lr {spec['lr']}" if rest else ""
    return f"student lr chosen on select per teacher (table below){also}"


def _dev_parts(spec: dict) -> str:
    """What the dev error is: dev's held-out select part since meta_size is in the spec."""
    if "meta_size" not in spec:  # records from before the split: whole-dev errors
        return "Errors are on the whole dev and test splits."
    return (
        f"Dev is split into `meta` (its first {spec['meta_size']} examples: what teachers may "
        f"learn from) and `select` (the rest: what chooses and what the dev error reports); "
        f"errors are on `select` and test."
    )


def _this_run(wall_time: float, ran: int | None, versions: dict, spec: dict) -> str:
    units = "" if ran is None else f", computing {ran} unit(s)"
    return (
        f"This invocation: {wall_time:.0f} s wall{units}, on {versions.get('cpu_count')} CPU "
        f"core(s), torch {versions.get('torch')}, device {spec['device']}."
    )


def provenance(store: RecordStore) -> list[str]:
    """Who made the rows: the summed compute time of the units and the commits that computed
    them, from each unit's metadata; units from before that was recorded are counted as unknown."""
    meta = store.read_unit_meta()
    known = {u: m for u, m in meta.items() if m}
    lines = []
    if known:
        total = sum(float(m.get("wall_time", 0.0)) for m in known.values())
        commits: dict[str, int] = {}
        for m in known.values():
            c = str(m.get("git_commit"))[:10] + (
                " with uncommitted changes" if m.get("git_dirty") else ""
            )
            commits[c] = commits.get(c, 0) + 1
        made_by = "; ".join(f"{c}: {n} unit(s)" for c, n in commits.items())
        cores = sorted({str(m.get("cpu_count")) for m in known.values()})
        torch_v = sorted({str(m.get("torch")) for m in known.values()})
        threads = sorted({str(m.get("torch_threads")) for m in known.values()})
        lines.append(
            f"Rows: {len(meta)} unit(s); {len(known)} computed in {total:.0f} s of unit time "
            f"(summed over units; parallel workers overlap it) by commit {made_by}; on "
            f"{'/'.join(cores)} CPU core(s), torch {'/'.join(torch_v)} "
            f"({'/'.join(threads)} thread(s) a unit)."
        )
    unknown = len(meta) - len(known)
    if unknown:
        lines.append(
            f"{unknown} unit(s) were made before units/*.json recorded their time and commit: "
            "both unknown."
        )
    return lines
