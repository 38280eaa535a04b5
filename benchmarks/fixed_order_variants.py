"""The fixed-order dot's implementations against each other and XLA's dot, on a training step's products.

    python benchmarks/fixed_order_variants.py [--repeats 50] [--blocks 8 16 32]

One single-core process under numerics mode "fixed-order"'s settings. For each of the two benchmark networks
(grid 784-128-128-10 at batch 32, chunk of 2; 784-30-10 at batch 10, chunk of 4) and each layer: the forward
product x @ w, the weight gradient x^T @ g and the input gradient g @ w^T (from the second layer on), vmapped
over the chunk, timed as
- `xla`: jnp.matmul (XLA's dot, not fixed-order: the yardstick),
- `previous`: the earlier fixed-order dot (k in blocks of 8, each a fused multiply-add chain, the blocks'
  partial sums chained behind an optimization_barrier), kept here for the comparison,
- `loop bB`: fixed_order's products (one k-sequential chain per element, a fori_loop over blocks of B k).
Medians of `--repeats` calls, the variants alternating call by call (same sitting), as wall time and as the
process's CPU time (time.process_time: on a loaded machine, where a niced process waits for the core, the CPU
time is the steadier measure of the work). Prints JSON with the 1-minute load average; the loop variants'
outputs are checked equal to each other bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from hpstudy.training import numerics

assert numerics.prepare_process(numerics.FIXED_ORDER)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hpstudy.training import fixed_order as fo  # noqa: E402

NETWORKS = {"grid b32 (width 2)": ((784, 128, 128, 10), 32, 2), "784-30-10 b10 (width 4)": ((784, 30, 10), 10, 4)}


def previous_dot(x, w, block=8):
    """The earlier fixed-order dot: blocks of `block` k, a multiply-add chain in each, block sums chained."""
    k = x.shape[-1]
    nb = -(-k // block)
    pad = nb * block - k
    if pad:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
        w = jnp.pad(w, [(0, pad), (0, 0)])
    xb = x.reshape(*x.shape[:-1], nb, block)
    wb = w.reshape(nb, block, w.shape[-1])
    partial = fo._chain([xb[..., :, j, None] * wb[:, j, :] for j in range(block)])
    if nb == 1:
        return partial[..., 0, :]
    partial = jax.lax.optimization_barrier(partial)
    return fo._chain([partial[..., i, :] for i in range(nb)])


PRODUCTS = {  # name: (xla, previous, loop(block))
    "forward": (jnp.matmul, previous_dot, lambda b: lambda x, w: fo._dot(x, w, b)),
    "weight grad": (
        lambda x, g: x.T @ g,
        lambda x, g: previous_dot(x.T, g),
        lambda b: lambda x, g: fo.weight_grad(x, g, b),
    ),
    "input grad": (
        lambda g, w: g @ w.T,
        lambda g, w: previous_dot(g, w.T),
        lambda b: lambda g, w: fo.input_grad(g, w, b),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    out = {"load_start": round(os.getloadavg()[0], 2), "repeats": args.repeats}
    for name, (sizes, batch, width) in NETWORKS.items():
        totals: dict[str, float] = {}
        totals_cpu: dict[str, float] = {}
        rows = []
        for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
            x = jnp.asarray(rng.standard_normal((width, batch, k), dtype=np.float32))
            w = jnp.asarray(rng.standard_normal((width, k, n), dtype=np.float32))
            g = jnp.asarray(rng.standard_normal((width, batch, n), dtype=np.float32))
            operands = {"forward": (x, w), "weight grad": (x, g), "input grad": (g, w)}
            for what, (xla, previous, loop) in PRODUCTS.items():
                if what == "input grad" and i == 0:
                    continue  # nobody needs the gradient of the pixels
                fs = {"xla": xla, "previous": previous, **{f"loop b{b}": loop(b) for b in args.blocks}}
                fs = {key: jax.jit(jax.vmap(f)) for key, f in fs.items()}
                ops = operands[what]
                results = {key: np.asarray(f(*ops)) for key, f in fs.items()}
                loops = [results[key] for key in results if key.startswith("loop")]
                assert all(np.array_equal(loops[0], r) for r in loops), (name, i, what)
                times: dict[str, list[float]] = {key: [] for key in fs}
                cpu: dict[str, list[float]] = {key: [] for key in fs}
                for _ in range(args.repeats):
                    for key, f in fs.items():
                        start, start_cpu = time.perf_counter(), time.process_time()
                        jax.block_until_ready(f(*ops))
                        times[key].append(time.perf_counter() - start)
                        cpu[key].append(time.process_time() - start_cpu)
                med = {key: round(sorted(t)[len(t) // 2] * 1e6, 1) for key, t in times.items()}
                med_cpu = {key: round(sorted(t)[len(t) // 2] * 1e6, 1) for key, t in cpu.items()}
                for key in fs:
                    totals[key] = totals.get(key, 0.0) + med[key]
                    totals_cpu[key] = totals_cpu.get(key, 0.0) + med_cpu[key]
                rows.append({"layer": i + 1, "product": what, "median_us": med, "median_cpu_us": med_cpu})
                print(name, f"L{i + 1} {what}", "wall", med, "cpu", med_cpu, flush=True)
        out[name] = {
            "rows": rows,
            "all products of a step": {k: round(v, 1) for k, v in totals.items()},
            "all products of a step, cpu": {k: round(v, 1) for k, v in totals_cpu.items()},
        }
    out["load_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
