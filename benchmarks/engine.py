"""Model-steps/s of hpstudy's reproducible chunked engine (issue 2 point 10, issue 4 points 3-4).

Workloads (see benchmarks/_common.py):
- the grid study's 784-128-128-10 ReLU MLP with dropout 0.2 and Keras' Adam at batch 32, with 1, 8 and 40
  runs, each run training one full epoch of MNIST (1,875 steps) and evaluating on the 10,000 test images,
  through hpstudy's pool of single-core worker processes, the path `hpstudy run` takes (fixed-width
  chunks, padded: 1 run still pays for a whole chunk; one worker per usable core unless --workers);
- the three-implementation study's 784-30-10 sigmoid network, quadratic cost, plain SGD, batch 10 (6,000
  steps per epoch), with 2 and 8 full chunks of runs.
Compile time is measured apart (a fresh compile in this process; the persistent cache is not used here),
and `--cache-check` verifies in two fresh processes that the second one loads every program from JAX's
persistent cache instead of compiling, and trains to the same bits.

    python benchmarks/engine.py [--data-dir DIR] [--repeats 3] [--quick] [--cache-check]

Prints a table and writes benchmarks/engine.json. Target (issue 2): >= 2,800 model-steps/s with 40 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OUT = Path(__file__).resolve().parent / "engine.json"
TARGET_40 = 2800.0
TARGET_SMALL = 50000.0


def bench_workload(workload: C.Workload, dataset, device, runs: list[int], repeats: int, workers: int | None) -> dict:
    """Compile time in this process, then model-steps/s through a pool of single-core worker processes."""
    program, compile_s = C.hpstudy_compile(workload, device)
    out = {
        "workload": workload.name,
        "chunk_width": program.width,
        "compile_seconds": round(compile_s, 2),
        "by_runs": {},
    }
    n_train, n_val = int(device.x_train.shape[0]), int(device.x_val.shape[0])
    with C.hpstudy_pool(dataset, workers) as pool:
        out["workers"] = pool.workers
        print(
            f"\n{workload.name}: chunk width {program.width}, compile {compile_s:.1f} s, {pool.workers} worker process(es)",
            flush=True,
        )
        C.hpstudy_pool_warmup(workload, pool)
        for n in runs:
            r = C.hpstudy_pool_rate(workload, pool, n, repeats, n_train, n_val)
            out["by_runs"][str(n)] = r
            s = r["model_steps_per_s"]
            print(
                f"  {n:3d} runs ({r['chunks']} chunk(s), {r['padding_runs']} padding): "
                f"{C.fmt_rate(s['median'])} model-steps/s median (best {C.fmt_rate(s['best'])}, worst "
                f"{C.fmt_rate(s['worst'])}, {s['repeats']} repeats), {r['gflops_median']:.1f} GFLOP/s",
                flush=True,
            )
    return out


CACHE_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
from hpstudy.training import parallel
parallel.pin_one_core()  # as every hpstudy training process
import jax
events = {"hits": 0, "misses": 0, "backend_compiles": 0}
def on_event(name, **kw):
    if name == "/jax/compilation_cache/cache_hits": events["hits"] += 1
    if name == "/jax/compilation_cache/cache_misses": events["misses"] += 1
def on_duration(name, secs, **kw):
    if name == "/jax/core/compile/backend_compile_duration": events["backend_compiles"] += 1
jax.monitoring.register_event_listener(on_event)
jax.monitoring.register_event_duration_secs_listener(on_duration)
from hpstudy.training.compilation import enable_persistent_cache
folder = enable_persistent_cache(sys.argv[1])
import _common as C
from hpstudy.training import engine
device = engine.device_data(C.subset(C.load_mnist(sys.argv[2] or None), 3200))
w = C.GRID32
start = time.perf_counter()
program, compile_s = C.hpstudy_compile(w, device)
specs = [engine.RunSpec(w.config(), s) for s in range(2)]
t = time.perf_counter()
res = []
engine.run_group(program, specs, device, "cache-check", res.extend)
print(json.dumps({"folder": str(folder), "compile_seconds": compile_s, "train_seconds": time.perf_counter() - t,
                  "hashes": [r.param_sha256 for r in res], "test_loss": [r.test_loss for r in res], **events}))
"""


def cache_check(data_dir: str | None) -> dict:
    """Two fresh processes sharing a new cache folder: the first compiles and stores, the second loads."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "HPSTUDY_CACHE_DIR"}
        runs = []
        for label in ("cold", "warm"):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", CACHE_CHILD, tmp, data_dir or "", str(Path(__file__).resolve().parent)],
                capture_output=True,
                text=True,
                env=env,
                cwd=C.ROOT,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"cache check ({label}) failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["process_seconds"] = time.perf_counter() - start
            runs.append(result)
        files = sum(1 for _ in Path(tmp).rglob("*") if _.is_file())
    cold, warm = runs
    ok = (
        warm["misses"] == 0
        and warm["hits"] >= 3
        and cold["hashes"] == warm["hashes"]
        and cold["test_loss"] == warm["test_loss"]
    )
    print(
        f"\npersistent cache: cold process compiled {cold['misses']} programs in {cold['compile_seconds']:.1f} s "
        f"({cold['misses']} misses); warm process: {warm['misses']} compiles (cache misses), {warm['hits']} cache hits, "
        f"programs ready in {warm['compile_seconds']:.2f} s; same bits: {cold['hashes'] == warm['hashes']} -> "
        f"{'OK' if ok else 'FAILED'}",
        flush=True,
    )
    return {"cold": cold, "warm": warm, "cache_files": files, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("HPSTUDY_DATA_DIR"),
        help="MNIST folder (else $HPSTUDY_DATA_DIR, then the cache)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default 3)")
    parser.add_argument("--runs", default="1,8,40", help="numbers of runs of the grid workload (default 1,8,40)")
    parser.add_argument(
        "--quick", action="store_true", help="train on the first 12,000 images only (a fifth of an epoch)"
    )
    parser.add_argument("--no-small", action="store_true", help="skip the 784-30-10 small-network workload")
    parser.add_argument("--workers", type=int, help="training processes, one core each (default: one per usable core)")
    parser.add_argument(
        "--cache-check", action="store_true", help="also verify the persistent compilation cache in two fresh processes"
    )
    parser.add_argument("--out", default=str(OUT), help=f"JSON output (default {OUT.relative_to(C.ROOT)})")
    args = parser.parse_args(argv)

    from hpstudy.training import engine

    mach = C.machine()
    print(f"{mach['cpu_model']}: {mach['peak_formula']}; load average {mach['load_average']}", flush=True)
    dataset = C.subset(C.load_mnist(args.data_dir), 12000 if args.quick else None)
    device = engine.device_data(dataset)
    result = {
        "what": "model-steps/s (one optimizer step of one real run; padding runs not counted) through "
        "hpstudy's pool of single-core worker processes (the path `hpstudy run` takes), one epoch per run incl. "
        "per-epoch validation on the 10,000 test images; compile time excluded and reported apart",
        "machine": mach,
        "environment": C.env_summary(),
        "train_images": int(device.x_train.shape[0]),
        "workloads": {},
    }
    runs = [int(x) for x in args.runs.split(",") if x]
    result["workloads"]["grid_b32"] = bench_workload(C.GRID32, dataset, device, runs, args.repeats, args.workers)
    if not args.no_small:
        width = engine.chunk_width(C.SMALL10.config())
        result["workloads"]["small_b10"] = bench_workload(
            C.SMALL10, dataset, device, [2 * width, 8 * width], args.repeats, args.workers
        )
    if args.cache_check:
        result["persistent_cache"] = cache_check(args.data_dir)

    g40 = result["workloads"]["grid_b32"]["by_runs"].get("40")
    if g40:
        med = g40["model_steps_per_s"]["median"]
        print(
            f"\ngrid b32, 40 runs: {C.fmt_rate(med)} model-steps/s median (target >= {C.fmt_rate(TARGET_40)}: "
            f"{'met' if med >= TARGET_40 else 'NOT met'}); {100 * g40['gflops_median'] / mach['fp32_peak_gflops']:.0f}% of FP32 peak"
        )
        result["target_40_runs"] = {"target": TARGET_40, "median": med, "met": med >= TARGET_40}
    if "small_b10" in result["workloads"]:
        best = max(r["model_steps_per_s"]["median"] for r in result["workloads"]["small_b10"]["by_runs"].values())
        print(
            f"small 784-30-10 b10: {C.fmt_rate(best)} model-steps/s median (issue-4 target >= {C.fmt_rate(TARGET_SMALL)})"
        )
        result["target_small"] = {"target": TARGET_SMALL, "median": best, "met": best >= TARGET_SMALL}
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    C.write_json(Path(args.out), result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
