"""Seaborn figures from tidy records (PNG). Every band and bar is a 95% t-interval over fitting
seeds (``analysis.stats.ci_bounds``), after averaging each seed's taught students.

* ``learning_curves.png``   dev-subset accuracy vs student step, per teacher
* ``final_test_error.png``  final test error per teacher: mean and CI beside each seed's dot
* ``coefficients.png``      every learned teacher's loss knobs vs student step, one panel per
                            knob with its name, one row per loss family
* ``coefficients_phi.png``  the bilinear matrix Phi at the start, middle and end of an episode
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
        phi_stages(coeffs, root / "coefficients_phi.png", order),
        quality_vs_budget(records, root / "quality_vs_budget.png", order),
    ]
    return [p for p in paths if p is not None]


def diverged_marks(records: pd.DataFrame, budget: int | None = None) -> dict[str, str]:
    """teacher -> " (k/n diverged)" for teachers with students whose loss went non-finite (at
    `budget`, else over every budget): a diverged network's error must never look like a
    result in a figure either."""
    final = records[(records["phase"] == "final") & (records["metric"] == "diverged")]
    if budget is not None:
        final = final[final["budget"] == budget]
    marks = {}
    for teacher, g in final.groupby("teacher"):
        k = int((g["value"] > 0).sum())
        if k:
            marks[teacher] = f" ({k}/{len(g)} diverged)"
    return marks


def _palette(teachers: Sequence[str]) -> dict[str, tuple]:
    """A colour per teacher from seaborn's palette without its grey, which reads as the CE
    reference band in the faceted curves."""
    colours = [c for i, c in enumerate(sns.color_palette("deep", 10)) if i != 7]
    return {t: colours[i % len(colours)] for i, t in enumerate(teachers)}


def _largest_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Curves and bars show the largest budget; the budget axis has its own figure."""
    return frame[frame["budget"] == frame["budget"].max()]


def _present(order: Sequence[str] | None, frame: pd.DataFrame) -> list[str]:
    """hue order: the command's teachers that have rows, then any others."""
    have = list(dict.fromkeys(sorted(frame["teacher"].unique())))
    return [t for t in (order or []) if t in have] + [t for t in have if t not in (order or [])]


FACET_ABOVE = 4
"""with more teachers than this, the zoomed learning curves are split by kind of teacher (fixed
losses, gradient, RL), each panel with CE for reference: nine bands in one panel are a wash"""
KIND_TITLES = {
    "baseline": "fixed losses",
    "gradient": "gradient teachers",
    "rl": "RL teachers",
    "reweight": "reweighting peers",
    "oracle": "the oracle (limit)",
}


def learning_curves(
    records: pd.DataFrame,
    path: Path,
    order: Sequence[str] | None = None,
    metric: str = "dev_accuracy",
) -> Path:
    """Left: the whole run. Right: the second half, zoomed (its y axis spans the teachers' means,
    not their bands) on the teachers that train at all, so a broken baseline (random) does not
    flatten the differences that matter; with more than FACET_ABOVE teachers, one zoomed panel
    per kind of teacher, CE drawn in each. Bands are 95% t-intervals clipped to [0, 1], the range
    an accuracy can take. A teacher with diverged students says so in the legend."""
    teach = _largest_budget(records[(records["phase"] == "teach") & (records["metric"] == metric)])
    curves = teach.groupby(["teacher", "seed", "step"], as_index=False, sort=False)["value"].mean()
    hue = _present(order, curves)
    # one colour per teacher in every panel, whichever teachers a zoomed panel drops
    palette = _palette(hue)
    late = curves[curves["step"] >= curves["step"].max() / 2]
    finals = late.groupby("teacher")["value"].mean()
    kept = finals[finals >= finals.max() - ZOOM_POINTS].index
    dropped = [t for t in hue if t not in set(kept)]
    kinds = list(dict.fromkeys(kind_of(t) for t in hue if t in set(kept)))
    facets = len(hue) > FACET_ABOVE and len(kinds) > 1
    if facets and BASELINE in palette:
        palette[BASELINE] = (0.0, 0.0, 0.0)
    groups = (
        [(k, [t for t in hue if t in set(kept) and kind_of(t) == k]) for k in kinds]
        if facets
        else [(None, [t for t in hue if t in set(kept)])]
    )
    rows = 2 if len(groups) >= 3 else 1  # four panels as 2 x 2, not one strip 2,600 px wide
    cols = math.ceil((1 + len(groups)) / rows)
    fig, grid = plt.subplots(
        rows,
        cols,
        figsize=(1.5 + 5.4 * cols, 4.3 * rows + 0.5),
        layout="constrained",
        squeeze=False,
    )
    axes = list(grid.ravel())
    for ax in axes[1 + len(groups) :]:
        ax.set_visible(False)
    zoom_title = f"second half, zoomed on teachers within {100 * ZOOM_POINTS:.0f} accuracy points of the best"
    panels = [(axes[0], curves, "whole episode")]
    for ax, (name, teachers) in zip(axes[1 : 1 + len(groups)], groups, strict=True):
        shown = teachers + (
            [BASELINE] if facets and BASELINE not in teachers and BASELINE in set(kept) else []
        )
        title = (
            zoom_title
            if name is None
            else f"second half, {KIND_TITLES[name]}: {', '.join(teachers)}"
            + (f" ({BASELINE} dashed)" if BASELINE not in teachers else "")
        )
        panels.append((ax, late[late["teacher"].isin(shown)], title))
    for ax, data, title in panels:
        zoomed = ax is not axes[0]
        sns.lineplot(
            data,
            x="step",
            y="value",
            hue="teacher",
            hue_order=[t for t in hue if t in set(data["teacher"])],
            palette=palette,
            errorbar=bounded_ci,
            err_kws={"alpha": 0.12 if zoomed else 0.2},
            marker="o",
            markersize=4 if zoomed else 5,
            ax=ax,
            legend=ax is axes[0],
        )
        if facets:  # CE, black and dashed, is the reference line of every kind's panel
            for line in ax.lines:
                if line.get_label() == BASELINE or line.get_color() == palette.get(BASELINE):
                    line.set(linestyle="--", linewidth=1.2)
        ax.set(xlabel="student SGD step", ylabel=metric.replace("_", " ") + " (dev subset)")
        ax.set_title(title, fontsize=10)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        if zoomed:
            means = data.groupby(["teacher", "step"])["value"].mean()
            low, high = float(means.min()), float(means.max())
            pad = max(0.15 * (high - low), 0.002)
            ax.set_ylim(low - pad, min(high + pad, 1.0))
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    axes[0].set_ylim(-0.02, 1.02)
    if dropped:
        axes[1].text(
            0.01, 0.01, f"not shown: {', '.join(dropped)}", transform=axes[1].transAxes, fontsize=8
        )
    handles, labels = axes[0].get_legend_handles_labels()
    marks = diverged_marks(records, int(teach["budget"].max()))
    labels = [label + marks.get(label, "") for label in labels]
    axes[0].get_legend().remove()
    fig.legend(handles, labels, loc="outside right center", frameon=False, title="teacher")
    fig.suptitle(
        f"Learning curves (teacher budget {int(teach['budget'].max()):,}; mean and 95% CI over "
        f"{teach['seed'].nunique()} seeds)" + ("; CE dashed in each kind's panel" if facets else "")
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
    colours = _palette(teachers)
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
    marks = diverged_marks(records, int(seeds["budget"].max()))
    labels = [t + marks.get(t, "").replace(" (", "\n(") for t in teachers]
    ax.set_xticks(range(len(teachers)), labels, rotation=30, ha="right")
    for tick, t in zip(ax.get_xticklabels(), teachers, strict=True):
        if t in marks:
            tick.set_color("firebrick")
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


KNOBS = {
    "compact": (
        ("τ: inverse temperature", 1.0),
        ("ε: label smoothing", 0.0),
        ("γ: focal exponent", 0.0),
        ("m: logit margin", 0.0),
        ("q: GCE exponent (0 = CE)", 0.0),
    ),
    "ce": (("τ: inverse temperature", 1.0),),
    "label-smoothing": (("ε: label smoothing", 0.1),),
    "gce": (("q: GCE exponent", 0.7),),
    "large-margin": (("λ: margin weight", 1.0),),
}
"""each family's coefficients by name, with the value of its default (plain) loss"""
BILINEAR_KNOBS = (
    ("Φ diagonal: mean − 1", "diag"),
    ("Φ off-diagonal: mean |Φ_yk|", "off"),
    ("b: mean − log C", "bias"),
)
"""the bilinear family's C*C + C numbers as the state vector summarises them (envs/state.py)"""
DLN_KNOBS = (
    ("loss-network weights: mean", "coeff_mean"),
    ("loss-network weights: std", "coeff_std"),
)
"""L2T-DLN's 5,000 numbers are recorded as their mean and std per env step"""


def coefficients(
    records: pd.DataFrame, coeffs: pd.DataFrame, path: Path, order: Sequence[str] | None = None
) -> Path | None:
    """One panel per loss knob, with its name, vs student step: every learned teacher (gradient
    and RL) in its family's row, 95% CI bands over seeds, the family's default as a dotted line.
    Fixed losses (constant by construction) and `random` (uniform noise, its own figure scale)
    are named, not drawn, unless no learned teacher ran. The bilinear Φ matrix itself is in
    :func:`phi_stages`. None when no teacher's coefficients move."""
    teach = _largest_budget(records[records["phase"] == "teach"]) if not records.empty else records
    knobs = _knob_frames(
        _largest_budget(coeffs) if not coeffs.empty else coeffs, teach, order
    )  # family -> (teachers, [(knob name, default, per-seed frame)])
    if not knobs:
        return None
    everyone = _present(order, pd.concat([f for _, _, kn in knobs.values() for *_, f in kn]))
    learned = [t for t in everyone if kind_of(t) != "baseline"]
    shown = learned or [t for t in everyone if t not in FIXED_LOSSES]
    rows = [(fam, [t for t in ts if t in shown], kn) for fam, (ts, _, kn) in knobs.items()]
    rows = [(fam, ts, kn) for fam, ts, kn in rows if ts]
    if not rows:
        return None
    palette = _palette(shown)
    cols = max(len(kn) for _, _, kn in rows)
    fig, axes = plt.subplots(
        len(rows),
        cols,
        figsize=(3.6 * cols + 1.8, 3.0 * len(rows) + 0.9),
        squeeze=False,
        layout="constrained",
    )
    for i, (family, teachers, kn) in enumerate(rows):
        for j, (name, default, frame) in enumerate(kn):
            ax = axes[i, j]
            data = frame[frame["teacher"].isin(teachers)]
            sns.lineplot(
                data,
                x="step",
                y="value",
                hue="teacher",
                hue_order=teachers,
                palette=palette,
                errorbar=ci_bounds,
                err_kws={"alpha": 0.2},
                marker="o",
                markersize=3,
                ax=ax,
                legend=False,
            )
            if default is not None:
                ax.axhline(default, color="grey", ls=":", lw=1)
            ax.set_title(name, fontsize=10)
            ax.set(xlabel="student SGD step" if i == len(rows) - 1 else "", ylabel="")
        named = f"\n({', '.join(teachers)})" if len(teachers) <= 3 else ""  # else the legend
        title = family if family == "lr action" else f"{family} family"
        axes[i, 0].set_ylabel(f"{title}{named}", fontsize=9)
        for ax in axes[i, len(kn) :]:
            ax.set_visible(False)
    handles = [plt.Line2D([], [], color=palette[t], marker="o", ms=4, label=t) for t in shown]
    handles.append(plt.Line2D([], [], color="grey", ls=":", label="the family's default"))
    fig.legend(handles=handles, loc="outside right center", frameon=False, title="teacher")
    hidden = [t for t in everyone if t not in shown]
    note = (
        f"\nnot drawn: {', '.join(hidden)} (fixed losses are constant; random is noise)"
        if hidden
        else ""
    )
    budget = int(teach["budget"].max()) if not teach.empty else int(coeffs["budget"].max())
    fig.suptitle(
        f"Loss coefficients the teachers chose over an episode (budget {budget:,}; mean and 95% "
        f"CI over seeds){note}",
        fontsize=11,
    )
    return _save(fig, path)


FIXED_LOSSES = ("ce", "label-smoothing", "gce", "large-margin", "fixed")
"""teachers whose coefficients are constant by construction (or follow a fixed annealing)"""


def _knob_frames(
    coeffs: pd.DataFrame, teach: pd.DataFrame, order: Sequence[str] | None
) -> dict[str, tuple[list[str], None, list[tuple[str, float | None, pd.DataFrame]]]]:
    """Per family: its teachers and, per knob, (name, default value, per (teacher, seed, step)
    mean over students)."""
    out: dict = {}
    lr_frames = []
    if not coeffs.empty:
        for family, g in coeffs.groupby("loss", sort=False):
            per = g.groupby(["teacher", "seed", "step", "index"], as_index=False)["value"].mean()
            per, lr = _split_lr_action(family, per)
            if not lr.empty:
                lr_frames.append(lr)
            if per.empty:
                continue
            if family == "bilinear":
                kn = _bilinear_knobs(per)
            elif family in KNOBS:
                kn = [
                    (name, default, per[per["index"] == k].drop(columns="index"))
                    for k, (name, default) in enumerate(KNOBS[family])
                ]
            else:
                continue
            out[family] = (_present(order, per), None, kn)
    if lr_frames:  # the lr action's multiplier, one row for every family that had it
        lr = pd.concat(lr_frames, ignore_index=True)
        out["lr action"] = (_present(order, lr), None, [(LR_KNOB, 1.0, lr)])
    dln = teach[(teach["loss"] == "dln") & teach["metric"].isin(["coeff_mean", "coeff_std"])]
    if not dln.empty:
        per = dln.groupby(["teacher", "metric", "seed", "step"], as_index=False)["value"].mean()
        kn = [(name, None, per[per["metric"] == m].drop(columns="metric")) for name, m in DLN_KNOBS]
        out["dln"] = (_present(order, per), None, kn)
    return out


LR_KNOB = "student lr multiplier 2^ℓ"
"""the lr action's coefficient (envs.losses.LearningRateAction: the last one, ell = log2 of the
multiplier), drawn as the multiplier itself"""


def _split_lr_action(family: str, per: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the family's own coefficients, the lr multipliers): a teacher whose vector is one longer
    than its family's (C*C + C for bilinear, the knobs for the others) acted with the lr action,
    whose last coefficient is ell; the multiplier 2^ell is returned without the index column."""
    dims = per.groupby("teacher")["index"].transform("max") + 1
    if family == "bilinear":
        c = np.round((np.sqrt(1 + 4 * (dims - 1)) - 1) / 2)
        has_lr = c * c + c == dims - 1
    elif family in KNOBS:
        has_lr = dims == len(KNOBS[family]) + 1
    else:
        return per, per.iloc[:0]
    is_lr = has_lr & (per["index"] == dims - 1)
    lr = per[is_lr].drop(columns="index")
    return per[~is_lr], lr.assign(value=np.exp2(lr["value"]))


def _bilinear_knobs(per: pd.DataFrame) -> list[tuple[str, float | None, pd.DataFrame]]:
    """The Φ diagonal's mean shift, the off-diagonal's mean magnitude and b's mean shift from
    the default, per (teacher, seed, step)."""
    dim = int(per["index"].max()) + 1
    c = int(round((math.sqrt(1 + 4 * dim) - 1) / 2))  # dim = C*C + C
    if c * c + c != dim:
        raise ValueError(f"bilinear coefficients of length {dim} are not C*C + C")
    default = make_loss("bilinear", c).default_coeffs(torch.float64).numpy()
    idx = per["index"].to_numpy()
    delta = per["value"].to_numpy() - default[idx]
    part = np.where(idx >= c * c, "bias", np.where(idx // c == idx % c, "diag", "off"))
    frame = per.assign(value=np.where(part == "off", np.abs(delta), delta), part=part)
    keys = ["teacher", "seed", "step"]
    return [
        (name, 0.0, frame[frame["part"] == p].groupby(keys, as_index=False)["value"].mean())
        for name, p in BILINEAR_KNOBS
    ]


def phi_stages(coeffs: pd.DataFrame, path: Path, order: Sequence[str] | None = None) -> Path | None:
    """The bilinear Φ matrices (:func:`_bilinear_stages`) of the largest budget; None without a
    bilinear teacher that moves Φ."""
    bilinear = _largest_budget(coeffs[coeffs["loss"] == "bilinear"]) if not coeffs.empty else coeffs
    if not bilinear.empty:
        bilinear, _ = _split_lr_action("bilinear", bilinear)  # Φ only; the lr is coefficients'
    return _bilinear_stages(bilinear, path, order) if not bilinear.empty else None


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
                xticklabels=c <= 10 and i == len(teachers) - 1,  # tick labels on the bottom
                yticklabels=c <= 10,  # row only, so no row's title sits on the one above
            )
            first = int(step_at.loc[t])
            if i == 0:
                ax.set_title(f"student steps {first:,}-{first + width - 1:,}", fontsize=10)
            ax.set(
                xlabel="class k (log p_k)" if i == len(teachers) - 1 else "",
                ylabel=f"{teacher}\ntrue class y" if j == 0 else "",
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
    colours = _palette(teachers)
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
            label=f"{t} ({kind_of(t)})" + diverged_marks(records).get(t, ""),
        )
    for t in off:
        mark = diverged_marks(records).get(t, "")
        ax.plot(
            [], [], " ", label=f"{t}: {100 * stats[(t, budgets[-1])].mean:.0f}% (off scale){mark}"
        )
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


def plot_protocols(root: str | Path) -> Path:
    """``final_test_error.png`` of a protocol run (``experiments/mnist_full.py``: ``per_seed.csv``
    and ``summary.csv``, no tidy records): one panel per (protocol, student), each teacher's mean
    and 95% CI beside its seeds, CE's mean dotted, the paper's reported number (unverified) as a
    cross. Test error is in percent there."""
    root = Path(root)
    seeds = pd.read_csv(root / "per_seed.csv")
    summary = pd.read_csv(root / "summary.csv") if (root / "summary.csv").exists() else None
    sns.set_theme(style="whitegrid", context="notebook")
    panels = sorted(  # the paper's protocol first, students small to large, as in the README
        dict.fromkeys(zip(seeds["protocol"], seeds["student"], strict=True)),
        key=lambda p: (p[0] != "paper", p[1] != "mlp"),
    )
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels) + 1, 4.6), layout="constrained", squeeze=False
    )
    fixed_first = [BASELINE, "label-smoothing", "large-margin"]
    teachers = [t for t in fixed_first if t in set(seeds["teacher"])]
    teachers += [t for t in dict.fromkeys(seeds["teacher"]) if t not in teachers]
    colours = _palette(teachers)
    for ax, (protocol, student) in zip(axes[0], panels, strict=True):
        here = seeds[(seeds["protocol"] == protocol) & (seeds["student"] == student)]
        names = [t for t in teachers if t in set(here["teacher"])]
        for i, t in enumerate(names):
            values = here.loc[here["teacher"] == t, "test_error"].to_numpy(float) / 100
            iv = mean_ci(values)
            half = 0.0 if math.isnan(iv.half) else iv.half
            ax.errorbar(i - 0.12, iv.mean, yerr=half, fmt="o", color="black", capsize=4, ms=6)
            jitter = np.random.default_rng(i).uniform(-0.05, 0.05, size=len(values))
            ax.scatter(i + 0.15 + jitter, values, color=colours[t], s=22, alpha=0.85, zorder=3)
            if summary is not None:
                row = summary[
                    (summary["protocol"] == protocol)
                    & (summary["student"] == student)
                    & (summary["teacher"] == t)
                ]
                reported = row["reported_unverified"].dropna()
                if len(reported):
                    ax.scatter(
                        i, float(reported.iloc[0]) / 100, marker="x", color="grey", s=40, zorder=4
                    )
        if BASELINE in names:
            base = here.loc[here["teacher"] == BASELINE, "test_error"].mean() / 100
            ax.axhline(base, color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=2))
        ax.set_title(f"{student} ({protocol} protocol)", fontsize=10)
        ax.set(ylabel="final test error" if ax is axes[0, 0] else "")
    reported = plt.Line2D(
        [], [], marker="x", color="grey", ls="", label="reported in the paper (unverified)"
    )
    fig.legend(handles=[reported], loc="outside lower center", frameon=False, fontsize=9)
    fig.suptitle(
        "Full MNIST: final test error per protocol and student (black: mean and 95% CI over "
        f"{seeds.groupby(['protocol', 'student', 'teacher'])['seed'].nunique().min()} seeds; dots: "
        "each seed; dotted: ce's mean)",
        fontsize=11,
    )
    return _save(fig, root / "final_test_error.png")
