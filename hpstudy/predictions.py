"""Test-set predictions added to stored runs that lack them (`hpstudy verify --add-predictions`).

A run's predictions are only ever added from a retraining through verify's path that found every stored
value of that run equal, bit for bit (hpstudy/verify.py decides; this module only writes). A part file is
rewritten only when every run it holds without predictions was so reproduced: its other columns are copied
unchanged, the two prediction columns appended (store.PREDICTION_COLUMNS) or, in a compacted part that holds
runs with and without, their null entries filled, and the new file renamed over the old one atomically, so
a reader sees the old part or the new one, never a mixture. Nothing else is touched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpstudy import store, storeops


@dataclasses.dataclass
class Added:
    """What adding predictions to one store did."""

    directory: Path
    parts_written: list[Path] = dataclasses.field(default_factory=list)
    runs_added: int = 0
    already: int = 0  # runs that already had predictions
    left: list[str] = dataclasses.field(default_factory=list)  # runs not reproduced (or not checked): untouched


def consistent(correct: bytes, n_images: int, test_accuracy: float) -> bool:
    """Whether a run's correctness bits count exactly the correct images its stored test accuracy counts.

    The accuracy is a float32 mean (XLA may multiply by 1/n rather than divide, one ulp apart), so the
    count it stands for is recovered by rounding: exact for any test set under a million images.
    """
    count = int(np.unpackbits(np.frombuffer(correct, np.uint8), count=n_images).sum())
    scaled = float(test_accuracy) * n_images
    return abs(scaled - count) < 0.01


def with_predictions(table: pa.Table, found: dict[str, tuple[bytes, bytes]]) -> pa.Table:
    """The part's table with the two prediction columns filled from `found`, in its row order: appended
    when the part has none, else only its null entries filled (a compacted part can hold runs with
    predictions beside older runs without)."""
    ids = table.column("run_id").to_pylist()
    for k, name in enumerate(store.PREDICTION_COLUMNS):
        old = table.column(name).to_pylist() if name in table.column_names else [None] * len(ids)
        column = pa.array([v if v is not None else found[rid][k] for rid, v in zip(ids, old)], pa.binary())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.append_column(name, column)
    return table


def _lacking(table: pa.Table) -> list[str]:
    """The runs of a part without stored predictions."""
    ids = table.column("run_id").to_pylist()
    present = [
        table.column(c).to_pylist() if c in table.column_names else [None] * len(ids) for c in store.PREDICTION_COLUMNS
    ]
    return [rid for rid, *values in zip(ids, *present) if any(v is None for v in values)]


def add_to_store(directory: Path, found: dict[str, tuple[bytes, bytes]]) -> Added:
    """Add predictions to every part of the store whose runs all have reproduced predictions in `found`
    ({run_id: (predictions, correct bits)}); holds the store's run lock and its compaction lock meanwhile."""
    directory = Path(directory)
    added = Added(directory)
    with storeops.rewriting_parts(directory):
        for part in store.live_parts(directory):
            table = pq.read_table(part)
            lacking = _lacking(table)
            added.already += table.num_rows - len(lacking)
            if not lacking:
                continue
            missing = [rid for rid in lacking if rid not in found]
            if missing:
                added.left += missing
                continue
            store.write_table(with_predictions(table, found), part)
            added.parts_written.append(part)
            added.runs_added += len(lacking)
        store.fsync_dir(directory)
    return added
