"""Training on a Dask cluster: `hpstudy run STUDY --scheduler ADDRESS`, or `run_study(..., client=Client)`.

Needs the optional extra: pip install "hpstudy[dask]".

Every Dask worker process that trains is what a local worker process is (hpstudy/training/parallel.py): one
thread, pinned to one core, with the numerics settings in place before JAX starts, through the same
start-up function as a local worker (numerics.prepare_process; `pin_worker`, run by the `PinToOneCore`
plugin the client registers, or by `--preload hpstudy.training.distributed`). So a run's bits are those of
`hpstudy run --workers 1` in the same numeric environment. A task is a whole part of a compile
group (parallel.plan_parts: whole chunks); each worker loads the dataset once and keeps it for the
following tasks. Finished runs stream back to the client through a Dask queue as each chunk lane ends;
the client is the only writer of the store and writes each batch as one atomic part, so a lost worker
loses only its runs in flight. Dask reschedules a lost worker's task; the runs it had already sent are
stored once (a recomputed run is checked to have the same bits, then dropped).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    import cloudpickle
    import distributed
except ImportError as exc:  # pragma: no cover - the core install has no Dask
    from hpstudy.errors import EngineError

    raise EngineError('the Dask backend needs the optional extra: pip install "hpstudy[dask]"') from exc

from hpstudy import store
from hpstudy.errors import EngineError
from hpstudy.training import numerics, parallel

PLUGIN_NAME = "hpstudy-pin-to-one-core"
# The dataset a worker holds (loaded once, reused by every task with the same loader) and how many times
# this worker process loaded one (the tests check it is once).
_data: dict = {}
DATA_LOADS = [0]


# ---- worker side -------------------------------------------------------------------------------------


def pin_worker(mode: str = numerics.DEFAULT_MODE) -> int:
    """Pin every thread of this Dask worker process to one core and apply the numerics `mode`, before JAX
    starts, with the start-up of a local worker (numerics.prepare_process, then the compilation cache).
    Returns the core. Idempotent."""
    core = numerics.claim_core()
    if parallel.CAN_PIN and not parallel.backend_started():
        for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
            try:  # threads started later inherit the core from the thread that starts them
                os.sched_setaffinity(int(tid), {core})
            except (ProcessLookupError, PermissionError):
                pass
    if not numerics.prepare_process(mode, core if parallel.CAN_PIN else None):
        raise EngineError(
            "JAX started in this Dask worker before it was pinned to one core with the numerics "
            f"settings of mode {mode!r}; start workers with --preload hpstudy.training.distributed (or let "
            "hpstudy register its plugin before any other task uses JAX)."
        )
    from hpstudy.training.compilation import enable_persistent_cache

    enable_persistent_cache()
    return core


def dask_setup(worker) -> None:
    """`dask worker --preload hpstudy.training.distributed`: pin the worker as it starts (default numerics mode)."""
    pin_worker()


class PinToOneCore(distributed.WorkerPlugin):
    """Pins each worker (present and future) to one core, in numerics `mode`, before any task of ours runs."""

    def __init__(self, mode: str = numerics.DEFAULT_MODE):
        self.mode = mode

    def setup(self, worker) -> None:
        pin_worker(self.mode)


def _check_worker(worker) -> None:
    """Refuse to train on a worker that runs more than one thread or is not pinned: its bits would differ."""
    if worker.state.nthreads != 1:
        raise EngineError(
            f"Dask worker {worker.address} runs {worker.state.nthreads} threads; hpstudy trains "
            "only on one-thread workers: start them with `dask worker --nthreads 1`."
        )
    if parallel.CAN_PIN and not parallel.pinned():
        raise EngineError(
            f"Dask worker {worker.address} is not pinned to one core; start it with "
            "--preload hpstudy.training.distributed, or run through hpstudy (which registers the plugin)."
        )


def _device_data(load_data: Callable, key: str):
    """The dataset and its device arrays, loaded once per worker process for a given loader."""
    if _data.get("key") != key:
        from hpstudy.training import engine

        _data.clear()
        dataset = load_data()
        DATA_LOADS[0] += 1
        _data.update(key=key, dataset=dataset, device=engine.device_data(dataset))
    return _data["dataset"], _data["device"]


def train_part(
    part_id: int,
    specs: list,
    load_data: Callable,
    data_key: str,
    study: str,
    study_sha256: str,
    queue_name: str,
    mode: str = numerics.DEFAULT_MODE,
) -> int:
    """A Dask task: train one part on this worker, sending each batch of finished runs, as store records,
    to the client's queue. Returns how many runs it trained."""
    from hpstudy.environment import fingerprint
    from hpstudy.training import engine

    worker = distributed.get_worker()
    _check_worker(worker)
    if numerics.applied_mode() != mode:
        raise EngineError(
            f"Dask worker {worker.address} runs in numerics mode {numerics.applied_mode()!r}, not "
            f"{mode!r}; restart the workers (a worker's mode is set before JAX starts)."
        )
    dataset, device = _device_data(load_data, data_key)
    env = fingerprint(mode)
    queue = distributed.Queue(queue_name, client=worker.client)

    def send(results) -> None:
        records = [store.to_record(r, study, study_sha256, dataset.fingerprint, env) for r in results]
        queue.put((worker.address, part_id, records))

    engine.execute(specs, lambda _: device, send)
    return len(specs)


# ---- client side -------------------------------------------------------------------------------------


def connect(scheduler: str | distributed.Client, timeout: str = "30s") -> tuple[distributed.Client, bool]:
    """A client for a scheduler address (and whether we opened it), or the client given."""
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    try:
        return distributed.Client(scheduler, timeout=timeout), True
    except (OSError, TimeoutError, ValueError, TypeError) as exc:  # ValueError, TypeError: not an address
        raise EngineError(
            f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start it with "
            "`dask scheduler` and pass the address it prints (tcp://HOST:8786)."
        ) from exc


def execute_on_dask(
    specs: Sequence,
    study,
    load_data: Callable,
    directory: Path,
    scheduler: str | distributed.Client,
    on_stored: Callable[[str, list[dict]], None] = lambda worker, records: None,
    mode: str = numerics.DEFAULT_MODE,
    check_environment: Callable[[str], None] | None = None,
) -> int:
    """Train `specs` on the cluster in numerics `mode` and store every finished run once; returns how many
    runs were computed again (a lost worker's task, rescheduled) and dropped. `on_stored(worker, records)`
    is called after each stored batch; `check_environment(fingerprint JSON)` before the first run of each
    environment the workers report is stored (it raises to refuse)."""
    client, opened = connect(scheduler)
    futures = []
    try:
        client.register_plugin(PinToOneCore(mode), name=PLUGIN_NAME)
        workers = len(client.scheduler_info().get("workers", {}))
        if workers == 0:
            client.wait_for_workers(1, timeout=120)
            workers = len(client.scheduler_info()["workers"])
        # n_train scales every part's cost alike, so the client needs no data to order the parts
        parts = parallel.plan_parts(specs, workers, 1)
        data_key = hashlib.sha256(cloudpickle.dumps(load_data)).hexdigest()
        queue = distributed.Queue(f"hpstudy-{uuid.uuid4().hex}", client=client)
        futures = [
            client.submit(
                train_part, i, part, load_data, data_key, study.name, study.sha256, queue.name, mode, pure=False
            )
            for i, part in enumerate(parts)
        ]
        return _collect(queue, futures, directory, on_stored, check_environment or (lambda env: None))
    except BaseException:
        if futures:  # stop the cluster's work for us (an error here, or Ctrl-C)
            client.cancel(futures)
        raise
    finally:
        if opened:
            client.close()


def _collect(queue, futures, directory: Path, on_stored, check_environment) -> int:
    """Store batches from the queue until every task has finished and the queue is empty."""
    stored: dict[str, str] = {}  # run_id -> parameter hash, of the runs this call stored
    environments: set[str] = set()
    recomputed = 0
    while True:
        try:
            worker, _, records = queue.get(timeout=0.5)
        except TimeoutError:
            failed = [f for f in futures if f.status == "error"]
            if failed:
                raise EngineError(f"a Dask task failed: {failed[0].exception()!r}") from failed[0].exception()
            if all(f.status == "finished" for f in futures) and queue.qsize() == 0:
                return recomputed
            continue
        new = []
        for record in records:
            digest = stored.get(record["run_id"])
            if digest is None:
                new.append(record)
            elif digest != record["param_sha256"]:
                raise EngineError(
                    f"run {record['run_id']} was trained twice (its worker was lost) and gave "
                    f"different bits: {digest} then {record['param_sha256']}; the workers' "
                    "environments differ (compare their fingerprints)."
                )
            else:
                recomputed += 1
        for env in {r["environment"] for r in new} - environments:
            check_environment(env)
            environments.add(env)
        if new:
            store.write_chunk(directory, new)
            stored.update((r["run_id"], r["param_sha256"]) for r in new)
            on_stored(worker, new)


def slurm_cluster(memory: str = "4GB", walltime: str = "04:00:00", **kwargs):
    """A dask-jobqueue SLURMCluster whose every job is one hpstudy worker: one core (--cpus-per-task=1),
    one process of one thread, pinned by the preload before JAX starts. Scale it with `cluster.scale(N)`."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        cores=1,
        processes=1,
        job_cpu=1,
        memory=memory,
        walltime=walltime,
        worker_extra_args=["--preload", "hpstudy.training.distributed"],
        **kwargs,
    )
