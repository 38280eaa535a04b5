"""How long `hpstudy report` takes over 1,000 stored runs (target: under 10 s).

Builds two synthetic stores of 1,000 fake but schema-valid runs each (no training): the grid study
(8 configurations x 125 seeds) and a random search shaped like the Keras Tuner study (50 trials x 20
seeds, with per-epoch histories of up to 10 epochs). Times the whole command line, Python start-up and
imports included, as a user would run it, best of --repeats runs (other load on the machine only ever
adds time), and writes the seconds to benchmarks/report_speed.json.

    .venv/bin/python benchmarks/report_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from hpstudy import store
from hpstudy.reporting.build import synthetic_records
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
RANDOM_STUDY = """
[study]
name = "bench_random"
title = "Synthetic random search (benchmark)"
validation = "holdout:10000"
seeds = 20

[model]
flavour = "keras"
activation = "relu"

[training]
epochs = 10

[training.early_stopping]
monitor = "val_accuracy"
patience = 2

[design]
kind = "random"
trials = 50
sampler_seed = 0

[design.space]
learning_rate = { type = "float", low = 1e-4, high = 1e-2, log = true }
batch_size = { type = "choice", values = [32, 64, 128] }
hidden_layers = { type = "int", low = 2, high = 5 }
units = { type = "int", low = 32, high = 512, step = 32 }

[[published]]
where = { hidden = [416, 288], learning_rate = 0.000112 }
best_val_accuracy = 0.982
source = "synthetic"
"""


def build(study_path: Path, n_seeds: int, results: Path) -> int:
    """Write the synthetic runs of a study in chunks of 8, as the runner would; return how many."""
    study = load_study(study_path)
    records = synthetic_records(study, range(n_seeds))
    directory = store.study_dir(results, study.name)
    for i in range(0, len(records), 8):
        store.write_chunk(directory, records[i : i + 8])
    return len(records)


def time_cli(study_path: Path, results: Path, out: Path) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one `hpstudy report` process; CPU time is less sensitive to a busy machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hpstudy.cli", "report", str(study_path), "--results", str(results), "--out", str(out)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="report each store this many times; the best counts")
    repeats = max(1, parser.parse_args().repeats)
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        random_path = tmp / "bench_random.toml"
        random_path.write_text(RANDOM_STUDY)
        for name, path, seeds in (
            ("grid: 8 configurations x 125 seeds", ROOT / "studies" / "naragundkar2024_grid.toml", 125),
            ("random search: 50 trials x 20 seeds", random_path, 20),
        ):
            runs = build(path, seeds, tmp / "results")
            timings = [time_cli(path, tmp / "results", tmp / "reports") for _ in range(repeats)]
            seconds, cpu = min(t[0] for t in timings), min(t[1] for t in timings)
            cases[name] = {
                "runs": runs,
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "all_seconds": [round(t[0], 2) for t in timings],
            }
            print(
                f"{name}: {runs} runs, hpstudy report took {seconds:.2f} s ({cpu:.2f} s CPU; best of "
                f"{repeats}: {', '.join(f'{t[0]:.2f}' for t in timings)})"
            )
    worst = max(c["seconds"] for c in cases.values())
    result = {
        "what": "wall-clock (and CPU) seconds of `hpstudy report` in a fresh process: start-up, imports, "
        "reading the store, statistics, tables, every figure in 3 formats; best of `repeats` runs",
        "repeats": repeats,
        "target_seconds": 10.0,
        "max_seconds": worst,
        "cases": cases,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    C.write_json(ROOT / "benchmarks" / "report_speed.json", result, sort_keys=True)
    print(f"slowest: {worst:.2f} s (target < 10 s); written to benchmarks/report_speed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
