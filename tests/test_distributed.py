"""The Dask backend (hpstudy/training/distributed.py) on a real cluster: a scheduler and two one-thread workers
started as separate processes on 127.0.0.1, as a user starts them."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip("distributed")

from hpstudy import data as hdata  # noqa: E402
from hpstudy import store  # noqa: E402
from hpstudy.runner import run_study  # noqa: E402
from hpstudy.study import load_study  # noqa: E402
from hpstudy.training import parallel  # noqa: E402
from tests.conftest import run_hashes  # noqa: E402

# the same dataset as tests/conftest.synthetic_dataset, importable by the workers
LOAD = functools.partial(hdata.synthetic, n_train=500, n_test=200)


# Runs a command with every core allowed (this test process is pinned to one), without forking this
# multithreaded process to do it (no preexec_fn).
UNPINNED = (
    "import os, sys\nif hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, range(os.cpu_count()))\n"
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Cluster:
    """A scheduler and `workers` one-thread workers, each its own process group; stopped on exit."""

    def __init__(self, tmp: Path, workers: int = 2, preload: bool = False, nanny: bool = False):
        self.tmp, self.procs = tmp, []
        dask = str(Path(sys.executable).with_name("dask"))
        scheduler_file = tmp / "scheduler.json"
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        self.procs.append(
            self._start(
                [
                    dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                env,
                "scheduler",
            )
        )
        worker = [
            dask,
            "worker",
            "--scheduler-file",
            str(scheduler_file),
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            *([] if nanny else ["--no-nanny"]),
            "--no-dashboard",
            *(["--preload", "hpstudy.training.distributed"] if preload else []),
        ]
        self.workers = [self._start(worker, env, f"worker{i}") for i in range(workers)]
        self.procs += self.workers
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start: " + self.logs()
            time.sleep(0.2)
        self.client = distributed.Client(scheduler_file=str(scheduler_file), timeout="30s")
        # a hung cluster fails the test instead of hanging it: everything is stopped after 5 minutes
        self.watchdog = threading.Timer(300, self.close)
        self.watchdog.start()
        self.client.wait_for_workers(workers, timeout=90)

    def _start(self, cmd, env, name) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        return subprocess.Popen(
            [sys.executable, "-c", UNPINNED, *cmd],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.tmp.glob("*.log")))

    def pid_of(self, address: str) -> int:
        """The process id of the worker at `address`."""
        return self.client.run(os.getpid, workers=[address])[address]

    def close(self) -> None:
        self.watchdog.cancel()
        try:
            self.client.close()
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_cluster_gives_the_bits_of_one_local_worker(write_study, tmp_path):
    path = write_study()
    local = run_hashes(path, range(3), tmp_path / "local")  # this process, one core: `--workers 1`
    cluster = Cluster(_mkdir(tmp_path / "cluster"))
    try:
        study = load_study(path)
        report = run_study(study, range(3), LOAD, tmp_path / "dask", progress=False, scheduler=cluster.client)
        assert (report.computed, report.recomputed) == (12, 0)
        runs = store.read_runs(report.directory)
        assert len(runs) == 12
        assert dict(zip(runs["run_id"], runs["param_sha256"])) == local
        # every worker ran one thread on one core, loaded the dataset at most once, and trained its parts
        assert set(cluster.client.run(lambda: len(os.sched_getaffinity(0))).values()) == {1}
        loads = cluster.client.run(
            lambda: __import__("hpstudy.training.distributed").training.distributed.DATA_LOADS[0]
        )
        assert len(parallel.plan_parts(study.runs(range(3)), 2, 1)) == 4  # more tasks than workers ...
        assert all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1  # ... yet one load per worker
        # resumable as a local run: nothing left to do, nothing written
        parts = store.live_parts(report.directory)
        again = run_study(study, range(3), LOAD, tmp_path / "dask", progress=False, scheduler=cluster.client)
        assert again.computed == 0 and store.live_parts(report.directory) == parts
    finally:
        cluster.close()


def test_workers_under_a_nanny_are_pinned_and_give_the_same_bits(write_study, tmp_path):
    """`dask worker` by default (and dask-jobqueue's job scripts) runs each worker in a child process of a
    nanny: the plugin pins that child, and a worker the nanny restarts after kill -9 is pinned again."""
    path = write_study()
    local = run_hashes(path, range(2), tmp_path / "local")
    cluster = Cluster(_mkdir(tmp_path / "cluster"), workers=1, nanny=True)
    try:
        study = load_study(path)
        report = run_study(study, range(2), LOAD, tmp_path / "dask", progress=False, scheduler=cluster.client)
        runs = store.read_runs(report.directory)
        assert dict(zip(runs["run_id"], runs["param_sha256"])) == local
        ((address, pid),) = cluster.client.run(os.getpid).items()
        assert pid != cluster.workers[0].pid  # the worker is the nanny's child, not the process we started
        assert cluster.client.run(lambda: len(os.sched_getaffinity(0))) == {address: 1}
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker process; the plugin pins it before our tasks
        deadline = time.monotonic() + 90
        while set(cluster.client.run(os.getpid, on_error="ignore").values()) in ({pid}, set()):
            assert time.monotonic() < deadline, "the nanny did not restart its worker: " + cluster.logs()
            time.sleep(0.5)
        again = run_study(study, range(3), LOAD, tmp_path / "dask", progress=False, scheduler=cluster.client)
        assert again.computed == 4
        assert set(cluster.client.run(lambda: len(os.sched_getaffinity(0))).values()) == {1}
        runs = store.read_runs(report.directory)
        assert dict(zip(runs["run_id"], runs["param_sha256"])) == {
            **local,
            **run_hashes(path, range(2, 3), tmp_path / "local3"),
        }
    finally:
        cluster.close()


def test_sigkill_of_a_worker_mid_task_loses_nothing_and_stores_nothing_twice(write_study, tmp_path):
    from hpstudy.training.distributed import execute_on_dask

    path = write_study(**{"patience = 0": "patience = 5", "epochs = 3": "epochs = 4"})  # no run stops early
    seeds = range(6)  # 24 runs: per dropout variant 3 chunks of 4, cut into parts of 8 and 4 runs
    local = run_hashes(path, seeds, tmp_path / "local")
    cluster = Cluster(_mkdir(tmp_path / "cluster"), preload=True)
    try:
        study = load_study(path)
        specs = study.runs(seeds)
        directory = store.study_dir(tmp_path / "dask", study.name)
        killed: list[tuple[str, int]] = []

        def kill_mid_task(worker: str, records: list[dict]) -> None:
            # the first batch from a worker whose task still has runs to send: kill -9 that worker now
            if not killed:
                processing = cluster.client.processing()
                if processing.get(worker):
                    pid = cluster.pid_of(worker)
                    os.kill(pid, signal.SIGKILL)
                    killed.append((worker, pid))

        recomputed = execute_on_dask(specs, study, LOAD, directory, cluster.client, on_stored=kill_mid_task)
        assert killed, "no worker was killed mid-task"
        assert [p.pid for p in cluster.workers if p.poll() is not None] == [killed[0][1]]
        assert recomputed > 0  # the rescheduled task trained runs that were already stored: dropped
        rows = sum(store.read_parts(directory, lambda part: pq.read_table(part, columns=["run_id"]).num_rows))
        runs = store.read_runs(directory)
        assert rows == len(runs) == 24  # nothing lost, nothing stored twice
        assert dict(zip(runs["run_id"], runs["param_sha256"])) == local
    finally:
        cluster.close()


@pytest.mark.mnist
def test_command_line_scheduler_option_on_real_mnist(write_study, tmp_path, mnist_dir, capsys):
    """`hpstudy run STUDY --scheduler ADDRESS`: the workers load MNIST themselves (--data-dir), this process
    stores; running it again computes nothing."""
    from hpstudy import cli

    path = write_study(**{"hidden = [32, 32]": "hidden = [16]"})
    cluster = Cluster(_mkdir(tmp_path / "cluster"))
    try:
        args = [
            "run",
            str(path),
            "--max-epochs",
            "1",
            "--seeds",
            "1",
            "--data-dir",
            str(mnist_dir),
            "--results",
            str(tmp_path / "r"),
            "--scheduler",
            cluster.client.scheduler.address,
        ]
        assert cli.main(args) == 0
        out, err = capsys.readouterr()
        assert "4 computed" in out
        assert f"with 2 Dask worker(s) at {cluster.client.scheduler.address} to compute" in err
        runs = store.read_runs(tmp_path / "r" / "small.max_epochs-1")
        assert len(runs) == 4 and runs["test_accuracy"].min() > 0.5  # trained on the real digits
        assert cli.main(args) == 0
        assert "4 were already stored, 0 computed" in capsys.readouterr().out
    finally:
        cluster.close()


def test_a_worker_with_more_than_one_thread_is_refused():
    from types import SimpleNamespace

    from hpstudy.errors import EngineError
    from hpstudy.training.distributed import _check_worker

    with pytest.raises(EngineError, match="runs 2 threads; .* --nthreads 1"):
        _check_worker(SimpleNamespace(address="tcp://127.0.0.1:1", state=SimpleNamespace(nthreads=2)))
    _check_worker(SimpleNamespace(address="tcp://127.0.0.1:1", state=SimpleNamespace(nthreads=1)))  # pinned here


def test_an_unreachable_scheduler_is_a_clear_error():
    from hpstudy.errors import EngineError
    from hpstudy.training.distributed import connect

    with pytest.raises(EngineError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' .*dask scheduler"):
        connect("tcp://127.0.0.1:9", timeout="2s")


def test_slurm_job_script_pins_one_core_and_one_thread():
    pytest.importorskip("dask_jobqueue")
    from hpstudy.training.distributed import slurm_cluster

    with slurm_cluster(
        queue="normal", account="lab", scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"}
    ) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --cpus-per-task=1" in script
    assert "--nthreads 1" in script and "--nworkers" not in script  # one process of one thread per job
    assert "--preload hpstudy.training.distributed" in script
    assert "#SBATCH -p normal" in script and "#SBATCH -A lab" in script
