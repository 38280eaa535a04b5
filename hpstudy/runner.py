"""Run a study: work out which (trial, seed) runs are missing from the store, execute them, store each chunk."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from hpstudy import engine, parallel, store, storeops
from hpstudy.compilation import enable_persistent_cache
from hpstudy.data import Dataset
from hpstudy.environment import fingerprint
from hpstudy.errors import StoreError
from hpstudy.study import Study


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What one invocation did."""

    directory: Path
    total: int
    already_stored: int
    computed: int
    seconds: float
    recomputed: int = 0  # on a Dask cluster: runs trained again after a worker was lost (stored once)


def _compact_if_many(directory: Path, parts_written: int) -> None:
    """Compact the store after a run that wrote many parts (one per finished chunk), so that the next scan,
    list and report open a few large parts instead (storeops.compact: values unchanged, crash-safe)."""
    if parts_written >= storeops.AUTO_COMPACT_PARTS:
        try:
            storeops.compact(directory)
        except StoreError as exc:  # the runs are stored either way; compacting can wait
            print(f"hpstudy: warning: the store was not compacted ({exc}); run `hpstudy compact {directory}` "
                  "later.", file=sys.stderr)


def run_study(
    study: Study,
    seeds: range,
    load_data: Callable[[], Dataset],
    results: str | os.PathLike,
    progress: bool = True,
    workers: int = 1,
    shard: "storeops.Shard | None" = None,
    scheduler=None,
) -> RunReport:
    """Compute and store every run of `study` over `seeds` that the store does not hold yet.

    Training runs on one core per process (see hpstudy/parallel.py): with workers=1 in this process,
    pinned to one core if JAX has not started yet (else in one worker process); with more, in that many
    single-core worker processes. The bits of every run are the same either way. shard: only the runs of
    that shard (hpstudy/storeops.py), for job arrays that each write their own store. scheduler: a Dask
    scheduler address or distributed.Client: train on that cluster instead (hpstudy/distributed.py).
    """
    directory = store.study_dir(results, study.name)
    done = store.stored_ids(directory)
    specs = study.runs(seeds)
    if shard is not None:
        specs = [spec for spec in specs if shard.holds(spec.run_id)]
    todo = [spec for spec in specs if spec.run_id not in done]
    if not todo:
        return RunReport(directory, len(specs), len(specs), 0, 0.0)
    if scheduler is not None:
        from hpstudy.distributed import execute_on_dask

        start = time.perf_counter()
        written = [0]
        with tqdm(total=len(todo), unit="run", desc=study.name, file=sys.stderr, disable=not progress) as bar:

            def on_stored(worker: str, records: list[dict]) -> None:
                written[0] += 1
                bar.update(len(records))

            recomputed = execute_on_dask(todo, study, load_data, directory, scheduler, on_stored)
        _compact_if_many(directory, written[0])
        return RunReport(directory, len(specs), len(specs) - len(todo), len(todo), time.perf_counter() - start,
                         recomputed)
    if workers < 1:
        raise ValueError(f"workers={workers} is invalid; expected an integer >= 1.")
    in_process = workers == 1 and parallel.pin_one_core()
    if in_process:
        enable_persistent_cache()  # a later process loads the compiled programs instead of compiling again
    dataset = load_data()  # only now: a fully stored study needs no data at all
    env = fingerprint()
    start = time.perf_counter()
    with tqdm(total=len(todo), unit="run", desc=study.name, file=sys.stderr, disable=not progress) as bar:

        parts = [0]

        def on_chunk(results_: list[engine.RunResult]) -> None:
            records = [store.to_record(r, study.name, study.sha256, dataset.fingerprint, env) for r in results_]
            store.write_chunk(directory, records)
            parts[0] += 1
            bar.update(len(results_))

        if in_process:
            device = engine.device_data(dataset)
            engine.execute(todo, lambda _: device, on_chunk)
        else:
            parallel.execute_parallel(todo, dataset, on_chunk, workers)
    _compact_if_many(directory, parts[0])
    return RunReport(directory, len(specs), len(specs) - len(todo), len(todo), time.perf_counter() - start)
