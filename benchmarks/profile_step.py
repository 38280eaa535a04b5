"""Op-level profile of training steps under numerics settings: which XLA ops, how many microseconds per
step, and what share of one core's FP32 peak the matrix products reach (issue 19).

    python benchmarks/profile_step.py [--data-dir DIR] [--variants native,portable] [--train 3200]

For each variant (benchmarks/numerics_costs.py's VARIANTS) a fresh single-core process sets the variant's
settings before JAX starts, compiles the engine's chunk program of each workload (the grid network at
batch 32, the 784-30-10 network at batch 10) on the first `--train` MNIST images, runs it once untimed,
then once under `jax.profiler.trace`. XLA:CPU records one trace event per executed op (thunk) with its
duration; those are summed per op name and divided by the number of training steps. Op shapes and FLOPs
come from the optimized HLO (--xla_dump_to): for each dot, 2 x output elements x contracted length, over
its microseconds, against one core's FP32 peak (benchmarks/_common.machine). One step of a chunk trains
`width` models at once (the engine's chunk width), so per-model figures divide by it. Ops of the whole
chunk program are included: the evaluation after the epoch and the initialisation are spread over the
steps, which is why --train should be large compared with the test set (default: 100 steps at b32).
Writes benchmarks/profile_step.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from numerics_costs import MODE_OF, VARIANTS  # noqa: E402

OUT = Path(__file__).resolve().parent / "profile_step.json"

CHILD = r"""
import collections, glob, gzip, json, os, re, sys, tempfile
flags, env, n_train, data_dir, here, mode = json.loads(sys.argv[1])
dump = tempfile.mkdtemp(prefix="hpstudy-profile-")
os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_dump_to={dump}", "--xla_dump_hlo_as_text"])
os.environ.update(env)
from hpstudy.training import numerics
numerics._applied["mode"] = mode  # a mode's own layers (numerics_costs.MODE_OF), else None
assert numerics.pin_one_core()
sys.path.insert(0, here)
import jax
import _common as C
from hpstudy.training import engine
from hpstudy.runs import RunSpec

def shapes(text):
    # each dot's FLOPs (2 x output elements x contracted length), and each fusion's (the dots it calls)
    comps, current = {}, None
    for line in text.splitlines():
        m = re.match(r"(?:ENTRY )?%?([\w.\-]+) [(].*[{]\s*$", line)
        if m:
            current = comps.setdefault(m.group(1), [])
        elif current is not None:
            current.append(line)
    flops, calls = {}, {}
    for comp, lines in comps.items():
        dims = {}
        for line in lines:
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\]", line)
            if m:
                dims[m.group(1)] = [int(d) for d in m.group(2).split(",") if d]
        for line in lines:
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\]\S* dot\(%?([\w.\-]+), %?([\w.\-]+)\).*lhs_contracting_dims=[{]([\d,]*)[}]", line)
            if m:
                n, k, lhs = 1, 1, dims.get(m.group(3), [])
                for d in m.group(2).split(","):
                    n *= int(d) if d else 1
                for d in m.group(5).split(","):
                    if d and int(d) < len(lhs):
                        k *= lhs[int(d)]
                flops[m.group(1)] = {"flop": 2 * n * k, "out": [int(d) for d in m.group(2).split(",") if d],
                                     "lhs": lhs, "rhs": dims.get(m.group(4), [])}
                flops.setdefault("#" + comp, []).append(2 * n * k)
            f = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .* fusion\(.*calls=%?([\w.\-]+)", line)
            if f:
                calls[f.group(1)] = f.group(2)
    for fusion, comp in calls.items():
        if "#" + comp in flops:
            flops[fusion] = {"flop": sum(flops["#" + comp]), "out": [], "lhs": [], "rhs": [], "fused_dots": len(flops["#" + comp])}
    return {k: v for k, v in flops.items() if not k.startswith("#")}

dataset = C.subset(C.load_mnist(data_dir or None), n_train)
device = engine.device_data(dataset)
m = C.machine()
result = {"peak_gflops_one_core": m["fp32_flop_per_cycle_per_core"] * m["clock_ghz"], "workloads": {}}
for w in (C.GRID32, C.SMALL10):
    before = set(glob.glob(f"{dump}/*cpu_after_optimizations.txt"))
    width = engine.chunk_width(w.config().static())
    specs = [RunSpec(w.config(epochs=1), s) for s in range(width)]
    engine.execute(specs, lambda _: device, lambda r: None)
    trace_dir = tempfile.mkdtemp(prefix="hpstudy-trace-")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        engine.execute(specs, lambda _: device, lambda r: None)
    events = json.load(gzip.open(sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    durations = collections.defaultdict(list)
    skip = ("ThunkExecutor", "Pjit", "$", "CommonPjRt", "end: ", "Handle", "Allocate", "Parse", "Python", "Wait",
            "Threadpool", "np.", "while")  # runtime and Python events; a while loop contains the step's ops
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(skip):
            durations[(e.get("args", {}).get("hlo_module"), e["name"])].append(e.get("dur", 0.0))
    # FLOPs from this workload's own programs only, module by module: op names repeat across modules (a dot in
    # one, a reduction in another), so each traced op is looked up in the dump of its own module (the trace
    # names it), among the dumps written since this workload started; should two of those share a module name,
    # the smaller product is the step's (the median call above is the step's too: it runs every step)
    dots = collections.defaultdict(dict)
    for p in sorted(set(glob.glob(f"{dump}/*cpu_after_optimizations.txt")) - before):
        module = os.path.basename(p).split(".", 1)[1].rsplit(".cpu_after_optimizations", 1)[0]
        for name, d in shapes(open(p).read()).items():
            if name not in dots[module] or d["flop"] < dots[module][name]["flop"]:
                dots[module][name] = d
    steps = w.steps_per_epoch(n_train)
    ops = []
    for (module, name), ds in durations.items():
        # the median call, times the calls per step: robust to the preemptions of a loaded machine
        ds = sorted(ds)
        op = {"op": name, "calls_per_step": len(ds) / steps, "median_us": ds[len(ds) // 2],
              "us_per_step": ds[len(ds) // 2] * len(ds) / steps, "sum_us_per_step": sum(ds) / steps}
        if name in dots.get(module, {}):
            op.update(dots[module][name], module=module)
            op["gflops"] = op["flop"] / op["median_us"] / 1e3 if op["median_us"] else None
        ops.append(op)
    ops.sort(key=lambda o: -o["us_per_step"])
    in_step = [o for o in ops if o["calls_per_step"] >= 1]
    step_us = sum(o["us_per_step"] for o in in_step)
    dot_flop = sum(o["flop"] * o["calls_per_step"] for o in in_step if "flop" in o)
    dot_us = sum(o["us_per_step"] for o in in_step if "flop" in o)
    result["workloads"][w.name] = {
        "width": width, "steps": steps, "ops": ops[:12], "us_per_step": step_us,  # the 12 costliest ops
        "us_per_model_step": step_us / width, "dot_us_per_step": dot_us,
        "dot_gflops": dot_flop / dot_us / 1e3 if dot_us else None,
        "step_gflops": dot_flop / step_us / 1e3 if step_us else None,
        "outside_steps_us_total": sum(o["sum_us_per_step"] * steps for o in ops if o["calls_per_step"] < 1),
        "step_dots": [[o["op"], o["flop"], o["calls_per_step"], o["median_us"]] for o in in_step if "flop" in o]}
print(json.dumps(result))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("HPSTUDY_DATA_DIR", ""))
    parser.add_argument("--variants", default="native,portable")
    parser.add_argument("--train", type=int, default=3200)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds over the variants")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    env = {**os.environ, "HPSTUDY_CACHE_DIR": "off"}
    env.pop("XLA_FLAGS", None)
    out = {"machine": C.machine(), "train_images": args.train, "rounds": args.rounds, "variants": {}}
    names = args.variants.split(",")
    for name, round_ in [(n, r) for r in range(args.rounds) for n in names]:
        flags, extra = VARIANTS[name]
        load = os.getloadavg()[0]
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                json.dumps(
                    [list(flags), extra, args.train, args.data_dir, str(Path(__file__).parent), MODE_OF.get(name)]
                ),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["load_average_1min"] = load
        out["variants"].setdefault(name, []).append(result)
        peak = result["peak_gflops_one_core"]
        for workload, r in result["workloads"].items():
            print(
                f"\n== round {round_ + 1} {name} | {workload} | width {r['width']} (load {load:.1f}); one core's FP32 peak {peak:.1f} GFLOP/s"
            )
            print(
                f"  step: {r['us_per_step']:.1f} us ({r['us_per_model_step']:.1f} us per model-step), of which dots "
                f"{r['dot_us_per_step']:.1f} us at {r['dot_gflops'] or 0:.1f} GFLOP/s ({100 * (r['dot_gflops'] or 0) / peak:.0f}% of peak); "
                f"whole step {r['step_gflops'] or 0:.1f} GFLOP/s ({100 * (r['step_gflops'] or 0) / peak:.0f}%)"
            )
            for op in [o for o in r["ops"] if o["calls_per_step"] >= 1][: args.top]:
                extra_s = ""
                if op.get("gflops"):
                    what = (
                        f"{op['fused_dots']} fused dot(s)"
                        if op.get("fused_dots")
                        else f"dot {op['lhs']}x{op['rhs']}->{op['out']}"
                    )
                    extra_s = f"  {what}: {op['gflops']:.1f} GFLOP/s = {100 * op['gflops'] / peak:.0f}% of peak"
                print(f"  {op['us_per_step']:8.2f} us  x{op['calls_per_step']:.0f}  {op['op'][:40]:40}{extra_s}")
    print("\nmedian over rounds, us per model-step in the step's ops (dots' share of the one-core FP32 peak):")
    summary = {}
    for name in names:
        for workload in out["variants"][name][0]["workloads"]:
            rs = sorted(out["variants"][name], key=lambda r: r["workloads"][workload]["us_per_model_step"])
            r = rs[len(rs) // 2]["workloads"][workload]
            native = sorted(x["workloads"][workload]["us_per_model_step"] for x in out["variants"].get("native", rs))
            summary.setdefault(workload, {})[name] = {
                "us_per_model_step": round(r["us_per_model_step"], 1),
                "dot_gflops": round(r["dot_gflops"] or 0, 1),
                "speed_vs_native": round(native[len(native) // 2] / r["us_per_model_step"], 3),
            }
            print(
                f"  {workload[:30]:30} {name:>24}: {r['us_per_model_step']:7.1f} us, dots {r['dot_gflops'] or 0:5.1f} GFLOP/s; "
                f"speed vs native {summary[workload][name]['speed_vs_native']:.3f}"
            )
    out["summary"] = summary
    C.write_json(Path(args.out), out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
