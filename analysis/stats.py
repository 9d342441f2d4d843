"""Means with 95% confidence intervals from the t-distribution, and paired differences.

The unit of replication is the fitting seed: each seed fits its own teacher and teaches its own
students, so seeds are independent; students taught by one fitted teacher are averaged first
(they share the teacher, so they are not independent replicates of the *method*).

With n replicates, mean m and sample standard deviation s (ddof = 1):

    CI_95 = m +- t_{0.975, n-1} * s / sqrt(n)

Paired differences against a baseline use the same formula on d_i = x_i - baseline_i over the
seeds both share: the seed fixes the taught students' initial weights and data order, so pairing
removes the between-student variance the teachers had no part in. Its p-value is the two-sided
paired t-test's (``diff_p``); a table of many such tests adjusts them with :func:`holm`, so a
teacher "beats" another only when the Holm-adjusted p is below 0.05. The CIs stay unadjusted
(95% for each comparison alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided t confidence interval; ``half`` is NaN when n < 2."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        if math.isnan(self.half):
            return f"{self.mean:.4f} (n={self.n})"
        return f"{self.mean:.4f} ± {self.half:.4f}"


def mean_ci(
    values: Sequence[float] | np.ndarray | pd.Series, confidence: float = CONFIDENCE
) -> Interval:
    """Mean and half-width ``t_{(1+c)/2, n-1} * s / sqrt(n)``; NaN values are dropped."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1))
    return Interval(mean, t * sem, n)


def ci_bounds(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(low, high) of :func:`mean_ci`: the ``errorbar=`` callable seaborn takes for CI bands."""
    iv = mean_ci(values)
    if math.isnan(iv.half):
        return iv.mean, iv.mean
    return iv.low, iv.high


def paired_difference(
    per_seed: pd.DataFrame,
    baseline: str,
    *,
    value: str = "value",
    group: str = "teacher",
    pair_on: str = "seed",
) -> pd.DataFrame:
    """Per group, the mean of (group - baseline) over shared `pair_on` values, with its t CI.

    `per_seed` has one row per (group, pair_on). Groups that share no seed with the baseline get
    n = 0 and NaN numbers rather than a silently unpaired comparison.
    """
    missing = {value, group, pair_on} - set(per_seed.columns)
    if missing:
        raise ValueError(f"paired_difference needs columns {sorted(missing)}")
    if per_seed.duplicated([group, pair_on]).any():
        raise ValueError(f"per_seed must have one row per ({group}, {pair_on})")
    wide = per_seed.pivot(index=pair_on, columns=group, values=value)
    rows = []
    for name in wide.columns:
        if baseline in wide.columns:
            diff = (wide[name] - wide[baseline]).dropna()
        else:
            diff = pd.Series(dtype=float)
        iv = mean_ci(diff.to_numpy())
        rows.append(
            {
                group: name,
                "diff_mean": iv.mean,
                "diff_ci": iv.half,
                "diff_n": iv.n,
                "diff_p": math.nan if name == baseline else paired_p(diff.to_numpy()),
            }
        )
    return pd.DataFrame(rows)


def paired_p(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the paired t-test H0: mean difference = 0 (t = m / (s / sqrt n),
    n - 1 degrees of freedom); NaN below 2 pairs or when every difference is equal (no
    variance: a t-test says nothing; zero differences mean no difference, p = 1)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size < 2:
        return math.nan
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else math.nan
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    return float(2.0 * _scipy_stats.t.sf(abs(t), df=d.size - 1))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's (1979) step-down adjustment of a family of m p-values: with p_(1) <= ... <= p_(m),

        p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)),

    which controls the family-wise error rate at any dependence. NaN entries (no test) are not
    in the family and stay NaN. E.g. [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06]."""
    p = np.asarray(p_values, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
