"""Pure statistics for multi-seed studies: summaries, intervals, comparisons, power.

Every function takes plain sequences / arrays of floats and returns numbers; nothing
here plots, prints or touches files. Inputs containing NaN are rejected: callers drop
failed runs explicitly so that the number of seeds is never silently reduced.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

_MAX_SEEDS = 100_000


@dataclass(frozen=True)
class Summary:
    """Mean, spread, t confidence interval of the mean and prediction interval of one run."""

    n: int
    mean: float
    std: float
    sem: float
    ci_low: float
    ci_high: float
    pi_low: float
    pi_high: float


@dataclass(frozen=True)
class Placement:
    """Where a published number falls relative to the distribution over seeds."""

    published: float
    mean: float
    std: float
    z: float
    percentile: float
    pi_low: float
    pi_high: float
    inside: bool
    verdict: str


@dataclass(frozen=True)
class Paired:
    """Comparison of two configurations run on the same seeds (differences are a - b)."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    t_stat: float
    t_pvalue: float
    wilcoxon_stat: float
    wilcoxon_pvalue: float
    prob_improvement: float


def _sample(values: ArrayLike, name: str = "values") -> np.ndarray:
    """Return values as a non-empty 1-D float array without NaN, else raise ValueError."""
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty; at least one value is required.")
    if np.isnan(x).any():
        raise ValueError(
            f"{name} contains NaN ({int(np.isnan(x).sum())} of {x.size}); NaN is not "
            "allowed, drop failed runs explicitly before computing statistics."
        )
    return x


def _check_unit(name: str, value: float) -> None:
    """Raise ValueError unless 0 < value < 1."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}.")


def _t_crit(confidence: float, df: int) -> float:
    """Two-sided Student t critical value for the given confidence level."""
    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def summarize(values: ArrayLike, confidence: float = 0.95) -> Summary:
    """Summarize seeds: mean, std (ddof=1), sem, t CI of the mean, prediction interval."""
    _check_unit("confidence", confidence)
    x = _sample(values)
    n, mean = x.size, float(x.mean())
    if n < 2:
        nan = math.nan
        return Summary(n, mean, nan, nan, nan, nan, nan, nan)
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    t = _t_crit(confidence, n - 1)
    half_pi = t * std * math.sqrt(1.0 + 1.0 / n)
    return Summary(n, mean, std, sem, mean - t * sem, mean + t * sem, mean - half_pi, mean + half_pi)


def bootstrap_ci(
    values: ArrayLike, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Deterministic bootstrap CI of the mean: BCa, falling back to percentile if degenerate.

    BCa needs a non-degenerate jackknife (it is undefined e.g. when all values are
    equal); when scipy cannot compute it the percentile interval is returned instead,
    which for identical values is (value, value). A single value gives (nan, nan).
    """
    _check_unit("confidence", confidence)
    x = _sample(values)
    if x.size < 2:
        return (math.nan, math.nan)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap(
                (x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                method=method, rng=np.random.default_rng(seed),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return (low, high)


def place_published(published: float, values: ArrayLike, confidence: float = 0.95) -> Placement:
    """Place a published result against the seeds' mean, spread and prediction interval.

    With fewer than 2 seeds there is no spread: z and the interval are NaN, ``inside``
    is False and the verdict is "too few seeds". With zero spread the interval is the
    single point ``mean`` (z is NaN) and ``inside`` means ``published == mean``.
    """
    if not math.isfinite(published):
        raise ValueError(f"published must be a finite number, got {published!r}.")
    x = _sample(values)
    s = summarize(x, confidence)
    z = (published - s.mean) / s.std if s.n >= 2 and s.std > 0 else math.nan
    percentile = float(stats.percentileofscore(x, published, kind="mean"))
    if s.n < 2:
        inside, verdict = False, "too few seeds"
    elif published > s.pi_high:
        inside, verdict = False, "above the seeds' range"
    elif published < s.pi_low:
        inside, verdict = False, "below the seeds' range"
    else:
        inside, verdict = True, "consistent"
    return Placement(
        float(published), s.mean, s.std, z, percentile, s.pi_low, s.pi_high, inside, verdict
    )


def paired_comparison(a: ArrayLike, b: ArrayLike, confidence: float = 0.95) -> Paired:
    """Compare configurations a and b on common seeds (aligned arrays, differences a - b).

    t statistics are NaN for n < 2 or when all differences are zero (and +-inf with
    p = 0 when the differences are a non-zero constant). Wilcoxon results are NaN for
    n < 2, when all differences are zero, or when scipy cannot compute them.
    ``prob_improvement`` is P(a > b) + 0.5 P(a == b) over all n*n pairs of runs (not
    only same-seed pairs), i.e. the Mann-Whitney U of a over n_a * n_b as in rliable.
    """
    _check_unit("confidence", confidence)
    x, y = _sample(a, "a"), _sample(b, "b")
    if x.shape != y.shape:
        raise ValueError(
            f"a and b must have equal length (one value per common seed), got {x.size} and {y.size}."
        )
    d = x - y
    n, mean_diff = d.size, float(d.mean())
    nan = math.nan
    ci_low = ci_high = t_stat = t_p = w_stat = w_p = nan
    if n >= 2:
        s = summarize(d, confidence)
        ci_low, ci_high = s.ci_low, s.ci_high
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            t_res = stats.ttest_rel(x, y)
            t_stat, t_p = float(t_res.statistic), float(t_res.pvalue)
            if np.any(d != 0):
                try:
                    w_res = stats.wilcoxon(x, y)
                    w_stat, w_p = float(w_res.statistic), float(w_res.pvalue)
                except ValueError:
                    pass
        if not (math.isfinite(w_stat) and math.isfinite(w_p)):
            w_stat = w_p = nan
    u = float(stats.mannwhitneyu(x, y).statistic)
    return Paired(n, mean_diff, ci_low, ci_high, t_stat, t_p, w_stat, w_p, u / (x.size * y.size))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (monotone, clipped to 1, NaN kept)."""
    p = np.asarray(pvalues, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("pvalues must lie in [0, 1] (NaN allowed).")
    flat = p.ravel()
    out = np.full(flat.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(flat))
    m = idx.size
    order = idx[np.argsort(flat[idx], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * flat[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out.reshape(p.shape)


def _power(n: int, effect: float, alpha: float, paired: bool) -> float:
    """Power of the two-sided t-test with n seeds (per group when unpaired)."""
    df = n - 1 if paired else 2 * n - 2
    nc = effect * math.sqrt(n if paired else n / 2.0)
    t = stats.t.ppf(1.0 - alpha / 2.0, df)
    lower = float(stats.nct.cdf(-t, df, nc))  # scipy gives NaN when it underflows to ~0
    return float(stats.nct.sf(t, df, nc)) + (lower if math.isfinite(lower) else 0.0)


def seeds_needed(
    difference: float, std: float, power: float = 0.8, alpha: float = 0.05, paired: bool = True
) -> int:
    """Smallest number of seeds (per configuration) for a two-sided t-test to reach `power`.

    paired=True: `std` is the std of the paired differences, df = n - 1, noncentrality
    d*sqrt(n). paired=False: two groups of n each, df = 2n - 2, noncentrality d*sqrt(n/2).
    Here d = |difference| / std. Power grows with n, so the smallest n >= 2 is found by
    doubling then bisecting (same answer as scanning n = 2, 3, ...); above 100000 seeds
    a ValueError is raised.
    """
    if not (math.isfinite(difference) and difference != 0):
        raise ValueError(f"difference must be a finite non-zero number, got {difference!r}.")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}.")
    _check_unit("power", power)
    _check_unit("alpha", alpha)
    effect = abs(difference) / std

    def enough(n: int) -> bool:
        return _power(n, effect, alpha, paired) >= power

    lo, hi = 1, 2  # invariant: enough(hi) is what we probe; lo is known insufficient
    while not enough(hi):
        if hi >= _MAX_SEEDS:
            raise ValueError(
                f"more than {_MAX_SEEDS} seeds would be needed to detect difference="
                f"{difference!r} with std={std!r} at power={power!r}, alpha={alpha!r}."
            )
        lo, hi = hi, min(2 * hi, _MAX_SEEDS)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
