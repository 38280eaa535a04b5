"""What each portable setting costs, alone and together, and candidate cheaper settings (issue 19).

    python benchmarks/numerics_costs.py [--data-dir DIR] [--rounds 2] [--runs 4] [--variants a,b,...]

Like benchmarks/numerics.py, but each variant is an explicit set of XLA flags and library environment
variables rather than a numerics mode: each round starts one single-core process per variant, in turn,
which sets the variant's settings before JAX starts, pins itself to one core (numerics.pin_one_core), and
trains `--runs` runs of each workload for one epoch of MNIST through `engine.execute` twice (the first call
compiles, the second is timed). The figure to quote is the median over rounds of each variant's rate
divided by the native rate of the same round. Also records each variant's first parameter hash, so a
variant that gives today's portable bits on this CPU shows it (equal bits on THIS CPU only: portability
across CPUs is what tests/test_cross_cpu.py checks). Writes benchmarks/numerics_costs.json.
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

OUT = Path(__file__).resolve().parent / "numerics_costs.json"
YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
CAP_AVX2 = "--xla_cpu_max_isa=AVX2"
EIGEN = {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"}
ONEDNN_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
# Only the dots to YNNPACK (XLA's LibraryFusionType names: individual_dot = a dot alone, dot = a dot with the
# element-wise ops around it); reductions and log-sum-exp stay in XLA's code. Not portable: YNNPACK picks
# its kernels by CPU whatever --xla_cpu_max_isa says (docs/reproducibility.md, "Only the dots to YNNPACK").
YNN_DOTS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
YNN_DOT_FUSIONS = "--xla_cpu_experimental_ynn_fusion_type=dot"
# XLA's switch for "platform dependent math" (default true). Off, YNNPACK keeps to dot kernels that sum each
# output element in one FMA chain over k (k-tile 1) instead of kernels that interleave k across lanes.
PDM_OFF = "--xla_cpu_enable_platform_dependent_math=false"
# name: (XLA flags, environment variables). "native" is XLA's defaults; "portable" is today's portable mode.
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "native": ((), {}),
    "ynn_off": ((YNN_OFF,), {}),
    "eigen_kernel": ((), EIGEN),
    "avx2_cap": ((CAP_AVX2,), {}),
    "portable": ((YNN_OFF, CAP_AVX2), EIGEN),
    "portable_no_cap": ((YNN_OFF,), EIGEN),
    "ynn_off+onednn_avx2+cap": ((YNN_OFF, CAP_AVX2), ONEDNN_AVX2),
    "ynn_off+onednn_avx2": ((YNN_OFF,), ONEDNN_AVX2),
    "ynn_dots+eigen+cap": ((YNN_DOTS, CAP_AVX2), EIGEN),
    "ynn_dot_fusions+eigen+cap": ((YNN_DOT_FUSIONS, CAP_AVX2), EIGEN),
    "ynn_dots_consistent+eigen+cap": (
        (PDM_OFF, YNN_DOTS, CAP_AVX2),
        EIGEN,
    ),  # portable-v2's settings (numerics.PORTABLE_V2_*), without its layer
    "portable-v2": ((PDM_OFF, YNN_DOTS, CAP_AVX2), EIGEN),  # the mode: these settings and its layer (MODE_OF)
}
# Variants that are a numerics mode's programs, not only its settings: the child marks the process as in that
# mode (what numerics.prepare_process records), so that model.py traces the mode's layers.
MODE_OF = {"portable-v2": "portable-v2"}

CHILD = r"""
import json, os, sys, time
flags, env, mode = json.loads(sys.argv[1])
os.environ["XLA_FLAGS"] = " ".join(flags + ["--xla_gpu_deterministic_ops=true"])
os.environ.update(env)
from hpstudy.training import numerics
numerics._applied["mode"] = mode
assert numerics.pin_one_core()
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
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; native is always included")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    names = ["native", *[v for v in args.variants.split(",") if v and v != "native"]]
    env = {**os.environ, "HPSTUDY_CACHE_DIR": "off"}
    for key in ("XLA_FLAGS", *EIGEN, *ONEDNN_AVX2):
        env.pop(key, None)
    rates: dict[str, dict[str, list[float]]] = {}
    hashes: dict[str, dict[str, set]] = {}
    loads = []
    for round_ in range(args.rounds):
        for name in names:
            flags, extra = VARIANTS[name]
            loads.append(os.getloadavg()[0])
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    json.dumps([list(flags), extra, MODE_OF.get(name)]),
                    str(args.runs),
                    args.data_dir,
                    str(Path(__file__).parent),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            for workload, r in result.items():
                rates.setdefault(workload, {n: [] for n in names})[name].append(r["model_steps_per_s"])
                hashes.setdefault(workload, {n: set() for n in names})[name].add(r["hash"])
                print(
                    f"round {round_ + 1} {name:>24} {workload[:24]:24}: {r['model_steps_per_s']:8.0f} model-steps/s "
                    f"{r['hash'][:12]} (load {loads[-1]:.1f})",
                    flush=True,
                )
    summary = {}
    for workload, by_name in rates.items():
        summary[workload] = {}
        for name in names:
            ratios = [v / n for v, n in zip(by_name[name], by_name["native"])]
            summary[workload][name] = {
                "median_rate": round(statistics.median(by_name[name]), 1),
                "ratio_to_native": {
                    "median": round(statistics.median(ratios), 3),
                    "min": round(min(ratios), 3),
                    "max": round(max(ratios), 3),
                },
                "samples": by_name[name],
                "hashes": sorted(hashes[workload][name]),
            }
    print(f"\n{'variant':>24} | " + " | ".join(w[:28] for w in summary))
    for name in names:
        cells = []
        for workload in summary:
            s = summary[workload][name]
            cells.append(
                f"{s['ratio_to_native']['median']:.3f} ({s['ratio_to_native']['min']:.2f}-"
                f"{s['ratio_to_native']['max']:.2f}) {s['hashes'][0][:8]}"
            )
        print(f"{name:>24} | " + " | ".join(f"{c:28}" for c in cells))
    C.write_json(
        Path(args.out),
        {
            "machine": C.machine(),
            "rounds": args.rounds,
            "runs": args.runs,
            "variants": {n: {"xla_flags": list(VARIANTS[n][0]), "env": VARIANTS[n][1]} for n in names},
            "workloads": summary,
            "load_average_1min": {"min": min(loads), "max": max(loads)},
        },
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
