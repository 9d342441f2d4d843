"""Issue 20 under the fair protocol: L2T-DLF's hypergradient estimators against CE, ce+meta and
GCE (part ``estimators``), and gradient vs RL teachers on one action space (part
``gradient-vs-rl``), on mnist5k / mlp with 40 % symmetric label noise.

Each part is **one** ``l2t compare --protocol fair-1`` run: the estimators are variants of one
teacher (``l2t-dlf@pes`` etc.), so every row is paired against the same taught students and
the Holm adjustment covers them all. The run resumes where it stopped (Ctrl-C included):

    OMP_NUM_THREADS=1 python experiments/estimators_fair.py --part estimators --seeds 5 \\
        --budget 64000 --workers 2 --out results/estimators_fair
    OMP_NUM_THREADS=1 python experiments/estimators_fair.py --part gradient-vs-rl --seeds 3 \\
        --budget 32000 --workers 2 --out results/estimators_fair

Every learned teacher here is chosen among candidates every half of its budget
(``select_every: 0.5``, the same for all of them): with fair-1's 3,000-step students a
candidate costs 6,000 student-step equivalents (2 selection students), so the default (every
fifth of the budget) would spend most of a 64,000 budget on selection. After the run,
``<out>/<part>_learned.csv`` says what each fitted teacher learned (its updates, the updates
the selection kept, the lr multipliers it used).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

SETTING = ["--dataset", "mnist5k", "--label-noise", "0.4", "--label-noise-kind", "symmetric"]
"""the setting of both parts; fair-1 sets the episode (30 x 100 steps), meta 256, the lr search
and the checkpoint rule"""
SELECT = {"select_every": 0.5}
"""every learned teacher's candidate rule in this grid (see the module docstring)"""
WINDOWED = {**SELECT, "normalize": True, "teacher_lr": 0.001}
"""the windowed estimators take many small steps: each update's hypergradient scaled to unit
norm, Adam at 1e-3 (at 1e-2 and 2e-3 without normalisation, windowed updates made the students
worse in the small-scale run, results/estimators)"""

ESTIMATORS: dict[str, dict] = {
    "ce": {},
    "ce+meta": {},
    "gce": {},
    "l2t-dlf": {**SELECT},  # full: whole-run RMD, Adam 2e-3, clip 1 (the paper's)
    "l2t-dlf@truncated": {**WINDOWED, "estimator": "truncated", "K": 100},
    "l2t-dlf@restart": {**WINDOWED, "estimator": "truncated", "K": 200, "restart_at": 500},
    "l2t-dlf@online": {**WINDOWED, "estimator": "online", "K": 100},
    "l2t-dlf@pes": {**WINDOWED, "estimator": "pes", "K": 100, "pairs": 2, "sigma": 0.1},
}
"""part ``estimators``: teacher (variant) -> its options"""


def gradient_vs_rl() -> dict[str, dict]:
    """part ``gradient-vs-rl``: L2T-DLF (truncated, the windowed settings above), REINFORCE and
    PPO on the bilinear and the compact family, each without and with the lr action."""
    teachers = {}
    for family in ("bilinear", "compact"):
        for lr_action in (False, True):
            tag = family + ("+lr" if lr_action else "")
            env = {"env": {"lr_action": True}} if lr_action else {}
            teachers[f"l2t-dlf@{tag}"] = {
                **WINDOWED, "estimator": "truncated", "K": 100, "family": family, **env,
            }  # fmt: skip
            teachers[f"reinforce@{tag}"] = {**SELECT, "family": family, **env}
            teachers[f"ppo@{tag}"] = {**SELECT, "family": family, **env}
    return teachers


PARTS = {"estimators": ESTIMATORS, "gradient-vs-rl": gradient_vs_rl()}


def command(part: str, args: argparse.Namespace) -> list[str]:
    teachers = PARTS[part]
    configs = {name: options for name, options in teachers.items() if options}
    return [
        sys.executable, "-m", "analysis.cli", "compare", "--protocol", "fair-1",
        "--teachers", ",".join(teachers), "--seeds", str(args.seeds), "--budget",
        str(args.budget), *SETTING, "--teacher-config", json.dumps(configs),
        "--workers", str(args.workers), "--out", str(Path(args.out) / part), "--quiet",
        *args.extra.split(),
    ]  # fmt: skip


def learned(run_dir: Path) -> pd.DataFrame:
    """What each fitted teacher learned, from its records: its updates and those of the
    candidate the selection kept (0 = the untrained teacher), and, with the lr action, the lr
    multiplier 2^ell (ell, the last coefficient) it used on its test student at the first, middle and last decision."""
    config = json.loads((run_dir / "config.json").read_text())
    rows = []
    for f in sorted((run_dir / "records").glob("*.parquet")):
        r = pd.read_parquet(f)
        teacher = r.teacher.iloc[0]
        fit = r[r.phase == "fit"]
        row = {"teacher": teacher, "seed": int(r.seed.iloc[0])}
        ups = fit[fit.metric == "updates"].reset_index(drop=True)
        best = fit[fit.metric == "best"]
        if len(ups):
            row["updates"] = int(fit[fit.metric == "updated"].value.sum())
            kept = ups[ups.step.isin(best.step)]
            row["kept_updates"] = int(kept.value.iloc[-1]) if len(kept) else 0
        env = config["teacher_configs"].get(teacher, {}).get("env", {})
        lr_action = env.get("lr_action", config["spec"]["lr_action"])  # a variant's, or the run's
        coeffs = run_dir / "coeffs" / f.name
        if lr_action and coeffs.exists():
            c = pd.read_parquet(coeffs)
            last = c[c["index"] == c["index"].max()].sort_values("t")
            mult = 2.0 ** last.value.to_numpy()
            for key, i in (("lr_x_first", 0), ("lr_x_mid", len(mult) // 2), ("lr_x_last", -1)):
                row[key] = round(float(mult[i]), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def diagnostics(run_dir: Path) -> pd.DataFrame:
    """Why each fitted L2T-DLF teacher ended where it did, per seed, from its fit records: the
    ``select`` error of its candidates (the untrained teacher first, then after each half of
    the budget; selection keeps the lowest), the mean window objective (the ``meta`` CE the
    hypergradient descends: dev subset, at each window's end) in the first and last tenth of its
    updates, and the median hypergradient norm before conditioning."""
    rows = []
    for f in sorted((run_dir / "records").glob("l2t-dlf*.parquet")):
        r = pd.read_parquet(f)
        fit = r[r.phase == "fit"]
        row = {"teacher": r.teacher.iloc[0], "seed": int(r.seed.iloc[0])}
        for i, v in enumerate(fit[fit.metric == "select_error"].sort_values("step").value):
            row[f"select_candidate_{i}"] = round(float(v), 4)
        objective = fit[fit.metric == "objective"].sort_values("step").value.to_numpy()
        if len(objective) >= 10:
            tenth = len(objective) // 10
            row["objective_first_tenth"] = round(float(objective[:tenth].mean()), 3)
            row["objective_last_tenth"] = round(float(objective[-tenth:].mean()), 3)
        norms = fit[fit.metric == "grad_norm"].value
        if len(norms):
            row["grad_norm_median"] = round(float(norms.median()), 3)
        rows.append(row)
    return pd.DataFrame(rows)


GOALS = ("ce+meta", "gce")
"""what issue 20 asks an estimator to beat (ce+meta) and to match or beat (GCE)"""


def versus(run_dir: Path, against: tuple[str, ...] = GOALS) -> pd.DataFrame:
    """Each L2T-DLF variant against each of `against`: the paired test-error difference over the
    shared seeds (teacher - other, in points), its 95 % CI, the raw paired-t p and the p
    Holm-adjusted over this whole family of comparisons (every variant x every other)."""
    from analysis.records import RecordStore
    from analysis.stats import holm, paired_difference
    from analysis.tables import per_seed

    store = RecordStore(run_dir)
    seeds = per_seed(store.read(), store.config().get("teachers"))
    rows = []
    for other in against:
        diff = paired_difference(
            seeds[["teacher", "seed", "test_error"]], other, value="test_error"
        )
        diff = diff[diff["teacher"].str.startswith("l2t-dlf")].assign(versus=other)
        rows.append(diff)
    out = pd.concat(rows, ignore_index=True)
    out["diff_p_holm"] = holm(out["diff_p"].to_numpy())
    return out[["teacher", "versus", "diff_n", "diff_mean", "diff_ci", "diff_p", "diff_p_holm"]]


def two_by_two(run_dir: Path) -> str:
    """Part ``gradient-vs-rl`` as the issue's 2 x 2 (x lr) table: a row per teacher, a column
    per (family, lr action), each cell the mean test error with its 95 % CI (seeds); the paired,
    Holm-adjusted tests are the run's own report.md."""
    from analysis.records import RecordStore
    from analysis.tables import summary

    store = RecordStore(run_dir)
    table = summary(store.read(), order=store.config().get("teachers")).set_index("teacher")
    columns = ["bilinear", "bilinear+lr", "compact", "compact+lr"]
    lines = ["| teacher | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for base in ("l2t-dlf", "reinforce", "ppo"):
        cells = []
        for col in columns:
            name = f"{base}@{col}"
            if name not in table.index:
                cells.append("—")
                continue
            r = table.loc[name]
            cells.append(
                f"{100 * r.test_error:.2f} ± {100 * r.test_error_ci:.2f} % ({int(r.seeds)})"
            )
        lines.append(f"| {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gradient_vs_rl_tests(run_dir: Path) -> pd.DataFrame:
    """On each action space (family x lr action), the gradient teacher against each RL teacher:
    the paired test-error difference (l2t-dlf - other, points) over the shared seeds, its 95 %
    CI, the raw paired-t p and the p Holm-adjusted over all these comparisons."""
    from analysis.records import RecordStore
    from analysis.stats import holm, paired_difference
    from analysis.tables import per_seed

    store = RecordStore(run_dir)
    seeds = per_seed(store.read(), store.config().get("teachers"))[
        ["teacher", "seed", "test_error"]
    ]
    rows = []
    for space in ("bilinear", "bilinear+lr", "compact", "compact+lr"):
        for rl in ("reinforce", "ppo"):
            pair = seeds[seeds["teacher"].isin([f"l2t-dlf@{space}", f"{rl}@{space}"])]
            diff = paired_difference(pair, f"{rl}@{space}", value="test_error")
            diff = diff[diff["teacher"] == f"l2t-dlf@{space}"]
            rows.append(diff.assign(space=space, versus=rl))
    out = pd.concat(rows, ignore_index=True)
    out["diff_p_holm"] = holm(out["diff_p"].to_numpy())
    return out[["space", "versus", "diff_n", "diff_mean", "diff_ci", "diff_p", "diff_p_holm"]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=list(PARTS), required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=64000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="results/estimators_fair")
    ap.add_argument(
        "--extra",
        default="",
        help="more `l2t compare` flags, one string (a protocol value they change is recorded "
        "as an override), e.g. '--horizon 10'",
    )
    ap.add_argument("--print", action="store_true", help="print the command, do not run it")
    ap.add_argument(
        "--collate", action="store_true", help="only write the learned / diagnostics tables"
    )
    args = ap.parse_args(argv)
    cmd = command(args.part, args)
    print(" ".join(cmd[1:]), flush=True)
    if args.print:
        return
    if not args.collate:
        subprocess.run(cmd, check=True)
    run_dir = Path(args.out) / args.part
    tables = {"learned": learned(run_dir), "diagnostics": diagnostics(run_dir)}
    if args.part == "estimators":
        tables["versus"] = versus(run_dir)
    else:
        tables["tests"] = gradient_vs_rl_tests(run_dir)
        (Path(args.out) / f"{args.part}.md").write_text(two_by_two(run_dir))
        print(two_by_two(run_dir))
    for name, table in tables.items():
        table.to_csv(Path(args.out) / f"{args.part}_{name}.csv", index=False)
        print(table.to_string())


if __name__ == "__main__":
    main()
