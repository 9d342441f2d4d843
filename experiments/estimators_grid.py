"""Issue 20, items 4 and 5: the gradient teacher's hypergradient estimators against fixed losses,
and gradient vs RL teachers on one action space, on mnist5k / mlp with 40 % symmetric noise.

Each variant is one ``l2t compare`` run (a teacher's options are keyed by its name, so two
L2T-DLF variants need two runs) into ``OUT/<part>/<variant>/``; the runs resume where they
stopped, and :func:`collate` gathers their ``summary.csv`` into one table per part
(``OUT/<part>.csv`` and ``OUT/<part>.md``). Every run shares the spec (``COMMON``), the budget
and the seeds, so the numbers are at equal budgets.

    OMP_NUM_THREADS=1 python experiments/estimators_grid.py --part estimators --seeds 2 \
        --budget 6000 --out results/estimators
    OMP_NUM_THREADS=1 python experiments/estimators_grid.py --part gradient-vs-rl --seeds 2 \
        --budget 6000 --out results/estimators

Parts:
- ``estimators``: ce (lr 0.003, the noisy setting's dev-chosen lr: results/noisy), ce+meta (same
  lr), gce (env lr) and L2T-DLF with each estimator (full; truncated K = 50 and 200, continuing;
  online, K = 200; pes, K = 200, 2 pairs), bilinear family at the env's lr 0.1.
- ``gradient-vs-rl``: L2T-DLF (truncated, K = 200), REINFORCE and PPO, each acting on the same
  family (bilinear, compact), with and without ``--lr-action``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

COMMON = ["--dataset", "mnist5k", "--label-noise", "0.4", "--label-noise-kind", "symmetric"]
"""the setting of every run (the env's other defaults: mlp, T = 12 x 50 steps, lr 0.1)"""

L2T = {"select_every": 1, "select_seeds": 1}
"""L2T-DLF's selection on every episode's worth of updates, one held-out student each: at small
budgets the default (every 5 episodes, 2 students) scores nothing but the untrained teacher"""
WINDOWED = {**L2T, "teacher_lr": 0.01}
"""windowed estimators take many small updates: Adam at 1e-2 (full keeps its tested 2e-3)"""

ESTIMATOR_VARIANTS: dict[str, tuple[str, dict]] = {
    "baselines": ("ce,ce+meta,gce", {"ce": {"lr": 0.003}, "ce+meta": {"lr": 0.003}}),
    "full": ("l2t-dlf", {"l2t-dlf": {**L2T}}),
    "truncated-50": ("l2t-dlf", {"l2t-dlf": {**WINDOWED, "estimator": "truncated", "K": 50}}),
    "truncated-200": ("l2t-dlf", {"l2t-dlf": {**WINDOWED, "estimator": "truncated", "K": 200}}),
    "online-200": ("l2t-dlf", {"l2t-dlf": {**WINDOWED, "estimator": "online", "K": 200}}),
    "pes-200": (
        "l2t-dlf",
        {"l2t-dlf": {**WINDOWED, "estimator": "pes", "K": 200, "pairs": 2, "sigma": 0.1}},
    ),
}


def rl_variants() -> dict[str, tuple[str, dict, list[str]]]:
    out = {}
    for family in ("bilinear", "compact"):
        for lr in (False, True):
            configs = {
                "l2t-dlf": {**WINDOWED, "estimator": "truncated", "K": 200, "family": family},
                "reinforce": {"family": family},
                "ppo": {"family": family},
            }
            name = f"{family}{'-lr' if lr else ''}"
            out[name] = ("l2t-dlf,reinforce,ppo", configs, ["--lr-action"] if lr else [])
    return out


def command(teachers: str, configs: dict, extra: list[str], args, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "analysis.cli", "compare", "--teachers", teachers,
        "--seeds", str(args.seeds), "--budget", str(args.budget), *COMMON, *extra,
        "--teacher-config", json.dumps(configs), "--out", str(out), "--quiet",
        *args.extra.split(),
    ]  # fmt: skip


def collate(part_dir: Path) -> pd.DataFrame:
    frames = []
    for d in sorted(p for p in part_dir.iterdir() if (p / "summary.csv").exists()):
        df = pd.read_csv(d / "summary.csv")
        df.insert(0, "variant", d.name)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    keep = ["variant", "teacher", "loss", "budget", "seeds", "test_error", "test_error_ci",
            "dev_error", "budget_used", "fit_wall_time", "teach_cost_ratio", "diverged"]  # fmt: skip
    return df[keep]


def learned(part_dir: Path) -> pd.DataFrame:
    """What each fitted teacher learned, per variant directory (estimators_fair.learned: its
    theta updates, those the candidate selection kept, and with the lr action the multipliers
    it used on its test student)."""
    from estimators_fair import learned as learned_in

    frames = [
        learned_in(d).assign(variant=d.name)
        for d in sorted(p for p in part_dir.iterdir() if (p / "records").exists())
    ]
    df = pd.concat(frames, ignore_index=True)
    return df[["variant", *[c for c in df.columns if c != "variant"]]]


def markdown(df: pd.DataFrame) -> str:
    def pct(x, ci):
        return f"{100 * x:.2f} %" + ("" if pd.isna(ci) else f" ± {100 * ci:.2f}")

    lines = [
        "| variant | teacher | family | test error (95 % CI half-width) | select error | budget used "
        "| fit s | teach cost (x CE) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.variant} | {r.teacher} | {r.loss} | {pct(r.test_error, r.test_error_ci)} | "
            f"{100 * r.dev_error:.2f} % | {r.budget_used:,.0f} | {r.fit_wall_time:.0f} | "
            f"{r.teach_cost_ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["estimators", "gradient-vs-rl"], required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget", type=int, default=6000)
    ap.add_argument("--out", default="results/estimators")
    ap.add_argument("--only", default="", help="comma list of variants to run (default all)")
    ap.add_argument(
        "--extra",
        default="",
        help="more `l2t compare` flags for every run, one string, e.g. "
        "'--checkpoint best-select --workers 2'",
    )
    args = ap.parse_args(argv)
    part_dir = Path(args.out) / args.part
    if args.part == "estimators":
        variants = {k: (t, c, []) for k, (t, c) in ESTIMATOR_VARIANTS.items()}
    else:
        variants = rl_variants()
    only = set(filter(None, args.only.split(",")))
    for name, (teachers, configs, extra) in variants.items():
        if only and name not in only:
            continue
        cmd = command(teachers, configs, extra, args, part_dir / name)
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        df = collate(part_dir)
        df.to_csv(Path(args.out) / f"{args.part}.csv", index=False)
        (Path(args.out) / f"{args.part}.md").write_text(markdown(df))
        learned(part_dir).to_csv(Path(args.out) / f"{args.part}_learned.csv", index=False)
    print(markdown(collate(part_dir)))
    print(learned(part_dir).to_string())


if __name__ == "__main__":
    main()
