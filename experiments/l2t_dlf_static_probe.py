"""How good can a *static* bilinear loss be on mnist5k / mlp? (dev only; part of the L2T-DLF
investigation in results/l2t_dlf/README.md.)

Fixed coefficients Phi = s I, b = beta 1 on a small grid inside the family's action box, each
scored by mean whole-dev-split error of fresh students on the dev-selection seeds, at the student
learning rate the evidence run selected for the bilinear loss. Test data is not read.

    OMP_NUM_THREADS=1 python experiments/l2t_dlf_static_probe.py --lr 0.4  (and 0.2)

Writes results/l2t_dlf/static_probe_lr<lr>.csv.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import torch

from teachers.base import TeachingSpec
from teachers.fixed import FixedTeacher

DIAGS = (1.0, 1.5, 2.0)
BIASES = (math.log(10) - 1, math.log(10), math.log(10) + 1.5, math.log(10) + 3)
SEEDS = (900, 901, 902)  # the evidence run's dev-selection seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, default=0.4)
    ap.add_argument("--out", default=None, help="default results/l2t_dlf/static_probe_lr<lr>.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    env = TeachingSpec(device="cpu", lr=args.lr).make_env()
    family = env.family
    C = family.num_classes
    center, half = family.center_and_half_range()
    rows = []
    for diag in DIAGS:
        for bias in BIASES:
            coeffs = center.clone()
            coeffs[: C * C] = diag * torch.eye(C, dtype=torch.float64).flatten()
            coeffs[C * C :] = bias
            teacher = FixedTeacher(action=((coeffs - center) / half).tolist())
            errors = []
            for seed in SEEDS:
                for _ in teacher.rollout(env, seed):
                    pass
                errors.append(env.process.evaluate("dev")["error"])
            rows.append(
                {"diag": diag, "bias": bias, "lr": args.lr, "dev_error": sum(errors) / len(errors)}
            )
            print(rows[-1], flush=True)
    out = Path(args.out or f"results/l2t_dlf/static_probe_lr{args.lr}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)


if __name__ == "__main__":
    main()
