"""The headline comparison on fair terms (issue 21): every teacher under ``fair-1`` in three hard
settings and a clean reference, then a leaderboard and the across-settings statistics.

One command remakes it all; each setting is one ``l2t compare --protocol fair-1`` run into
``<out>/<setting>/`` that resumes where it stopped (Ctrl-C included), so the command can be run
again after an interruption or spread over several sessions:

    OMP_NUM_THREADS=1 python experiments/fair_headline.py --seeds 5 --workers 2 --out results/fair
    # on a Ray cluster (units as Ray tasks; the summary runs locally):
    python experiments/fair_headline.py --backend ray --address auto --out results/fair
    # a wider student-lr grid than fair-1's, into a folder of its own:
    python experiments/fair_headline.py --settings imbalance-100 --lr-grid 0.01,0.03,0.1,0.3,1 \
        --out results/fair_lr_wide
    # only some settings, or only the summary of what is there:
    python experiments/fair_headline.py --settings symmetric-40 --out results/fair
    python experiments/fair_headline.py --summary-only --out results/fair

Settings (mnist5k / mlp; fair-1's 3,000-step students, ``meta`` 256, lr on ``select``):
``symmetric-40`` (40 % symmetric label noise; budgets 16,000 and 64,000), ``pairflip-40``
(40 % pairflip noise), ``imbalance-100`` (a long-tailed training split, largest / smallest
class 100) and ``clean`` (the reference: shown, not averaged into the overall rank), each at
64,000 student-step equivalents per fit. The oracle (CE on the examples whose labels were not
flipped) is the limit of the noisy settings only: elsewhere it is plain CE.

Teachers: the fair baselines (``ce``, ``ce+meta``, ``label-smoothing``, ``gce``, ``l2rw``,
``mw-net``), L2T-DLF with the paper's whole-run estimator (``l2t-dlf``) and, when another was
chosen on ``select`` in ``results/estimators_fair``, with that one (``l2t-dlf@<it>``; the whole-run
one was chosen: lowest select error), L2T-DLN, REINFORCE and PPO; and L2T-DLF (the chosen
estimator), REINFORCE and PPO again with the lr action (``@lr`` / ``@...+lr``:
the same teacher that may also scale the student lr; L2T-DLN refuses the lr action, its
loss network has no lr output). Every learned teacher is chosen among candidates every half of
its budget (``select_every: 0.5``), as in ``experiments/estimators_fair.py``.

Outputs: ``<out>/<setting>/`` (report.md, summary.csv with Holm-adjusted paired differences
against CE and against the setting's best baseline, costs, figures),
``<out>/across/`` (IQM of 1 - error / error_CE and the probability of improvement over each
setting's best baseline, stratified-bootstrap 95 % CIs, over the ranked settings) and
``<out>/LEADERBOARD.md`` with ``<out>/leaderboard.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from analysis.across import across_settings, plot_across, settings_frame
from analysis.leaderboard import leaderboard, plot, setting_table, to_markdown, verdict
from analysis.records import RecordStore, unit_id

SETTINGS: dict[str, dict] = {
    "symmetric-40": {
        "flags": ["--label-noise", "0.4", "--label-noise-kind", "symmetric"],
        "budgets": [16000, 64000],
        "noisy": True,
    },
    "pairflip-40": {
        "flags": ["--label-noise", "0.4", "--label-noise-kind", "pairflip"],
        "budgets": [64000],
        "noisy": True,
    },
    "imbalance-100": {"flags": ["--imbalance", "100"], "budgets": [64000], "noisy": False},
    "clean": {"flags": [], "budgets": [64000], "noisy": False},
}
RANKED = ("symmetric-40", "pairflip-40", "imbalance-100")
"""the hard settings the overall rank and the across-settings statistics average over"""
SUMMARY_BUDGET = 64000
"""the budget every setting has: the leaderboard's and the across-settings statistics'"""

CHOSEN_ESTIMATOR = "full"
"""L2T-DLF's estimator for the headline, chosen on ``select`` (mean select error of the fitted
teachers) in results/estimators_fair; its options are ESTIMATORS[CHOSEN_ESTIMATOR]"""
SELECT = {"select_every": 0.5}
WINDOWED = {**SELECT, "normalize": True, "teacher_lr": 0.001}
ESTIMATORS = {
    "full": {**SELECT},
    "truncated": {**WINDOWED, "estimator": "truncated", "K": 100},
    "restart": {**WINDOWED, "estimator": "truncated", "K": 200, "restart_at": 500},
    "online": {**WINDOWED, "estimator": "online", "K": 100},
    "pes": {**WINDOWED, "estimator": "pes", "K": 100, "pairs": 2, "sigma": 0.1},
}
"""the windowed estimators as results/estimators_fair ran them (experiments/estimators_fair.py)"""
LR = {"env": {"lr_action": True}}


def teachers(noisy: bool) -> dict[str, dict]:
    """teacher (variant) -> options, in table order: baselines, the limit, learned teachers,
    then the learned teachers that may also set the lr."""
    chosen = "l2t-dlf" if CHOSEN_ESTIMATOR == "full" else f"l2t-dlf@{CHOSEN_ESTIMATOR}"
    out: dict[str, dict] = {
        name: {} for name in ("ce", "ce+meta", "label-smoothing", "gce", "l2rw", "mw-net")
    }
    if noisy:
        out["oracle"] = {}
    out |= {
        "l2t-dlf": ESTIMATORS["full"],
        chosen: ESTIMATORS[CHOSEN_ESTIMATOR],  # the same row when the chosen one is full
        "l2t-dln": {**SELECT},
        "reinforce": {**SELECT},
        "ppo": {**SELECT},
        f"{chosen}+lr" if "@" in chosen else "l2t-dlf@lr": {**ESTIMATORS[CHOSEN_ESTIMATOR], **LR},
        "reinforce@lr": {**SELECT, **LR},
        "ppo@lr": {**SELECT, **LR},
    }
    return out


def command(setting: str, args: argparse.Namespace) -> list[str]:
    spec = SETTINGS[setting]
    names = teachers(spec["noisy"])
    configs = {name: options for name, options in names.items() if options}
    backend = ["--backend", args.backend] + (["--address", args.address] if args.address else [])
    lrs = getattr(args, "lr_grid", None)
    wider = ["--lr-grid", lrs] if lrs else []  # in place of fair-1's grid (recorded as such)
    return [
        sys.executable, "-m", "analysis.cli", "compare", "--protocol", "fair-1",
        "--teachers", ",".join(names), "--seeds", str(args.seeds),
        "--budget", ",".join(map(str, spec["budgets"])), "--dataset", "mnist5k",
        *spec["flags"], "--teacher-config", json.dumps(configs), "--workers",
        str(args.workers), *backend, *wider, "--out", str(Path(args.out) / setting), "--quiet",
    ]  # fmt: skip


def units_done(root: Path) -> tuple[int, int]:
    """(units finished, units the run's config asks for) of one setting's directory."""
    store = RecordStore(root)
    config = store.config()
    want = {
        unit_id(t, b, s)
        for t in config["teachers"]
        for b in config["budgets"]
        for s in range(config["seeds"])
    }
    return len(want & store.completed()), len(want)


def summarise(out: Path, command_line: str) -> Path | None:
    """The leaderboard and the across-settings statistics of the settings that have results."""
    present, partial = {}, []
    for s in SETTINGS:
        if (out / s / "config.json").exists():
            done, want = units_done(out / s)
            if done == want:
                present[s] = out / s
            elif done:
                partial.append(f"{s} ({done} of {want} units)")
    if partial:  # a part of a setting would rank teachers on different seeds: left out
        print(f"not summarised, still running: {', '.join(partial)}", file=sys.stderr)
    if not present:
        print("no setting has results yet: nothing to summarise", file=sys.stderr)
        return None
    budgets = {s: SUMMARY_BUDGET for s in present}
    ranked = [s for s in RANKED if s in present]
    board = leaderboard(present, ranked=ranked or None, budgets=budgets)
    lines = [
        "# Leaderboard: every teacher under fair-1, per setting and overall",
        "",
        f"Made by `{command_line}`, from the runs in this folder (one per setting; each "
        "report.md says its commits, seeds and wall time). Settings present: "
        f"{', '.join(present)}; ranked: {', '.join(ranked) or 'none yet'}"
        + (f"; still running, so not summarised: {', '.join(partial)}." if partial else "."),
        "",
        f"Each cell: rank by mean test error at budget {SUMMARY_BUDGET:,} (1 = best; the oracle "
        "is a limit, not ranked), the mean test error ± its 95 % CI half-width over seeds, and "
        "✓ where the teacher beats the setting's best baseline (chosen on select) by a "
        "Holm-adjusted paired t-test, p < 0.05. Mean rank over the ranked settings (how many). "
        "Fit cost: fit wall time over plain CE's for as many student steps (median over "
        "settings); teach cost: student-step equivalents per taught student over plain CE's.",
        "",
        to_markdown(board),
        verdict(board),
        "",
        "![leaderboard](leaderboard.png)",
        "",
    ]
    plot(board, out / "leaderboard.png")
    if len(ranked) >= 2:
        across_dir = out / "across"
        across_dir.mkdir(exist_ok=True)
        seeds = settings_frame([present[s] for s in ranked])
        seeds = seeds[seeds["budget"] == SUMMARY_BUDGET]
        best = {
            s: setting_table(present[s], SUMMARY_BUDGET)["best_baseline"].iloc[0] for s in ranked
        }
        table = across_settings(seeds, versus=best, label="best")
        table.to_csv(across_dir / "across_settings.csv", index=False)
        plot_across(table, across_dir / "across_settings.png", settings=ranked, versus="best")
        lines += [
            "## Across the ranked settings",
            "",
            f"Best baseline per setting (lowest select error among the fair baselines): "
            f"{', '.join(f'{s}: {b}' for s, b in best.items())}. IQM of 1 - error / error_CE "
            "(0 = CE) and the probability that a run of the teacher has a lower test error than "
            "a run of the setting's best baseline (0.5 = no better), stratified-bootstrap 95 % "
            "CIs (`across/across_settings.csv`).",
            "",
            "| teacher | IQM score (95 % CI) | P(beats best baseline) (95 % CI) |",
            "|---|---|---|",
        ]
        for r in table.itertuples(index=False):
            p = (
                "—"
                if r.p_low != r.p_low
                else f"{r.p_improve_vs_best:.2f} [{r.p_low:.2f}, {r.p_high:.2f}]"
            )
            lines.append(
                f"| {r.teacher} | {r.iqm_score:+.3f} [{r.iqm_low:+.3f}, {r.iqm_high:+.3f}] | {p} |"
            )
        lines += ["", "![across](across/across_settings.png)", ""]
    path = out / "LEADERBOARD.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma list (default all)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    ap.add_argument("--address", default="", help="the Ray cluster (with --backend ray)")
    ap.add_argument("--out", default="results/fair")
    ap.add_argument(
        "--lr-grid",
        default=None,
        help="comma-separated student lrs in place of fair-1's grid (`l2t compare --lr-grid`); "
        "use a new --out: a directory made with another grid refuses to resume",
    )
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the leaderboard")
    ap.add_argument("--print", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    chosen = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(chosen) - set(SETTINGS))
    if unknown:
        ap.error(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    out = Path(args.out)
    if not args.summary_only:
        for setting in chosen:
            cmd = command(setting, args)
            print(" ".join(cmd[1:]), flush=True)
            if not args.print:
                subprocess.run(cmd, check=True)
    if not args.print:
        words = ["python", "experiments/fair_headline.py", *(argv or sys.argv[1:])]
        print(summarise(out, " ".join(words)))


if __name__ == "__main__":
    main()
