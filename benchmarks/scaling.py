"""The three ways to scale a study, timed on one small study, and checked to give the same bits.

A grid of 4 configurations x 8 seeds (784-128-128-10 MLP, batch 32, 3 epochs, on a synthetic
MNIST-shaped dataset of 20,000 training images: no download, seconds per run) is trained, each time into
a fresh store and with the persistent compilation cache off (every mode compiles):
- local, 1 worker: `hpstudy run --workers 1`;
- local, 2 workers: `hpstudy run --workers 2`;
- Dask: a scheduler and two `dask worker --nthreads 1 --preload hpstudy.training.distributed` processes on
  127.0.0.1 (started before the clock starts), `hpstudy run --scheduler ADDRESS`;
- job array: `hpstudy run --shard 0/2` and `--shard 1/2` as two concurrent processes, each pinned to a
  core of its own as array jobs would be, then `hpstudy merge`.
Prints wall-clock seconds, speed-ups over one worker, and whether every mode stored the same parameter
hashes; writes benchmarks/scaling.json. Meant for small machines: on a busy 2-core machine the figures
are rough.

    nice -n 19 .venv/bin/python benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUDY = """
[study]
name = "bench_scaling"
validation = "test"
seeds = 8

[model]
flavour = "keras"
hidden = [128, 128]
activation = "relu"

[training]
optimizer = "adam_keras"
epochs = 3
batch_size = 32

[design]
kind = "grid"

[design.factors]
learning_rate = [0.001, 0.003]
dropout = [0.0, 0.2]
"""
# PYTHONPATH: the Dask scheduler and workers unpickle this module's `load`
ENV = {**os.environ, "HPSTUDY_CACHE_DIR": "off", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT / "benchmarks")}


def load():
    """The benchmark's dataset (importable by worker processes)."""
    from hpstudy import data as hdata

    return hdata.synthetic(n_train=20000, n_test=2000)


def child(args: argparse.Namespace) -> int:
    """One `hpstudy run` of the study, through the Python API (the dataset is synthetic)."""
    from hpstudy.training import parallel

    if args.workers == 1 and not args.scheduler:
        # a shard is an array job with its own core: pin shard I to core I (else both take the first core)
        cores = parallel.usable_cores()
        parallel.pin_one_core(cores[int(args.shard.split("/")[0]) % len(cores)] if args.shard else None)
    from hpstudy.runner import run_study
    from hpstudy.storeops import parse_shard
    from hpstudy.study import load_study

    sys.path.insert(0, str(ROOT / "benchmarks"))
    loader = __import__("scaling").load  # by reference: Dask workers import it too (PYTHONPATH)
    report = run_study(
        load_study(args.study),
        range(8),
        loader,
        args.results,
        progress=False,
        workers=args.workers,
        shard=parse_shard(args.shard) if args.shard else None,
        scheduler=args.scheduler,
    )
    print(report.computed)
    return 0


def spawn(study: Path, results: Path, *extra: str) -> subprocess.Popen:
    """Start one child run."""
    return subprocess.Popen(
        [sys.executable, __file__, "--child", "--study", str(study), "--results", str(results), *extra],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def timed(*procs: subprocess.Popen) -> float:
    """Wait for every process; seconds since the earliest started (they are started just before)."""
    start = time.perf_counter()
    for proc in procs:
        assert proc.wait() == 0, f"a benchmark run failed: {proc.args}"
    return time.perf_counter() - start


def hashes(directory: Path) -> dict:
    """{run_id: parameter hash} of a store."""
    from hpstudy import store

    runs = store.read_runs(directory)
    return dict(zip(runs["run_id"], runs["param_sha256"]))


def start_cluster(tmp: Path) -> tuple[list[subprocess.Popen], str]:
    """A scheduler and two one-thread pinned workers on 127.0.0.1; their processes and the address."""
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_file = tmp / "scheduler.json"
    procs = [
        subprocess.Popen(
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
            env=ENV,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    while not scheduler_file.exists():
        time.sleep(0.2)
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--preload",
                    "hpstudy.training.distributed",
                ],
                env=ENV,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    import distributed

    with distributed.Client(scheduler_file=str(scheduler_file)) as client:
        client.wait_for_workers(2, timeout=120)
        return procs, client.scheduler.address


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study"), parser.add_argument("--results"), parser.add_argument("--shard")
    parser.add_argument("--scheduler"), parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from hpstudy import cli

    seconds, stores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = tmp / "bench_scaling.toml"
        study.write_text(STUDY)
        for name, workers in (("local, 1 worker", 1), ("local, 2 workers", 2)):
            seconds[name] = timed(spawn(study, tmp / name, "--workers", str(workers)))
            stores[name] = tmp / name / "bench_scaling"
            print(f"{name}: {seconds[name]:.1f} s", flush=True)
        procs, address = start_cluster(tmp)
        try:
            name = "Dask, 2 one-thread workers"
            seconds[name] = timed(spawn(study, tmp / "dask", "--scheduler", address))
            stores[name] = tmp / "dask" / "bench_scaling"
            print(f"{name}: {seconds[name]:.1f} s", flush=True)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
        name = "job array: 2 shards at once, then merge"
        start = time.perf_counter()
        timed(*(spawn(study, tmp / f"shard{i}", "--shard", f"{i}/2") for i in range(2)))
        assert (
            cli.main(
                [
                    "merge",
                    str(tmp / "merged" / "bench_scaling"),
                    *(str(tmp / f"shard{i}" / "bench_scaling") for i in range(2)),
                ]
            )
            == 0
        )
        seconds[name] = time.perf_counter() - start
        stores[name] = tmp / "merged" / "bench_scaling"
        print(f"{name}: {seconds[name]:.1f} s", flush=True)
        reference = hashes(stores["local, 1 worker"])
        same = {name: hashes(path) == reference for name, path in stores.items()}
    base = seconds["local, 1 worker"]
    for name in seconds:
        print(
            f"  {name:<42} {seconds[name]:6.1f} s  speed-up {base / seconds[name]:.2f}x  "
            f"same bits as 1 worker: {same[name]}"
        )
    result = {
        "what": "wall-clock seconds to train a 4 x 8 grid (784-128-128-10, batch 32, 3 epochs, 20,000 synthetic "
        "images), compiles included (cache off); speed-up over one local worker; same parameter hashes",
        "runs": len(reference),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "speedup": {k: round(base / v, 2) for k, v in seconds.items()},
        "same_bits_as_one_worker": same,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    C.write_json(ROOT / "benchmarks" / "scaling.json", result, sort_keys=True)
    print("written to benchmarks/scaling.json")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
