"""One core per training process, and worker processes to use the others.

XLA:CPU splits some work (matrix products, large fusions, library reductions) by the size of its thread
pool, which it takes from the cores the process may run on; so a run's bits would depend on the machine's
core count (measured: `taskset -c 0` changes parameter hashes). hpstudy therefore trains in processes
pinned to a single core, before JAX starts its CPU backend: every run sees a one-thread XLA, whatever the
machine, and the other cores are used by more such processes, each training whole chunks. On the 2-core
machine this is also faster than one two-thread process (docs/design.md, benchmarks/engine.json): small
per-step kernels gain nothing from a second thread but pay for the hand-over.

The parent process (`WorkerPool`, `execute_parallel`) never computes with JAX: it plans the work, hands parts of it to
the workers and passes their finished runs on (to the store) as they arrive.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from hpstudy.errors import EngineError

# Pinning lives with the other settings a training process needs before JAX starts (hpstudy/training/numerics.py).
from hpstudy.training.numerics import (  # noqa: F401 - pin_one_core, pinned, backend_started: part of this module's API
    CAN_PIN,
    DEFAULT_MODE,
    backend_started,
    pin_one_core,
    pinned,
    prepare_process,
    usable_cores,
)


def accelerator_installed() -> bool:
    """Whether JAX may pick a GPU or TPU here: a plugin for one is installed and JAX_PLATFORMS does not
    restrict JAX to the CPU. Checked without starting JAX."""
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return False
    import importlib.metadata

    names = {(dist.metadata["Name"] or "").lower().replace("_", "-") for dist in importlib.metadata.distributions()}
    return any(name.startswith(("jax-cuda", "jax-rocm", "libtpu")) for name in names)


def default_workers() -> int:
    """One worker per usable core on a CPU; one process on a machine with an accelerator (workers would
    each claim most of its memory) or where processes cannot be pinned (each would use every core)."""
    if accelerator_installed() or not CAN_PIN:
        return 1
    return max(1, len(usable_cores()))


def plan_parts(specs: Sequence, workers: int, n_train: int) -> list[list]:
    """Split runs into parts for the workers: each compile group (and dropout variant) is cut into at most
    `workers` parts of whole chunks, and parts are ordered by estimated cost, largest first, so that no
    worker is left with a long part at the end. Which runs share a part never changes their bits."""
    from hpstudy.training import engine

    parts = []
    for static, group in engine.compile_groups(specs).items():
        width = engine.chunk_width(static)
        for dropout in (True, False):
            runs = [spec for spec in group if engine.uses_dropout(spec) == dropout]
            if not runs:
                continue
            chunks = math.ceil(len(runs) / width)
            per_part = math.ceil(chunks / min(workers, chunks)) * width
            parts.extend(runs[i : i + per_part] for i in range(0, len(runs), per_part))

    def cost(part) -> float:
        from hpstudy.budget import macs

        config = part[0].config
        return len(part) * config.epochs * n_train * macs(config.hidden, config.dataset)

    return sorted(parts, key=cost, reverse=True)


# ---- worker side -------------------------------------------------------------------------------------

_worker: dict = {}


def _exit_with_parent(parent: int) -> None:
    """Stop this worker once its parent is gone (killed, say): it would otherwise train for nobody."""

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init_worker(cores, results, dataset, cache: bool, parent: int, numerics: str = DEFAULT_MODE) -> None:
    """Apply the numerics settings and pin this worker to its core before JAX starts, then put the dataset
    on the device once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    core = cores.get()
    prepare_process(numerics, core if CAN_PIN else None)
    _exit_with_parent(parent)
    from hpstudy.training import engine
    from hpstudy.training.compilation import enable_persistent_cache

    if cache:
        enable_persistent_cache()
    _worker.update(results=results, device=engine.device_data(dataset))


def _run_part(part_id: int, specs: list) -> None:
    """Train one part and send its finished runs to the parent as they finish, then a closing message."""
    from hpstudy.training import engine

    results = _worker["results"]
    try:
        engine.execute(specs, lambda _: _worker["device"], lambda rs: results.put(("results", part_id, rs)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(("error", part_id, traceback.format_exc()))
        return
    results.put(("done", part_id, None))


# ---- parent side -------------------------------------------------------------------------------------


class WorkerPool:
    """Single-core worker processes, each holding the dataset on its device, that train parts of studies.

    Use as a context manager; leaving it because of an error or an interrupt stops the workers at once.
    """

    def __init__(self, dataset, workers: int, cache: bool = True, numerics: str = DEFAULT_MODE):
        cores = usable_cores()
        ctx = mp.get_context("spawn")  # never fork a process that may hold JAX's threads
        core_queue, self.results = ctx.Queue(), ctx.Queue()
        for i in range(workers):
            core_queue.put(cores[i % len(cores)])
        self.workers = workers
        self.n_train = len(dataset.train.labels)
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(core_queue, self.results, dataset, cache, os.getpid(), numerics),
        )

    def run(self, specs: Sequence, on_results: Callable[[list], None]) -> None:
        """Train `specs`; `on_results` gets each batch of finished runs here as soon as a worker sends it
        (so a crash loses only the runs in flight)."""
        parts = plan_parts(specs, self.workers, self.n_train)
        futures = [self.pool.submit(_run_part, i, part) for i, part in enumerate(parts)]
        open_parts, errors = set(range(len(parts))), []
        while open_parts:
            try:
                kind, part_id, payload = self.results.get(timeout=0.5)
            except queue.Empty:
                for future in futures:  # a worker that died (killed, out of memory) never says so itself
                    if future.done() and future.exception() is not None:
                        raise EngineError(f"a worker process died: {future.exception()!r}") from None
                continue
            if kind == "results":
                on_results(payload)
            else:
                open_parts.discard(part_id)
                if kind == "error":
                    errors.append(payload)
        if errors:
            raise EngineError("training failed in a worker process:\n" + errors[0])

    def close(self, kill: bool = False) -> None:
        """Shut the workers down; kill: without waiting for the parts they are training."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=not kill, cancel_futures=True)
        if kill:
            for process in processes:
                process.terminate()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(kill=exc_type is not None)


def execute_parallel(
    specs: Sequence,
    dataset,
    on_results: Callable[[list], None],
    workers: int,
    cache: bool = True,
    numerics: str = DEFAULT_MODE,
) -> None:
    """Train `specs` in up to `workers` single-core processes (no more than there are parts to train)."""
    parts = plan_parts(specs, workers, len(dataset.train.labels))
    with WorkerPool(dataset, max(1, min(workers, len(parts))), cache, numerics) as pool:
        pool.run(specs, on_results)
