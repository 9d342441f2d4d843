"""Dev-only pilot for the ``fair-1`` protocol's episode length (issue 19, item 5).

Does CE's error on dev's held-out ``select`` part, at the *last* step, rise when students train
longer under label noise (memorisation of the flipped labels)? If so, a protocol that reports the
last step at 600 steps hides what the choice of loss (and of checkpoint) is for, and the protocol
should train long enough for it to show. Only ``select`` is read (never test).

Plain CE (the ``ce`` teacher), mnist5k / mlp, 40% symmetric label noise, the env's optimiser
(momentum 0.9, weight decay 5e-4, cosine schedule over the whole run), one run of
``--horizon`` x ``--interval`` student steps per (lr, seed), the select error after every env
step. Writes ``curves.csv`` (lr, seed, step, select_error) and ``summary.csv`` (per lr: the
minimum over steps of the seed-mean error, its step, and the last step's) to ``--out``.

    OMP_NUM_THREADS=1 python experiments/fair_pilot.py --out results/fair_pilot
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teachers.base import TeachingSpec  # noqa: E402
from teachers.registry import make_teacher  # noqa: E402


def curve(lr: float, seed: int, spec: TeachingSpec) -> list[dict]:
    """One CE student at `lr`: its select error after every env step."""
    teacher = make_teacher("ce", lr=lr)
    env = teacher.spec_for(spec).make_env()
    process = env.unwrapped.process
    rows = []
    for tr in teacher.rollout(env, seed):
        if tr.action is None:
            continue
        error = 1.0 if tr.info["diverged"] else process.evaluate("select")["error"]
        rows.append(
            {"lr": lr, "seed": seed, "step": tr.info["student_steps"], "select_error": error}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--lrs",
        default="0.1,0.03,0.01,0.003,0.001",
        help="student lrs (0.003: CE's lr tuned "
        "on dev for 600 steps under this noise, results/noisy)",
    )
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--horizon", type=int, default=30)
    ap.add_argument("--interval", type=int, default=100)
    ap.add_argument("--label-noise", type=float, default=0.4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    spec = TeachingSpec(
        dataset="mnist5k",
        student="mlp",
        label_noise=args.label_noise,
        horizon=args.horizon,
        interval=args.interval,
        device="cpu",
    )
    start = time.perf_counter()
    rows = []
    for lr in (float(x) for x in args.lrs.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows += curve(lr, seed, spec)
            print(
                f"lr {lr} seed {seed}: last select error {rows[-1]['select_error']:.4f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "curves.csv", index=False)
    mean = frame.groupby(["lr", "step"])["select_error"].mean().reset_index()
    summary = []
    for lr, g in mean.groupby("lr"):
        best = g.loc[g["select_error"].idxmin()]
        summary.append(
            {
                "lr": lr,
                "best_step": int(best["step"]),
                "best_select_error": round(float(best["select_error"]), 4),
                "select_error_at_600": round(
                    float(g.loc[g["step"] == 600, "select_error"].iloc[0]), 4
                )
                if (g["step"] == 600).any()
                else float("nan"),
                "last_step": int(g["step"].max()),
                "last_select_error": round(float(g["select_error"].iloc[-1]), 4),
            }
        )
    table = pd.DataFrame(summary)
    table.to_csv(out / "summary.csv", index=False)
    print(table.to_string(index=False))
    print(f"wall {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
