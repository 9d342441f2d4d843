"""Seaborn figures from tidy records (PNG). Every band and bar is a 95% t-interval over fitting
seeds (``analysis.stats.ci_bounds``), after averaging each seed's taught students.

* ``learning_curves.png``   dev-subset accuracy vs student step, per teacher
* ``final_test_error.png``  final test error per teacher, seeds as dots
* ``coefficients.png``      the bilinear L2T-DLF matrix Phi at several stages of training, or
                            (no bilinear teacher) coefficient mean/std vs student step
* ``quality_vs_budget.png`` final test error vs teacher-fitting budget; gradient vs RL teachers
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, ssh)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from analysis.records import RecordStore  # noqa: E402
from analysis.stats import ci_bounds  # noqa: E402
from analysis.tables import kind_of, per_seed  # noqa: E402
from envs.losses import make_loss  # noqa: E402

DPI = 120
STAGES = 3
"""how many points of training the coefficient figure shows (first action, middle, last)"""


def plot_all(root: str | Path) -> list[Path]:
    """Rebuild every figure of a results directory from its records; returns the PNG paths."""
    store = RecordStore(root)
    order = store.config().get("teachers")
    records, coeffs = store.read(), store.read_coeffs()
    if records.empty:
        raise ValueError(f"{root} has no records yet: nothing to plot")
    root = Path(root)
    sns.set_theme(style="whitegrid", context="notebook")
    paths = [
        learning_curves(records, root / "learning_curves.png", order),
        final_test_error(records, root / "final_test_error.png", order),
        coefficients(records, coeffs, root / "coefficients.png", order),
        quality_vs_budget(records, root / "quality_vs_budget.png", order),
    ]
    return [p for p in paths if p is not None]


def _largest_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Curves and bars show the largest budget; the budget axis has its own figure."""
    return frame[frame["budget"] == frame["budget"].max()]


def _present(order: Sequence[str] | None, frame: pd.DataFrame) -> list[str]:
    """hue order: the command's teachers that have rows, then any others."""
    have = list(dict.fromkeys(sorted(frame["teacher"].unique())))
    return [t for t in (order or []) if t in have] + [t for t in have if t not in (order or [])]


def learning_curves(
    records: pd.DataFrame,
    path: Path,
    order: Sequence[str] | None = None,
    metric: str = "dev_accuracy",
) -> Path:
    """Left: the whole run. Right: the second half, zoomed on the teachers that train at all, so
    a broken baseline (random) does not flatten the differences that matter."""
    teach = _largest_budget(records[(records["phase"] == "teach") & (records["metric"] == metric)])
    curves = teach.groupby(["teacher", "seed", "step"], as_index=False, sort=False)["value"].mean()
    hue = _present(order, curves)
    # one colour per teacher in both panels, whichever teachers the zoomed panel drops
    palette = dict(zip(hue, sns.color_palette(n_colors=len(hue)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    late = curves[curves["step"] >= curves["step"].max() / 2]
    finals = late.groupby("teacher")["value"].mean()
    kept = finals[finals >= finals.max() - 0.1].index  # within 10 points of the best
    for ax, data, title in (
        (axes[0], curves, "whole episode"),
        (axes[1], late[late["teacher"].isin(kept)], "second half, teachers within 10 points"),
    ):
        sns.lineplot(
            data,
            x="step",
            y="value",
            hue="teacher",
            hue_order=[t for t in hue if t in set(data["teacher"])],
            palette=palette,
            errorbar=ci_bounds,
            marker="o",
            ax=ax,
            legend=ax is axes[0],
        )
        ax.set(
            xlabel="student SGD step",
            ylabel=metric.replace("_", " ") + " (dev subset)",
            title=title,
        )
    fig.suptitle(
        f"Learning curves (teacher budget {int(teach['budget'].max()):,}; mean and 95% CI over "
        f"{teach['seed'].nunique()} seeds)"
    )
    return _save(fig, path)


def final_test_error(records: pd.DataFrame, path: Path, order: Sequence[str] | None = None) -> Path:
    seeds = _largest_budget(per_seed(records, order))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * seeds["teacher"].nunique() + 2), 4.5))
    sns.pointplot(
        seeds,
        x="teacher",
        y="test_error",
        errorbar=ci_bounds,
        linestyle="none",
        capsize=0.2,
        color="black",
        ax=ax,
    )
    sns.stripplot(seeds, x="teacher", y="test_error", hue="teacher", alpha=0.5, legend=False, ax=ax)
    ax.set(
        xlabel="",
        ylabel="final test error",
        title=f"Final test error (mean, 95% CI over {seeds['seed'].nunique()} seeds; dots = seeds)",
    )
    _error_axis(ax, seeds["test_error"])
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, path)


def coefficients(
    records: pd.DataFrame, coeffs: pd.DataFrame, path: Path, order: Sequence[str] | None = None
) -> Path:
    bilinear = _largest_budget(coeffs[coeffs["loss"] == "bilinear"]) if not coeffs.empty else coeffs
    if not bilinear.empty:
        return _bilinear_stages(bilinear, path, order)
    summ = _largest_budget(
        records[(records["phase"] == "teach") & records["metric"].isin(["coeff_mean", "coeff_std"])]
    )
    per = summ.groupby(["teacher", "metric", "seed", "step"], as_index=False)["value"].mean()
    grid = sns.relplot(
        per,
        x="step",
        y="value",
        hue="teacher",
        col="metric",
        kind="line",
        errorbar=ci_bounds,
        facet_kws={"sharey": False},
        height=3.5,
        aspect=1.3,
    )
    grid.set_axis_labels("student SGD step", "coefficient")
    grid.figure.suptitle("Loss coefficients over training (95% CI over seeds)", y=1.03)
    return _save(grid.figure, path)


def _bilinear_stages(coeffs: pd.DataFrame, path: Path, order: Sequence[str] | None) -> Path:
    """Phi_t - Phi_default (C x C, row y = true class), averaged over seeds and students, at
    STAGES actions. The default (identity) is subtracted so a small learned change is visible;
    each teacher has its own colour scale (a random teacher's changes are far larger)."""
    dim = int(coeffs["index"].max()) + 1
    c = int(round((math.sqrt(1 + 4 * dim) - 1) / 2))  # dim = C*C + C
    if c * c + c != dim:
        raise ValueError(f"bilinear coefficients of length {dim} are not C*C + C")
    default = make_loss("bilinear", c).default_coeffs(torch.float64).numpy()[: c * c]
    rank = {"gradient": 0, "rl": 1, "baseline": 2}  # learned matrices first, random last
    teachers = sorted(_present(order, coeffs), key=lambda t: rank[kind_of(t)])[:4]
    ts = sorted(coeffs["t"].unique())
    stages = sorted({ts[round(i * (len(ts) - 1) / max(STAGES - 1, 1))] for i in range(STAGES)})
    fig, axes = plt.subplots(
        len(teachers),
        len(stages),
        figsize=(3.4 * len(stages) + 1, 3.1 * len(teachers)),
        squeeze=False,
        layout="constrained",
    )
    mean = coeffs.groupby(["teacher", "t", "index"])["value"].mean()
    step_at = coeffs.groupby(["t"])["step"].first()
    for i, teacher in enumerate(teachers):
        delta = {t: mean.loc[(teacher, t)].to_numpy()[: c * c] - default for t in stages}
        lim = max(float(np.abs(d).max()) for d in delta.values()) or 1e-6
        for j, t in enumerate(stages):
            ax = axes[i, j]
            sns.heatmap(
                delta[t].reshape(c, c),
                ax=ax,
                cmap="vlag",
                center=0.0,
                vmin=-lim,
                vmax=lim,
                square=True,
                cbar=j == len(stages) - 1,
                xticklabels=c <= 10,
                yticklabels=c <= 10,
            )
            ax.set_title(f"{teacher}: from step {int(step_at.loc[t]):,}", fontsize=10)
            ax.set(
                xlabel="class k (log p_k)" if i == len(teachers) - 1 else "",
                ylabel="true class y" if j == 0 else "",
            )
    fig.suptitle("Bilinear loss: Φ − Φ_default (identity) over training, mean over seeds")
    return _save(fig, path)


def quality_vs_budget(
    records: pd.DataFrame, path: Path, order: Sequence[str] | None = None
) -> Path:
    seeds = per_seed(records, order).assign(kind=lambda d: d["teacher"].map(kind_of))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    sns.lineplot(
        seeds,
        x="budget",
        y="test_error",
        hue="teacher",
        hue_order=_present(order, seeds),
        style="kind",
        style_order=[k for k in ("gradient", "rl", "baseline") if k in set(seeds["kind"])],
        markers=True,
        markersize=8,
        errorbar=ci_bounds,
        err_style="bars",
        ax=ax,
    )
    if seeds["budget"].nunique() > 1:
        ax.set_xscale("log")
        ax.set_xticks(
            sorted(seeds["budget"].unique()), [f"{b:,}" for b in sorted(seeds["budget"].unique())]
        )
        ax.minorticks_off()
    _error_axis(ax, seeds["test_error"])
    ax.set(
        xlabel="teacher-fitting budget (student SGD steps)",
        ylabel="final test error",
        title="Quality vs. budget: gradient vs RL teachers (mean, 95% CI over seeds)",
    )
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _error_axis(ax: plt.Axes, values: pd.Series) -> None:
    """Error rates in percent; log scale when a broken baseline sits next to good teachers."""
    if values.max() / max(values.min(), 1e-9) > 5:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
