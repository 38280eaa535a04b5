"""Pure statistics for multi-seed studies: summaries, intervals, comparisons, power, aggregates.

Every function takes plain sequences / arrays of floats and returns numbers; nothing
here plots, prints or touches files. Inputs containing NaN are rejected: callers drop
failed runs explicitly so that the number of seeds is never silently reduced.

Sums, means and variances are computed with scalar `math` (fsum, sqrt, log, exp) rather than
numpy's vectorised kernels, whose last bits may depend on the CPU's SIMD width: a printed
number must not change with the machine that prints it.
"""

from __future__ import annotations

import decimal
import functools
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, optimize, stats

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
    inside: bool  # not outside the prediction interval (reproduced or consistent)
    verdict: str
    # "reproduced" (equivalent within +-margin: TOST on the seeds' mean), "consistent" (inside the prediction
    # interval, but the seeds cannot tell it equivalent), "outside" (beyond the prediction interval) or
    # "too few seeds".
    state: str = ""
    n: int = 0
    p_beyond_range: float = math.nan  # probability that one more run lands beyond the seeds' range: 2/(n+1)
    p_outside: float = math.nan  # two-sided p of the published value as one more run (t on the interval scale)
    tost_p: float = math.nan  # TOST p of |mean - published| < margin (NaN without a margin)
    margin: float = math.nan  # the equivalence margin (the study's smallest effect), in the metric's units
    rounded: tuple[float, float] = (math.nan, math.nan)  # the published value's rounding interval
    ci90_low: float = math.nan  # the (1 - 2 alpha) t interval of the mean that TOST checks against the margin
    ci90_high: float = math.nan
    all_equal: bool = False  # every seed gave the same value: no spread, no interval


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


def summarize(
    values: ArrayLike, confidence: float = 0.95, scale: str = "linear", bounds: tuple[float, float] | None = None
) -> Summary:
    """Summarize seeds: mean, std (ddof=1), sem, t CI of the mean, prediction interval of one more run.

    ``scale`` says where the intervals are computed: "linear" (Student t on the values), "logit" (for
    fractions such as accuracies: t intervals of the logits, mapped back, so they stay inside (0, 1)) or
    "log" (for positive values such as losses and times: they stay > 0). On a transformed scale the CI
    is that of the mean of the transformed values, mapped back (a median-like centre: it need not contain
    the arithmetic mean when the seeds are very spread); the prediction interval keeps its meaning, since
    a monotone map preserves which share of new runs falls inside. mean, std and sem are always on the
    values themselves. ``bounds`` (low, high): the range a count cannot leave (epochs run: 1 to the epochs
    allowed); both intervals are clipped to it, which keeps their coverage since the truth lies inside.
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
    if bounds is not None:
        inner = back
        back = lambda v: min(max(inner(v), bounds[0]), bounds[1])  # noqa: E731
    return Summary(
        n,
        mean,
        std,
        sem,
        back(centre - half_ci),
        back(centre + half_ci),
        back(centre - half_pi),
        back(centre + half_pi),
    )


def bootstrap_ci(
    values: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
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
                (x,),
                np.mean,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                rng=np.random.default_rng(seed),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return (low, high)


def rounding_interval(value: float, decimals: int | None = None) -> tuple[float, float]:
    """The interval a printed number stands for: value +- half a unit of its last printed decimal.

    `decimals` defaults to the decimals of the shortest text of the float (0.982 -> 3: [0.9815, 0.9825])."""
    if decimals is None:
        exponent = decimal.Decimal(repr(float(value))).normalize().as_tuple().exponent
        decimals = max(0, -int(exponent)) if isinstance(exponent, int) else 0
    half = 0.5 * 10.0 ** (-decimals)
    return (float(value) - half, float(value) + half)


def tost_mean(values: ArrayLike, low: float, high: float) -> float:
    """Two one-sided t-tests that the mean lies in (low, high): the larger one-sided p (NaN below 2 values
    or with zero spread, where there is nothing to test)."""
    x = [float(v) for v in _sample(values)]
    n = len(x)
    mean, sd = _mean_sd(x)
    if n < 2 or not sd > 0:
        return math.nan
    se = sd / math.sqrt(n)
    p_low = float(stats.t.sf((mean - low) / se, n - 1))
    p_high = float(stats.t.cdf((mean - high) / se, n - 1))
    return max(p_low, p_high)


def place_published(
    published: float,
    values: ArrayLike,
    confidence: float = 0.95,
    scale: str = "linear",
    margin: float | None = None,
    rounded: tuple[float, float] | None = None,
) -> Placement:
    """Place a published result against the seeds: reproduced, consistent (the seeds cannot tell), or outside.

    - outside: the whole rounding interval `rounded` of the published value (default: the value itself) lies
      beyond the ``confidence`` prediction interval for one more run (Student t on ``scale``); ``p_outside``
      is the two-sided p of its nearest point as one more run (below 1 - confidence exactly when outside, so
      a caller can correct it for the number of published values);
    - reproduced: not outside, and two one-sided tests (TOST, alpha = 1 - confidence) say the seeds' mean is
      within +- `margin` of every point of the rounding interval: equivalently, the (1 - 2 alpha) t interval
      of the mean (``ci90_low``, ``ci90_high``) lies within [high - margin, low + margin];
    - consistent: neither; the seeds cannot tell. Without a margin nothing is called reproduced.
    ``p_beyond_range`` = 2 / (n + 1) is the chance that one more run lands beyond all n seeds. With fewer
    than 2 seeds the state is "too few seeds"; when every seed is equal ``all_equal`` says so (no interval:
    a published value equal to them is consistent, any other outside).
    """
    if not math.isfinite(published):
        raise ValueError(f"published must be a finite number, got {published!r}.")
    x = _sample(values)
    s = summarize(x, confidence, scale)
    n = s.n
    lo_r, hi_r = rounded if rounded is not None else (float(published), float(published))
    z = (published - s.mean) / s.std if n >= 2 and s.std > 0 else math.nan
    percentile = float(stats.percentileofscore(x, published, kind="mean"))
    alpha = 1.0 - confidence
    all_equal = n >= 2 and s.std == 0
    p_out = tost = ci_lo = ci_hi = math.nan
    if n < 2:
        state, verdict = "too few seeds", "too few seeds"
    elif all_equal:
        state = "consistent" if lo_r <= s.mean <= hi_r else "outside"
        p_out = 1.0 if state == "consistent" else 0.0
        verdict = (
            f"all {n} seeds equal"
            if state == "consistent"
            else ("above all seeds, which are equal" if lo_r > s.mean else "below all seeds, which are equal")
        )
    else:
        centre, spread = _mean_sd([_to_scale(float(v), scale) for v in x])
        nearest = min(max(centre, _to_scale(lo_r, scale)), _to_scale(hi_r, scale))
        t_pred = abs(nearest - centre) / (spread * math.sqrt(1.0 + 1.0 / n))
        p_out = float(2.0 * stats.t.sf(t_pred, n - 1))
        half = _t_crit(1.0 - 2.0 * alpha, n - 1) * s.std / math.sqrt(n)
        ci_lo, ci_hi = s.mean - half, s.mean + half
        if margin is not None and margin > 0:
            tost = tost_mean(x, hi_r - margin, lo_r + margin)
        if hi_r < s.pi_low or lo_r > s.pi_high:
            state = "outside"
            verdict = "above the prediction interval" if lo_r > s.pi_high else "below the prediction interval"
        elif math.isfinite(tost) and tost < alpha:
            state, verdict = "reproduced", f"reproduced (equivalent within +-{margin:.3g})"
        else:
            state, verdict = "consistent", f"consistent, but {n} seeds cannot tell"
    return Placement(
        float(published),
        s.mean,
        s.std,
        z,
        percentile,
        s.pi_low,
        s.pi_high,
        state in ("reproduced", "consistent"),
        verdict,
        state,
        n,
        2.0 / (n + 1),
        p_out,
        tost,
        math.nan if margin is None else float(margin),
        (lo_r, hi_r),
        ci_lo,
        ci_hi,
        all_equal,
    )


def seeds_for_equivalence(
    margin: float, sd: float, df: int, alpha: float = 0.05, confidence: float = 0.95
) -> tuple[int | None, int | None, int | None]:
    """Seeds whose (1 - 2 alpha) t interval of the mean is narrower than +-margin (what TOST needs when the
    published value equals the mean): for the sd, and over the sd's chi-square interval (None: over 100,000).
    Prospective: from a stated margin and the sd, never from an observed gap."""
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}.")
    lo, hi = sd_interval(sd, df, confidence)

    def narrow(n: int, s: float) -> bool:
        return _t_crit(1.0 - 2.0 * alpha, n - 1) * s / math.sqrt(n) < margin

    def need(s: float) -> int | None:
        if not math.isfinite(s):
            return None
        lo_n, hi_n = 1, 2  # narrow(hi_n) is probed; lo_n is known too wide (n = 1 has no interval)
        while not narrow(hi_n, s):
            if hi_n >= _MAX_SEEDS:
                return None
            lo_n, hi_n = hi_n, min(2 * hi_n, _MAX_SEEDS)
        while hi_n - lo_n > 1:
            mid = (lo_n + hi_n) // 2
            lo_n, hi_n = (lo_n, mid) if narrow(mid, s) else (mid, hi_n)
        return hi_n

    return need(sd), need(lo), need(hi)


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
    prob_high: float  # or at complete separation (P = 0 or 1), where every resample gives the same
    pooled: bool = False  # the t-test used a variance pooled over many configurations (few seeds)


def rank_min_p(n_a: int, n_b: int, paired: bool) -> float:
    """Smallest attainable two-sided exact p: Wilcoxon signed-rank 2 / 2^n, Mann-Whitney 2 / C(n_a + n_b, n_a)."""
    if paired:
        return min(1.0, 2.0 / 2.0**n_a) if n_a >= 1 else 1.0
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
    a: ArrayLike,
    b: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
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


# Up to this many ways to split two samples, the Mann-Whitney p is exact (every split enumerated, ties
# included): 20 at 3 + 3 seeds, where the normal approximation gives 0.064 for a p that cannot go below 0.1.
EXACT_SPLITS = 20_000


def mann_whitney_p(x: ArrayLike, y: ArrayLike) -> float:
    """Two-sided Mann-Whitney U p: exact by enumerating all splits when there are at most EXACT_SPLITS,
    else scipy's default (exact without ties at small n, the normal approximation otherwise)."""
    x, y = _sample(x, "a"), _sample(y, "b")
    if math.comb(x.size + y.size, x.size) <= EXACT_SPLITS:
        method = stats.PermutationMethod(n_resamples=np.inf)
        return float(stats.mannwhitneyu(x, y, alternative="two-sided", method=method).pvalue)
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def pooled_variance(groups: Sequence[ArrayLike]) -> tuple[float, int]:
    """The within-group variance pooled over groups of 2+ values, and its degrees of freedom (sum of n - 1)."""
    num, df = [], 0
    for g in groups:
        x = [float(v) for v in _sample(g)]
        if len(x) >= 2:
            mean = math.fsum(x) / len(x)
            num.append(math.fsum((v - mean) ** 2 for v in x))
            df += len(x) - 1
    return (math.fsum(num) / df if df else math.nan), df


def compare(
    a: ArrayLike, b: ArrayLike, paired: bool = False, confidence: float = 0.95, pooled: tuple[float, int] | None = None
) -> Difference:
    """Compare configurations a and b (differences a - b).

    paired=False (runs share no randomness): Welch's t-test and its CI, Mann-Whitney U. paired=True (common
    random numbers, aligned by seed index): the paired t-test and Wilcoxon's signed-rank test. t results
    are NaN for fewer than 2 values per side or zero spread; rank p-values NaN where scipy cannot compute
    them or all differences are zero. ``pooled`` = (variance, df) from `pooled_variance` over many
    configurations replaces each pair's own variances (unpaired only): a t-test on that variance and df, for
    few seeds, where Welch's df from two groups of 3 leaves the test without power and a group with no
    spread makes it overconfident.
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
        elif not paired and pooled is not None and pooled[1] >= 1 and min(x.size, y.size) >= 1:
            se2 = pooled[0] * (1.0 / x.size + 1.0 / y.size)
            if se2 > 0:
                half = _t_crit(confidence, pooled[1]) * math.sqrt(se2)
                ci_low, ci_high = mean_diff - half, mean_diff + half
                t_p = float(2.0 * stats.t.sf(abs(mean_diff) / math.sqrt(se2), pooled[1]))
            if np.any(x != y[0]) or np.any(y != y[0]):
                r_p = mann_whitney_p(x, y)
        elif not paired and min(x.size, y.size) >= 2:
            va, vb = _mean_sd(list(map(float, x)))[1] ** 2, _mean_sd(list(map(float, y)))[1] ** 2
            se2 = va / x.size + vb / y.size
            if se2 > 0:
                df = se2**2 / ((va / x.size) ** 2 / (x.size - 1) + (vb / y.size) ** 2 / (y.size - 1))
                half = _t_crit(confidence, df) * math.sqrt(se2)
                ci_low, ci_high = mean_diff - half, mean_diff + half
                t_p = float(2.0 * stats.t.sf(abs(mean_diff) / math.sqrt(se2), df))
            if np.any(x != y[0]) or np.any(y != y[0]):
                r_p = mann_whitney_p(x, y)
    r_p = r_p if math.isfinite(r_p) else nan
    prob = prob_improvement(x, y)
    # at complete separation every resample separates too: the percentile interval is the point itself
    lo, hi = prob_improvement_ci(x, y, confidence) if 0.0 < prob < 1.0 else (nan, nan)
    return Difference(
        paired,
        int(x.size),
        int(y.size),
        mean_diff,
        ci_low,
        ci_high,
        t_p,
        r_p,
        rank_min_p(int(x.size), int(y.size), paired),
        prob,
        lo,
        hi,
        pooled is not None and not paired,
    )


# Gauss-Legendre nodes for the shared normal term of Dunnett's integral (|z| <= 12 holds all but 1e-32 of it).
_Z_NODES, _Z_WEIGHTS = (x * 12.0 for x in np.polynomial.legendre.leggauss(256))
_Z_WEIGHTS = _Z_WEIGHTS * stats.norm.pdf(_Z_NODES)


def _dunnett_coverage(d: float, comparisons: int, df: float, rho: float = 0.5) -> float:
    """P(T_1 <= d, ..., T_m <= d) for m = `comparisons` t statistics with `df` degrees of freedom whose
    normal parts are equicorrelated with correlation `rho` (rho >= 0): the integral over the shared normal
    term z and over s = sqrt(chi2_df / df) of prod_j Phi((d s - sqrt(rho) z) / sqrt(1 - rho))."""
    a, b = math.sqrt(rho), math.sqrt(1.0 - rho)

    def given_s(s: float) -> float:  # the inner integral over z, by fixed quadrature
        return float(np.dot(_Z_WEIGHTS, stats.norm.cdf((d * s - a * _Z_NODES) / b) ** comparisons))

    if math.isinf(df):
        return given_s(1.0)
    s_law = stats.chi(df, scale=1.0 / math.sqrt(df))
    lo, hi = float(s_law.ppf(1e-15)), float(s_law.isf(1e-15))
    value, _ = integrate.quad(
        lambda s: s_law.pdf(s) * given_s(s), lo, hi, points=[1.0] if lo < 1.0 < hi else None, epsabs=1e-13, limit=200
    )
    return value


@functools.lru_cache(maxsize=256)
def dunnett_one_sided(comparisons: int, df: float, confidence: float = 0.95, rho: float = 0.5) -> float:
    """The exact one-sided critical value of Dunnett's many-to-one comparisons: the d with
    P(max_j T_j <= d) = confidence over `comparisons` t statistics with `df` degrees of freedom (math.inf:
    normal) and equicorrelated normal parts (rho; 1/2 when every mean has the same n). Computed by
    numerical integration (fixed Gauss-Legendre quadrature over the shared normal term, adaptive
    quadrature over the chi-distributed standard deviation) and root finding: deterministic, no Monte
    Carlo. One comparison: the one-sided t. It lies between the one-sided t (no adjustment) and the
    one-sided t at (1 - confidence) / comparisons (Bonferroni)."""
    _check_unit("confidence", confidence)
    if comparisons < 1 or not df > 0 or not 0.0 <= rho < 1.0:
        raise ValueError(
            f"Dunnett's critical value needs comparisons >= 1, df > 0 and 0 <= rho < 1; got comparisons="
            f"{comparisons!r}, df={df!r}, rho={rho!r}."
        )
    law = stats.norm if math.isinf(df) else stats.t(df)
    lo = float(law.ppf(confidence))
    hi = float(law.ppf(1.0 - (1.0 - confidence) / comparisons))
    if comparisons == 1 or hi - lo < 1e-12:
        return hi
    return float(optimize.brentq(lambda d: _dunnett_coverage(d, comparisons, df, rho) - confidence, lo, hi, xtol=1e-12))


def mcb_intervals(
    means: Sequence[float],
    ns: Sequence[int],
    variance: float,
    df: int,
    confidence: float = 0.95,
) -> list[tuple[float, float]]:
    """Hsu's multiple comparisons with the best (higher is better): for each configuration, a simultaneous
    interval for its mean minus the best mean of the others, constrained to contain 0 at one end
    ([min(0, .), max(0, .)]). A configuration whose upper end is above 0 may be the best; one whose lower end
    is 0 is the best. `variance` with `df` degrees of freedom is common to all (pooled); the critical value
    is Dunnett's exact one-sided one for k - 1 comparisons with correlation 1/2 (`dunnett_one_sided`), exact
    when every configuration has the same n. Unequal n: the same critical value with each pair's own
    standard error sqrt(variance (1/n_i + 1/n_j)), the usual approximation (as Tukey-Kramer is for Tukey's
    range; close when the n differ little)."""
    _check_unit("confidence", confidence)
    k = len(means)
    if k < 2 or len(ns) != k or df < 1 or not variance >= 0:
        raise ValueError("MCB needs at least two configurations, one n each, a variance >= 0 and df >= 1.")
    d = dunnett_one_sided(k - 1, float(df), confidence)
    out = []
    for i in range(k):
        gaps = [
            (means[i] - means[j], d * math.sqrt(variance * (1.0 / ns[i] + 1.0 / ns[j]))) for j in range(k) if j != i
        ]
        upper = min(g + h for g, h in gaps)
        lower = min(g - h for g, h in gaps)
        out.append((min(0.0, lower), max(0.0, upper)))
    return out


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


def seeds_needed(difference: float, std: float, power: float = 0.8, alpha: float = 0.05, paired: bool = True) -> int:
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
    return (
        sd * math.sqrt(df / float(stats.chi2.ppf(1.0 - alpha / 2.0, df))),
        sd * math.sqrt(df / float(stats.chi2.ppf(alpha / 2.0, df))),
    )


def seeds_for_effect(
    effect: float,
    sd: float,
    df: int,
    power: float = 0.8,
    alpha: float = 0.05,
    paired: bool = False,
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
# Aggregates over tasks (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice", the
# definitions the rliable package implements). A report does not aggregate over the configurations of one
# study: configurations are not tasks. These are kept for aggregates across datasets or studies.
# ----------------------------------------------------------------------------------------------


def iqm(values: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50% of the values (scipy's trim_mean, 25% cut each end).

    rliable computes it as scipy.stats.trim_mean(scores, 0.25, axis=None) over every run of every task."""
    x = np.sort(_sample(values))
    cut = int(0.25 * x.size)  # scipy.stats.trim_mean's rule
    kept = x[cut : x.size - cut]
    return math.fsum(float(v) for v in kept) / kept.size


def stratified_bootstrap_ci(
    scores: Sequence[ArrayLike],
    statistic=iqm,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    min_n: int = MIN_BOOTSTRAP_N,
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
    scores: Sequence[ArrayLike],
    thresholds: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    min_n: int = MIN_BOOTSTRAP_N,
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
    return (
        [_quantile_sorted(profiles[:, j], alpha) for j in range(taus.size)],
        [_quantile_sorted(profiles[:, j], 1.0 - alpha) for j in range(taus.size)],
    )


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
    holm_p: float = math.nan  # set by the caller: Holm over its family of terms, on the scale it tests


def to_scale(value: float, scale: str) -> float:
    """A value on an interval scale ("linear", "logit" for fractions, "log" for positive values)."""
    return _to_scale(float(value), scale)


def simple_effects(
    cells: dict[tuple[int, ...], ArrayLike],
    factors: Sequence[str],
    factor: str,
    within: str,
    confidence: float = 0.95,
) -> list[Effect]:
    """The effect of `factor` (high - low) at each level of `within` (0 then 1), averaged over the other
    factors of a full 2^k factorial, with the pooled within-cell variance: what a main effect hides when the
    two interact. Each Effect's term is (factor, within) and its position in the list is the level."""
    _check_unit("confidence", confidence)
    i, j = factors.index(factor), factors.index(within)
    samples = {c: [float(v) for v in _sample(cells[c], "cell values")] for c in cells}
    df = sum(len(v) - 1 for v in samples.values())
    if df < 1:
        raise ValueError("simple effects need at least one cell with 2 or more runs.")
    pooled = (
        math.fsum((v - m) ** 2 for vals in samples.values() for m in [math.fsum(vals) / len(vals)] for v in vals) / df
    )
    t = _t_crit(confidence, df)
    out = []
    for level in (0, 1):
        part = [c for c in samples if c[j] == level]
        scale = 2.0 / len(part)
        est = scale * math.fsum((1 if c[i] else -1) * math.fsum(samples[c]) / len(samples[c]) for c in part)
        se = math.sqrt(pooled * math.fsum(1.0 / len(samples[c]) for c in part)) * scale
        p = float(2.0 * stats.t.sf(abs(est) / se, df)) if se > 0 else math.nan
        out.append(Effect((factor, within), est, se, est - t * se, est + t * se, p, df))
    return out


def factorial_effects(
    cells: dict[tuple[int, ...], ArrayLike],
    factors: Sequence[str],
    confidence: float = 0.95,
    max_order: int = 3,
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
    combos = [tuple((i >> j) & 1 for j in range(k)) for i in range(2**k)]
    if sorted(cells) != sorted(combos):
        raise ValueError(f"a full 2^{k} factorial needs all {2**k} cells, got {len(cells)}.")
    samples = {c: [float(v) for v in _sample(cells[c], "cell values")] for c in combos}
    df = sum(len(v) - 1 for v in samples.values())
    if df < 1:
        raise ValueError("factorial effects need at least one cell with 2 or more runs.")
    pooled = (
        math.fsum((v - m) ** 2 for vals in samples.values() for m in [math.fsum(vals) / len(vals)] for v in vals) / df
    )
    t = _t_crit(confidence, df)
    means = {c: math.fsum(v) / len(v) for c, v in samples.items()}
    out = []
    for order in range(1, min(k, max_order) + 1):
        for term in itertools.combinations(range(k), order):
            signs = {c: math.prod(1 if c[j] else -1 for j in term) for c in combos}
            scale = 2.0 / 2**k
            est = scale * math.fsum(signs[c] * means[c] for c in combos)
            se = math.sqrt(pooled * math.fsum(1.0 / len(samples[c]) for c in combos)) * scale
            p = float(2.0 * stats.t.sf(abs(est) / se, df)) if se > 0 else math.nan
            out.append(Effect(tuple(factors[j] for j in term), est, se, est - t * se, est + t * se, p, df))
    return out
