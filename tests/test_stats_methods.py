"""hpstudy.reporting.stats' methods for bounded intervals, comparisons, seeds for an effect, aggregates and factorial
effects, against scipy, hand computations and the published definitions (rliable, statsmodels where
installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sstats

from hpstudy.reporting import stats

BIMODAL = [0.831, 0.682, 0.570]  # keras/tanh at learning rate 4 in the Fabrizio runs


def test_bounded_summaries_stay_in_range_and_match_the_transformed_t_interval():
    lin = stats.summarize(BIMODAL)
    assert lin.pi_high > 1  # the plain t interval leaves [0, 1]: the defect
    s = stats.summarize(BIMODAL, scale="logit")
    assert 0 < s.pi_low < s.ci_low < s.ci_high < s.pi_high < 1
    assert (s.mean, s.std) == pytest.approx((lin.mean, lin.std))
    logits = np.log(np.array(BIMODAL) / (1 - np.array(BIMODAL)))
    t = sstats.t.ppf(0.975, 2)
    half = t * logits.std(ddof=1) * math.sqrt(1 + 1 / 3)
    expit = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert (s.pi_low, s.pi_high) == pytest.approx((expit(logits.mean() - half), expit(logits.mean() + half)), rel=1e-12)
    losses = stats.summarize([0.05, 0.6, 1.9], scale="log")
    assert losses.pi_low > 0 and losses.ci_low > 0
    exact = stats.summarize([1.0, 1.0, 0.99], scale="logit")  # a value at the bound stays finite
    assert 0 < exact.pi_low < exact.pi_high <= 1
    with pytest.raises(ValueError, match="scale"):
        stats.summarize(BIMODAL, scale="probit")


def test_placement_reproduced_needs_equivalence_not_only_a_wide_interval():
    """Defect 1: inside a prediction interval too wide to show anything is 'consistent', never 'reproduced'."""
    nielsen = [0.5, 0.95, 0.9]  # three spread-out seeds: the interval spans most of [0, 1]
    wide = stats.place_published(0.8881, nielsen, scale="logit", margin=0.002)
    assert wide.pi_low < 0.5 and wide.pi_high > 0.98
    assert wide.state == "consistent" and wide.inside and wide.tost_p > 0.05
    tight = [0.9765, 0.977, 0.9768, 0.9772, 0.9766, 0.9769, 0.9771, 0.9767, 0.977, 0.9768]
    same = stats.place_published(0.9768, tight, scale="logit", margin=0.002)
    assert same.state == "reproduced" and same.tost_p < 0.05
    # TOST against statsmodels where it is installed, else by hand with scipy's t
    low, high = 0.9768 - 0.002, 0.9768 + 0.002
    try:
        from statsmodels.stats.weightstats import DescrStatsW

        ref = DescrStatsW(np.array(tight)).ttost_mean(low, high)[0]
    except ImportError:
        x = np.array(tight)
        se = x.std(ddof=1) / math.sqrt(x.size)
        ref = max(sstats.t.sf((x.mean() - low) / se, x.size - 1), sstats.t.cdf((x.mean() - high) / se, x.size - 1))
    assert same.tost_p == pytest.approx(ref, rel=1e-9)
    # no margin (a loss): never reproduced; far away: outside
    assert stats.place_published(0.9768, tight, scale="logit").state == "consistent"
    assert stats.place_published(0.9716, tight, scale="logit", margin=0.002).state == "outside"


def test_published_rounding_interval_moves_verdicts():
    """Defect 3: 98.2 stands for [98.15, 98.25); a value outside only through its rounding is not outside."""
    assert stats.rounding_interval(0.982) == pytest.approx((0.9815, 0.9825))
    assert stats.rounding_interval(97.16) == pytest.approx((97.155, 97.165))
    seeds = [0.9830, 0.9832, 0.9831, 0.9833, 0.9830, 0.9832, 0.9831, 0.9829, 0.9832, 0.9830]
    point = stats.place_published(0.98, seeds, scale="logit", margin=0.002)
    assert point.state == "outside"  # 98.00 exactly is below the tight interval
    rounded = stats.place_published(0.98, seeds, scale="logit", margin=0.002, rounded=stats.rounding_interval(0.98, 2))
    # "98%" stands for [97.5, 98.5), which holds the seeds' mean: not outside; and a number rounded that coarsely
    # cannot be shown within +-0.2 pp of anything, so it is not reproduced either
    assert rounded.state == "consistent" and rounded.p_outside == 1.0 and rounded.tost_p > 0.05


def test_bounded_counts_and_separated_probabilities_stay_in_range():
    """Defect 6: epochs run 21.3 [0.2, 42.5] (a PI down to -20.9) and P(a > b) = 1.00 [1.00, 1.00]."""
    epochs = [1, 1, 42]
    free, bounded = stats.summarize(epochs), stats.summarize(epochs, bounds=(1, 42))
    assert free.pi_low < 0 and free.ci_low < 1
    assert 1 <= bounded.pi_low and bounded.pi_high <= 42 and 1 <= bounded.ci_low <= bounded.ci_high <= 42
    assert (bounded.mean, bounded.std) == (free.mean, free.std)
    a, b = [0.97 + 0.001 * i for i in range(10)], [0.95 + 0.001 * i for i in range(10)]
    separated = stats.compare(a, b)
    assert separated.prob_improvement == 1.0 and math.isnan(separated.prob_low) and math.isnan(separated.prob_high)


def test_small_n_uses_exact_rank_p_and_a_pooled_variance():
    """Defect 5: at 3 + 3 seeds the normal approximation gives p = 0.064 below the exact minimum 0.1; and a
    group whose seeds are all equal no longer makes the t-test rest on one group's 2 degrees of freedom."""
    chance, good = [0.1135] * 3, [0.97, 0.96, 0.98]
    assert stats.mann_whitney_p(chance, good) == pytest.approx(0.1)
    assert stats.mann_whitney_p([1, 2, 2], [2, 3, 4]) == pytest.approx(
        sstats.mannwhitneyu([1, 2, 2], [2, 3, 4], method=sstats.PermutationMethod(n_resamples=np.inf)).pvalue
    )
    groups = [chance, good, [0.5, 0.9, 0.2], [0.96, 0.97, 0.975]]
    var, df = stats.pooled_variance(groups)
    assert df == 8 and var == pytest.approx(np.mean([np.var(g, ddof=1) for g in groups]))
    pooled = stats.compare(good, chance, pooled=(var, df))
    se = math.sqrt(var * (1 / 3 + 1 / 3))
    assert pooled.pooled and pooled.t_pvalue == pytest.approx(2 * sstats.t.sf(abs(pooled.mean_diff) / se, 8))
    assert not stats.compare(good, chance).pooled


def test_multiple_comparisons_with_the_best_by_hand():
    """Selection-corrected best at small n: Hsu's MCB with a pooled variance (Dunnett's one-sided critical
    value for k - 1 = 2 comparisons and df = 6: 2.34 in Dunnett's 1955 table 1a)."""
    means, ns, var, df = [0.97, 0.965, 0.90], [3, 3, 3], 0.0001, 6
    d = stats.dunnett_one_sided(2, df)
    assert d == pytest.approx(2.34, abs=0.005) and sstats.t.ppf(0.95, df) < d < sstats.t.ppf(1 - 0.05 / 2, df)
    h = d * math.sqrt(var * (2 / 3))
    got = stats.mcb_intervals(means, ns, var, df)
    assert got[0] == pytest.approx((min(0, 0.005 - h), max(0, 0.005 + h)))  # the top one, vs the second
    assert got[1] == pytest.approx((min(0, -0.005 - h), max(0, -0.005 + h)))
    assert got[2][1] == 0.0  # 7 pp below the best: ruled out
    assert got[0][1] > 0 and got[1][1] > 0  # 0.5 pp apart with sd 1 pp and 3 seeds: either may be the best


def test_seeds_for_equivalence_is_prospective_and_minimal():
    """Defect 7: the seeds an equivalence test needs follow from the margin and the sd, not an observed gap."""
    n, n_low, n_high = stats.seeds_for_equivalence(0.002, 0.002, 9)
    t = lambda k: sstats.t.ppf(0.95, k - 1) * 0.002 / math.sqrt(k)  # noqa: E731 - the 90% half-width
    assert t(n) < 0.002 <= t(n - 1)
    assert n_low <= n <= n_high


def test_welch_comparison_matches_scipy():
    a, b = [0.971, 0.975, 0.969, 0.973], [0.965, 0.968, 0.972]
    r = stats.compare(a, b)
    ref = sstats.ttest_ind(a, b, equal_var=False)
    assert r.t_pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert r.rank_pvalue == pytest.approx(sstats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert r.rank_min_p == pytest.approx(2 / math.comb(7, 4))
    assert r.prob_improvement == pytest.approx(sum((x > y) + 0.5 * (x == y) for x in a for y in b) / 12)
    assert math.isnan(r.prob_low)  # fewer than MIN_BOOTSTRAP_N per side: no bootstrap interval


def test_paired_comparison_under_common_random_numbers_matches_scipy():
    a = [1.2, 2.3, 3.1, 4.8, 5.0, 6.1]
    b = [1.0, 2.0, 3.3, 4.1, 4.9, 5.5]
    r = stats.compare(a, b, paired=True)
    assert r.t_pvalue == pytest.approx(sstats.ttest_rel(a, b).pvalue)
    assert r.rank_pvalue == pytest.approx(sstats.wilcoxon(a, b).pvalue)
    assert r.rank_min_p == pytest.approx(2 / 2**6)
    assert stats.rank_min_p(3, 0, True) == pytest.approx(0.25) and stats.rank_min_p(3, 3, False) == pytest.approx(0.1)


def test_probability_of_improvement_interval_is_deterministic_and_covers_the_estimate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.972, 0.002, 12), rng.normal(0.970, 0.002, 12)
    lo, hi = stats.prob_improvement_ci(a, b)
    assert (lo, hi) == stats.prob_improvement_ci(a, b)
    assert 0 <= lo <= stats.prob_improvement(a, b) <= hi <= 1


def test_seeds_for_an_effect_follow_the_sd_interval():
    adv = stats.seeds_for_effect(0.002, 0.0015, 18)
    lo, hi = stats.sd_interval(0.0015, 18)
    assert (lo, hi) == pytest.approx(
        (0.0015 * math.sqrt(18 / sstats.chi2.ppf(0.975, 18)), 0.0015 * math.sqrt(18 / sstats.chi2.ppf(0.025, 18)))
    )
    assert adv.n == stats.seeds_needed(0.002, 0.0015, paired=False)
    assert adv.n_low == stats.seeds_needed(0.002, lo, paired=False) <= adv.n <= adv.n_high
    assert adv.n_high == stats.seeds_needed(0.002, hi, paired=False)
    assert stats.binomial_se(0.97, 10_000) == pytest.approx(math.sqrt(0.97 * 0.03 / 10_000))
    with pytest.raises(ValueError, match="effect"):
        stats.seeds_for_effect(0.0, 0.001, 4)


def test_iqm_is_scipys_quarter_trimmed_mean_as_rliable_defines_it():
    x = [0.1, 0.5, 0.91, 0.93, 0.95, 0.96, 0.97, 0.98]
    assert stats.iqm(x) == pytest.approx(sstats.trim_mean(x, 0.25))
    assert stats.iqm(x) == pytest.approx((0.91 + 0.93 + 0.95 + 0.96) / 4)
    assert stats.iqm([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(sstats.trim_mean([1, 2, 3, 4, 100], 0.25))


def test_stratified_bootstrap_resamples_within_each_task():
    tasks = [[0.90, 0.91, 0.92, 0.93], [0.10, 0.11, 0.12, 0.13], [0.50, 0.51, 0.52, 0.53]]
    lo, hi = stats.stratified_bootstrap_ci(tasks, stats.iqm, n_resamples=500, seed=0)
    assert (lo, hi) == stats.stratified_bootstrap_ci(tasks, stats.iqm, n_resamples=500, seed=0)
    assert lo <= stats.iqm(sum(tasks, [])) <= hi
    # resampling within tasks keeps 4 runs of each: the IQM can never leave the middle task's range
    assert 0.13 <= lo and hi <= 0.90
    assert all(math.isnan(v) for v in stats.stratified_bootstrap_ci([[0.9, 0.8]], stats.iqm))


def test_performance_profile_is_the_share_of_runs_above_each_threshold():
    assert stats.performance_profile([0.1, 0.5, 0.9, 0.95], [0.0, 0.5, 0.92, 1.0]) == [1.0, 0.5, 0.25, 0.0]


def _factorial_cells():
    rng = np.random.default_rng(0)
    cells, rows = {}, []
    for i in range(8):
        combo = tuple((i >> j) & 1 for j in range(3))
        n = 3 + (i % 3)  # unequal cell sizes
        mean = 0.95 - 0.03 * combo[0] + 0.005 * combo[1] + 0.004 * combo[0] * combo[1]
        values = list(mean + rng.normal(0, 0.002, n))
        cells[combo] = values
        rows += [(combo, v) for v in values]
    return cells, rows


def test_factorial_effects_equal_twice_the_effect_coded_regression_coefficients():
    cells, rows = _factorial_cells()
    effects = stats.factorial_effects(cells, ["lr", "batch", "dropout"])
    assert [e.term for e in effects] == [
        ("lr",),
        ("batch",),
        ("dropout",),
        ("lr", "batch"),
        ("lr", "dropout"),
        ("batch", "dropout"),
        ("lr", "batch", "dropout"),
    ]
    # full model with +-1 codes: the cell-means model, so its coefficients are exact least squares
    x = np.array(
        [
            [1.0]
            + [math.prod(2 * c[j] - 1 for j in term) for term in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]]
            for c, _ in rows
        ]
    )
    y = np.array([v for _, v in rows])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    df = len(y) - 8
    cov = (resid @ resid / df) * np.linalg.inv(x.T @ x)
    for k, e in enumerate(effects, start=1):
        assert e.estimate == pytest.approx(2 * beta[k], rel=1e-9, abs=1e-12)
        assert e.se == pytest.approx(2 * math.sqrt(cov[k, k]), rel=1e-9)
        assert e.df == df
    lr = effects[0]
    assert lr.ci_low < -0.02 and lr.t_pvalue < 1e-6


def test_factorial_effects_match_statsmodels_where_installed():
    smf = pytest.importorskip("statsmodels.formula.api", reason="statsmodels not installed (optional cross-check)")
    import pandas as pd

    cells, rows = _factorial_cells()
    frame = pd.DataFrame([{"a": 2 * c[0] - 1, "b": 2 * c[1] - 1, "c": 2 * c[2] - 1, "y": v} for c, v in rows])
    fit = smf.ols("y ~ a * b * c", frame).fit()
    effects = {e.term: e for e in stats.factorial_effects(cells, ["a", "b", "c"])}
    for term, name in ((("a",), "a"), (("a", "b"), "a:b"), (("a", "b", "c"), "a:b:c")):
        assert effects[term].estimate == pytest.approx(2 * fit.params[name], rel=1e-9, abs=1e-12)
        assert effects[term].t_pvalue == pytest.approx(fit.pvalues[name], rel=1e-6)


def test_iqm_and_its_interval_match_rliable_where_installed():
    metrics = pytest.importorskip("rliable.metrics", reason="rliable not installed (optional cross-check)")
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.1, 1.0, (6, 5))  # runs x tasks, as rliable lays them out
    assert stats.iqm(scores.ravel()) == pytest.approx(float(metrics.aggregate_iqm(scores)), rel=1e-12)


def test_performance_profile_band_brackets_the_profile_and_is_deterministic():
    rng = np.random.default_rng(2)
    tasks = [list(rng.normal(mu, 0.01, 4)) for mu in (0.2, 0.6, 0.9)]
    taus = np.linspace(0.0, 1.0, 21)
    lo, hi = stats.performance_profile_band(tasks, taus, n_resamples=300)
    assert (lo, hi) == stats.performance_profile_band(tasks, taus, n_resamples=300)
    profile = stats.performance_profile(sum(tasks, []), taus)
    assert all(a <= p <= b for a, p, b in zip(lo, profile, hi))
    # between the tasks' clusters no resample changes the share: the band collapses onto the profile
    assert lo[8] == hi[8] == profile[8] == pytest.approx(2 / 3)


def test_probability_of_improvement_interval_equals_the_brute_force_pairwise_count():
    rng = np.random.default_rng(5)
    a, b = np.round(rng.normal(0.97, 0.002, 12), 4), np.round(rng.normal(0.97, 0.002, 15), 4)  # with ties
    draw = np.random.default_rng(0)
    xs, ys = a[draw.integers(0, a.size, (2000, a.size))], b[draw.integers(0, b.size, (2000, b.size))]
    wins = (xs[:, :, None] > ys[:, None, :]).sum(axis=(1, 2)) + 0.5 * (xs[:, :, None] == ys[:, None, :]).sum(
        axis=(1, 2)
    )
    expected = np.quantile(wins / (a.size * b.size), [(1 - 0.95) / 2, 1 - (1 - 0.95) / 2])
    assert stats.prob_improvement_ci(a, b) == pytest.approx(tuple(expected), abs=1e-12)
