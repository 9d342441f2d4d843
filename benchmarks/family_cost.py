"""What a loss family's student step costs against plain cross-entropy's, side by side.

A teacher that acts on a loss family trains its students (and, for an RL teacher, every fit
student) on that family's loss, so part of its cost over plain CE is the loss itself, whatever
the teacher does. This times `TeachingProcess.advance(coeffs, S)` (the fast path every teacher's
students train on: mlp 784-256-10 on mnist5k, batch 64, momentum SGD with the cosine schedule)
for each family at the point a teacher of it starts from, repeats interleaved, medians:

    ce          the ce family at tau = 1 (plain cross-entropy): the reference
    compact     at the box's centre (action 0), where an untrained REINFORCE / PPO / A2C acts
    bilinear    at its default coefficients (L2T-DLF's family)
    gce         at q = 0.7 (the GCE baseline)

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/family_cost.py [--steps 100] [--repeats 9]

Last line: ``<family>=<median step time / ce's>`` for each family, then ``<family>_best=`` the
same ratio of the fastest repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from envs.process import TeachingProcess
from students.optim import SGDConfig

FAMILIES = ("ce", "compact", "bilinear", "gce")


def start_coeffs(process: TeachingProcess, family: str) -> torch.Tensor:
    """The coefficients a teacher of `family` starts from (module docstring)."""
    fam = process.family
    if family == "compact":
        return fam.action_to_coeffs(torch.zeros(fam.dim, dtype=torch.float64)).to(process.dtype)
    return fam.default_coeffs(process.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="S, student steps per timed unit")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated; ce first")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    families = args.families.split(",")
    if families[0] != "ce":
        raise SystemExit("--families must start with ce, the reference")
    runs = {}
    for family in families:
        proc = TeachingProcess(
            "mnist5k",
            "mlp",
            family,
            batch_size=64,
            optim=SGDConfig(0.01, 0.9, 5e-4, "cosine", 10**6),
            device=args.device,
        )
        proc.reset(0)
        runs[family] = (proc, start_coeffs(proc, family))
    times: dict[str, list[float]] = {f: [] for f in families}
    for _ in range(args.repeats):
        for family, (proc, coeffs) in runs.items():
            first = next(iter(proc.params.values()))
            start = time.perf_counter()
            proc.advance(coeffs, args.steps)
            first.sum().item()  # the steps are done (one sync per unit, not per step)
            times[family].append(time.perf_counter() - start)
    ce_median, ce_best = statistics.median(times["ce"]), min(times["ce"])
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.steps} steps a unit"
    )
    print(f"{'family':>10} {'ms/step':>8} {'x ce':>6} {'x ce (fastest)':>15}")
    line = []
    for family in families:
        med, best = statistics.median(times[family]), min(times[family])
        print(
            f"{family:>10} {1000 * med / args.steps:8.2f} {med / ce_median:6.2f} "
            f"{best / ce_best:15.2f}"
        )
        line.append(f"{family}={med / ce_median:.3f}")
    line += [f"{f}_best={min(times[f]) / ce_best:.3f}" for f in families]
    print(" ".join(line))


if __name__ == "__main__":
    main()
