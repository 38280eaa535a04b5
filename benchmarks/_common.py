"""Shared pieces of the benchmarks: workloads, honest FLOP counts, the machine's FP32 peak, timing of
hpstudy's reproducible chunked engine, and summaries of repeated measurements.

A model-step is one optimizer step of one real run: padding runs in a chunk do not count.
FLOPs are counted as the notes do (../shared/notes/performance.md): the matrix products only, 2 FLOP per
multiply-add, forward + weight gradients + input gradients of every layer but the first (nobody needs the
gradient of the pixels). Bias adds, activations, dropout, the loss and the optimizer are not counted, so
the GFLOP/s is a lower bound on the arithmetic actually done and comparable across implementations.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_TEST = 60000, 10000


@dataclasses.dataclass(frozen=True)
class Workload:
    """A benchmark workload: architecture, optimizer, batch size."""

    name: str
    hidden: tuple[int, ...]
    batch_size: int
    activation: str = "relu"
    dropout: float = 0.2
    optimizer: str = "adam_keras"
    learning_rate: float = 1e-3
    flavour: str = "keras"
    init: str = "keras"
    loss: str = "softmax_cross_entropy"

    def config(self, epochs: int = 1):
        """The hpstudy RunConfig of this workload (no early stopping: every run trains every epoch)."""
        from hpstudy.config import RunConfig

        return RunConfig(
            flavour=self.flavour,
            hidden=self.hidden,
            activation=self.activation,
            dropout=self.dropout,
            init=self.init,
            loss=self.loss,
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            epochs=epochs,
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        return (784, *self.hidden, 10)

    def train_flop_per_sample(self) -> int:
        """Forward + weight-gradient + input-gradient (not for layer 1) multiply-adds, x2."""
        macs = [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])]
        return 2 * (2 * sum(macs) + sum(macs[1:]))

    def eval_flop_per_sample(self) -> int:
        macs = [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])]
        return 2 * sum(macs)

    def steps_per_epoch(self, n_train: int = N_TRAIN) -> int:
        return -(-n_train // self.batch_size)


# The grid study's workload (Naragundkar & Gavade) at its two batch sizes, and the three-implementation
# study's small network (Nielsen's 784-30-10, sigmoid, quadratic cost, plain SGD, batch 10).
GRID32 = Workload("grid 784-128-128-10 relu dropout keras-adam b32", (128, 128), 32)
GRID64 = Workload("grid 784-128-128-10 relu dropout keras-adam b64", (128, 128), 64)
SMALL10 = Workload(
    "small 784-30-10 sigmoid sgd b10",
    (30,),
    10,
    activation="sigmoid",
    dropout=0.0,
    optimizer="sgd",
    learning_rate=3.0,
    flavour="nielsen",
    init="nielsen",
    loss="sigmoid_quadratic",
)


# --------------------------------------------------------------------------------------------- machine


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key and key not in info:
                    info[key] = value.strip()
    except OSError:
        pass
    return info


def machine() -> dict:
    """CPU model, physical cores, ISA, clock and the FP32 peak = cores x FLOP/cycle x clock.

    FLOP/cycle per core (FP32, fused multiply-add = 2 FLOP):
      - AVX-512 on Intel server cores: 2 FMA units x 16 lanes x 2 = 64;
      - AVX-512 on AMD Zen 4 (double-pumped 256-bit units) and AVX2+FMA (Haswell+, Zen 1-4):
        2 FMA units x 8 lanes x 2 = 32;
      - AVX without FMA: 8 lanes x (1 add + 1 mul) = 16;  SSE2 only: 8.
    Clock: lscpu's 'CPU max MHz' where the hypervisor reports it, else /proc/cpuinfo's 'cpu MHz'.
    """
    cpu, ls = _cpuinfo(), _lscpu()
    flags = set((cpu.get("flags") or ls.get("Flags", "")).split())
    vendor = cpu.get("vendor_id", ls.get("Vendor ID", ""))
    model = cpu.get("model name", ls.get("Model name", platform.processor()))
    family = int(cpu.get("cpu family", ls.get("CPU family", "0")) or 0)
    if "avx512f" in flags:
        amd = "AMD" in vendor
        isa, per_cycle = ("AVX-512 (AMD, 256-bit FMA units)", 32) if amd else ("AVX-512 (2 FMA units)", 64)
    elif "avx2" in flags and "fma" in flags:
        isa, per_cycle = "AVX2+FMA (2 x 256-bit FMA units)", 32
    elif "avx" in flags:
        isa, per_cycle = "AVX (no FMA)", 16
    else:
        isa, per_cycle = "SSE2", 8
    threads_per_core = int(ls.get("Thread(s) per core", "1") or 1)
    cores_per_socket = int(ls.get("Core(s) per socket", "0") or 0)
    sockets = int(ls.get("Socket(s)", "1") or 1)
    logical = os.cpu_count() or 1
    cores = cores_per_socket * sockets if cores_per_socket else max(1, logical // threads_per_core)
    try:
        affinity = len(os.sched_getaffinity(0))
        cores = min(cores, affinity)
    except AttributeError:
        pass
    mhz_max = ls.get("CPU max MHz")
    mhz = float(mhz_max) if mhz_max else float(cpu.get("cpu MHz", ls.get("CPU MHz", "0")) or 0)
    peak = cores * per_cycle * mhz * 1e6 / 1e9
    return {
        "cpu_model": model,
        "vendor": vendor,
        "cpu_family": family,
        "logical_cpus": logical,
        "physical_cores": cores,
        "isa": isa,
        "fp32_flop_per_cycle_per_core": per_cycle,
        "clock_ghz": round(mhz / 1000, 3),
        "clock_source": "lscpu CPU max MHz" if mhz_max else "/proc/cpuinfo cpu MHz",
        "fp32_peak_gflops": round(peak, 1),
        "peak_formula": f"{cores} cores x {per_cycle} FLOP/cycle ({isa}) x {mhz / 1000:.3f} GHz = {peak:.1f} GFLOP/s",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "gpu": "none: this machine has no GPU (issue 4 point 5 not measured here)",
    }


# ------------------------------------------------------------------------------------------- statistics


def summary(samples: list[float]) -> dict:
    """best / median / worst of repeated measurements of a rate (higher is better), and their spread."""
    s = sorted(samples)
    return {
        "best": s[-1],
        "median": statistics.median(s),
        "worst": s[0],
        "repeats": len(s),
        "spread_pct": round(100 * (s[-1] - s[0]) / statistics.median(s), 1) if s else None,
        "samples": s,
    }


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


# ---------------------------------------------------------------------------------------------- hpstudy


def load_mnist(data_dir: str | None):
    from hpstudy import data as hdata

    return hdata.load_mnist(data_dir, "test", download=False)


def subset(dataset, n_train: int | None):
    """The dataset with only its first n_train training images (the test set stays whole)."""
    if not n_train or n_train >= len(dataset.train):
        return dataset
    from hpstudy import data as hdata

    train = hdata.Split(dataset.train.images[:n_train], dataset.train.labels[:n_train])
    return hdata.Dataset(train, dataset.validation, dataset.test, dataset.fingerprint, dataset.validation_scheme)


def hpstudy_compile(workload: Workload, device, width: int | None = None) -> tuple[object, float]:
    """The chunk program of this workload (compiled now, not taken from the per-process cache); seconds."""
    from hpstudy.training import engine

    config = workload.config()
    static = config.static()
    width = width or engine.chunk_width(static)
    start = time.perf_counter()
    program = engine.ChunkProgram(
        static, width, engine.shapes_of(device), workload.dropout != 0.0, engine.validation_is_test(device)
    )
    return program, time.perf_counter() - start


def hpstudy_pool(dataset, workers: int | None = None):
    """hpstudy's pool of single-core training processes (what `hpstudy run` uses), holding `dataset`."""
    from hpstudy.training import parallel

    return parallel.WorkerPool(dataset, workers or parallel.default_workers())


def hpstudy_pool_warmup(workload: Workload, pool) -> None:
    """One chunk per worker, untimed: every worker compiles (or loads from the cache) its program."""
    from hpstudy.training import engine

    config = workload.config()
    width = engine.chunk_width(config.static())
    pool.run([engine.RunSpec(config, 1_000_000 + i) for i in range(width * pool.workers)], lambda results: None)


def hpstudy_pool_rate(
    workload: Workload, pool, n_runs: int, repeats: int, n_train: int, n_val: int, seed0: int = 0
) -> dict:
    """Model-steps/s of n_runs one-epoch runs through hpstudy's worker pool: the path `hpstudy run` takes
    (single-core processes, each training whole fixed-width chunks: init, the epoch's scan, validation,
    final metrics, parameter hashes), compile excluded (see hpstudy_pool_warmup), results passed back."""
    from hpstudy.training import engine

    config = workload.config()
    width = engine.chunk_width(config.static())
    specs = [engine.RunSpec(config, seed0 + s) for s in range(n_runs)]
    steps = n_runs * workload.steps_per_epoch(n_train)
    flop = n_runs * (n_train * workload.train_flop_per_sample() + n_val * workload.eval_flop_per_sample())
    rates, seconds, hashes = [], [], None
    for _ in range(repeats):
        got: dict = {}
        start = time.perf_counter()
        pool.run(specs, lambda results: got.update({r.spec.run_id: r.param_sha256 for r in results}))  # noqa: B023 - called within this iteration
        dt = time.perf_counter() - start
        seconds.append(dt)
        rates.append(steps / dt)
        assert hashes is None or got == hashes, "repeats of the same runs must give the same bits"
        hashes = got
    s = summary(rates)
    chunks = -(-n_runs // width)
    return {
        "runs": n_runs,
        "workers": pool.workers,
        "chunk_width": width,
        "chunks": chunks,
        "padding_runs": chunks * width - n_runs,
        "model_steps": steps,
        "model_steps_per_s": s,
        "samples_per_s_median": s["median"] * workload.batch_size,
        "gflops_median": flop / (steps / s["median"]) / 1e9,
        "gflops_best": flop / (steps / s["best"]) / 1e9,
        "seconds": sorted(seconds),
        "first_param_sha256": hashes[specs[0].run_id] if hashes else None,
    }


def write_json(path: Path, payload: dict, sort_keys: bool = False) -> None:
    """Write a benchmark's figures atomically (a temporary file renamed over the old one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=sort_keys, default=float) + "\n")
    os.replace(tmp, path)


def env_summary() -> dict:
    from hpstudy.environment import fingerprint

    env = fingerprint()
    return {"packages": env["packages"], "xla_flags": env["xla_flags"], "isa": env["isa"], "backend": env["backend"]}


def clean_float(x: float, digits: int = 1) -> float:
    return float(f"{x:.{digits}f}") if math.isfinite(x) else x


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
