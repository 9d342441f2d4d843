"""The bilinear family's starting point, untrained (issue 24): Phi = I with b = 0 (the paper's
start) vs b = log C (our default), action 0 throughout, on clean mnist5k and under 40% symmetric
label noise. The env's defaults otherwise (mlp, 12 x 50 steps, lr 0.1, momentum 0.9, cosine,
batch 64). The students are the comparison's taught students (seeds 2**31 + 1000 s, as
`l2t compare` gives fitting seed s), so the rows pair with results/noisy and results/demo.

    OMP_NUM_THREADS=1 python experiments/bilinear_start.py --out results/bilinear_start

Writes ``per_seed.csv`` (one row per setting x start x seed: dev and test error) and
``summary.csv`` (mean and 95% t-interval per setting x start, and the paired difference
zero - log-c on the same students). Test error is reported, never used to choose anything.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.runner import MAX_STUDENTS_PER_SEED, STUDENT_SEED_OFFSET  # noqa: E402
from analysis.stats import mean_ci, paired_difference  # noqa: E402
from envs.losses import BILINEAR_STARTS  # noqa: E402
from teachers.base import TeachingSpec  # noqa: E402
from teachers.fixed import FixedTeacher  # noqa: E402

SETTINGS = {"clean": 0.0, "noise-0.4": 0.4}
"""setting name -> fraction of training labels flipped (symmetric; dev and test clean)"""


def measure(seeds: int, settings: dict[str, float], starts=BILINEAR_STARTS) -> pd.DataFrame:
    """Per (setting, start, seed): the final student's whole-split dev and test error (%)."""
    rows = []
    teacher = FixedTeacher()  # the family's default action (0): the untrained start
    for setting, noise in settings.items():
        for start in starts:
            spec = TeachingSpec(device="cpu", label_noise=noise, loss_kwargs={"start": start})
            for s in range(seeds):
                t0 = time.perf_counter()
                final = teacher.teach(spec, STUDENT_SEED_OFFSET + MAX_STUDENTS_PER_SEED * s).final
                rows.append(
                    {
                        "setting": setting,
                        "label_noise": noise,
                        "start": start,
                        "seed": s,
                        "dev_error": 100 * final["dev_error"],
                        "test_error": 100 * final["test_error"],
                        "diverged": final["diverged"],
                        "student_steps": final["student_steps"],
                        "wall_time": time.perf_counter() - t0,
                    }
                )
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean +- 95% t-interval per (setting, start); the paired difference against log-c."""
    rows = []
    for (setting, start), g in per_seed.groupby(["setting", "start"], sort=False):
        test, dev = mean_ci(g.test_error), mean_ci(g.dev_error)
        rows.append(
            {
                "setting": setting,
                "start": start,
                "seeds": test.n,
                "test_error_mean": test.mean,
                "test_error_ci95": test.half,
                "dev_error_mean": dev.mean,
                "dev_error_ci95": dev.half,
            }
        )
    out = pd.DataFrame(rows)
    diffs = []
    for setting, g in per_seed.groupby("setting", sort=False):
        d = paired_difference(g, "log-c", value="test_error", group="start", pair_on="seed")
        diffs.append(d.assign(setting=setting))
    diff = pd.concat(diffs).rename(
        columns={"diff_mean": "test_minus_log_c_mean", "diff_ci": "test_minus_log_c_ci95"}
    )
    return out.merge(diff.drop(columns="diff_n"), on=["setting", "start"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default="results/bilinear_start")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = measure(args.seeds, SETTINGS)
    per_seed.to_csv(out / "per_seed.csv", index=False)
    summary = summarise(per_seed)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.4f")
    print(summary.to_string(index=False))


if __name__ == "__main__":
    main()
