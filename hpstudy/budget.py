"""How big a run is before it starts: the number of runs and an estimate of the time they take.

The time model is the work of training (epochs x training images x multiply-adds of the network per
image) divided by a measured rate. The rate is that of the study's own stored runs where there are any,
else RATE_PER_CORE, measured on the 2-core CPU machine (an Intel Xeon) from the 662 shipped runs in
reports/_runs, made in the default numerics mode (median over all eight studies of work / stored seconds; per
study 4.7e9 to 2.1e10).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from hpstudy.data import shape_of

RATE_PER_CORE = 6.2e9  # multiply-adds (per training image and epoch) per second and core; see above
# Above these, `hpstudy run` asks for --yes (and refuses when it cannot ask): a run this long should
# be a decision, not a typo.
CONFIRM_RUNS = 10_000
CONFIRM_SECONDS = 4 * 3600
# More runs than this in one call are refused outright: their list alone would not fit in memory well.
MAX_RUNS = 1_000_000


def macs(hidden: Sequence[int], dataset: str) -> int:
    """Multiply-adds of the MLP for one image of the dataset (its inputs, the hidden layers, its classes)."""
    shape = shape_of(dataset)
    sizes = (shape.inputs, *hidden, shape.classes)
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def parameters(hidden: Sequence[int], dataset: str) -> int:
    """Weights and biases of the MLP on the dataset's inputs and classes."""
    shape = shape_of(dataset)
    sizes = (shape.inputs, *hidden, shape.classes)
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


# float32 copies of the parameters one run holds while it trains: the parameters, their gradients, two
# optimizer moments and the best weights kept for early stopping.
COPIES = 5


def memory_bytes(hidden: Sequence[int], dataset: str) -> int:
    """The least memory one run of this network needs to train (its parameter copies; activations apart)."""
    return 4 * COPIES * parameters(hidden, dataset)


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the OS says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def n_train(validation: str, dataset: str) -> int:
    """Training images trained on under a validation scheme."""
    return shape_of(dataset).fit_images(validation)


def work(config) -> float:
    """The training work of one run at its full number of epochs (early stopping may make it less)."""
    return float(config.epochs) * n_train(config.validation, config.dataset) * macs(config.hidden, config.dataset)


def measured_rate(runs) -> float | None:
    """The median rate of stored runs (a DataFrame of store rows), or None when there are none."""
    needed = {"seconds", "epochs_run", "hp.hidden", "hp.validation", "hp.dataset"}
    if runs is None or len(runs) == 0 or not needed <= set(runs.columns):
        return None
    sizes: dict[tuple, float] = {}  # per (hidden, validation, dataset): runs share a few of them

    def per_epoch(hidden: str, validation: str, dataset: str) -> float:
        key = (hidden, validation, dataset)
        if key not in sizes:
            sizes[key] = float(n_train(validation, dataset) * macs(json.loads(hidden), dataset))
        return sizes[key]

    per_epoch_work = [per_epoch(*row) for row in zip(runs["hp.hidden"], runs["hp.validation"], runs["hp.dataset"])]
    done = runs["epochs_run"].to_numpy(float) * np.array(per_epoch_work, float)
    seconds = runs["seconds"].to_numpy(float)
    ok = seconds > 0
    return float(np.median(done[ok] / seconds[ok])) if ok.any() else None


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Runs to compute and the time they should take."""

    runs: int
    seconds: float
    rate: float
    measured: bool  # rate from this study's stored runs (else the shipped runs' rate)

    def needs_confirmation(self) -> bool:
        """Whether this is large enough to ask before starting."""
        return self.runs > CONFIRM_RUNS or self.seconds > CONFIRM_SECONDS

    def describe(self) -> str:
        """'N runs, about T' for messages."""
        return f"{self.runs:,} runs, about {duration(self.seconds)}"


def estimate(configs: Sequence, workers: int, stored=None) -> Estimate:
    """Estimate the wall time of training `configs` (one per run) on `workers` single-core processes."""
    rate = measured_rate(stored)
    total = sum(work(c) for c in configs)
    used = max(1, min(workers, len(configs)))
    return Estimate(len(configs), total / ((rate or RATE_PER_CORE) * used), rate or RATE_PER_CORE, rate is not None)


def duration(seconds: float) -> str:
    """A rough human duration: 40 s, 12 min, 3.5 h, 41 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"
