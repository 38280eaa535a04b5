"""hpstudy/reporting/testset_stats.py against independent computations: statsmodels' exact McNemar, hand-counted
cases, scipy's paired bootstrap and the normal approximation of a paired difference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from hpstudy.reporting import testset_stats as T


def test_unpack_correct_reverses_packbits():
    correct = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1], bool)
    assert T.unpack_correct(np.packbits(correct).tobytes(), 10).tolist() == correct.tolist()


def test_mcnemar_counts_discordant_images_by_hand():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
    result = T.mcnemar(a, b)
    assert (result.only_a, result.only_b) == (3, 1)
    # two-sided exact binomial p of 3 of 4 at 1/2: P(X <= 1) + P(X >= 3) = (1 + 4 + 4 + 1) / 16
    assert result.pvalue == pytest.approx(10 / 16)


def test_mcnemar_of_identical_runs_is_one():
    a = np.array([1, 0, 1], bool)
    assert T.mcnemar(a, a) == T.McNemar(0, 0, 1.0)


def test_mcnemar_matches_statsmodels_exact():
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.random(2000) < 0.95
        b = np.where(rng.random(2000) < 0.03, ~a, a)
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        expected = contingency.mcnemar(table, exact=True).pvalue
        assert T.mcnemar(a, b).pvalue == pytest.approx(expected, rel=1e-12)


def test_mcnemar_refuses_different_test_sets():
    with pytest.raises(ValueError, match="different test sets"):
        T.mcnemar(np.ones(3, bool), np.ones(4, bool))


def correct_runs(rng, runs: int, images: int, accuracy: float, difficulty: np.ndarray | None = None) -> np.ndarray:
    """Correctness of `runs` runs; `difficulty` (per image) makes the runs agree on which images are hard."""
    base = np.full(images, accuracy) if difficulty is None else difficulty
    return rng.random((runs, images)) < base[None, :]


def test_bootstrap_is_deterministic_and_seeded():
    rng = np.random.default_rng(0)
    a, b = correct_runs(rng, 10, 500, 0.9), correct_runs(rng, 10, 500, 0.85)
    first = T.paired_bootstrap(a, b, replicates=400)
    assert first == T.paired_bootstrap(a, b, replicates=400)
    assert first != T.paired_bootstrap(a, b, replicates=400, seed=1)
    assert first.estimate == pytest.approx(a.mean() - b.mean())
    assert first.low < first.estimate < first.high


def test_bootstrap_of_identical_configurations_is_zero():
    a = correct_runs(np.random.default_rng(1), 4, 300, 0.9)
    result = T.paired_bootstrap(a, a, replicates=200, paired_seeds=True)
    assert (result.estimate, result.low, result.high) == (0.0, 0.0, 0.0)


def test_image_level_matches_scipy_paired_bootstrap_and_normal_approximation():
    """With one run per configuration the seeds contribute nothing: the interval is the paired bootstrap
    over images, which scipy computes independently, and close to the normal approximation."""
    rng = np.random.default_rng(5)
    difficulty = rng.beta(8, 1, 4000)
    a, b = correct_runs(rng, 1, 4000, 0, difficulty), correct_runs(rng, 1, 4000, 0, difficulty * 0.99)
    ours = T.paired_bootstrap(a, b, replicates=4000)
    theirs = scipy.stats.bootstrap(
        (a[0].astype(float), b[0].astype(float)),
        lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
        paired=True,
        n_resamples=4000,
        method="percentile",
        random_state=0,
    ).confidence_interval
    d = a[0].astype(float) - b[0].astype(float)
    half = 1.959964 * d.std(ddof=1) / np.sqrt(len(d))
    width = ours.high - ours.low
    assert width == pytest.approx(theirs.high - theirs.low, rel=0.08)
    assert width == pytest.approx(2 * half, rel=0.08)
    assert ours.low == pytest.approx(theirs.low, abs=0.1 * width) and ours.high == pytest.approx(
        theirs.high, abs=0.1 * width
    )


def test_seeds_only_interval_is_the_two_sample_bootstrap():
    rng = np.random.default_rng(7)
    difficulty = rng.beta(12, 1, 2000)
    a = correct_runs(rng, 12, 2000, 0, difficulty)
    b = correct_runs(rng, 12, 2000, 0, difficulty * 0.995)
    seeds = T.paired_bootstrap(a, b, replicates=3000, images=False)
    # seeds only: a two-sample percentile bootstrap of the runs' accuracies, which scipy gives independently
    theirs = scipy.stats.bootstrap(
        (a.mean(1), b.mean(1)),
        lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
        n_resamples=3000,
        method="percentile",
        random_state=0,
    ).confidence_interval
    assert seeds.high - seeds.low == pytest.approx(theirs.high - theirs.low, rel=0.1)


def test_two_level_interval_covers_the_test_set_and_seed_variance_conservatively():
    """Against the truth by simulation: draw a new test set from an image population and new seeds, many
    times; the sd of a - b over those draws is what the interval must cover. Resampling seeds and images
    independently (Owen's pigeonhole bootstrap) counts the seed-by-image term up to 3 times, so its sd lies
    between the truth and sqrt(3) times it; the seeds-only interval misses the test set's share."""
    rng = np.random.default_rng(13)
    population = rng.beta(3, 1, 200_000)  # per-image probability of a correct answer
    shift = rng.normal(0, 0.15, population.size)  # configurations differ image by image

    def draw():  # a new test set of 1000 images and 40 new seeds per configuration
        images = rng.integers(0, population.size, 1000)
        p = population[images]
        return correct_runs(rng, 40, 1000, 0, p), correct_runs(rng, 40, 1000, 0, np.clip(p + shift[images], 0, 1))

    truth = np.std([a.mean() - b.mean() for a, b in (draw() for _ in range(300))], ddof=1)
    a, b = draw()
    both = T.paired_bootstrap(a, b, replicates=3000)
    seeds = T.paired_bootstrap(a, b, replicates=3000, images=False)
    both_sd, seeds_sd = (both.high - both.low) / 3.92, (seeds.high - seeds.low) / 3.92
    assert 0.9 * truth < both_sd < 1.1 * np.sqrt(3) * truth
    assert seeds_sd < 0.7 * truth


def test_paired_seeds_resample_the_same_seed_indices():
    """Under common random numbers a shared per-seed offset cancels: pairing by seed removes it."""
    rng = np.random.default_rng(11)
    shared = rng.random((10, 1)) < 0.5  # a seed that is good for both configurations
    a = np.where(shared, True, rng.random((10, 1000)) < 0.6)
    b = np.where(shared, True, rng.random((10, 1000)) < 0.6)
    paired = T.paired_bootstrap(a, b, replicates=1000, paired_seeds=True, images=False)
    independent = T.paired_bootstrap(a, b, replicates=1000, paired_seeds=False, images=False)
    assert paired.high - paired.low < independent.high - independent.low


def test_bootstrap_refuses_other_shapes():
    with pytest.raises(ValueError, match="same images"):
        T.paired_bootstrap(np.ones((2, 5), bool), np.ones((2, 6), bool))
    with pytest.raises(ValueError, match="paired seeds"):
        T.paired_bootstrap(np.ones((2, 5), bool), np.ones((3, 5), bool), paired_seeds=True)
