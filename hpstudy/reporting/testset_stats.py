"""Comparisons that count the test set's sampling error as well as the seeds' (Bouthillier et al. 2021).

Pure functions of per-image correctness: a run is a row of booleans, one per test image, True where it
classified the image correctly (store.PREDICTION_COLUMNS, decoded by `unpack_correct`).

- `mcnemar`: the exact McNemar test of two runs on the same test images (a binomial test on the images
  exactly one of them got right).
- `paired_bootstrap`: a two-level bootstrap of the difference in mean accuracy between two
  configurations: each replicate resamples the seeds of each configuration (independently, or by seed
  index under common random numbers) and the test images (the same images for both: the comparison is
  paired over images), and takes the difference of the mean accuracies; percentile interval. With
  images=False only the seeds are resampled: the seeds-only interval, to set beside it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.stats

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 20210301  # fixed: the same runs always give the same interval
MIN_RUNS = 10  # runs per configuration a bootstrap interval needs (the reports' stats.MIN_BOOTSTRAP_N)
_BLOCK = 250  # replicates drawn at a time (bounds the memory of the image counts)


@dataclasses.dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of runs a and b: images only a got right, only b got right, two-sided p."""

    only_a: int
    only_b: int
    pvalue: float


@dataclasses.dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval of mean accuracy a - b (fractions, not percent)."""

    estimate: float
    low: float
    high: float
    replicates: int
    images: bool  # whether the test images were resampled as well as the seeds


def unpack_correct(bits: bytes, n_images: int) -> np.ndarray:
    """One run's correctness bits (np.packbits order) as a boolean array of n_images."""
    return np.unpackbits(np.frombuffer(bits, np.uint8), count=n_images).astype(bool)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact two-sided McNemar test of two runs scored on the same test images."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"the runs were scored on different test sets ({a.shape} vs {b.shape} images)")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(scipy.stats.binomtest(only_a, n, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


def _image_counts(rng: np.random.Generator, replicates: int, n_images: int) -> np.ndarray:
    """How often each test image is drawn in each of `replicates` resamples of the images (int32)."""
    draws = rng.integers(0, n_images, size=(replicates, n_images))
    flat = draws + (np.arange(replicates)[:, None] * n_images)
    return np.bincount(flat.ravel(), minlength=replicates * n_images).reshape(replicates, n_images).astype(np.int32)


def paired_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
    paired_seeds: bool = False,
    images: bool = True,
) -> Interval:
    """Percentile interval of mean accuracy(a) - mean accuracy(b) over seeds and test images.

    correct_a: (seeds of a, images) booleans; correct_b likewise, on the same images. paired_seeds: the
    rows of a and b are paired by seed index (common random numbers) and resampled together. images=False:
    the seeds only. Deterministic in `seed`.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (runs, images) arrays on the same images, got {a.shape} and {b.shape}")
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise ValueError("paired seeds need as many runs of a as of b")
    n_a, n_b, n_images = a.shape[0], b.shape[0], a.shape[1]
    rng = np.random.default_rng(seed)
    # Counts of correct images stay integers held exactly in float64 (every partial sum is an integer below
    # 2**53), so no summation order, and no CPU's SIMD width, can change a bit; one division at the end.
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    stats = np.empty(replicates)
    for start in range(0, replicates, _BLOCK):
        size = min(_BLOCK, replicates - start)
        if images:
            counts = _image_counts(rng, size, n_images).T.astype(np.float64)  # (images, size)
            right_a, right_b = fa @ counts, fb @ counts  # (runs, size): each run's correct images per resample
        else:
            right_a = np.repeat(a.sum(axis=1, dtype=np.int64).astype(np.float64)[:, None], size, axis=1)
            right_b = np.repeat(b.sum(axis=1, dtype=np.int64).astype(np.float64)[:, None], size, axis=1)
        seeds_a = rng.integers(0, n_a, size=(size, n_a))
        seeds_b = seeds_a if paired_seeds else rng.integers(0, n_b, size=(size, n_b))
        cols = np.arange(size)[:, None]
        total_a = right_a[seeds_a, cols].sum(axis=1)
        total_b = right_b[seeds_b, cols].sum(axis=1)
        stats[start : start + size] = total_a / (n_a * n_images) - total_b / (n_b * n_images)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    estimate = int(a.sum()) / a.size - int(b.sum()) / b.size
    return Interval(float(estimate), float(low), float(high), replicates, images)
