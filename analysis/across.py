"""Statistics across settings (clean, noisy, imbalanced, ...), the way the RL-evaluation literature
summarises many tasks (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice";
the ``rliable`` package):

* **IQM of normalised scores**: each (setting, seed) test error e becomes the relative error
  reduction over cross-entropy in that setting, s = 1 - e / mean_seeds(e_CE), so 0 is CE, 0.2 is
  20% fewer errors and settings of different difficulty share one scale; the interquartile mean
  (mean of the middle 50% of all runs x settings) is robust to a few outliers yet uses half the
  data, unlike the median.
* **Probability of improvement over CE**: P(X > Y) that a run of the teacher has a lower test error
  than a run of CE in the same setting (Mann-Whitney U / (n m), ties count 1/2), averaged over
  settings; 0.5 = no better than CE.
* **Stratified bootstrap 95% CIs** for both: seeds are resampled with replacement within each
  setting (settings are fixed, runs are random), percentile intervals.

The point estimates come from ``rliable.metrics`` when it is installed (``pip install
'l2t-gym[stats]'``), else from the identical definitions below (a test checks they agree). The
bootstrap is always this module's, vectorised over resamples: ``rliable.library``'s needs
``arch < 8``, which does not import under pandas 3 (and arch 8 rejects its keyword arguments).
These summaries sit *alongside* the per-setting t-intervals of ``analysis.tables``, not instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

from analysis.records import RecordStore
from analysis.tables import BASELINE, per_seed

REPS = 10_000
"""bootstrap resamples (rliable's default is 50,000; 10,000, vectorised, keeps `l2t table` within a
second)"""
CONFIDENCE = 0.95

try:  # the reference implementation of the point estimators, when present
    from rliable import metrics as _rly_metrics
except ImportError:  # pragma: no cover - depends on the environment
    _rly_metrics = None

BACKEND = "rliable.metrics" if _rly_metrics is not None else "built-in"
MISSING_NOTE = (
    "rliable is not installed (pip install 'l2t-gym[stats]'); using the built-in estimators "
    "with the same definitions"
)


# ------------------------------------------------------------------------------- estimators


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries of a (runs, settings) array."""
    if _rly_metrics is not None:
        return float(_rly_metrics.aggregate_iqm(scores))
    return float(iqm_batched(np.asarray(scores)[None])[0])


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) per setting (columns), averaged over settings; higher scores are better."""
    if _rly_metrics is not None:
        return float(_rly_metrics.probability_of_improvement(x, y))
    return float(poi_batched(np.asarray(x)[None], np.asarray(y)[None])[0])


def iqm_batched(scores: np.ndarray) -> np.ndarray:
    """IQM of each (runs, settings) slice of a (reps, runs, settings) array."""
    return _scipy_stats.trim_mean(scores.reshape(len(scores), -1), 0.25, axis=1)


def poi_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) (ties 1/2) per setting, averaged over settings, for each leading slice:
    x (reps, n, settings), y (reps, m, settings) -> (reps,)."""
    a, b = x[:, :, None, :], y[:, None, :, :]
    per_task = ((a > b) + 0.5 * (a == b)).mean(axis=(1, 2))
    return per_task.mean(axis=1)


def stratified_bootstrap(
    arrays: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    *,
    reps: int = REPS,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(point, low, high) of a batched `statistic` ((reps, runs, settings) arrays -> (reps,)):
    its value on the data, and the percentile CI when each array's runs are resampled with
    replacement within each setting (column), independently per array, all reps at once."""
    rng = np.random.default_rng(seed)
    point = float(statistic(*(np.asarray(a)[None] for a in arrays))[0])
    resampled = []
    for a in arrays:
        a = np.asarray(a)
        n, tasks = a.shape
        idx = rng.integers(0, n, size=(reps, n, tasks))
        resampled.append(a[idx, np.arange(tasks)])
    samples = statistic(*resampled)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return point, float(low), float(high)


# ------------------------------------------------------------------------------- the summary


def settings_frame(roots: Sequence[str | Path]) -> pd.DataFrame:
    """Per-seed rows (``analysis.tables.per_seed``) of several results directories, with a
    ``setting`` column naming each directory (its folder name, or its path when names clash)."""
    roots = [Path(r) for r in roots]
    names = [r.name for r in roots]
    if len(set(names)) < len(names):
        names = [str(r) for r in roots]
    frames = []
    for root, name in zip(roots, names, strict=True):
        store = RecordStore(root)
        store.config()  # a clear error when it is not a results directory
        frames.append(per_seed(store.read(), store.config().get("teachers")).assign(setting=name))
    return pd.concat(frames, ignore_index=True)


def score_matrix(seeds: pd.DataFrame, teacher: str, settings: Sequence[str]) -> np.ndarray | None:
    """(runs, settings) test errors of one teacher at one budget, the runs truncated to the fewest
    seeds any setting has (rliable's rectangular layout); None when a setting lacks the teacher."""
    columns = []
    for s in settings:
        errors = seeds[(seeds["teacher"] == teacher) & (seeds["setting"] == s)]
        errors = errors.sort_values("seed")["test_error"].to_numpy(float)
        if len(errors) == 0:
            return None
        columns.append(errors)
    n = min(len(c) for c in columns)
    return np.stack([c[:n] for c in columns], axis=1)


def coverage_notes(seeds: pd.DataFrame, baseline: str = BASELINE) -> list[str]:
    """What the across-settings summary leaves out, and why, one line each: a (teacher, budget)
    missing from some setting is dropped (the IQM and P(> CE) pool every setting), and seeds are
    cut to the fewest any setting has at that budget (the bootstrap's rectangular layout)."""
    settings = list(dict.fromkeys(seeds["setting"]))
    notes = []
    for budget in sorted(seeds["budget"].unique()):
        at = seeds[seeds["budget"] == budget]
        counts = at.groupby(["teacher", "setting"])["seed"].nunique()
        for teacher in dict.fromkeys(at["teacher"]):
            have = counts.loc[teacher]
            lacking = [s for s in settings if s not in have.index]
            if lacking:
                notes.append(
                    f"{teacher} at budget {int(budget):,}: dropped, no rows in "
                    f"{', '.join(lacking)} (the summary pools every setting)"
                )
            elif teacher != baseline and score_matrix(at, baseline, settings) is None:
                notes.append(
                    f"{teacher} at budget {int(budget):,}: dropped, the baseline {baseline} has "
                    f"no rows there in some setting (scores are normalised by it)"
                )
            elif have.nunique() > 1:
                n = int(have.min())
                per = ", ".join(f"{s} {int(have[s])}" for s in settings)
                notes.append(
                    f"{teacher} at budget {int(budget):,}: seeds cut to the first {n} in every "
                    f"setting ({per}): the bootstrap needs as many runs in each"
                )
    return notes


def versus_matrix(
    seeds: pd.DataFrame, versus: Mapping[str, str], settings: Sequence[str]
) -> np.ndarray | None:
    """(runs, settings) test errors of a different teacher in each setting (``versus[setting]``,
    e.g. the setting's best baseline), runs cut to the fewest; None when one is missing."""
    columns = []
    for s in settings:
        one = score_matrix(seeds[seeds["setting"] == s], versus.get(s, ""), [s])
        if one is None:
            return None
        columns.append(one[:, 0])
    n = min(len(c) for c in columns)
    return np.stack([c[:n] for c in columns], axis=1)


def across_settings(
    seeds: pd.DataFrame,
    baseline: str = BASELINE,
    *,
    versus: Mapping[str, str] | None = None,
    label: str = "best",
    reps: int = REPS,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (teacher, budget) present in every setting: IQM of the normalised score and
    probability of improvement over `baseline`, each with its stratified-bootstrap 95% CI.

    With `versus` (setting -> teacher, e.g. each setting's best baseline chosen on ``select``)
    the probability of improvement is over that teacher in each setting instead, in a column
    ``p_improve_vs_<label>``; the scores stay normalised by `baseline`."""
    if "setting" not in seeds:
        raise ValueError("per-seed rows need a 'setting' column (see settings_frame)")
    settings = list(dict.fromkeys(seeds["setting"]))
    rows = []
    order = list(dict.fromkeys(seeds["teacher"]))
    for budget in sorted(seeds["budget"].unique()):
        at = seeds[seeds["budget"] == budget]
        base = score_matrix(at, baseline, settings)
        if base is None:
            continue
        ref = base.mean(axis=0, keepdims=True)  # CE's mean error per setting: the normaliser
        against = base if versus is None else versus_matrix(at, versus, settings)
        if against is None:
            continue
        column = f"p_improve_vs_{baseline if versus is None else label}"

        def normalised_iqm(errors: np.ndarray, ref: np.ndarray = ref) -> np.ndarray:
            return iqm_batched(1.0 - errors / ref)

        def improvement(errors: np.ndarray, base_errors: np.ndarray) -> np.ndarray:
            return poi_batched(-errors, -base_errors)

        for teacher in order:
            errors = score_matrix(at, teacher, settings)
            if errors is None:
                continue
            m, lo, hi = stratified_bootstrap([errors], normalised_iqm, reps=reps, seed=seed)
            m = iqm(1.0 - errors / ref)  # the reference implementation's point estimate
            same = (
                teacher == baseline
                if versus is None
                else all(versus.get(s) == teacher for s in settings)
            )
            if same:
                p, plo, phi = 0.5, np.nan, np.nan
            else:
                p, plo, phi = stratified_bootstrap(
                    [errors, against], improvement, reps=reps, seed=seed
                )
                p = probability_of_improvement(-errors, -against)
            rows.append(
                {
                    "teacher": teacher,
                    "budget": int(budget),
                    "settings": len(settings),
                    "runs_per_setting": errors.shape[0],
                    "iqm_score": m,
                    "iqm_low": lo,
                    "iqm_high": hi,
                    column: p,
                    "p_low": plo,
                    "p_high": phi,
                }
            )
    if not rows:
        budgets = {
            s: sorted(int(b) for b in seeds.loc[seeds["setting"] == s, "budget"].unique())
            for s in settings
        }
        if versus is not None:
            raise ValueError(
                f"no budget has both {baseline!r} and the teachers to compare against "
                f"({dict(versus)}) in every setting"
            )
        raise ValueError(
            f"no budget has the baseline {baseline!r} in every setting (budgets per setting: "
            f"{budgets}): the across-settings summary compares teachers at equal budgets and "
            "normalises by the baseline; run the settings with a common --budget"
        )
    return pd.DataFrame(rows)


def print_across(
    table: pd.DataFrame,
    settings: Sequence[str],
    baseline: str = BASELINE,
    versus: str | None = None,
) -> None:
    """The across-settings summary as a rich console table (`versus`: the label of
    :func:`across_settings`'s ``versus`` column, when it was given)."""
    vs = versus or baseline
    import sys

    from rich.console import Console
    from rich.table import Table

    out = Table(
        title=f"across {len(settings)} settings ({', '.join(settings)}): IQM of 1 - error / "
        f"error_{baseline}, P(better than {vs}); stratified-bootstrap 95% CIs "
        f"[{BACKEND}]"
    )
    for i, h in enumerate(
        ["teacher", "budget", "runs x settings", "IQM score (95% CI)", f"P(> {vs}) (95% CI)"]
    ):
        out.add_column(h, justify="left" if i == 0 else "right")
    for r in table.itertuples(index=False):
        d = r._asdict()
        p = d[f"p_improve_vs_{vs}"]
        out.add_row(
            str(r.teacher),
            f"{r.budget:,}",
            f"{r.runs_per_setting} x {r.settings}",
            f"{r.iqm_score:+.3f} [{r.iqm_low:+.3f}, {r.iqm_high:+.3f}]",
            "—" if np.isnan(r.p_low) else f"{p:.2f} [{r.p_low:.2f}, {r.p_high:.2f}]",
        )
    if _rly_metrics is None:
        print(MISSING_NOTE, file=sys.stderr)
    Console(width=None if sys.stdout.isatty() else 160).print(out)


OFF_SCALE_SCORE = -2.0
"""scores below this (three times CE's error) are written in, not drawn, in the IQM panel"""


def plot_across(
    table: pd.DataFrame,
    path: str | Path,
    baseline: str = BASELINE,
    settings: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    versus: str | None = None,
) -> Path:
    """Two panels at the largest common budget: IQM score and P(improvement over CE), 95% CIs;
    the title names the settings, and what the summary dropped is written under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = table[table["budget"] == table["budget"].max()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(top) + 1.8), layout="constrained")
    y = np.arange(len(top))
    vs = versus or baseline
    pcol = f"p_improve_vs_{vs}"
    for ax, col, lo, hi, ref, label in (
        (axes[0], "iqm_score", "iqm_low", "iqm_high", 0.0, f"IQM of 1 - error / error_{baseline}"),
        (axes[1], pcol, "p_low", "p_high", 0.5, f"P(teacher beats {vs})"),
    ):
        mean = top[col].to_numpy(float)
        err = np.vstack([mean - top[lo].to_numpy(float), top[hi].to_numpy(float) - mean])
        ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="o", capsize=4)
        ax.axvline(ref, color="grey", linestyle="--", linewidth=1)
        if col == "iqm_score":  # a teacher far below the rest (random) would squash the scale
            floor = OFF_SCALE_SCORE
            low = top[lo].to_numpy(float)
            if (mean < floor).any() and (mean >= floor).any():
                shown = low[mean >= floor]
                ax.set_xlim(left=min(float(np.nanmin(shown)), ref) - 0.05)
                for yi, m in zip(y[mean < floor], mean[mean < floor], strict=True):
                    ax.annotate(
                        f"\u2190 {m:+.2f} (off scale)",
                        (0, yi),
                        xycoords=("axes fraction", "data"),
                        xytext=(4, 0),
                        textcoords="offset points",
                        va="center",
                        fontsize=9,
                        color="grey",
                    )
        ax.set_yticks(y, top["teacher"])
        ax.invert_yaxis()
        ax.set_xlabel(label)
    count = int(top["settings"].iloc[0])
    names = f" ({', '.join(settings)})" if settings else ""
    budget = int(top["budget"].iloc[0])
    fig.suptitle(
        f"Across {count} settings{names} at budget {budget:,} (stratified-bootstrap 95% CIs; "
        f"{int(top['runs_per_setting'].min())} seeds a setting)"
    )
    shown = [n for n in notes if f"at budget {budget:,}:" in n]
    if shown:
        fig.text(0.0, -0.01, "\n".join(shown), fontsize=8, color="grey", va="top", wrap=True)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
