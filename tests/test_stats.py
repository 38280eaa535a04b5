"""Tests for hpstudy.reporting.stats against scipy, hand-computed values and R / G*Power references."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from hpstudy.reporting.stats import (
    MIN_BOOTSTRAP_N,
    Placement,
    Summary,
    bootstrap_ci,
    holm,
    place_published,
    prob_improvement,
    seeds_needed,
    summarize,
)

SAMPLE = [0.9, 0.92, 0.95, 0.91]
T_975_3 = 3.182446305284263  # R: qt(0.975, 3)
# R's `sleep` data set: extra sleep for the same 10 patients under drug 1 and drug 2.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_summarize_by_hand():
    s = summarize(SAMPLE)
    assert isinstance(s, Summary) and s.n == 4
    # mean 0.92; squared deviations 0.0004 + 0 + 0.0009 + 0.0001 = 0.0014; var = 0.0014 / 3
    std = math.sqrt(0.0014 / 3)
    assert s.mean == pytest.approx(0.92)
    assert s.std == pytest.approx(std) == pytest.approx(0.0216024690)
    assert s.sem == pytest.approx(std / 2)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.92 - T_975_3 * std / 2, 0.92 + T_975_3 * std / 2))
    assert (s.ci_low, s.ci_high) == pytest.approx((0.8856257, 0.9543743), abs=1e-7)
    half = T_975_3 * std * math.sqrt(1 + 1 / 4)
    assert (s.pi_low, s.pi_high) == pytest.approx((0.92 - half, 0.92 + half))
    assert (s.pi_low, s.pi_high) == pytest.approx((0.8431366, 0.9968634), abs=1e-7)


def test_summarize_matches_scipy():
    x = np.array([0.71, 0.74, 0.69, 0.75, 0.72, 0.70])
    s = summarize(x, confidence=0.9)
    assert s.sem == pytest.approx(stats.sem(x))
    lo, hi = stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi))


def test_summarize_single_value_and_errors():
    s = summarize([0.5])
    assert s.n == 1 and s.mean == 0.5
    assert all(math.isnan(v) for v in (s.std, s.sem, s.ci_low, s.ci_high, s.pi_low, s.pi_high))
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    with pytest.raises(ValueError, match="NaN"):
        summarize([0.5, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        summarize(SAMPLE, confidence=95)


def test_summarize_zero_spread():
    s = summarize([0.3, 0.3, 0.3])
    assert s.std == 0 and s.ci_low == s.ci_high == s.pi_low == s.pi_high == pytest.approx(0.3)


def test_bootstrap_ci_deterministic_and_matches_scipy():
    x = np.array(SAMPLE + [0.93, 0.88, 0.94, 0.90, 0.95, 0.91])
    assert x.size >= MIN_BOOTSTRAP_N
    ci = bootstrap_ci(x, n_resamples=2000, seed=3)
    assert ci == bootstrap_ci(x, n_resamples=2000, seed=3)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(3)
    ).confidence_interval
    assert ci == pytest.approx((ref.low, ref.high))
    assert ci[0] < x.mean() < ci[1]
    assert x.min() <= ci[0] and ci[1] <= x.max()


def test_bootstrap_ci_degenerate_falls_back():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy warning leaks out
        assert bootstrap_ci([0.7] * MIN_BOOTSTRAP_N, n_resamples=500) == pytest.approx((0.7, 0.7))
    assert all(math.isnan(v) for v in bootstrap_ci([0.7]))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.7, float("nan")])


def test_place_published_by_hand():
    p = place_published(0.93, SAMPLE)
    assert isinstance(p, Placement)
    assert p.mean == pytest.approx(0.92) and p.std == pytest.approx(0.0216024690)
    assert p.z == pytest.approx(0.01 / math.sqrt(0.0014 / 3)) == pytest.approx(0.4629100)
    assert p.percentile == pytest.approx(75.0)  # 3 of 4 below, none equal
    assert (p.pi_low, p.pi_high) == pytest.approx((0.8431366, 0.9968634), abs=1e-7)
    # no equivalence margin: at most consistent; p_outside is the t p of the value as one more run
    assert p.inside is True and p.state == "consistent" and p.verdict == "consistent, but 4 seeds cannot tell"
    assert p.p_outside == pytest.approx(2 * stats.t.sf(abs(p.z) / math.sqrt(1 + 1 / 4), 3))
    assert stats.percentileofscore([1, 2, 3, 4], 3, kind="mean") == 62.5
    assert place_published(3, [1, 2, 3, 4]).percentile == pytest.approx(62.5)


def test_place_published_outside_and_edge_cases():
    above, below = place_published(1.0, SAMPLE), place_published(0.8, SAMPLE)
    assert (above.inside, above.state, above.verdict) == (False, "outside", "above the prediction interval")
    assert (below.inside, below.state, below.verdict) == (False, "outside", "below the prediction interval")
    one = place_published(0.9, [0.9])
    assert (one.inside, one.state) == (False, "too few seeds")
    assert math.isnan(one.z) and math.isnan(one.pi_low)
    flat = place_published(0.5, [0.5, 0.5, 0.5])
    assert math.isnan(flat.z) and flat.inside and flat.state == "consistent" and flat.all_equal
    assert flat.verdict == "all 3 seeds equal"
    assert place_published(0.6, [0.5, 0.5]).verdict == "above all seeds, which are equal"
    with pytest.raises(ValueError, match="published"):
        place_published(float("nan"), SAMPLE)


def test_paired_compare_sleep_matches_r():
    # R: t.test(SLEEP_1, SLEEP_2, paired = TRUE)
    from hpstudy.reporting.stats import compare

    r = compare(SLEEP_1, SLEEP_2, paired=True)
    assert r.mean_diff == pytest.approx(-1.58)
    assert (r.ci_low, r.ci_high) == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)
    assert r.t_pvalue == pytest.approx(0.002833, abs=1e-6)


def test_prob_improvement_by_hand():
    # pairs (a_i, b_j): a=1 beats only 0 -> 1; a=2 ties 2 twice, beats 0 -> 2; a=3 beats all -> 3
    assert prob_improvement([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)
    assert prob_improvement([1, 2, 3], [4, 5, 6]) == 0.0


def test_holm_matches_r():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm")
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_nan_clip_and_shape():
    out = holm([0.5, 0.6, np.nan])
    assert out[:2] == pytest.approx([1.0, 1.0]) and np.isnan(out[2])
    assert holm([]).shape == (0,)
    assert holm([[0.01, 0.02], [0.03, 0.04]]).shape == (2, 2)
    p = np.array([0.002, 0.2, 0.011, 0.03, 0.9])
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and np.all(adj <= 1)
    with pytest.raises(ValueError, match="pvalues"):
        holm([0.1, 1.5])


@pytest.mark.parametrize(
    "difference, std, paired, expected",
    [
        (0.5, 1.0, True, 34),  # G*Power, matched pairs, d = 0.5
        (1.0, 1.0, True, 10),  # G*Power, matched pairs, d = 1
        (0.5, 1.0, False, 64),  # G*Power / Cohen, two groups, d = 0.5
        (0.8, 1.0, False, 26),  # G*Power / Cohen, two groups, d = 0.8
        (-1.0, 2.0, True, 34),  # sign and scale only enter through |difference| / std
    ],
)
def test_seeds_needed_known_values(difference, std, paired, expected):
    assert seeds_needed(difference, std, paired=paired) == expected


def test_seeds_needed_is_minimal():
    n = seeds_needed(0.3, 1.0)

    def power(k):
        t = stats.t.ppf(0.975, k - 1)
        return stats.nct.sf(t, k - 1, 0.3 * math.sqrt(k)) + stats.nct.cdf(-t, k - 1, 0.3 * math.sqrt(k))

    assert power(n) >= 0.8 > power(n - 1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"difference": 0.0, "std": 1.0}, "difference"),
        ({"difference": 0.5, "std": 0.0}, "std"),
        ({"difference": 0.5, "std": 1.0, "power": 1.0}, "power"),
        ({"difference": 0.5, "std": 1.0, "alpha": 0.0}, "alpha"),
    ],
)
def test_seeds_needed_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        seeds_needed(**kwargs)


def test_seeds_needed_cap():
    with pytest.raises(ValueError, match="100000"):
        seeds_needed(0.001, 1.0)
