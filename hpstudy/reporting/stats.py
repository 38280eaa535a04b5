"""Pure statistics for multi-seed studies: summaries, intervals, comparisons, power, aggregates.

Every function takes plain sequences / arrays of floats and returns numbers; nothing
here plots, prints or touches files. Inputs containing NaN are rejected: callers drop
failed runs explicitly so that the number of seeds is never silently reduced.

Sums, means and variances are computed with scalar `math` (fsum, sqrt, log, exp) rather than
numpy's vectorised kernels, whose last bits may depend on the CPU's SIMD width: a printed
number must not change with the machine that prints it.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

_MAX_SEEDS = 100_000
# Below this many values a bootstrap interval is not computed: n values have only C(2n - 1, n) distinct
# resamples (10 at n = 3, 126 at n = 5) and percentile intervals under-cover badly at small n.
MIN_BOOTSTRAP_N = 10
# Interval scales: where a metric is bounded, its intervals are computed on a scale where it is not, and
# mapped back, so that they never leave the possible range.
SCALES = ("linear", "logit", "log")
_EPS = 1e-9  # how close to a bound (0 or 1) a value may come before the logit or log of it is taken


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
    # "outside" (beyond the prediction interval), "inside" (within the seeds' range or their 95% band),
    # "undecided" (within the interval but beyond every seed: not distinguishable with n seeds) or
    # "too few seeds".
    state: str = ""
    n: int = 0
    seeds_to_tell: int | None = None  # undecided: seeds whose interval would exclude it, if the sd held
    p_beyond_range: float = math.nan  # probability that one more run lands beyond the seeds' range: 2/(n+1)


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


@functools.lru_cache(maxsize=4096)
def _t_crit(confidence: float, df: float) -> float:
    """Two-sided Student t critical value for the given confidence level (cached: a report of thousands of
    configurations asks for the same few degrees of freedom tens of thousands of times)."""
    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def _to_scale(value: float, scale: str) -> float:
    """A value on the interval scale (logit for fractions in [0, 1], log for positive numbers)."""
    if scale == "logit":
        v = min(max(value, _EPS), 1.0 - _EPS)
        return math.log(v / (1.0 - v))
    if scale == "log":
        return math.log(max(value, _EPS))
    return value


def _from_scale(value: float, scale: str) -> float:
    """The inverse of _to_scale (NaN stays NaN)."""
    if math.isnan(value):
        return value
    if scale == "logit":
        return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))
    if scale == "log":
        return math.exp(value) if value < 709.0 else math.inf
    return value


def _mean_sd(x: list[float]) -> tuple[float, float]:
    """Mean and sample sd (ddof=1; NaN for one value), correctly rounded sums."""
    n = len(x)
    mean = math.fsum(x) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in x) / (n - 1))


def summarize(values: ArrayLike, confidence: float = 0.95, scale: str = "linear") -> Summary:
    """Summarize seeds: mean, std (ddof=1), sem, t CI of the mean, prediction interval of one more run.

    ``scale`` says where the intervals are computed: "linear" (Student t on the values), "logit" (for
    fractions such as accuracies: t intervals of the logits, mapped back, so they stay inside (0, 1)) or
    "log" (for positive values such as losses and times: they stay > 0). On a transformed scale the CI
    is that of the mean of the transformed values, mapped back (a median-like centre: it need not contain
    the arithmetic mean when the seeds are very spread); the prediction interval keeps its meaning, since
    a monotone map preserves which share of new runs falls inside. mean, std and sem are always on the
    values themselves.
    """
    _check_unit("confidence", confidence)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
    x = [float(v) for v in _sample(values)]
    n = len(x)
    mean, std = _mean_sd(x)
    if n < 2:
        nan = math.nan
        return Summary(n, mean, nan, nan, nan, nan, nan, nan)
    sem = std / math.sqrt(n)
    t = _t_crit(confidence, n - 1)
    if scale == "linear":
        centre, spread = mean, std
    else:
        centre, spread = _mean_sd([_to_scale(v, scale) for v in x])
    half_ci = t * spread / math.sqrt(n)
    half_pi = t * spread * math.sqrt(1.0 + 1.0 / n)
    back = (lambda v: v) if scale == "linear" else (lambda v: _from_scale(v, scale))
    return Summary(n, mean, std, sem, back(centre - half_ci), back(centre + half_ci),
                   back(centre - half_pi), back(centre + half_pi))


def bootstrap_ci(
    values: ArrayLike, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0,
    min_n: int = MIN_BOOTSTRAP_N,
) -> tuple[float, float]:
    """Deterministic bootstrap CI of the mean: BCa, falling back to percentile if degenerate.

    Fewer than ``min_n`` values (default MIN_BOOTSTRAP_N = 10) give (nan, nan): too few distinct
    resamples for the interval to mean anything. BCa needs a non-degenerate jackknife (it is undefined
    e.g. when all values are equal); when scipy cannot compute it the percentile interval is returned
    instead, which for identical values is (value, value).
    """
    _check_unit("confidence", confidence)
    x = _sample(values)
    if x.size < max(2, min_n):
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


def place_published(published: float, values: ArrayLike, confidence: float = 0.95, scale: str = "linear") -> Placement:
    """Place a published result against the seeds: outside, inside, or not distinguishable with n seeds.

    - outside: beyond the ``confidence`` prediction interval for one more run (on ``scale``);
    - inside: within the seeds' range [min, max], or within mean +- z * sd (the band the interval tends to
      as seeds are added, z the normal quantile): more seeds would not move it out;
    - undecided: within the interval only because n seeds leave it wide. ``seeds_to_tell`` is the
      smallest number of seeds whose interval would exclude it if the sd stayed as estimated.
    ``p_beyond_range`` = 2 / (n + 1) is the chance that one more run of the same configuration lands
    beyond all n seeds (exchangeable runs, no ties), printed beside each verdict.

    With fewer than 2 seeds there is no spread: z and the interval are NaN, ``inside`` is False and the
    state is "too few seeds". With zero spread the interval is the single point ``mean`` (z is NaN).
    """
    if not math.isfinite(published):
        raise ValueError(f"published must be a finite number, got {published!r}.")
    x = _sample(values)
    s = summarize(x, confidence, scale)
    n = s.n
    z = (published - s.mean) / s.std if n >= 2 and s.std > 0 else math.nan
    percentile = float(stats.percentileofscore(x, published, kind="mean"))
    p_beyond = 2.0 / (n + 1)
    need = None
    if n < 2:
        state, verdict = "too few seeds", "too few seeds"
    elif published > s.pi_high or published < s.pi_low:
        state = "outside"
        verdict = "above the prediction interval" if published > s.pi_high else "below the prediction interval"
    else:
        ts = [_to_scale(float(v), scale) for v in x]
        centre, spread = _mean_sd(ts)
        gap = abs(_to_scale(published, scale) - centre)
        z_inf = float(stats.norm.ppf(0.5 + confidence / 2.0))
        if float(x.min()) <= published <= float(x.max()) or gap <= z_inf * spread:
            state, verdict = "inside", "inside"
        else:
            state = "undecided"
            need = _seeds_to_exclude(gap, spread, confidence, n)
            verdict = f"not distinguishable with {n} seeds"
    return Placement(
        float(published), s.mean, s.std, z, percentile, s.pi_low, s.pi_high, state == "inside", verdict,
        state, n, need, p_beyond,
    )


def _seeds_to_exclude(gap: float, spread: float, confidence: float, n: int) -> int | None:
    """Smallest m > n whose t prediction interval (sd `spread`) is narrower than `gap` (None above the cap)."""
    def narrow(m: int) -> bool:
        return _t_crit(confidence, m - 1) * spread * math.sqrt(1.0 + 1.0 / m) < gap

    lo, hi = n, n + 1
    while not narrow(hi):
        if hi >= _MAX_SEEDS:
            return None
        lo, hi = hi, min(2 * hi, _MAX_SEEDS)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if narrow(mid) else (mid, hi)
    return hi


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


@dataclass(frozen=True)
class Difference:
    """Comparison of configurations a and b (differences a - b): independent samples (Welch's t-test and
    Mann-Whitney U) or, under common random numbers, pairs by seed (paired t-test and Wilcoxon)."""

    paired: bool
    n_a: int
    n_b: int
    mean_diff: float
    ci_low: float
    ci_high: float
    t_pvalue: float
    rank_pvalue: float
    rank_min_p: float  # the smallest p the rank test can reach at these n (exact, two-sided)
    prob_improvement: float  # P(a > b) + 0.5 P(a == b) over all pairs of runs (rliable's)
    prob_low: float  # bootstrap percentile CI of prob_improvement; NaN below MIN_BOOTSTRAP_N per side
    prob_high: float


def rank_min_p(n_a: int, n_b: int, paired: bool) -> float:
    """Smallest attainable two-sided exact p: Wilcoxon signed-rank 2 / 2^n, Mann-Whitney 2 / C(n_a + n_b, n_a)."""
    if paired:
        return min(1.0, 2.0 / 2.0 ** n_a) if n_a >= 1 else 1.0
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a)) if n_a >= 1 and n_b >= 1 else 1.0


def _win_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """W[k, l] = 1 if x_k > y_l, 0.5 if equal, else 0: summed, the Mann-Whitney U of x."""
    return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def prob_improvement(a: ArrayLike, b: ArrayLike) -> float:
    """P(a > b) + 0.5 P(a == b) over all n_a * n_b pairs: the Mann-Whitney U of a over n_a * n_b.

    Counted pair by pair (every term and partial sum is a multiple of 0.5, so the sum is exact and equals
    scipy's rank-sum U, which the tests check) instead of ranking: a report calls this thousands of times."""
    x, y = _sample(a, "a"), _sample(b, "b")
    return float(_win_matrix(x, y).sum()) / (x.size * y.size)


@functools.lru_cache(maxsize=64)
def _draw_counts(n_resamples: int, n_x: int, n_y: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each run of a and of b is drawn in each resample: a pure function of the sizes and the
    seed, so computed once per (sizes, seed) and shared by every comparison of that shape (read-only)."""
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, n_x, (n_resamples, n_x))
    iy = rng.integers(0, n_y, (n_resamples, n_y))
    rows = np.arange(n_resamples)[:, None]
    cx = np.bincount((rows * n_x + ix).ravel(), minlength=n_resamples * n_x).reshape(n_resamples, n_x).astype(float)
    cy = np.bincount((rows * n_y + iy).ravel(), minlength=n_resamples * n_y).reshape(n_resamples, n_y)
    cx.flags.writeable = False
    cy.flags.writeable = False
    return cx, cy


def prob_improvement_ci(
    a: ArrayLike, b: ArrayLike, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
    min_n: int = MIN_BOOTSTRAP_N,
) -> tuple[float, float]:
    """Percentile bootstrap CI of P(a > b), resampling a and b separately (as rliable's stratified
    bootstrap does per task); (nan, nan) when either side has fewer than ``min_n`` values."""
    _check_unit("confidence", confidence)
    x, y = _sample(a, "a"), _sample(b, "b")
    if min(x.size, y.size) < max(2, min_n):
        return (math.nan, math.nan)
    cx, cy = _draw_counts(n_resamples, x.size, y.size, seed)
    # U of a resample is cx' W cy: W[k, l] = 1 if x_k > y_l, 0.5 if equal; cx, cy how often each run was drawn.
    # Every term and partial sum is a multiple of 0.5 far below 2^53, so the products are exact in any order.
    wins = ((cx @ _win_matrix(x, y)) * cy).sum(axis=1)
    p = np.sort(wins / (x.size * y.size))
    alpha = (1.0 - confidence) / 2.0
    return (_quantile_sorted(p, alpha), _quantile_sorted(p, 1.0 - alpha))


def _quantile_sorted(p: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method), in scalar arithmetic."""
    pos = q * (p.size - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, p.size - 1)
    return float(p[lo]) + (float(p[hi]) - float(p[lo])) * (pos - lo)


def compare(a: ArrayLike, b: ArrayLike, paired: bool = False, confidence: float = 0.95) -> Difference:
    """Compare configurations a and b (differences a - b).

    paired=False (runs share no randomness): Welch's t-test and its CI, Mann-Whitney U. paired=True (common
    random numbers, aligned by seed index): the paired t-test and Wilcoxon's signed-rank test. t results
    are NaN for fewer than 2 values per side or zero spread; rank p-values NaN where scipy cannot compute
    them or all differences are zero.
    """
    _check_unit("confidence", confidence)
    x, y = _sample(a, "a"), _sample(b, "b")
    if paired and x.shape != y.shape:
        raise ValueError(f"paired comparison needs one value per common seed, got {x.size} and {y.size}.")
    nan = math.nan
    mean_diff = (math.fsum(x) / x.size) - (math.fsum(y) / y.size)
    ci_low = ci_high = t_p = r_p = nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if paired and x.size >= 2:
            d = x - y
            s = summarize(d, confidence)
            ci_low, ci_high = s.ci_low, s.ci_high
            if s.std > 0:
                t_p = float(stats.ttest_rel(x, y).pvalue)
            if np.any(d != 0):
                try:
                    r_p = float(stats.wilcoxon(x, y).pvalue)
                except ValueError:
                    pass
        elif not paired and min(x.size, y.size) >= 2:
            va, vb = _mean_sd(list(map(float, x)))[1] ** 2, _mean_sd(list(map(float, y)))[1] ** 2
            se2 = va / x.size + vb / y.size
            if se2 > 0:
                df = se2 ** 2 / ((va / x.size) ** 2 / (x.size - 1) + (vb / y.size) ** 2 / (y.size - 1))
                half = _t_crit(confidence, df) * math.sqrt(se2)
                ci_low, ci_high = mean_diff - half, mean_diff + half
                t_p = float(2.0 * stats.t.sf(abs(mean_diff) / math.sqrt(se2), df))
            if np.any(x != y[0]) or np.any(y != y[0]):
                r_p = float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    r_p = r_p if math.isfinite(r_p) else nan
    lo, hi = prob_improvement_ci(x, y, confidence)
    return Difference(paired, int(x.size), int(y.size), mean_diff, ci_low, ci_high, t_p, r_p,
                      rank_min_p(int(x.size), int(y.size), paired), prob_improvement(x, y), lo, hi)


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


@dataclass(frozen=True)
class SeedsAdvice:
    """Seeds per configuration to resolve a smallest effect of interest, with the uncertainty of the sd."""

    effect: float
    sd: float
    df: int
    sd_low: float
    sd_high: float
    n: int | None  # None: more than the cap
    n_low: int | None
    n_high: int | None


def sd_interval(sd: float, df: int, confidence: float = 0.95) -> tuple[float, float]:
    """Chi-square confidence interval of a standard deviation estimated with `df` degrees of freedom."""
    _check_unit("confidence", confidence)
    if df < 1 or not (math.isfinite(sd) and sd >= 0):
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    return (sd * math.sqrt(df / float(stats.chi2.ppf(1.0 - alpha / 2.0, df))),
            sd * math.sqrt(df / float(stats.chi2.ppf(alpha / 2.0, df))))


def seeds_for_effect(
    effect: float, sd: float, df: int, power: float = 0.8, alpha: float = 0.05, paired: bool = False,
    confidence: float = 0.95,
) -> SeedsAdvice:
    """Seeds per configuration for a two-sided t-test to detect `effect` (a smallest effect of interest,
    chosen before looking at differences: not post-hoc power) with `power`, given an sd estimated with
    `df` degrees of freedom; n_low and n_high follow the sd's chi-square interval."""
    if not (math.isfinite(effect) and effect > 0):
        raise ValueError(f"effect must be a finite number > 0, got {effect!r}.")
    lo, hi = sd_interval(sd, df, confidence)

    def need(s: float) -> int | None:
        if not (math.isfinite(s) and s > 0):
            return 2 if s == 0 else None
        try:
            return seeds_needed(effect, s, power, alpha, paired)
        except ValueError:
            return None

    return SeedsAdvice(effect, sd, df, lo, hi, need(sd), need(lo), need(hi))


def binomial_se(accuracy: float, n_images: int) -> float:
    """Standard error of an accuracy measured on n_images independent images: sqrt(p (1 - p) / n)."""
    p = min(max(float(accuracy), 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / n_images)


# ----------------------------------------------------------------------------------------------
# Aggregates over many configurations (Agarwal et al. 2021, "Deep RL at the edge of the statistical
# precipice", the definitions the rliable package implements)
# ----------------------------------------------------------------------------------------------


def iqm(values: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50% of the values (scipy's trim_mean, 25% cut each end).

    rliable computes it as scipy.stats.trim_mean(scores, 0.25, axis=None) over every run of every task."""
    x = np.sort(_sample(values))
    cut = int(0.25 * x.size)  # scipy.stats.trim_mean's rule
    kept = x[cut: x.size - cut]
    return math.fsum(float(v) for v in kept) / kept.size


def stratified_bootstrap_ci(
    scores: Sequence[ArrayLike], statistic=iqm, confidence: float = 0.95, n_resamples: int = 2000,
    seed: int = 0, min_n: int = MIN_BOOTSTRAP_N,
) -> tuple[float, float]:
    """Percentile CI of statistic(all runs) resampling runs with replacement within each task
    (configuration) separately: rliable's stratified bootstrap. (nan, nan) when the tasks hold fewer than
    ``min_n`` runs in all."""
    _check_unit("confidence", confidence)
    groups = [_sample(g, "scores") for g in scores]
    if not groups or sum(g.size for g in groups) < max(2, min_n):
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        pooled = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
        draws.append(statistic(pooled))
    p = np.sort(np.asarray(draws, dtype=float))
    alpha = (1.0 - confidence) / 2.0
    return (_quantile_sorted(p, alpha), _quantile_sorted(p, 1.0 - alpha))


def performance_profile(values: ArrayLike, thresholds: ArrayLike) -> list[float]:
    """Fraction of runs whose score exceeds each threshold (rliable's run-score distribution, > tau)."""
    x = _sample(values)
    return [float((x > float(t)).sum()) / x.size for t in np.asarray(thresholds, dtype=float).ravel()]


def performance_profile_band(
    scores: Sequence[ArrayLike], thresholds: ArrayLike, confidence: float = 0.95, n_resamples: int = 1000,
    seed: int = 0, min_n: int = MIN_BOOTSTRAP_N,
) -> tuple[list[float], list[float]]:
    """Pointwise percentile band of the performance profile over a stratified bootstrap (runs resampled within
    each task), as rliable draws it; NaN bands when the tasks hold fewer than ``min_n`` runs in all."""
    _check_unit("confidence", confidence)
    groups = [_sample(g, "scores") for g in scores]
    taus = np.asarray(thresholds, dtype=float).ravel()
    total = sum(g.size for g in groups)
    if not groups or total < max(2, min_n):
        return [math.nan] * taus.size, [math.nan] * taus.size
    rng = np.random.default_rng(seed)
    profiles = np.empty((n_resamples, taus.size))
    for i in range(n_resamples):
        pooled = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
        profiles[i] = (pooled[:, None] > taus[None, :]).sum(axis=0) / total
    profiles.sort(axis=0)
    alpha = (1.0 - confidence) / 2.0
    return ([_quantile_sorted(profiles[:, j], alpha) for j in range(taus.size)],
            [_quantile_sorted(profiles[:, j], 1.0 - alpha) for j in range(taus.size)])


# ----------------------------------------------------------------------------------------------
# Factorial designs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """A main effect or interaction of two-level factors: the contrast of cell means (high - low for a main
    effect), its standard error from the pooled within-cell variance, a t CI and p."""

    term: tuple[str, ...]
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    t_pvalue: float
    df: int


def factorial_effects(
    cells: dict[tuple[int, ...], ArrayLike], factors: Sequence[str], confidence: float = 0.95, max_order: int = 3,
) -> list[Effect]:
    """Main effects and interactions of a full 2^k factorial from its cells' values.

    `cells` maps each combination of levels (0 = low, 1 = high, one per factor) to that cell's runs. The
    effect of a term is the mean over cells of sign * cell mean * 2, sign the product of +-1 codes of the
    term's factors (high minus low for a main effect; half the difference of the simple effects for a
    two-way interaction, times two: the usual "effect" of 2^k designs). It equals twice the regression
    coefficient of the effect-coded (+-1) full model, and with unequal n it is the unweighted-means
    (type III) contrast. Standard errors use the pooled within-cell variance with N - 2^k degrees of freedom.
    """
    _check_unit("confidence", confidence)
    k = len(factors)
    combos = [tuple((i >> j) & 1 for j in range(k)) for i in range(2 ** k)]
    if sorted(cells) != sorted(combos):
        raise ValueError(f"a full 2^{k} factorial needs all {2 ** k} cells, got {len(cells)}.")
    samples = {c: [float(v) for v in _sample(cells[c], "cell values")] for c in combos}
    df = sum(len(v) - 1 for v in samples.values())
    if df < 1:
        raise ValueError("factorial effects need at least one cell with 2 or more runs.")
    pooled = math.fsum((v - m) ** 2 for vals in samples.values() for m in [math.fsum(vals) / len(vals)] for v in vals) / df
    t = _t_crit(confidence, df)
    means = {c: math.fsum(v) / len(v) for c, v in samples.items()}
    out = []
    for order in range(1, min(k, max_order) + 1):
        for term in itertools.combinations(range(k), order):
            signs = {c: math.prod(1 if c[j] else -1 for j in term) for c in combos}
            scale = 2.0 / 2 ** k
            est = scale * math.fsum(signs[c] * means[c] for c in combos)
            se = math.sqrt(pooled * math.fsum(1.0 / len(samples[c]) for c in combos)) * scale
            p = float(2.0 * stats.t.sf(abs(est) / se, df)) if se > 0 else math.nan
            out.append(Effect(tuple(factors[j] for j in term), est, se, est - t * se, est + t * se, p, df))
    return out
