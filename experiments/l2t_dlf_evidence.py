"""Evidence for issue 4: a trained L2T-DLF teacher vs. the cross-entropy baseline on mnist5k / mlp.

Protocol (everything selected on dev, test read once at the end):

1. Student learning rate, per loss, from LRS by mean whole-dev-split error of students on the
   DEV_SEEDS: once for plain cross-entropy (the ``ce`` teacher) and once for the untrained L2T-DLF
   teacher (the bilinear loss at the teacher's initial coefficients). Same procedure for both.
2. L2T-DLF teacher variants (VARIANTS: the investigation) fitted at the bilinear learning rate,
   each within BUDGET student SGD steps, each keeping its best candidate on dev (the untrained
   teacher is a candidate). The variant with the lowest dev score is "l2t-dlf".
3. Fresh students on TEST_SEEDS (disjoint from the dev, fitting and selection seeds), same
   600-step schedule: ce, the untrained teacher ("bilinear-init") and l2t-dlf. Test error per seed,
   mean and 95% t-interval, and the paired difference to ce.
4. The coefficient schedule l2t-dlf used on the test students, as a figure.

    OMP_NUM_THREADS=1 python experiments/l2t_dlf_evidence.py [--out results/l2t_dlf]

Writes lr_selection.csv, fit_log.csv, variants.csv, per_seed.csv, summary.csv, coefficients.csv,
coefficients.png and teacher.pt under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from teachers.base import Teacher, TeachingSpec  # noqa: E402
from teachers.l2t_dlf import L2TDLFTeacher  # noqa: E402
from teachers.registry import make_teacher  # noqa: E402

LRS = (0.05, 0.1, 0.2, 0.4)
DEV_SEEDS = (900, 901, 902)
TEST_SEEDS = (0, 1, 2, 3, 4)
EPISODES = 32
"""teacher updates per variant"""
SELECT = {"select_every_updates": 4, "select_seeds": 2}
VARIANTS: dict[str, dict] = {
    "full-ce": {},  # the default: full-episode RMD on dev cross-entropy, Adam 2e-3, init 0.01
    "window-150": {"window": 3},  # truncated: an update per 3 env steps = 150 student steps
    "full-expected-error": {"objective": "expected-error"},  # mean(1 - p_y) on dev
    # the student at half the dev-selected rate, where 600-step RMD is less chaotic
    "full-ce-half-lr": {"student_lr_scale": 0.5},
    "full-ce-teacher-lr-0.01": {"teacher_lr": 0.01},  # 5x larger teacher steps
    "full-ce-init-0.05": {"init_scale": 0.05},  # noisier initial memory (the first default)
}
"""teacher config per variant; ``student_lr_scale`` scales the dev-selected bilinear rate"""


def ci95(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the two-sided 95% t-interval (n - 1 degrees of freedom)."""
    x = np.asarray(x, dtype=float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def dev_error(teacher: Teacher, spec: TeachingSpec, seeds) -> float:
    """Mean whole-dev-split error of fresh students (the dev half of teach(); test not read)."""
    env = teacher.spec_for(spec).make_env()
    errors = []
    for s in seeds:
        info = list(teacher.rollout(env, s))[-1].info
        errors.append(1.0 if info["diverged"] else env.process.evaluate("dev")["error"])
    return float(np.mean(errors))


def cross_entropy() -> Teacher:
    """Plain cross-entropy: the ``ce`` family at its default (tau = 1), as the ``ce`` teacher."""
    return make_teacher("fixed", family="ce")


def untrained(spec: TeachingSpec, **config) -> L2TDLFTeacher:
    teacher = L2TDLFTeacher(**config)
    env = teacher.spec_for(spec).make_env()
    teacher.build(env.observation_space.shape[0], env.family.dim)
    return teacher


def select_lr(spec: TeachingSpec, out: Path) -> dict[str, float]:
    rows = []
    for name, factory in (("ce", lambda s: cross_entropy()), ("bilinear-init", untrained)):
        for lr in LRS:
            s = spec.replace(lr=lr)
            rows.append({"loss": name, "lr": lr, "dev_error": dev_error(factory(s), s, DEV_SEEDS)})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "lr_selection.csv", index=False)
    return {k: float(g.loc[g.dev_error.idxmin(), "lr"]) for k, g in df.groupby("loss")}


def coefficient_frame(results, family, interval: int) -> pd.DataFrame:
    """Per test student and env step: mean diag Phi, mean off-diag Phi, mean bias b."""
    rows = []
    C = family.num_classes
    eye = np.eye(C, dtype=bool)
    for r in results:
        for t, c in enumerate(r.coeffs):
            phi, b = c[: C * C].reshape(C, C), c[C * C :]
            rows += [
                {"seed": r.seed, "student_step": t * interval, "summary": name, "value": v}
                for name, v in (
                    ("mean diag Phi", phi[eye].mean()),
                    ("mean off-diag Phi", phi[~eye].mean()),
                    ("mean bias b", b.mean()),
                )
            ]
    return pd.DataFrame(rows)


def plot_coefficients(coef: pd.DataFrame, results, family, interval: int, path: Path) -> None:
    C = family.num_classes
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (name, g) in zip(axes[0], coef.groupby("summary", sort=False), strict=True):
        sns.lineplot(g, x="student_step", y="value", ax=ax, errorbar=("ci", 95), marker="o")
        ax.set(title=name, xlabel="student SGD step (start of interval)", ylabel="")
    first = results[0]
    stages = [0, len(first.coeffs) // 2, len(first.coeffs) - 1]
    default = family.default_coeffs(torch.float64).numpy()[: C * C].reshape(C, C)
    for ax, t in zip(axes[1], stages, strict=True):
        phi = first.coeffs[t][: C * C].reshape(C, C) - default
        lim = max(1e-3, np.abs(phi).max())
        sns.heatmap(phi, ax=ax, cmap="RdBu_r", vmin=-lim, vmax=lim, square=True)
        ax.set(
            title=f"Phi - I, seed {first.seed}, step {t * interval}", xlabel="j", ylabel="label y"
        )
    fig.suptitle("L2T-DLF coefficients on fresh mnist5k/mlp test students (mean, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/l2t_dlf")
    ap.add_argument("--episodes", type=int, default=EPISODES)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument(
        "--reuse-fit",
        action="store_true",
        help="read stages 1-2 (lr_selection.csv, variants.csv, teacher.pt) from --out; rerun 3-4",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    spec = TeachingSpec(device="cpu")  # mnist5k, mlp 784-256-10, 12 x 50 steps, batch 64, cosine

    if args.reuse_fit:  # stages 1-2 from an earlier run in --out; stages 3-4 again
        lr_df = pd.read_csv(out / "lr_selection.csv")
        lrs = {k: float(g.loc[g.dev_error.idxmin(), "lr"]) for k, g in lr_df.groupby("loss")}
        vdf = pd.read_csv(out / "variants.csv")
        chosen = vdf.loc[vdf.dev_score.idxmin(), "variant"]
        teacher = Teacher.load(out / "teacher.pt")
        tspec = spec.replace(lr=lrs["bilinear-init"])
        chosen_spec = spec.replace(lr=float(vdf.set_index("variant").student_lr[chosen]))
    else:
        lrs, tspec, chosen, teacher, chosen_spec = fit_stage(spec, args, out)
    test_stage(spec, lrs, tspec, teacher, chosen_spec, out)
    print(f"total wall time {time.perf_counter() - start:.0f} s")


def fit_stage(spec: TeachingSpec, args, out: Path):
    """Stages 1-2: learning rates on dev, then the teacher variants, the best kept on dev."""
    lrs = select_lr(spec, out)
    print("selected learning rates (dev):", lrs, flush=True)
    tspec = spec.replace(lr=lrs["bilinear-init"])

    # 2. teacher variants, selected on dev
    selects = 1 + -(-args.episodes // SELECT["select_every_updates"])
    budget = (args.episodes + selects * SELECT["select_seeds"]) * spec.episode_steps
    logs, variants, teachers = [], [], {}
    specs = {}
    for name in args.variants:
        config = dict(VARIANTS[name])
        specs[name] = tspec.replace(lr=tspec.lr * config.pop("student_lr_scale", 1.0))
        teacher = make_teacher("l2t-dlf", **config, **SELECT)
        report = teacher.fit(specs[name], budget, seed=0)
        teachers[name] = teacher
        logs += [{"variant": name, **row} for row in report.log]
        variants.append(
            {
                "variant": name,
                "student_lr": specs[name].lr,
                "config": json.dumps(teacher.config),
                "dev_score": teacher.best_dev_error,
                "untrained_dev_score": next(r for r in report.log if r["kind"] == "select")[
                    "dev_error"
                ],
                "student_steps": report.student_steps,
                "budget": budget,
                "episodes": report.episodes,
                "wall_time": report.wall_time,
            }
        )
        print(variants[-1], flush=True)
        pd.DataFrame(logs).to_csv(out / "fit_log.csv", index=False)
    vdf = pd.DataFrame(variants)
    vdf.to_csv(out / "variants.csv", index=False)
    chosen = vdf.loc[vdf.dev_score.idxmin(), "variant"]
    teacher = teachers[chosen]
    teacher.save(out / "teacher.pt")
    print("chosen on dev:", chosen, flush=True)
    return lrs, tspec, chosen, teacher, specs[chosen]


def test_stage(spec, lrs, tspec, teacher, chosen_spec, out: Path) -> None:
    """Stages 3-4: fresh test students, the summary, the coefficient figure."""
    contenders = {
        "ce": (cross_entropy(), spec.replace(lr=lrs["ce"])),
        "bilinear-init": (untrained(tspec), tspec),
        # the untrained teacher at the chosen variant's student rate: the teacher's own effect
        "bilinear-init-same-lr": (untrained(chosen_spec), chosen_spec),
        "l2t-dlf": (teacher, chosen_spec),
    }
    rows, dlf_results = [], []
    for name, (t, s) in contenders.items():
        for seed in TEST_SEEDS:
            r = t.teach(s, seed)
            rows.append({"teacher": name, "seed": seed, "lr": s.lr, **r.final})
            if name == "l2t-dlf":
                dlf_results.append(r)
            print(rows[-1], flush=True)
    per_seed = pd.DataFrame(rows)
    per_seed.to_csv(out / "per_seed.csv", index=False)
    summary = []
    ce = per_seed[per_seed.teacher == "ce"].set_index("seed")
    for name, g in per_seed.groupby("teacher", sort=False):
        g = g.set_index("seed")
        row = {"teacher": name, "n": len(g), "lr": g.lr.iloc[0]}
        for split in ("dev", "test"):
            row[f"{split}_error_mean"], row[f"{split}_error_ci95"] = ci95(g[f"{split}_error"])
        diff = g.test_error - ce.test_error.loc[g.index]
        row["test_minus_ce_mean"], row["test_minus_ce_ci95"] = (
            ci95(diff) if name != "ce" else (0.0, 0.0)
        )
        if name == "l2t-dlf":  # paired against the same teacher before training, same lr
            base = per_seed[per_seed.teacher == "bilinear-init-same-lr"].set_index("seed")
            diff = g.test_error - base.test_error.loc[g.index]
            row["test_minus_untrained_mean"], row["test_minus_untrained_ci95"] = ci95(diff)
        summary.append(row)
    sdf = pd.DataFrame(summary)
    sdf.to_csv(out / "summary.csv", index=False)
    print(sdf.to_string(index=False))

    # 4. the coefficient schedule
    family = teacher.spec_for(tspec).make_env().family
    coef = coefficient_frame(dlf_results, family, tspec.interval)
    coef.to_csv(out / "coefficients.csv", index=False)
    plot_coefficients(coef, dlf_results, family, tspec.interval, out / "coefficients.png")


if __name__ == "__main__":
    main()
