"""A/B: portable numerics against native numerics (and other modes, e.g. the default portable-v2), alternating processes.

    python benchmarks/numerics.py [--data-dir DIR] [--rounds 4] [--runs 8] [--modes portable native fixed-order]
        [--out FILE]

Each round starts one single-core process per mode, in turn (portable, native, portable, ...), each
set up as every hpstudy training process is (numerics.prepare_process: the mode's settings and one core,
before JAX starts). A process trains `--runs` runs of each workload for one epoch of MNIST through
`engine.execute` twice: the first call compiles, the second is timed. The workloads are the grid
network (784-128-128-10, dropout, Keras' Adam, batch 32) and the three-implementation study's 784-30-10
sigmoid network (quadratic cost, SGD, batch 10). Alternating keeps a shared machine's drift fair to both
modes; the figure to quote is the median of the per-round ratios portable/native (and of every other mode
given to --modes, e.g. fixed-order, over native and over portable). Prints a table and writes
benchmarks/numerics.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OUT = Path(__file__).resolve().parent / "numerics.json"
MODES = ("portable", "native")  # the default comparison

CHILD = r"""
import json, sys, time
from hpstudy.training import numerics
assert numerics.prepare_process(sys.argv[1])
sys.path.insert(0, sys.argv[4])
import _common as C
from hpstudy.training import engine
from hpstudy.runs import RunSpec
runs, data_dir = int(sys.argv[2]), sys.argv[3] or None
dataset = C.load_mnist(data_dir)
device = engine.device_data(dataset)
out = {}
for w in (C.GRID32, C.SMALL10):
    specs = [RunSpec(w.config(epochs=1), s) for s in range(runs)]
    done = []
    engine.execute(specs, lambda _: device, done.extend)
    done.clear()
    start = time.perf_counter()
    engine.execute(specs, lambda _: device, done.extend)
    seconds = time.perf_counter() - start
    out[w.name] = {"model_steps_per_s": runs * w.steps_per_epoch(len(dataset.train.labels)) / seconds,
                   "seconds": seconds, "hash": sorted(r.param_sha256 for r in done)[0]}
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("HPSTUDY_DATA_DIR", ""))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=list(MODES), help="numerics modes, native among them")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    modes = tuple(args.modes)
    if "native" not in modes or "portable" not in modes:
        raise SystemExit(
            f"--modes {' '.join(modes)}: portable and native must be among them (ratios are taken over both)"
        )
    env = {**os.environ, "HPSTUDY_CACHE_DIR": "off"}
    env.pop("XLA_FLAGS", None)
    samples: dict[str, dict[str, list[float]]] = {}
    hashes: dict[str, dict[str, set]] = {}
    loads: list[float] = []  # the 1-minute load average after each process
    for round_ in range(args.rounds):
        for mode in modes:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(args.runs), args.data_dir, str(Path(__file__).parent)],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            loads.append(round(os.getloadavg()[0], 2))
            for workload, r in result.items():
                samples.setdefault(workload, {m: [] for m in modes})[mode].append(r["model_steps_per_s"])
                hashes.setdefault(workload, {m: set() for m in modes})[mode].add(r["hash"])
                print(
                    f"round {round_ + 1} {mode:>11} {workload}: {r['model_steps_per_s']:8.0f} model-steps/s "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    summary = {}

    def ratio(a: str, b: str, by_mode: dict) -> dict:
        r = [x / y for x, y in zip(by_mode[a], by_mode[b])]  # per round: the same sitting
        return {"median": round(statistics.median(r), 3), "min": round(min(r), 3), "max": round(max(r), 3)}

    for workload, by_mode in samples.items():
        ratios = [p / n for p, n in zip(by_mode["portable"], by_mode["native"])]
        summary[workload] = {
            "portable_median": round(statistics.median(by_mode["portable"]), 1),
            "native_median": round(statistics.median(by_mode["native"]), 1),
            "ratio_portable_over_native": {
                "median": round(statistics.median(ratios), 3),
                "min": round(min(ratios), 3),
                "max": round(max(ratios), 3),
            },
            "samples": by_mode,
            "same_bits_across_rounds": all(len(h) == 1 for h in hashes[workload].values()),
        }
        for mode in modes:
            if mode not in MODES:
                summary[workload][f"{mode}_median"] = round(statistics.median(by_mode[mode]), 1)
                summary[workload][f"ratio_{mode}_over_native"] = ratio(mode, "native", by_mode)
                summary[workload][f"ratio_{mode}_over_portable"] = ratio(mode, "portable", by_mode)
                print(
                    f"{workload}: {mode} {summary[workload][f'{mode}_median']:.0f} model-steps/s; "
                    f"{mode}/native {summary[workload][f'ratio_{mode}_over_native']['median']:.3f}, "
                    f"{mode}/portable {summary[workload][f'ratio_{mode}_over_portable']['median']:.3f}"
                )
        r = summary[workload]["ratio_portable_over_native"]
        print(
            f"{workload}: portable {summary[workload]['portable_median']:.0f}, native "
            f"{summary[workload]['native_median']:.0f} model-steps/s; portable/native {r['median']:.3f} "
            f"(min {r['min']:.3f}, max {r['max']:.3f}, {args.rounds} rounds)"
        )
    C.write_json(
        args.out,
        {
            "machine": C.machine(),
            "modes": list(modes),
            "rounds": args.rounds,
            "runs": args.runs,
            "workloads": summary,
            "load_average_end": os.getloadavg()[0],
            "load_after_each_process": loads,
        },
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
