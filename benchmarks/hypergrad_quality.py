"""Quality of the hypergradient estimators (teachers/estimators.py) against the horizon K.

On the default student (mnist5k, mlp 784-256-10, 12 x 50 = 600 steps, bilinear family with the lr
action), clean and under 40 % symmetric label noise. The teacher is a constant action in a 4-d
subspace theta of the action space, at theta = 0 (the default loss and the schedule's lr): the
diagonal of Phi, its off-diagonal entries, the bias (each a unit vector in action space) and the
lr action. A constant action keeps every estimator's target the same function of theta, so their
directions can be compared. For each K in {1, 10, 50, 200, T} student steps:

* ``truncated``: RMD through consecutive K-step windows of one student's run, theta fixed; one
  update is one window's gradient; a run's worth of updates is their sum (K = T is ``full``);
* ``pes``: antithetic PES with ``--pairs`` pairs and sigma ``--sigma`` over K-step truncations
  (no K = 1 row: one dev evaluation per particle per student step);

against a reference: antithetic ES on the whole-run objective M(w_T) (dev cross-entropy on the
256-example dev subset), ``--ref-pairs`` pairs of students with seeds of their own, the same
sigma: an estimate of grad_theta E_seed E_eps M(w_T), what a teacher that generalises across
students should follow. Reported per estimator and K, over ``--seeds`` student seeds:

* ``norm``: median norm of one update's estimate;
* ``cos``: cosine of a run's summed estimate with the reference, mean and std over seeds (spread);
* ``cos_mean``: cosine of the seeds' mean with the reference;
* ``sign``: fraction of the 4 coordinates whose sign agrees with the reference, mean over seeds;
* ``cost``: student-step equivalents per update, from the process's counter (``envs.cost``).

The reference's own noise: the cosine between its two halves (``ref_split_cos``).

    OMP_NUM_THREADS=1 python benchmarks/hypergrad_quality.py --quick     # ~ a few minutes
    OMP_NUM_THREADS=1 python benchmarks/hypergrad_quality.py             # the README's run

Writes a table to stdout, the rows as JSON and a figure (``--out``, default
benchmarks/hypergrad_quality.{json,png}).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from teachers import estimators as E
from teachers.base import TeachingSpec


def subspace(family) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(center, basis (d, m), names): unit directions of the bilinear(+lr) action space."""
    C = family.num_classes
    d = family.dim
    cols, names = [], []
    eye = torch.eye(C, dtype=torch.float64).flatten()
    for name, part in (("phi_diag", eye), ("phi_off", 1 - eye)):
        v = torch.zeros(d, dtype=torch.float64)
        v[: C * C] = part
        cols.append(v / v.norm())
        names.append(name)
    v = torch.zeros(d, dtype=torch.float64)
    v[C * C : C * C + C] = 1.0
    cols.append(v / v.norm())
    names.append("bias")
    if d == C * C + C + 1:  # the lr action
        v = torch.zeros(d, dtype=torch.float64)
        v[-1] = 1.0
        cols.append(v)
        names.append("lr")
    return torch.zeros(d, dtype=torch.float64), torch.stack(cols, 1), names


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else math.nan


def run_sum(estimator, theta) -> tuple[torch.Tensor, list[float], list[float], bool]:
    """One run's worth of updates: their summed estimate, per-update norms and costs."""
    total = torch.zeros_like(theta)
    norms, costs = [], []
    while True:
        e = estimator.estimate(theta)
        total = total + e.grad
        norms.append(float(e.grad.norm()))
        costs.append(e.cost)
        if e.diverged or e.episode_end:
            return total, norms, costs, e.diverged


def measure(args, noise: float) -> tuple[list[dict], dict]:
    spec = TeachingSpec(
        horizon=args.horizon,
        interval=args.interval,
        device="cpu",
        label_noise=noise,
        lr_action=True,
    )
    T = spec.horizon * spec.interval
    env = spec.make_env()
    center, basis, names = subspace(env.family)
    policy = E.affine_policy(center, basis)
    theta = torch.zeros(basis.shape[1], dtype=torch.float64)

    t0 = time.perf_counter()
    ref_est = E.PES(
        env,
        policy,
        T,
        pairs=args.ref_pairs,
        sigma=args.sigma,
        seeds=itertools.count(10_000),
        noise_seed=1,
    )
    # one whole-run ES estimate over ref_pairs students; kept per pair to split it in halves
    ref_est.estimate(theta)
    ref = ref_est.last_pair_estimates.mean(0)
    half = args.ref_pairs // 2
    split = cosine(
        ref_est.last_pair_estimates[:half].mean(0), ref_est.last_pair_estimates[half:].mean(0)
    )
    ref_row = {
        "noise": noise,
        "ref": ref.tolist(),
        "names": names,
        "ref_split_cos": split,
        "ref_seconds": time.perf_counter() - t0,
    }
    print(
        f"noise {noise}: reference {dict(zip(names, np.round(ref.numpy(), 4), strict=True))} "
        f"(halves' cosine {split:.2f}, {ref_row['ref_seconds']:.0f} s)",
        flush=True,
    )

    rows = []
    ks = [k for k in args.K if k < T] + [T]
    for method in ("truncated", "pes"):
        for K in ks:
            if method == "pes" and K == 1:
                continue
            t1 = time.perf_counter()
            sums, norms, costs, diverged = [], [], [], 0
            for seed in range(args.seeds):
                if method == "truncated":
                    est = E.Truncated(env, policy, K, seeds=[seed])
                else:
                    est = E.PES(
                        env,
                        policy,
                        K,
                        pairs=args.pairs,
                        sigma=args.sigma,
                        seeds=itertools.repeat(seed),
                        noise_seed=seed,
                    )
                g, n, c, d = run_sum(est, theta)
                diverged += d
                sums.append(g)
                norms += n
                costs += c
            coss = [cosine(g, ref) for g in sums]
            signs = [float((torch.sign(g) == torch.sign(ref)).double().mean()) for g in sums]
            row = {
                "noise": noise,
                "method": method if K < T or method == "pes" else "truncated=full",
                "K": K,
                "norm": statistics.median(norms),
                "cos": statistics.fmean(coss),
                "cos_std": statistics.pstdev(coss) if len(coss) > 1 else 0.0,
                "cos_mean": cosine(torch.stack(sums).mean(0), ref),
                "sign": statistics.fmean(signs),
                "cost": statistics.fmean(costs),
                "diverged": diverged,
                "seconds": time.perf_counter() - t1,
                "sums": [g.tolist() for g in sums],
            }
            rows.append(row)
            print(
                f"  {row['method']:>15} K={K:>4}  norm {row['norm']:9.3g}  cos {row['cos']:+.2f}"
                f" +- {row['cos_std']:.2f}  cos_mean {row['cos_mean']:+.2f}  sign {row['sign']:.2f}"
                f"  cost/update {row['cost']:8.1f}  ({row['seconds']:.0f} s)",
                flush=True,
            )
    return rows, ref_row


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for noise, ls in zip(noises, ("-", "--"), strict=False):
        for method, color in (("truncated", "C0"), ("pes", "C1")):
            rs = [r for r in rows if r["noise"] == noise and r["method"].split("=")[0] == method]
            if not rs:
                continue
            ks = [r["K"] for r in rs]
            label = f"{method}, noise {noise:g}"
            axes[0].errorbar(
                ks,
                [r["cos"] for r in rs],
                yerr=[r["cos_std"] for r in rs],
                ls=ls,
                color=color,
                marker="o",
                capsize=3,
                label=label,
            )
            axes[1].plot(ks, [r["norm"] for r in rs], ls=ls, color=color, marker="o", label=label)
            axes[2].plot(ks, [r["cost"] for r in rs], ls=ls, color=color, marker="o", label=label)
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].set_ylabel("cosine with whole-run ES reference\n(mean +- std over seeds)")
    axes[1].set_ylabel("norm of one update")
    axes[2].set_ylabel("cost per update (student-step equiv.)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("K (student steps per update)")
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="horizon 4, 2 seeds, 8 reference pairs")
    ap.add_argument("--horizon", type=int, default=12)
    ap.add_argument("--interval", type=int, default=50)
    ap.add_argument("--K", type=int, nargs="+", default=[1, 10, 50, 200])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=2, help="PES antithetic pairs")
    ap.add_argument("--sigma", type=float, default=0.05, help="ES/PES perturbation, action units")
    ap.add_argument("--ref-pairs", type=int, default=24)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.4])
    ap.add_argument("--out", default="benchmarks/hypergrad_quality")
    args = ap.parse_args()
    if args.quick:
        args.horizon, args.seeds, args.ref_pairs = 4, 2, 8
    torch.manual_seed(0)
    start = time.perf_counter()
    rows, refs = [], []
    for noise in args.noise:
        r, ref = measure(args, noise)
        rows += r
        refs.append(ref)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"args": vars(args), "references": refs, "rows": rows}, indent=1)
    )
    figure(rows, out.with_suffix(".png"))
    print()
    print(
        "| noise | estimator | K | norm/update | cos with ES ref (mean +- std) | cos of seed mean "
        "| sign agreement | cost/update |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['noise']:g} | {r['method']} | {r['K']} | {r['norm']:.3g} | {r['cos']:+.2f} +- "
            f"{r['cos_std']:.2f} | {r['cos_mean']:+.2f} | {r['sign']:.2f} | {r['cost']:.0f} |"
        )
    print(
        f"\nreference halves' cosine: {[round(x['ref_split_cos'], 2) for x in refs]}; "
        f"{time.perf_counter() - start:.0f} s in all"
    )


if __name__ == "__main__":
    main()
