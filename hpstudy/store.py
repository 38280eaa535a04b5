"""The results store: one Parquet part file per finished chunk under results/<study>/, written atomically.

A store is the set of its live parts (`live_parts`): every part-*.parquet file, except while a compaction
(hpstudy/storeops.py) is committed but not finished; then its journal, compaction.json, says which parts
it replaced and which it added, so a reader sees every run exactly once at any point of a compaction, and
after a crash at any point.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

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


def part_name(run_ids) -> str:
    """A part's file name: the hash of the run ids it holds."""
    return f"part-{hashlib.sha256('|'.join(sorted(run_ids)).encode()).hexdigest()[:20]}.parquet"


def write_chunk(directory: Path, records: list[dict]) -> Path:
    """Write records as one part file: temp file in the same folder, fsync, atomic rename."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_table(pa.Table.from_pylist(records), directory / part_name(r["run_id"] for r in records))


def write_table(table: pa.Table, target: Path) -> Path:
    """Write a table to `target` atomically: temp file in the same folder, fsync, rename."""
    directory = target.parent
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


JOURNAL = "compaction.json"  # a compaction's commit record (see hpstudy/storeops.py)
PENDING = ".pending"  # suffix of a compacted part written but not yet renamed into place


def fsync_dir(directory: Path) -> None:
    """Make renames and removals in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_journal(directory: Path) -> dict | None:
    """The compaction journal of a store, or None; a journal that does not parse is an error naming it."""
    path = Path(directory) / JOURNAL
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        journal = json.loads(text)
        return {"generation": int(journal["generation"]), "add": list(journal["add"]), "remove": list(journal["remove"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"compaction journal {path} is not valid ({exc}); it is written atomically, so it "
                         "was not written by hpstudy. Restore it or move the store aside.") from exc


def _live_names(directory: Path, journal: dict | None) -> list[Path]:
    """The live parts given a listing of `directory` and its journal (see `live_parts`)."""
    names = {p.name for p in directory.glob("part-*.parquet")}
    if journal is None:
        return [directory / n for n in sorted(names)]
    names = (names - set(journal["remove"])) | set(journal["add"])
    paths = []
    for name in sorted(names):
        path = directory / name
        # an added part is at its final name once renamed, before that at its pending name
        paths.append(path if name not in journal["add"] or path.exists() else directory / (name + PENDING))
    return paths


def live_parts(directory: str | os.PathLike) -> list[Path]:
    """The part files that hold the store's runs, each run in exactly one, whatever point a compaction
    reached or crashed at. The journal is read before and after listing the folder and the listing is
    repeated if a compaction moved on in between (its generation only grows)."""
    directory = Path(directory)
    for _ in range(100):
        before = read_journal(directory)
        paths = _live_names(directory, before)
        if read_journal(directory) == before:
            return paths
        time.sleep(0.01)
    raise StoreError(f"{directory} kept changing while being listed (a compaction running?); try again.")


def read_parts(directory: Path, read: Callable[[Path], object]) -> list:
    """`read` applied to every live part; a part removed meanwhile by a finishing compaction restarts the
    listing; a part that does not read is an error naming it."""
    for _ in range(100):
        tables = []
        try:
            for part in live_parts(directory):
                try:
                    tables.append(read(part))
                except FileNotFoundError:
                    raise
                except (pa.ArrowException, OSError) as exc:
                    raise StoreError(
                        f"results part {part} cannot be read ({exc}). It was not written by a finished chunk "
                        "of hpstudy; move it aside to recompute its runs, nothing else is touched."
                    ) from exc
            return tables
        except FileNotFoundError:
            time.sleep(0.01)
    raise StoreError(f"{directory} kept changing while being read (a compaction running?); try again.")


def read_runs(directory: Path) -> pd.DataFrame:
    """All stored runs of a study (empty frame if none); a part that does not read is an error naming it."""
    frames = [table.to_pandas() for table in read_parts(Path(directory), pq.read_table)]
    if not frames:
        return pd.DataFrame(columns=["run_id"])
    runs = pd.concat(frames, ignore_index=True)
    return runs.drop_duplicates("run_id").sort_values(["trial_id", "seed"], kind="stable").reset_index(drop=True)


def stored_ids(directory: Path) -> set[str]:
    """Run ids already in the store (only the run_id column is read)."""
    ids: set[str] = set()
    for table in read_parts(Path(directory), lambda part: pq.read_table(part, columns=["run_id"])):
        ids.update(table.column("run_id").to_pylist())
    return ids


def stored_environments(directory: Path) -> dict[str, int]:
    """Each distinct environment fingerprint (JSON text) in the store, with how many runs carry it."""
    counts: dict[str, int] = {}

    def read(part: Path) -> list:
        try:
            return pq.read_table(part, columns=["environment"]).column("environment").to_pylist()
        except KeyError as exc:
            raise StoreError(f"results part {part} has no environment column ({exc}); move it aside to recompute "
                             "its runs.") from exc

    for column in read_parts(Path(directory), read):
        for text in column:
            counts[text] = counts.get(text, 0) + 1
    return counts
