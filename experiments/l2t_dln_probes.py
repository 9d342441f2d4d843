"""The measurements behind the L2T-DLN teacher's defaults (teachers/l2t_dln.py docstrings).

1. ``kaiming``: a student trained under the official random Kaiming DLN alone (no teacher),
   family init seeds 0-2, student seed 0: does the random loss teach anything?
2. ``warm-start``: under the BCE warm start alone at target scales 1, 3 and C = 10, student seeds
   0, 1, 2, 10000, next to plain CE on the same students.
3. ``dln-step``: fit the teacher with alpha = 1e-2 and with the official 1e-3 (budget 2,400), then
   teach student seeds 1 and 2.

All on mnist5k/mlp with the default spec (600 momentum-SGD steps); dev metrics only.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/l2t_dln_probes.py   # ~5 min on one core
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from envs.process import TeachingProcess
from students.optim import SGDConfig
from teachers.base import TeachingSpec
from teachers.l2t_dln import L2TDLNTeacher, bce_warm_start


def train_alone(loss: str, coeffs_fn, seed: int, loss_kwargs: dict | None = None) -> float:
    """Dev accuracy of a student trained 600 steps under fixed coefficients."""
    proc = TeachingProcess(
        "mnist5k", "mlp", loss, optim=SGDConfig(total_steps=600), device="cpu",
        loss_kwargs=loss_kwargs,
    )  # fmt: skip
    proc.reset(seed)
    proc.advance(coeffs_fn(proc.family).float(), 600)
    return proc.evaluate("dev")["accuracy"]


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for init_seed in range(3):
        acc = train_alone("dln", lambda f: f.default_coeffs(), 0, {"init_seed": init_seed})
        rows.append(
            {
                "probe": "kaiming",
                "setting": f"init_seed={init_seed}",
                "seed": 0,
                "dev_accuracy": acc,
            }
        )
    for seed in (0, 1, 2, 10000):
        acc = train_alone("ce", lambda f: f.default_coeffs(), seed)
        rows.append(
            {"probe": "warm-start", "setting": "plain ce", "seed": seed, "dev_accuracy": acc}
        )
        for scale in (1.0, 3.0, 10.0):
            acc = train_alone("dln", lambda f, s=scale: bce_warm_start(10, scale=s), seed)
            rows.append(
                {
                    "probe": "warm-start",
                    "setting": f"scale={scale:g}",
                    "seed": seed,
                    "dev_accuracy": acc,
                }
            )
    spec = TeachingSpec(device="cpu")
    for step in (1e-2, 1e-3):
        teacher = L2TDLNTeacher(dln_step=step)
        teacher.fit(spec, 2400, seed=0)
        for seed in (1, 2):
            final = teacher.teach(spec, seed).final
            rows.append(
                {
                    "probe": "dln-step",
                    "setting": f"alpha={step:g}",
                    "seed": seed,
                    "dev_accuracy": 1 - final["dev_error"],
                }
            )
    frame = pd.DataFrame(rows)
    out = Path("results/l2t_dln")
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "probes.csv", index=False)
    print(
        frame.pivot_table(index=["probe", "setting"], columns="seed", values="dev_accuracy").round(
            3
        )
    )


if __name__ == "__main__":
    main()
