"""The results store: one Parquet part file per finished chunk under results/<study>/, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hpstudy.errors import StoreError
from hpstudy.runs import HISTORY_FIELDS, RunResult


def study_dir(results: str | os.PathLike, study: str) -> Path:
    """Where a study's runs are stored."""
    return Path(results) / study


def to_record(result: RunResult, study: str, study_sha256: str, dataset_fingerprint: str, env: dict) -> dict:
    """One flat row for one run."""
    config = result.spec.config
    hist = result.history
    val_acc = hist["val_accuracy"]
    record = {
        "study": study,
        "study_sha256": study_sha256,
        "trial_id": result.spec.trial_id,
        "run_id": result.spec.run_id,
        "seed": result.spec.seed,
        "config": config.canonical(),
        **{f"hp.{k}": (json.dumps(v) if isinstance(v, list) else v) for k, v in config.as_flat_dict().items()},
        **{name: hist[name] for name in HISTORY_FIELDS},
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "final_train_loss": hist["train_loss"][-1],
        "final_train_accuracy": hist["train_accuracy"][-1],
        "final_val_loss": hist["val_loss"][-1],
        "final_val_accuracy": val_acc[-1],
        "best_val_accuracy": max(val_acc) if val_acc else float("nan"),
        "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy,
        "param_sha256": result.param_sha256,
        "chunk_width": result.chunk_width,
        "group_id": result.group_id,
        "seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
        "dataset_fingerprint": dataset_fingerprint,
        "environment": json.dumps(env, sort_keys=True),
    }
    return record


def write_chunk(directory: Path, records: list[dict]) -> Path:
    """Write records as one part file: temp file in the same folder, fsync, atomic rename."""
    directory.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256("|".join(sorted(r["run_id"] for r in records)).encode()).hexdigest()[:20]
    target = directory / f"part-{name}.parquet"
    table = pa.Table.from_pylist(records)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".part-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def read_runs(directory: Path) -> pd.DataFrame:
    """All stored runs of a study (empty frame if none); a part that does not read is an error naming it."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    frames = []
    for part in parts:
        try:
            frames.append(pq.read_table(part).to_pandas())
        except (pa.ArrowException, OSError) as exc:
            raise StoreError(
                f"results part {part} cannot be read ({exc}). It was not written by a finished chunk "
                "of hpstudy; move it aside to recompute its runs, nothing else is touched."
            ) from exc
    if not frames:
        return pd.DataFrame(columns=["run_id"])
    runs = pd.concat(frames, ignore_index=True)
    return runs.drop_duplicates("run_id").sort_values(["trial_id", "seed"], kind="stable").reset_index(drop=True)


def stored_ids(directory: Path) -> set[str]:
    """Run ids already in the store."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    ids: set[str] = set()
    for part in parts:
        try:
            ids.update(pq.read_table(part, columns=["run_id"]).column("run_id").to_pylist())
        except (pa.ArrowException, OSError) as exc:
            raise StoreError(f"results part {part} cannot be read ({exc}); move it aside to recompute its runs.") from exc
    return ids


def stored_environments(directory: Path) -> dict[str, int]:
    """Each distinct environment fingerprint (JSON text) in the store, with how many runs carry it."""
    counts: dict[str, int] = {}
    for part in sorted(Path(directory).glob("part-*.parquet")):
        try:
            column = pq.read_table(part, columns=["environment"]).column("environment").to_pylist()
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise StoreError(f"results part {part} cannot be read ({exc}); move it aside to recompute its runs.") from exc
        for text in column:
            counts[text] = counts.get(text, 0) + 1
    return counts
