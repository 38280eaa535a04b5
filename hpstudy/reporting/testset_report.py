"""The report's comparisons that include the test set's sampling error, where runs store their test-set
predictions (store.PREDICTION_COLUMNS); the statistics are hpstudy/reporting/testset_stats.py's.

Two hooks: `attach` adds each run's correctness bits to the runs a report analyses (hpstudy/reporting/build.py),
and `section` writes the README's subsection after the comparisons (hpstudy/reporting/readme.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hpstudy import store
from hpstudy.predictions import consistent
from hpstudy.reporting import testset_stats

CORRECT = "_test_correct"  # the column `attach` adds: a run's correctness as a boolean array, or None


def _stored_correct(directory: Path) -> dict[str, np.ndarray]:
    """{run_id: correctness booleans} of the store's runs whose parts hold predictions and whose bits count
    exactly the correct images their stored test accuracy counts."""
    found: dict[str, np.ndarray] = {}
    for part in store.live_parts(directory):
        if not set(store.PREDICTION_COLUMNS) <= set(pq.read_schema(part).names):
            continue
        table = pq.read_table(part, columns=["run_id", "test_accuracy", *store.PREDICTION_COLUMNS])
        for row in table.to_pylist():
            if row["test_predictions"] is None or row["test_correct"] is None:
                continue
            n = len(row["test_predictions"])
            if consistent(row["test_correct"], n, row["test_accuracy"]):
                found[row["run_id"]] = testset_stats.unpack_correct(row["test_correct"], n)
    return found


def attach(runs: pd.DataFrame, directory: str | Path) -> pd.DataFrame:
    """The runs with their test-set correctness (column CORRECT; None where not stored)."""
    found = _stored_correct(Path(directory)) if Path(directory).is_dir() else {}
    runs = runs.copy()
    runs[CORRECT] = [found.get(rid) for rid in runs["run_id"]]
    return runs


def _matrix(runs: pd.DataFrame, trial_id: str) -> np.ndarray | None:
    """(seeds, images) correctness of one configuration's runs, in seed order; None if any run lacks it."""
    mine = runs[runs["trial_id"] == trial_id].sort_values("seed")
    rows = list(mine[CORRECT])
    if not rows or any(r is None for r in rows) or len({r.shape for r in rows}) != 1:
        return None
    return np.stack(rows)


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}" if math.isfinite(x) else "n/a"


def _pairs(a) -> list[tuple[str, str]]:
    """The pairs of configurations the comparisons above test, each once, in their order; with one run per
    configuration (no comparison above), the run of best test accuracy against each other run."""
    pairs = list(dict.fromkeys((c.a, c.b) for c in (*a.best_vs_rest, *a.factor_effects)))
    if pairs or not len(a.rows) > 1 or any(len(r.seeds) != 1 for r in a.rows):
        return pairs
    accuracy = dict(zip(a.runs["trial_id"], a.runs["test_accuracy"]))
    ids = [r.trial.trial_id for r in a.rows if r.trial.trial_id in accuracy]
    best = max(ids, key=lambda t: accuracy[t])
    return [(best, other) for other in ids if other != best]


def _cells(a, first: str, second: str, label: Callable) -> list[str] | None:
    """One table row's cells for configurations first - second, or None without predictions for both."""
    ca, cb = _matrix(a.runs, first), _matrix(a.runs, second)
    if ca is None or cb is None or ca.shape[1] != cb.shape[1]:
        return None
    paired = a.paired and ca.shape[0] == cb.shape[0]
    cells = [
        label(a.row(first).trial),
        label(a.row(second).trial),
        f"{ca.shape[0]}, {cb.shape[0]}",
        _pp(ca.mean() - cb.mean()),
    ]
    if min(ca.shape[0], cb.shape[0]) >= testset_stats.MIN_RUNS:
        for images in (False, True):
            ci = testset_stats.paired_bootstrap(ca, cb, paired_seeds=paired, images=images)
            cells.append(f"[{_pp(ci.low)}, {_pp(ci.high)}]")
    else:
        cells += ["n/a", "n/a"]
    if ca.shape[0] == 1 and cb.shape[0] == 1:
        m = testset_stats.mcnemar(ca[0], cb[0])
        cells.append(f"{m.pvalue:.2g} ({m.only_a} vs {m.only_b})")
    else:
        cells.append("")
    return [c.replace("|", "\\|") for c in cells]


def section(a, label: Callable) -> list[str]:
    """The README's subsection on test-set sampling error: which comparisons include it, and the intervals
    that do, where the runs store their test-set predictions. a: the report's Analysis; label: a trial's
    name in the report."""
    if CORRECT not in a.runs.columns:
        return []
    have = int(a.runs[CORRECT].map(lambda c: c is not None).sum())
    lines = ["### Including the test set's sampling error", ""]
    if have == 0:
        return lines + [
            "These runs do not store their test-set predictions, so no comparison in this report "
            "includes the test set's sampling error: all of them count only the variation between seeds, "
            "on the one fixed test set (see `hpstudy verify --add-predictions`).",
            "",
        ]
    rows = [cells for first, second in _pairs(a) if (cells := _cells(a, first, second, label)) is not None]
    n_images = next(c.size for c in a.runs[CORRECT] if c is not None)
    seeding = "by seed index (common random numbers)" if a.paired else "independently for each configuration"
    lines += [
        f"Every run is scored on the same {n_images:,} test images, so the comparisons above count only the variation "
        "between seeds: they do not include the test set's sampling error, how a difference could change on another "
        "sample of test images (Bouthillier et al. 2021). "
        f"{have} of {len(a.runs)} runs store their test-set predictions; for the pairs above whose runs all do, the "
        "table below compares test accuracy with a two-level paired bootstrap "
        f"({testset_stats.BOOTSTRAP_REPLICATES:,} replicates, fixed seed): each replicate resamples the seeds "
        f"{seeding} and the test images (the same images for both configurations); 95% percentile intervals. "
        "The last interval column is the only one in this report that includes the test set's sampling error; the "
        "seeds-only column beside it is the same bootstrap on a fixed test set. Resampling seeds and images "
        "independently counts the part of the variation that is neither the seed's nor the image's alone more than "
        "once (Owen 2007), so that interval errs wide. "
        f"Intervals need at least {testset_stats.MIN_RUNS} runs per configuration. With one run per configuration "
        "(no comparison above), the run of best test accuracy is compared with each other run by McNemar's exact "
        "test on the images exactly one of the two got right (only a vs only b), which counts the test set's "
        "sampling error but, with one seed, none of the seeds'.",
        "",
    ]
    if not rows:
        return lines + ["No compared pair has test-set predictions for all of its runs.", ""]
    mcnemar = any(cells[-1] for cells in rows)  # the McNemar column only where some pair has one
    if not mcnemar and all(cells[4] == "n/a" for cells in rows):
        return lines + [
            f"No compared pair has {testset_stats.MIN_RUNS} runs per configuration, so no interval is "
            "given; the stored predictions give one once seeds are added.",
            "",
        ]
    rows = [cells if mcnemar else cells[:-1] for cells in rows]
    head = ["a", "b", "n (a, b)", "test acc. a - b (pp)", "95% CI, seeds only", "95% CI, seeds + test images"]
    head += ["McNemar p (only a vs only b)"] if mcnemar else []
    lines += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines + [""]
