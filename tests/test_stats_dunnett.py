"""Dunnett's exact one-sided critical value (hpstudy/reporting/stats.py: dunnett_one_sided), which Hsu's MCB
uses: against the published table, against SciPy's multivariate t and normal distributions, and between the
unadjusted and the Bonferroni t."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sstats

from hpstudy.reporting import stats

# Dunnett, C. W. (1955), "A multiple comparison procedure for comparing several treatments with a control",
# Journal of the American Statistical Association 50, 1096-1121, Table 1a (one-sided, joint confidence 0.95):
# {(comparisons, df): critical value}, given there to two decimals.
DUNNETT_1955 = {
    (2, 10): 2.15,
    (3, 10): 2.34,
    (4, 10): 2.47,
    (2, 20): 2.03,
    (3, 20): 2.19,
    (4, 20): 2.30,
    (2, math.inf): 1.92,
    (3, math.inf): 2.06,
    (4, math.inf): 2.16,
}


@pytest.mark.parametrize(("comparisons", "df"), sorted(DUNNETT_1955, key=str))
def test_dunnett_critical_value_matches_the_published_table(comparisons, df):
    d = stats.dunnett_one_sided(comparisons, df)
    assert abs(d - DUNNETT_1955[comparisons, df]) <= 0.005 + 1e-9  # the table rounds to two decimals


@pytest.mark.parametrize(("comparisons", "df"), sorted(DUNNETT_1955, key=str))
def test_dunnett_critical_value_has_its_coverage_under_scipy(comparisons, df):
    """P(every one of the equicorrelated (rho = 1/2) t or normal statistics <= d) = 0.95, by SciPy's
    quasi-Monte Carlo multivariate distributions (a fixed rng) to 1e-5."""
    d = stats.dunnett_one_sided(comparisons, df)
    shape = np.full((comparisons, comparisons), 0.5)
    np.fill_diagonal(shape, 1.0)
    corner = np.full(comparisons, d)
    if math.isinf(df):
        coverage = sstats.multivariate_normal.cdf(corner, mean=np.zeros(comparisons), cov=shape, abseps=1e-8)
    else:
        coverage = sstats.multivariate_t.cdf(
            corner,
            loc=np.zeros(comparisons),
            shape=shape,
            df=df,
            maxpts=2_000_000,
            random_state=np.random.default_rng(1),
        )
    assert coverage == pytest.approx(0.95, abs=1e-5)


@pytest.mark.parametrize("df", [1, 3, 10, 47, 1000, math.inf])
@pytest.mark.parametrize("comparisons", [2, 5, 30])
def test_dunnett_lies_between_the_unadjusted_and_the_bonferroni_t(comparisons, df):
    law = sstats.norm if math.isinf(df) else sstats.t(df)
    d = stats.dunnett_one_sided(comparisons, df)
    assert law.ppf(0.95) < d < law.ppf(1 - 0.05 / comparisons)


def test_one_comparison_is_the_one_sided_t_and_bad_input_is_refused():
    assert stats.dunnett_one_sided(1, 7) == sstats.t.ppf(0.95, 7)
    assert stats.dunnett_one_sided(1, math.inf, 0.99) == sstats.norm.ppf(0.99)
    with pytest.raises(ValueError, match="comparisons >= 1, df > 0"):
        stats.dunnett_one_sided(0, 10)
    with pytest.raises(ValueError, match="df=0"):
        stats.dunnett_one_sided(2, 0)


def test_dunnett_is_deterministic_without_its_cache():
    """No random draws: the same bits on every call (the shipped reports rebuild byte-identical)."""
    first = stats.dunnett_one_sided(3, 12.0)
    stats.dunnett_one_sided.cache_clear()
    assert stats.dunnett_one_sided(3, 12.0) == first


def test_readme_names_dunnett_and_says_when_unequal_runs_make_it_approximate():
    import dataclasses
    from pathlib import Path

    from hpstudy.reporting import readme
    from hpstudy.reporting.analysis import analyze, load_runs
    from hpstudy.study import load_study

    root = Path(__file__).resolve().parent.parent
    if not (root / "reports" / "_runs" / "fabrizio2021_batch").is_dir():
        pytest.skip("no shipped runs of fabrizio2021_batch")
    study = load_study(root / "studies" / "fabrizio2021_batch.toml")
    a = analyze(study, load_runs(study, root / "reports" / "_runs"))
    assert a.best_sets and all(b.equal_n for b in a.best_sets)  # 3 seeds of every configuration
    text = "\n".join(readme._mcb_lines(a))
    assert "Dunnett's exact one-sided one" in text and "Bonferroni" not in text and "approximation" not in text
    unequal = dataclasses.replace(a, best_sets=(dataclasses.replace(a.best_sets[0], equal_n=False), *a.best_sets[1:]))
    assert "that value with each pair's own standard error, an approximation" in "\n".join(readme._mcb_lines(unequal))
