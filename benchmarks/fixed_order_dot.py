"""The fixed-order dot (hpstudy/training/fixed_order.py) against XLA's dot, on the products of a training step.

    python benchmarks/fixed_order_dot.py [--repeats 200]

For each of the two benchmark networks (grid 784-128-128-10 at batch 32, chunk width 2; 784-30-10 at
batch 10, chunk width 4) and each layer: the forward product and its two gradient products (vmapped over
the chunk, as the engine runs them). Each runs in two fresh single-core processes: one under portable
numerics (where XLA's dot is Eigen's kernel) and one under native numerics (YNNPACK/oneDNN); the
fixed-order dot is timed in both (it contains no library call, so its code is the same apart from
XLA's vector width). Timings are medians of `--repeats` calls, alternating dot and fixed-order dot call
by call. Writes benchmarks/fixed_order_dot.json.
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

OUT = Path(__file__).resolve().parent / "fixed_order_dot.json"
NETWORKS = {"grid b32 (width 2)": ((784, 128, 128, 10), 32, 2), "784-30-10 b10 (width 4)": ((784, 30, 10), 10, 4)}

CHILD = r"""
import json, sys, time
from hpstudy.training import numerics
assert numerics.prepare_process(sys.argv[1])
import jax, jax.numpy as jnp, numpy as np
from hpstudy.training import fixed_order as fo
networks, repeats = json.loads(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
out = {}
for name, (sizes, batch, width) in networks.items():
    rows = []
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes = {"forward": ((width, batch, k), (width, k, n)), "input grad": ((width, batch, n), (width, n, k)),
                  "weight grad": ((width, k, batch), (width, batch, n))}
        for what, (a, b) in shapes.items():
            if what == "input grad" and i == 0:
                continue  # nobody needs the gradient of the pixels
            x = jnp.asarray(rng.standard_normal(a, dtype=np.float32)); w = jnp.asarray(rng.standard_normal(b, dtype=np.float32))
            plain, fixed = jax.jit(jnp.matmul), jax.jit(jax.vmap(fo.dot))
            for f in (plain, fixed):
                for _ in range(5):
                    f(x, w).block_until_ready()
            tp, tf = [], []
            for _ in range(repeats):
                for f, ts in ((plain, tp), (fixed, tf)):
                    t = time.perf_counter(); f(x, w).block_until_ready(); ts.append(time.perf_counter() - t)
            med = lambda ts: sorted(ts)[len(ts) // 2] * 1e6
            flop = 2 * width * a[1] * a[2] * b[2]
            rows.append({"layer": i + 1, "product": what, "lhs": a, "rhs": b, "dot_us": med(tp), "fixed_us": med(tf),
                         "fixed_gflops": flop / med(tf) / 1e3, "dot_gflops": flop / med(tp) / 1e3})
    out[name] = rows
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    env = {**os.environ, "HPSTUDY_CACHE_DIR": "off"}
    env.pop("XLA_FLAGS", None)
    results, loads = {}, {}
    for mode in ("portable", "native"):
        loads[mode] = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, mode, json.dumps(NETWORKS), str(args.repeats)],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in NETWORKS:
        print(f"\n{name}: median us per call (load {loads['portable']:.1f} / {loads['native']:.1f})")
        print(f"  {'product':24} {'portable dot':>12} {'native dot':>10} {'fixed':>8}   fixed/portable fixed/native")
        tot = {"p": 0.0, "n": 0.0, "f": 0.0}
        for p, n in zip(results["portable"][name], results["native"][name]):
            label = f"L{p['layer']} {p['product']}"
            tot["p"] += p["dot_us"]
            tot["n"] += n["dot_us"]
            tot["f"] += p["fixed_us"]
            print(
                f"  {label:24} {p['dot_us']:12.1f} {n['dot_us']:10.1f} {p['fixed_us']:8.1f}   "
                f"{p['fixed_us'] / p['dot_us']:14.2f} {p['fixed_us'] / n['dot_us']:12.2f}"
            )
        print(
            f"  {'all products of a step':24} {tot['p']:12.1f} {tot['n']:10.1f} {tot['f']:8.1f}   "
            f"{tot['f'] / tot['p']:14.2f} {tot['f'] / tot['n']:12.2f}"
        )
    C.write_json(OUT, {"machine": C.machine(), "repeats": args.repeats, "load_average_1min": loads, "results": results})
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
