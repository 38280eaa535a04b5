"""Run a study: work out which (trial, seed) runs are missing from the store, execute them, store each chunk.

One run reads the store once (`StoreSession`, through store.read_contents), under the store's lock when it
can; the missing runs, the check of numeric environments and the runs it returns come from that read and
the records this process stores after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from hpstudy import locking, store, storeops
from hpstudy.data import Dataset
from hpstudy.environment import differences, fingerprint
from hpstudy.errors import LockedError, StoreError
from hpstudy.study import Study
from hpstudy.training import engine, numerics, parallel
from hpstudy.training.compilation import enable_persistent_cache


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What one invocation did."""

    directory: Path
    total: int
    already_stored: int
    computed: int
    seconds: float
    recomputed: int = 0  # on a Dask cluster: runs trained again after a worker was lost (stored once)
    # the store's runs after this call (the one read plus what this call stored), in the session's columns
    stored: store.Contents | None = dataclasses.field(default=None, compare=False, repr=False)


class StoreSession:
    """One `hpstudy run` on a study's store: its contents read once, and its lock held from then on.

    Entering it (`open`) reads the store:
    - a store folder that does not exist yet holds nothing and is not read; the lock, which creates the
      folder, is taken by `lock`, so that a run refused before (a confirmation declined, a dataset that
      does not load) leaves no folder behind;
    - a store that has a lock file is locked (without waiting) and read under the lock;
    - a store without one (no hpstudy process ever locked it: made by copying parts) is read without
      making one, and so is a store whose lock another process holds: a study whose runs are all stored
      then needs no lock and writes nothing; otherwise `lock` takes the lock (with another holder:
      LockedError, or with `wait` waits) and reads again only if the store's parts changed since the
      read (what another process stored meanwhile is then not computed again).
    The lock file gets this process's pid only when runs are missing: a fully stored study writes nothing.
    columns: those of store.read_contents (None: all, for a frame of the runs).
    """

    def __init__(
        self,
        directory: Path,
        study: str,
        specs: list,
        wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
        columns=store.RUN_COLUMNS,
    ):
        self.directory, self.study, self.specs = Path(directory), study, list(specs)
        self.wait, self.on_wait, self.columns = wait, on_wait, columns
        self.contents: store.Contents | None = None
        self.locked = False
        self._signature: tuple | None = None  # the parts a read without the lock saw
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> StoreSession:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Read the store (see the class)."""
        if not self.directory.is_dir():
            self.contents, self._signature = store.Contents.empty(self.directory, self.columns), ()
            return
        if not (self.directory / locking.LOCK_NAME).exists():
            self._read_unlocked()
            return
        try:
            self._stack.enter_context(locking.store_lock(self.directory, wait=False, announce=False))
        except LockedError:
            self._read_unlocked()
            if self.todo and not self.wait:
                raise
            return
        self.locked = True
        self.contents = store.read_contents(self.directory, self.study, self.columns)
        self._announce()

    def lock(self) -> None:
        """Hold the store's lock, with contents that hold under it (waiting, or LockedError: see the class)."""
        if self.locked:
            return
        self._stack.enter_context(locking.store_lock(self.directory, self.wait, self.on_wait, announce=False))
        self.locked = True
        if self._signature is None or store.parts_signature(self.directory) != self._signature:
            self.contents = store.read_contents(self.directory, self.study, self.columns)
        self._signature = None
        self._announce()

    def close(self) -> None:
        """Release the lock (if held)."""
        self._stack.close()
        self.locked = False

    def _read_unlocked(self) -> None:
        self._signature = store.parts_signature(self.directory)  # before the read: a part added during it shows
        self.contents = store.read_contents(self.directory, self.study, self.columns)

    def _announce(self) -> None:
        """Name this process in the lock file once it is going to write."""
        if self.todo:
            locking.announce_holder(self.directory)

    @property
    def todo(self) -> list:
        """The runs of the session not in the store."""
        done = self.contents.ids
        return [spec for spec in self.specs if spec.run_id not in done]


def run_study(
    study: Study,
    seeds: range,
    load_data: Callable[[], Dataset],
    results: str | os.PathLike,
    progress: bool = True,
    workers: int = 1,
    numerics_mode: str | None = None,
    allow_mixed: bool = False,
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
    shard: storeops.Shard | None = None,
    scheduler=None,
    session: StoreSession | None = None,
) -> RunReport:
    """Compute and store every run of `study` over `seeds` that the store does not hold yet.

    Training runs on one core per process (see hpstudy/training/parallel.py): with workers=1 in this process,
    pinned to one core if JAX has not started yet (else in one worker process); with more, in that many
    single-core worker processes. The bits of every run are the same either way. shard: only the runs of
    that shard (hpstudy/storeops.py), for job arrays that each write their own store. scheduler: a Dask
    scheduler address or distributed.Client: train on that cluster instead (hpstudy/training/distributed.py), whose
    workers apply `numerics_mode` as local workers do.

    numerics_mode: one of numerics.MODES, e.g. "portable-v2" (bits equal on any x86-64-v3 CPU) or "native"
    (hpstudy/training/numerics.py); None: the mode of the runs already stored, else the default (`resolve_mode`).
    A store whose runs were made in another numeric environment (packages, numerics mode, device) is
    refused unless allow_mixed (see `check_mixing`).

    The results folder is checked for writing before the data is loaded or anything trained, and the
    study's store is locked while runs are computed and stored (hpstudy/locking.py): a second process
    on it waits (`wait`) or is refused; nothing is written when the data cannot be loaded. The store is
    read once (see `StoreSession`; `session`: one the caller opened on this store, e.g. to plan from its
    read first); the report's `stored` holds that read and the runs stored since.
    """
    directory = store.study_dir(results, study.name)
    store.check_writable(directory)
    with contextlib.ExitStack() as stack:
        if session is None:
            session = stack.enter_context(
                StoreSession(directory, study.name, run_specs(study, seeds, shard), wait, on_wait)
            )
        elif session.directory != directory:
            raise ValueError(f"the session is on {session.directory}, not on {directory}")
        return _run(study, session, load_data, progress, workers, numerics_mode, allow_mixed, scheduler)


def _run(
    study: Study,
    session: StoreSession,
    load_data: Callable[[], Dataset],
    progress: bool,
    workers: int,
    numerics_mode: str,
    allow_mixed: bool,
    scheduler,
) -> RunReport:
    """`run_study` in an open session."""
    directory, total = session.directory, len(session.specs)
    if not session.todo:  # a fully stored study: no data, no training, no lock wait
        return RunReport(directory, total, total, 0, 0.0, stored=session.contents)
    numerics_mode = resolve_mode(numerics_mode, session.contents)
    check_mode_covers(session.todo, numerics_mode)  # before any run trains: none of the study's is stored then
    if scheduler is not None:
        session.lock()
        todo = session.todo
        if not todo:
            return RunReport(directory, total, total, 0, 0.0, stored=session.contents)
        return _run_on_dask(study, session, load_data, scheduler, progress, numerics_mode, allow_mixed)
    in_process = prepare_training(workers, numerics_mode)
    env = fingerprint(numerics_mode)
    if not allow_mixed:
        check_mixing(session.contents, env)  # before any data is loaded
    dataset = load_data()  # only now: a fully stored study needs no data (and a new store gets no folder on failure)
    if not session.locked:
        # Under the lock: what another process stored while this one waited is not computed again.
        session.lock()
        if not allow_mixed:
            check_mixing(session.contents, env)
    todo = session.todo
    if not todo:
        return RunReport(directory, total, total, 0, 0.0, stored=session.contents)
    seconds = _train_and_store(study, todo, dataset, session, env, progress, workers, numerics_mode, in_process)
    return RunReport(directory, total, total - len(todo), len(todo), seconds, stored=session.contents)


def stored_mode(stored: store.Contents) -> str | None:
    """The numerics mode every stored run records, or None for an empty store, runs of several modes (stored
    with --allow-mixed) or runs that record none."""
    modes = {json.loads(text).get("numerics") for text in stored.environments()}
    return modes.pop() if len(modes) == 1 else None


def resolve_mode(requested: str | None, stored: store.Contents) -> str:
    """The numerics mode to train in: the one asked for; else the stored runs' mode, so that seeds added to a
    store made in an earlier default mode keep its bits; else numerics.DEFAULT_MODE."""
    return requested or stored_mode(stored) or numerics.DEFAULT_MODE


def check_mode_covers(specs, numerics_mode: str) -> None:
    """Refuse a numerics mode that is unknown, or (fixed-order) cannot train one of the runs `specs`, naming the
    setting, before anything trains (the engine would refuse only when it compiles that run's chunk)."""
    numerics.check_mode(numerics_mode)
    if numerics_mode == numerics.FIXED_ORDER:
        from hpstudy.training.model import check_fixed_order

        for spec in specs:
            check_fixed_order(spec.config)


def run_specs(study: Study, seeds: range, shard: storeops.Shard | None = None) -> list:
    """The runs of `study` over `seeds` (only those of `shard`, if one is given)."""
    specs = study.runs(seeds)
    return specs if shard is None else [spec for spec in specs if shard.holds(spec.run_id)]


def _train_and_store(
    study: Study,
    todo: list,
    dataset: Dataset,
    session: StoreSession,
    env: dict,
    progress: bool,
    workers: int,
    numerics_mode: str,
    in_process: bool,
) -> float:
    """Train `todo`, storing each finished chunk, then compact the store if it holds many parts; the
    seconds it took."""
    directory = session.directory
    start = time.perf_counter()
    parts = [0]
    with tqdm(total=len(todo), unit="run", desc=study.name, file=sys.stderr, disable=not progress) as bar:

        def on_chunk(results_: list[engine.RunResult]) -> None:
            records = [store.to_record(r, study.name, study.sha256, dataset.fingerprint, env) for r in results_]
            store.write_chunk(directory, records)
            session.contents.add(records)
            parts[0] += 1
            bar.update(len(results_))

        train(todo, dataset, on_chunk, workers, numerics_mode, in_process)
    seconds = time.perf_counter() - start
    _compact_if_many(directory, parts[0])
    return seconds


def _run_on_dask(
    study: Study,
    session: StoreSession,
    load_data,
    scheduler,
    progress: bool,
    numerics_mode: str,
    allow_mixed: bool,
) -> RunReport:
    """`run_study` on a Dask cluster: the workers train, this process stores (hpstudy/training/distributed.py). The
    store's environments are checked against each environment the workers report (unless allow_mixed)."""
    from hpstudy.training.distributed import execute_on_dask

    directory, total, todo = session.directory, len(session.specs), session.todo
    start, written = time.perf_counter(), [0]
    with tqdm(total=len(todo), unit="run", desc=study.name, file=sys.stderr, disable=not progress) as bar:

        def on_stored(worker: str, records: list[dict]) -> None:
            session.contents.add(records)
            written[0] += 1
            bar.update(len(records))

        recomputed = execute_on_dask(
            todo,
            study,
            load_data,
            directory,
            scheduler,
            on_stored,
            numerics_mode,
            check_environment=None if allow_mixed else lambda env: check_mixing(session.contents, env),
        )
    seconds = time.perf_counter() - start
    _compact_if_many(directory, written[0])
    return RunReport(directory, total, total - len(todo), len(todo), seconds, recomputed, session.contents)


def _compact_if_many(directory: Path, parts_written: int) -> None:
    """After a run that wrote parts (one per finished chunk), compact the store if it holds many, so that
    the next scan, list and report open a few large parts instead (storeops.compact: values unchanged,
    crash-safe; parts left by an interrupted run are compacted with the rest)."""
    if parts_written and len(store.live_parts(directory)) >= storeops.AUTO_COMPACT_PARTS:
        try:
            storeops.compact(directory)
        except StoreError as exc:  # the runs are stored either way; compacting can wait
            print(
                f"hpstudy: warning: the store was not compacted ({exc}); run `hpstudy compact {directory}` later.",
                file=sys.stderr,
            )


def prepare_training(workers: int, numerics_mode: str) -> bool:
    """Check the numerics mode against this CPU; return whether training may run in this process (one
    worker, and this process could still be pinned and set up before JAX started), else in workers."""
    if workers < 1:
        raise ValueError(f"workers={workers} is invalid; expected an integer >= 1.")
    numerics.check_floor(numerics.check_mode(numerics_mode))
    return workers == 1 and numerics.prepare_process(numerics_mode)


def train(specs, dataset: Dataset, on_chunk, workers: int, numerics_mode: str, in_process: bool) -> None:
    """Train `specs` in this process (see `prepare_training`) or in single-core worker processes; each batch
    of finished runs goes to `on_chunk` as it finishes."""
    if in_process:
        enable_persistent_cache()  # a later process loads the compiled programs instead of compiling again
        device = engine.device_data(dataset)
        engine.execute(specs, lambda _: device, on_chunk)
    else:
        parallel.execute_parallel(specs, dataset, on_chunk, workers, numerics=numerics_mode)


def check_mixing(stored: store.Contents, env: dict) -> None:
    """Refuse to add runs to a store whose runs (`stored`, store.read_contents) were made in another numeric
    environment (other pinned packages, numerics mode or settings, device): their bits could not be
    compared with the new ones."""
    directory = stored.directory
    for text, count in stored.environments().items():
        diffs = differences(text, env)
        if diffs:
            named = "; ".join(f"{field}: stored {old!r}, now {new!r}" for field, old, new in diffs)
            raise StoreError(
                f"{directory} holds {count} runs made in another numeric environment ({named}). Runs made "
                "there and here would not be bit-comparable. Use another --results folder, run in the stored "
                "environment (see `hpstudy verify`), or pass --allow-mixed to store them side by side "
                "(each run keeps its own environment record)."
            )
