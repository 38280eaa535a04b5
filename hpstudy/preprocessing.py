"""Input preprocessing (`[model] preprocessing`): how a run turns uint8 pixels into the network's inputs.

- "scale" (the default, and how every shipped run was made): x / 255, in [0, 1];
- "scale_symmetric": x / 127.5 - 1, in [-1, 1];
- "standardise": (x - mean) / sd per input feature (pixel and channel), as scikit-learn's StandardScaler;
- "standardise_global": (x - mean) / sd with one mean and sd over every pixel of every training image.

Means and sds are taken from the images the run trains on (a holdout is not among them: no information from
the validation or test images enters training) and computed exactly, from integer sums of the uint8 pixels,
then rounded once: the same values on every machine. A feature with sd 0 (a border pixel that is always
black) is divided by 1, as StandardScaler does.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hpstudy.training.model import float_dtype, preprocess

ROWS_PER_BLOCK = 4096  # images squared at a time (a block's uint16 squares stay a few MB)


class InputStats(NamedTuple):
    """Training-set statistics of the inputs: per feature, and over every pixel."""

    feature_mean: np.ndarray | jax.Array
    feature_std: np.ndarray | jax.Array
    mean: np.ndarray | jax.Array
    std: np.ndarray | jax.Array


def _mean_std(total: int, squares: int, n: int) -> tuple[float, float]:
    """Mean and population sd of n values from their exact sum and sum of squares (correctly rounded)."""
    mean = total / n  # Python's int / int is correctly rounded
    sd = math.sqrt((n * squares - total * total) / (n * n))
    return mean, (sd if sd > 0 else 1.0)


def statistics(images: np.ndarray) -> InputStats:
    """Exact per-feature and global means and sds of uint8 images (one image per row), as float64."""
    n, features = images.shape
    total = images.sum(axis=0, dtype=np.int64)
    squares = np.zeros(features, np.int64)
    for start in range(0, n, ROWS_PER_BLOCK):
        block = images[start : start + ROWS_PER_BLOCK].astype(np.uint16)  # 255 ** 2 fits: exact
        squares += (block * block).sum(axis=0, dtype=np.int64)
    per_feature = [_mean_std(int(t), int(q), n) if n else (0.0, 1.0) for t, q in zip(total, squares)]
    overall = _mean_std(int(total.sum()), int(squares.sum()), n * features) if n else (0.0, 1.0)
    return InputStats(
        np.array([m for m, _ in per_feature], np.float64),
        np.array([s for _, s in per_feature], np.float64),
        np.float64(overall[0]),
        np.float64(overall[1]),
    )


def on_device(stats: InputStats) -> InputStats:
    """The statistics as device arrays of the training float type (rounded once, from float64)."""
    return InputStats(*(jnp.asarray(np.asarray(a, np.float64).astype(float_dtype())) for a in stats))


def apply(mode: str, images: jax.Array, stats: InputStats) -> jax.Array:
    """uint8 images (one per row) as the network's float inputs under a preprocessing mode."""
    if mode == "scale":
        return preprocess(images)  # x / 255: the bits of every run made before the other modes existed
    x = images.astype(float_dtype())
    if mode == "scale_symmetric":
        return x / 127.5 - 1.0
    if mode == "standardise":
        return (x - stats.feature_mean) / stats.feature_std
    if mode == "standardise_global":
        return (x - stats.mean) / stats.std
    raise ValueError(
        f"preprocessing={mode!r} is unknown; expected 'scale', 'scale_symmetric', 'standardise' or "
        "'standardise_global'."
    )
