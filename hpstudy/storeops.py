"""Operations on whole stores: shards of a study (job arrays), merging stores, compacting a store's parts.

- Shards: `hpstudy run STUDY --shard I/N` runs only the runs whose identity (run_id) falls in shard I of N,
  so N array jobs split a study between them whatever the order of its trials, each writing its own store.
- Merge: `hpstudy merge OUT STORE...` combines stores into OUT; a run stored twice with the same values is
  taken once, with different values it is refused, naming both parts and the fields that differ.
- Compact: `hpstudy compact STORE` rewrites a store's many small parts (one per finished chunk) into a few
  large ones, without changing any value, through a journal (store.JOURNAL) so that a reader sees every
  run exactly once at every point, and a crash at any point loses nothing (see `compact`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hpstudy import locking, store
from hpstudy.errors import OutputError, StoreError, StudyError

# Runs per part written by merge and compact: 100,000 runs make 5 parts of a few MB each
# (benchmarks/store_scale.py), few enough that a scan opens a handful of files.
RUNS_PER_PART = 20_000
# `hpstudy run` compacts its store after writing to it when it holds this many parts (benchmarks/
# store_scale.py: 50,000 small parts make resume's scan take 40 s, compacted parts well under a second).
AUTO_COMPACT_PARTS = 500
# Columns that describe an execution rather than the run: two executions of one run (another day, another
# x86-64 machine under portable numerics) differ in them and are still the same run, with the same bits;
# merge takes either copy. Every other column must agree.
TIMING_COLUMNS = ("seconds", "compile_seconds", "environment")


# ---- shards ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def holds(self, run_id: str) -> bool:
        """Whether a run belongs to this shard: decided by its identity alone."""
        return int(run_id[:16], 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'I/N' with 0 <= I < N (as SLURM's --array=0-(N-1) numbers its tasks)."""
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise StudyError(
            f"--shard {text!r} is invalid: expected I/N with integers 0 <= I < N, "
            "e.g. --shard 0/3, --shard 1/3 and --shard 2/3 for three array jobs."
        )
    return shard


# ---- reading stores with their parts -----------------------------------------------------------------


def _read_parts(directory: Path) -> list[tuple[Path, pa.Table]]:
    """Every live part of a store with its table."""
    return store.read_parts(directory, lambda part: (part, pq.read_table(part)))


def _same(a, b) -> bool:
    """Equality of two stored values, NaN equal to NaN (a failed run's losses), lists element-wise."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _row(table: pa.Table, i: int) -> dict:
    """One row of a table as Python values."""
    return {name: table.column(name)[i].as_py() for name in table.column_names}


def differing_fields(a: dict, b: dict) -> list[str]:
    """The fields in which two stored copies of a run differ (timings and environment record excepted; a
    copy made before test-set predictions were kept does not differ from one with them)."""
    names = sorted((set(a) | set(b)) - set(TIMING_COLUMNS))
    return [
        n
        for n in names
        if not _same(a.get(n), b.get(n))
        and not (n in store.PREDICTION_COLUMNS and (a.get(n) is None or b.get(n) is None))
    ]


def _lacks_predictions(row: dict) -> bool:
    """Whether a stored copy of a run has no test-set predictions."""
    return any(row.get(n) is None for n in store.PREDICTION_COLUMNS)


def unique_runs(parts: Sequence[tuple[Path, pa.Table]]) -> tuple[pa.Table | None, int]:
    """One row per run over all parts, in part order, and how many identical duplicates were dropped.

    A run present twice with different values (or runs of different studies) is a StoreError naming both
    parts and the fields.
    """
    first: dict[str, tuple[int, int]] = {}
    keep: list[list[bool]] = []
    duplicates = 0
    studies: dict[str, Path] = {}
    for p, (path, table) in enumerate(parts):
        if "run_id" not in table.column_names:
            raise StoreError(f"results part {path} has no run_id column: it was not written by hpstudy.")
        for name in set(table.column("study").to_pylist()) if "study" in table.column_names else ():
            studies.setdefault(name, path)
        mask = []
        for i, rid in enumerate(table.column("run_id").to_pylist()):
            if rid not in first:
                first[rid] = (p, i)
                mask.append(True)
                continue
            q, j = first[rid]
            fields = differing_fields(_row(parts[q][1], j), _row(table, i))
            if fields:
                raise StoreError(
                    f"run {rid} is stored twice with different values: in {parts[q][0]} and in {path}, "
                    f"differing in {', '.join(fields)}. Nothing was written; remove the wrong copy (move "
                    "its part aside) and try again."
                )
            duplicates += 1
            if _lacks_predictions(_row(parts[q][1], j)) and not _lacks_predictions(_row(table, i)):
                # keep the copy with predictions (the values are otherwise the same)
                (keep[q] if q < p else mask)[j] = False
                first[rid] = (p, i)
                mask.append(True)
                continue
            mask.append(False)
        keep.append(mask)
    if len(studies) > 1:
        listed = "; ".join(f"{name!r} in {path}" for name, path in sorted(studies.items()))
        raise StoreError(
            f"the stores hold runs of different studies ({listed}); merge one study at a time. Nothing was written."
        )
    tables = [table.filter(pa.array(mask)) for (_, table), mask in zip(parts, keep) if any(mask)]
    if not tables:
        return None, duplicates
    try:
        return pa.concat_tables(tables, promote_options="default"), duplicates
    except pa.ArrowInvalid as exc:
        raise StoreError(
            f"parts of {sorted({str(p.parent) for p, _ in parts})} have incompatible columns "
            f"({exc}); they were written by different versions of hpstudy."
        ) from exc


def _sorted(table: pa.Table) -> pa.Table:
    """Rows in report order (trial, then seed): a compacted part then holds whole trials."""
    return table.sort_by([("trial_id", "ascending"), ("seed", "ascending"), ("run_id", "ascending")])


def _slices(table: pa.Table, runs_per_part: int) -> Iterator[pa.Table]:
    """The table cut into parts of at most `runs_per_part` rows."""
    for start in range(0, table.num_rows, runs_per_part):
        yield table.slice(start, runs_per_part)


# ---- merge -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MergeReport:
    """What a merge did."""

    directory: Path
    runs: int  # distinct runs in OUT afterwards
    written: int  # runs added to OUT
    duplicates: int  # identical copies taken once


def _check_store(path: Path) -> None:
    """A source store must be a folder of parts; say what to pass instead where it is not."""
    if not path.is_dir():
        raise StoreError(
            f"store {path} does not exist or is not a folder; pass a study's results folder "
            "(RESULTS/<study>, the one holding part-*.parquet files)."
        )
    if store.live_parts(path):
        return
    inner = sorted(p.name for p in path.iterdir() if p.is_dir() and store.live_parts(p))
    hint = f"; it holds the stores {', '.join(inner)}: pass {path}/<study>" if inner else ""
    raise StoreError(f"store {path} holds no part-*.parquet files{hint}.")


def check_environments(parts: Sequence[tuple[Path, pa.Table]]) -> None:
    """Refuse parts whose runs were made in different numeric environments (as `hpstudy run` refuses to add
    to such a store): StoreError naming two parts and every field in which their environments differ."""
    from hpstudy.environment import differences

    first: tuple[Path, str] | None = None
    for path, table in parts:
        if "environment" not in table.column_names:
            continue
        for text in dict.fromkeys(table.column("environment").to_pylist()):
            if first is None:
                first = (path, text)
                continue
            try:
                diffs = differences(first[1], text)
            except (ValueError, TypeError, AttributeError) as exc:
                raise StoreError(
                    f"results part {path} holds an environment record that does not parse ({exc}); "
                    "it was not written by hpstudy. Move it aside. Nothing was written."
                ) from exc
            if diffs:
                named = "; ".join(f"{field}: {old!r} vs {new!r}" for field, old, new in diffs)
                raise StoreError(
                    f"{first[0]} and {path} hold runs made in different numeric environments ({named}); their bits "
                    "would not be comparable. Merge each environment into a store of its own, or pass --allow-mixed "
                    "to store them side by side (each run keeps its own environment record). Nothing was written."
                )


def merge(
    out: str | os.PathLike,
    sources: Sequence[str | os.PathLike],
    runs_per_part: int = RUNS_PER_PART,
    allow_mixed: bool = False,
) -> MergeReport:
    """Combine the runs of `sources` into the store `out` (created if needed; its own runs count too).

    Every run is checked against every other copy of it first: any difference in value refuses the whole
    merge before anything is written, and so do runs made in different numeric environments unless
    `allow_mixed`. Runs OUT already holds are not written again, so a merge that crashed half-way is
    finished by running it again. Each written part is atomic (store.write_table). The sources' amendment logs
    (hpstudy/amend.py) are carried into OUT's, so that OUT names every amended value it holds.
    """
    out = Path(out)
    if not sources:
        raise StoreError("hpstudy merge needs at least one STORE to merge into OUT.")
    for source in sources:
        _check_store(Path(source))
    if out.exists() and not out.is_dir():
        raise StoreError(f"OUT {out} exists and is not a folder.")
    incoming = [part for source in sources for part in _read_parts(Path(source))]
    table, _ = unique_runs(incoming)  # refuse conflicting copies before OUT is touched (or created)
    study = table.column("study")[0].as_py() if table is not None and "study" in table.column_names else out.name
    if out.name != study:  # readers take a store's folder name for its study
        raise StoreError(f"OUT {out} must be named after the study: {out.parent / study}. Nothing was written.")
    if not allow_mixed:
        check_environments(incoming)
    with locking.store_lock(out):  # one writer per store, as for `hpstudy run`
        report = _merge_into(out, incoming, runs_per_part, allow_mixed)
        if report.runs:
            from hpstudy import amend  # here, not at the top: amend builds on this module

            amend.carry_logs(out, [Path(source) for source in sources])  # after the parts: a rerun completes it
        return report


def _merge_into(out: Path, incoming: list[tuple[Path, pa.Table]], runs_per_part: int, allow_mixed: bool) -> MergeReport:
    """`merge` of the sources' parts into OUT, holding OUT's lock."""
    store.remove_dead_temporaries(out)
    own = _read_parts(out)
    if not allow_mixed:
        check_environments(own + incoming)
    table, duplicates = unique_runs(own + incoming)
    present = {rid for _, t in own for rid in t.column("run_id").to_pylist()}
    if table is None:
        return MergeReport(out, 0, 0, duplicates)
    new = table.filter(pa.array([rid not in present for rid in table.column("run_id").to_pylist()]))
    if new.num_rows:
        new = _sorted(new)
        for piece in _slices(new, runs_per_part):
            store.write_table(piece, out / store.part_name(piece.column("run_id").to_pylist()))
        store.fsync_dir(out)
    return MergeReport(out, table.num_rows, new.num_rows, duplicates)


# ---- compact -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CompactReport:
    """What a compaction did."""

    directory: Path
    runs: int
    parts_before: int
    parts_after: int


@contextlib.contextmanager
def _compaction_lock(directory: Path) -> Iterator[None]:
    """Only one compaction of a store at a time: an OS lock, released by the OS if its holder dies."""
    with open(directory / ".compaction.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"another compaction of {directory} is running; wait for it to finish.") from None
        yield


@contextlib.contextmanager
def rewriting_parts(directory: Path) -> Iterator[None]:
    """Hold what rewriting a store's parts in place needs: its run lock and its compaction lock, and no
    unfinished compaction (whose journal names parts that are about to move); a StoreError otherwise."""
    with locking.store_lock(directory), _compaction_lock(directory):
        journal = store.read_journal(directory)
        if journal and (journal["add"] or journal["remove"]):
            raise StoreError(
                f"{directory} has an unfinished compaction; run `hpstudy compact {directory}` first. Nothing was written."
            )
        yield


def _write_journal(directory: Path, journal: dict) -> None:
    """Replace the journal atomically (temp file, fsync, rename, fsync of the folder)."""
    tmp = directory / f".{store.JOURNAL}.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(journal, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / store.JOURNAL)
    store.fsync_dir(directory)


def _finish(directory: Path, journal: dict, checkpoint: Callable[[str], None]) -> None:
    """Roll a committed compaction forward: pending parts into place, replaced parts removed, journal closed.
    Every step can be repeated, so a crash here is finished by the next compaction."""
    for i, name in enumerate(journal["add"]):
        pending = directory / (name + store.PENDING)
        if pending.exists():
            os.replace(pending, directory / name)
            checkpoint(f"rename:{i}")
    store.fsync_dir(directory)
    for i, name in enumerate(journal["remove"]):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
            checkpoint(f"remove:{i}")
    store.fsync_dir(directory)
    _write_journal(directory, {"generation": journal["generation"], "add": [], "remove": []})
    checkpoint("closed")


def recover(directory: str | os.PathLike, checkpoint: Callable[[str], None] = lambda step: None) -> None:
    """Finish a compaction that crashed after its commit, and delete pending parts of one that crashed
    before it (their runs are still in the parts they were copied from)."""
    directory = Path(directory)
    journal = store.read_journal(directory)
    if journal and (journal["add"] or journal["remove"]):
        _finish(directory, journal, checkpoint)
    for orphan in directory.glob(f"part-*.parquet{store.PENDING}"):
        orphan.unlink()


def compact(
    directory: str | os.PathLike,
    runs_per_part: int = RUNS_PER_PART,
    checkpoint: Callable[[str], None] = lambda step: None,
) -> CompactReport:
    """Rewrite a store's small parts (under half of `runs_per_part` runs) into parts of up to `runs_per_part`
    runs, values unchanged; larger parts are left as they are.

    1. the new parts are written under pending names (part-*.parquet.pending, which readers ignore), each
       fsynced; 2. the journal naming the parts added and the parts they replace is written atomically:
       the commit; 3. the pending parts are renamed into place; 4. the replaced parts are removed; 5. the
       journal is closed. A reader (store.live_parts) applies a committed journal to what it lists, so it
       sees the old parts before step 2 and the new ones from step 2 on, each run exactly once; a crash
       before step 2 leaves the old store, after it the next compaction finishes steps 3-5 (`recover`).
       Parts written meanwhile by a run are not in the journal, so they stay. `checkpoint(step)` is
       called after every step (tests crash there).
    """
    directory = Path(directory)
    if runs_per_part < 1:
        raise StoreError(f"runs per part must be >= 1, not {runs_per_part}.")
    _check_store(directory)
    try:
        with _compaction_lock(directory):
            return _compact(directory, runs_per_part, checkpoint)
    except OSError as exc:  # a read-only or unwritable store; what a failed write left is cleaned up (recover)
        why = (
            "it cannot be written here (compacting rewrites its parts: run it as the store's owner, or on a "
            "writable copy)"
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            else store._why(exc)
        )
        raise OutputError(
            f"cannot compact {directory}: {why}. The store is unchanged (a compaction is undone or "
            "finished by the next one); its runs read as before."
        ) from exc


def _compact(directory: Path, runs_per_part: int, checkpoint: Callable[[str], None]) -> CompactReport:
    """`compact`, holding the compaction lock."""
    recover(directory, checkpoint)
    store.remove_dead_temporaries(directory)
    parts = _read_parts(directory)
    table, _ = unique_runs(parts)  # refuses conflicting copies anywhere in the store
    # parts at least half full stay as they are: compacting again only rewrites what runs added since
    large = [(path, t) for path, t in parts if t.num_rows >= max(1, runs_per_part // 2)]
    small = [(path, t) for path, t in parts if t.num_rows < max(1, runs_per_part // 2)]
    runs = 0 if table is None else table.num_rows
    if len(small) <= 1:
        return CompactReport(directory, runs, len(parts), len(parts))
    kept = {rid for _, t in large for rid in t.column("run_id").to_pylist()}
    rows, _ = unique_runs(small)
    rows = rows.filter(pa.array([rid not in kept for rid in rows.column("run_id").to_pylist()]))
    pieces = list(_slices(_sorted(rows), runs_per_part))
    add = [store.part_name(p.column("run_id").to_pylist()) for p in pieces]
    for i, (name, piece) in enumerate(zip(add, pieces)):
        store.write_table(piece, directory / (name + store.PENDING))
        checkpoint(f"pending:{i}")
    store.fsync_dir(directory)
    previous = store.read_journal(directory)
    journal = {
        "generation": (previous["generation"] if previous else 0) + 1,
        "add": add,
        # a new part can hold exactly an old part's runs (same name): renaming replaces it, never remove it
        "remove": [path.name for path, _ in small if path.name not in add],
    }
    _write_journal(directory, journal)
    checkpoint("commit")
    _finish(directory, journal, checkpoint)
    return CompactReport(directory, runs, len(parts), len(large) + len(add))
