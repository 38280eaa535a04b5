"""A store of 100,000 runs: how long `hpstudy list`, `hpstudy report` and resume's "what is stored" scan
take, with one small part per finished chunk (as `hpstudy run` writes them) and after `hpstudy compact`.

Synthesises a random search of 5,000 trials x 20 seeds (fake but schema-valid runs from
hpstudy.report.synthetic_records: histories of 7-10 epochs under early stopping, per-run noise), written
as parts of --runs-per-part runs (default 2: chunks of width 1-4 whose runs end at different epochs),
without fsync (a benchmark fixture; the runner fsyncs every part). Times each command in a fresh process,
as a user runs it, best of --repeats, and the scan (store.stored_ids) in this process. Writes
benchmarks/store_scale.json. Targets on the 2-core machine: report under 30 s, scan under 5 s.

    nice -n 19 .venv/bin/python benchmarks/store_scale.py [--trials 5000 --seeds 20 --repeats 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hpstudy import store, storeops
from hpstudy.reporting.build import synthetic_records
from hpstudy.study import load_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUDY = """
[study]
name = "bench_scale"
title = "Synthetic random search of 100,000 runs (benchmark)"
validation = "holdout:10000"
seeds = {seeds}

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
trials = {trials}
sampler_seed = 0

[design.space]
learning_rate = {{ type = "float", low = 1e-4, high = 1e-2, log = true }}
batch_size = {{ type = "choice", values = [32, 64, 128] }}
hidden_layers = {{ type = "int", low = 2, high = 5 }}
units = {{ type = "int", low = 32, high = 512, step = 32 }}
"""


def build(study_path: Path, seeds: int, results: Path, runs_per_part: int) -> tuple[int, int, float]:
    """Write the synthetic runs in parts of `runs_per_part`; (runs, parts, seconds)."""
    start = time.perf_counter()
    study = load_study(study_path)
    records = synthetic_records(study, range(seeds))
    directory = store.study_dir(results, study.name)
    directory.mkdir(parents=True, exist_ok=True)
    parts = 0
    for i in range(0, len(records), runs_per_part):
        chunk = records[i : i + runs_per_part]
        pq.write_table(pa.Table.from_pylist(chunk), directory / store.part_name(r["run_id"] for r in chunk))
        parts += 1
    return len(records), parts, time.perf_counter() - start


def time_cli(*args: str, repeats: int) -> float:
    """Best wall-clock seconds of `hpstudy ARGS` in a fresh process."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hpstudy.cli", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def time_scan(directory: Path, runs: int, repeats: int) -> float:
    """Best seconds of resume's scan of what is stored (store.stored_ids), checked to find every run."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        found = len(store.stored_ids(directory))
        best = min(best, time.perf_counter() - start)
        assert found == runs, f"the scan found {found} of {runs} runs"
    return best


def measure(study_path: Path, studies: Path, results: Path, out: Path, runs: int, repeats: int) -> dict:
    """list, report and scan over the store as it is now."""
    directory = store.study_dir(results, "bench_scale")
    figures = {
        "parts": len(store.live_parts(directory)),
        "bytes": sum(p.stat().st_size for p in store.live_parts(directory)),
        "scan_seconds": round(time_scan(directory, runs, repeats), 2),
        "list_seconds": round(
            time_cli("list", "--studies", str(studies), "--results", str(results), repeats=repeats), 2
        ),
        "report_seconds": round(
            time_cli("report", str(study_path), "--results", str(results), "--out", str(out), repeats=repeats), 2
        ),
    }
    print(
        f"  {figures['parts']} parts ({figures['bytes'] / 1e6:.1f} MB): scan {figures['scan_seconds']:.2f} s, "
        f"hpstudy list {figures['list_seconds']:.2f} s, hpstudy report {figures['report_seconds']:.2f} s",
        flush=True,
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--runs-per-part", type=int, default=2, help="runs per part as a run writes them")
    parser.add_argument("--repeats", type=int, default=1, help="time each command this many times; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        studies = tmp / "studies"
        studies.mkdir()
        study_path = studies / "bench_scale.toml"
        study_path.write_text(STUDY.format(trials=args.trials, seeds=args.seeds))
        results = tmp / "results"
        runs, parts, seconds = build(study_path, args.seeds, results, args.runs_per_part)
        print(
            f"synthesised {runs} runs ({args.trials} trials x {args.seeds} seeds) in {parts} parts in {seconds:.0f} s",
            flush=True,
        )
        print("as written by runs (one part per finished chunk):", flush=True)
        before = measure(study_path, studies, results, tmp / "reports", runs, args.repeats)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "hpstudy.cli", "compact", str(store.study_dir(results, "bench_scale"))],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        compact_seconds = time.perf_counter() - start
        print(f"hpstudy compact: {compact_seconds:.1f} s", flush=True)
        print(f"after compaction ({storeops.RUNS_PER_PART} runs per part):", flush=True)
        after = measure(study_path, studies, results, tmp / "reports", runs, args.repeats)
    result = {
        "what": "seconds over a synthetic store of a random search (fresh process per command, best of "
        "`repeats`; the scan is store.stored_ids in-process), before and after `hpstudy compact`",
        "runs": runs,
        "trials": args.trials,
        "seeds": args.seeds,
        "runs_per_part_written": args.runs_per_part,
        "repeats": args.repeats,
        "targets_seconds": {"report": 30.0, "scan": 5.0},
        "before_compaction": before,
        "compact_seconds": round(compact_seconds, 1),
        "after_compaction": after,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    C.write_json(ROOT / "benchmarks" / "store_scale.json", result, sort_keys=True)
    print("written to benchmarks/store_scale.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
