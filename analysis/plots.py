"""Seaborn figures from tidy records (PNG). Every band and bar is a 95% t-interval over fitting
seeds (``analysis.stats.ci_bounds``), after averaging each seed's taught students.

* ``learning_curves.png``   dev-subset accuracy vs student step, per teacher
* ``final_test_error.png``  final test error per teacher: mean and CI beside each seed's dot
* ``coefficients.png``      the bilinear L2T-DLF matrix Phi at several stages of training, or
                            (no bilinear teacher) coefficient mean/std vs student step
* ``quality_vs_budget.png`` final test error vs teacher-fitting budget (two budgets or more)

A teacher far worse than the rest (``random``) is written in as "off scale" rather than drawn, so
the axis shows the differences between the teachers that train (:func:`off_scale`).
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
from analysis.stats import ci_bounds, mean_ci  # noqa: E402
from analysis.tables import BASELINE, kind_of, per_seed  # noqa: E402
from envs.losses import make_loss  # noqa: E402

DPI = 120
STAGES = 3
"""how many points of training the coefficient figure shows (first action, middle, last)"""
ZOOM_POINTS = 0.10
"""the zoomed learning-curve panel keeps teachers whose late mean dev accuracy is within this of
the best teacher's (a broken one, like random, would flatten the rest)"""


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
    """Left: the whole run. Right: the second half, zoomed (its y axis spans the teachers' means,
    not their bands) on the teachers that train at all, so a broken baseline (random) does not
    flatten the differences that matter. Bands are 95% t-intervals clipped to [0, 1], the range
    an accuracy can take."""
    teach = _largest_budget(records[(records["phase"] == "teach") & (records["metric"] == metric)])
    curves = teach.groupby(["teacher", "seed", "step"], as_index=False, sort=False)["value"].mean()
    hue = _present(order, curves)
    # one colour per teacher in both panels, whichever teachers the zoomed panel drops
    palette = dict(zip(hue, sns.color_palette(n_colors=len(hue)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    late = curves[curves["step"] >= curves["step"].max() / 2]
    finals = late.groupby("teacher")["value"].mean()
    kept = finals[finals >= finals.max() - ZOOM_POINTS].index
    dropped = [t for t in hue if t not in set(kept)]
    zoom_title = f"second half, zoomed on teachers within {100 * ZOOM_POINTS:.0f} accuracy points of the best"
    for ax, data, title in (
        (axes[0], curves, "whole episode"),
        (axes[1], late[late["teacher"].isin(kept)], zoom_title),
    ):
        sns.lineplot(
            data,
            x="step",
            y="value",
            hue="teacher",
            hue_order=[t for t in hue if t in set(data["teacher"])],
            palette=palette,
            errorbar=bounded_ci,
            err_kws={"alpha": 0.12 if ax is axes[1] else 0.2},
            marker="o",
            markersize=4 if ax is axes[1] else 5,
            ax=ax,
            legend=ax is axes[0],
        )
        ax.set(xlabel="student SGD step", ylabel=metric.replace("_", " ") + " (dev subset)")
        ax.set_title(title, fontsize=10)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes[0].set_ylim(-0.02, 1.02)
    means = data.groupby(["teacher", "step"])["value"].mean()
    low, high = float(means.min()), float(means.max())
    pad = max(0.15 * (high - low), 0.002)
    axes[1].set_ylim(low - pad, min(high + pad, 1.0))
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    if dropped:
        axes[1].text(
            0.01, 0.01, f"not shown: {', '.join(dropped)}", transform=axes[1].transAxes, fontsize=8
        )
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    fig.legend(handles, labels, loc="outside right center", frameon=False, title="teacher")
    fig.suptitle(
        f"Learning curves (teacher budget {int(teach['budget'].max()):,}; mean and 95% CI over "
        f"{teach['seed'].nunique()} seeds)"
    )
    return _save(fig, path)


def bounded_ci(values: Sequence[float]) -> tuple[float, float]:
    """:func:`ci_bounds` clipped to [0, 1]: a t-interval of a rate over few seeds can run past
    the rate's range, which no reader should see as a possible value."""
    low, high = ci_bounds(values)
    return max(low, 0.0), min(high, 1.0)


def final_test_error(records: pd.DataFrame, path: Path, order: Sequence[str] | None = None) -> Path:
    """Mean and 95% CI (black, left) beside each seed's value (coloured dots, right), on a linear
    axis that fits the teachers that train; a teacher far off that scale is written in, not drawn."""
    seeds = _largest_budget(per_seed(records, order))
    teachers = list(dict.fromkeys(seeds["teacher"]))
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(teachers) + 2), 4.8), layout="constrained")
    colours = dict(zip(teachers, sns.color_palette(n_colors=len(teachers)), strict=True))
    stats = {t: mean_ci(seeds.loc[seeds["teacher"] == t, "test_error"]) for t in teachers}
    off = off_scale({t: iv.mean for t, iv in stats.items()})
    rng = np.random.default_rng(0)  # the same jitter every time the figure is rebuilt
    for i, t in enumerate(teachers):
        values = seeds.loc[seeds["teacher"] == t, "test_error"].to_numpy()
        iv = stats[t]
        if t in off:
            ax.annotate(
                f"↑ {100 * iv.mean:.1f}%\n(off scale)",
                xy=(i, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, -4),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=8,
                color=colours[t],
            )
            continue
        half = 0.0 if math.isnan(iv.half) else iv.half
        ax.errorbar(i - 0.12, iv.mean, yerr=half, fmt="o", color="black", capsize=4, ms=6, zorder=2)
        jitter = rng.uniform(-0.05, 0.05, size=len(values))
        ax.scatter(i + 0.15 + jitter, values, color=colours[t], s=22, alpha=0.85, zorder=3)
    if BASELINE in stats and BASELINE not in off:
        ax.axhline(stats[BASELINE].mean, color="grey", ls=":", lw=1, zorder=1)
        ax.annotate(
            f"{BASELINE} mean",
            xy=(1.0, stats[BASELINE].mean),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="grey",
        )
    shown = seeds[~seeds["teacher"].isin(off)]["test_error"]
    lows = [
        stats[t].mean - (stats[t].half if not math.isnan(stats[t].half) else 0)
        for t in teachers
        if t not in off
    ]
    highs = [
        stats[t].mean + (stats[t].half if not math.isnan(stats[t].half) else 0)
        for t in teachers
        if t not in off
    ]
    low, high = min([*lows, shown.min()]), max([*highs, shown.max()])
    pad = max(0.08 * (high - low), 0.002)
    ax.set_ylim(max(low - pad, 0.0), high + pad * (4 if off else 1))
    ax.set_xticks(range(len(teachers)), teachers, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(teachers) - 0.4)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set(
        xlabel="",
        ylabel="final test error",
        title=f"Final test error, budget {int(seeds['budget'].max()):,} (black: mean and 95% CI "
        f"over {seeds['seed'].nunique()} seeds; dots: each seed)",
    )
    ax.title.set_fontsize(10)
    return _save(fig, path)


def off_scale(means: dict[str, float]) -> set[str]:
    """Teachers whose mean error is over 3x the median teacher's and 10 points above it (e.g. a
    random teacher at 78% next to teachers at 5%): drawing them would squash the others."""
    if len(means) < 3:
        return set()
    median = float(np.median(list(means.values())))
    return {t for t, m in means.items() if m > 3 * median and m > median + 0.10}


def coefficients(
    records: pd.DataFrame, coeffs: pd.DataFrame, path: Path, order: Sequence[str] | None = None
) -> Path | None:
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


def _bilinear_stages(coeffs: pd.DataFrame, path: Path, order: Sequence[str] | None) -> Path | None:
    """Phi_t - Phi_default (C x C, row y = true class), averaged over seeds and students, at
    STAGES actions. The default (identity) is subtracted so a small learned change is visible;
    each teacher has its own colour scale (a random teacher's changes are far larger). A teacher
    whose matrix never leaves the default (``fixed``) is named in the title, not drawn blank."""
    dim = int(coeffs["index"].max()) + 1
    c = int(round((math.sqrt(1 + 4 * dim) - 1) / 2))  # dim = C*C + C
    if c * c + c != dim:
        raise ValueError(f"bilinear coefficients of length {dim} are not C*C + C")
    default = make_loss("bilinear", c).default_coeffs(torch.float64).numpy()[: c * c]
    rank = {"gradient": 0, "rl": 1, "reweight": 2, "baseline": 2, "oracle": 3}  # learned first
    ts = sorted(coeffs["t"].unique())
    stages = sorted({ts[round(i * (len(ts) - 1) / max(STAGES - 1, 1))] for i in range(STAGES)})
    mean = coeffs.groupby(["teacher", "t", "index"])["value"].mean()
    deltas, constant = {}, []
    for teacher in sorted(_present(order, coeffs), key=lambda t: rank[kind_of(t)]):
        delta = {t: mean.loc[(teacher, t)].to_numpy()[: c * c] - default for t in stages}
        if max(float(np.abs(d).max()) for d in delta.values()) < 1e-9:
            constant.append(teacher)
        else:
            deltas[teacher] = delta
    if not deltas:
        return None
    teachers = list(deltas)[:4]
    step_at = coeffs.groupby(["t"])["step"].first()
    width = int(step_at.diff().dropna().min()) if len(step_at) > 1 else 1
    fig, axes = plt.subplots(
        len(teachers),
        len(stages),
        figsize=(3.3 * len(stages) + 1.2, 3.2 * len(teachers) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for i, teacher in enumerate(teachers):
        delta = deltas[teacher]
        lim = max(float(np.abs(d).max()) for d in delta.values())
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
                cbar=False,
                xticklabels=c <= 10,
                yticklabels=c <= 10,
            )
            first = int(step_at.loc[t])
            ax.set_title(f"{teacher}: student steps {first:,}-{first + width - 1:,}", fontsize=9)
            ax.set(
                xlabel="class k (log p_k)" if i == len(teachers) - 1 else "",
                ylabel="true class y" if j == 0 else "",
            )
        fig.colorbar(
            axes[i, -1].collections[0], ax=list(axes[i, :]), shrink=0.85, label="Φ − Φ_default"
        )
    note = (
        f"; {', '.join(constant)}: equal to the default throughout (not drawn)" if constant else ""
    )
    fig.suptitle(
        "Bilinear loss: Φ − Φ_default (identity) at the start, middle and end of an episode\n"
        f"mean over seeds; each row has its own colour scale{note}",
        fontsize=11,
    )
    return _save(fig, path)


def quality_vs_budget(
    records: pd.DataFrame, path: Path, order: Sequence[str] | None = None
) -> Path | None:
    """Test error vs teacher-fitting budget; None (no figure) with a single budget, where the
    final-test-error figure says it all. Teachers are nudged apart on the (log) budget axis so
    their error bars do not hide each other; line style = kind (gradient, RL, baseline)."""
    seeds = per_seed(records, order)
    budgets = sorted(seeds["budget"].unique())
    if len(budgets) < 2:
        return None
    teachers = list(dict.fromkeys(seeds["teacher"]))
    colours = dict(zip(teachers, sns.color_palette(n_colors=len(teachers)), strict=True))
    stats = {(t, b): mean_ci(g["test_error"]) for (t, b), g in seeds.groupby(["teacher", "budget"])}
    off = off_scale(
        {
            t: float(np.mean([stats[(t, b)].mean for b in budgets if (t, b) in stats]))
            for t in teachers
        }
    )
    styles = {
        "gradient": ("-", "o"),
        "rl": ("--", "X"),
        "baseline": (":", "s"),
        "reweight": ("-.", "D"),
        "oracle": (":", "*"),
    }
    fig, ax = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
    shown = [t for t in teachers if t not in off]
    for i, t in enumerate(shown):
        nudge = math.exp(0.025 * (i - (len(shown) - 1) / 2))
        have = [b for b in budgets if (t, b) in stats]
        ivs = [stats[(t, b)] for b in have]
        ls, marker = styles[kind_of(t)]
        ax.errorbar(
            [b * nudge for b in have],
            [iv.mean for iv in ivs],
            yerr=[0.0 if math.isnan(iv.half) else iv.half for iv in ivs],
            color=colours[t],
            ls=ls,
            marker=marker,
            ms=6,
            capsize=3,
            label=f"{t} ({kind_of(t)})",
        )
    for t in off:
        ax.plot([], [], " ", label=f"{t}: {100 * stats[(t, budgets[-1])].mean:.0f}% (off scale)")
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
    ax.minorticks_off()
    ax.set_xlim(budgets[0] / 1.25, budgets[-1] * 1.25)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    kinds = {kind_of(t) for t in teachers}
    versus = " gradient vs RL teachers" if {"gradient", "rl"} <= kinds else ""
    ax.set(
        xlabel="teacher-fitting budget (student SGD steps; teachers nudged apart)",
        ylabel="final test error",
        title=f"Quality vs. budget:{versus} (mean, 95% CI over seeds)",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
