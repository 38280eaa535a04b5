"""Where a fixed-order training step's time goes (numerics mode "fixed-order", docs/reproducibility.md).

    python benchmarks/fixed_order_step.py [--repeats 30]

One single-core process under the mode's settings (numerics.prepare_process). The grid network (784-128-128-10,
ReLU, softmax cross-entropy, batch 32), vmapped over a chunk of 2 runs, as the engine runs it: the loss and its
gradient with fixed-order layers and loss, plain (nn.Dense, XLA's reductions), and each half alone; then the
784x128 layer's three products alone (forward x @ w, weight gradient x^T @ g, input gradient g @ w^T, the last
needed from the second layer on), fixed-order. Median microseconds of `--repeats` calls after a warm-up, wall
and CPU time (the process's, time.process_time).
Prints JSON (with the 1-minute load average).
"""

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
from hpstudy.training import model  # noqa: E402

WIDTH, BATCH = 2, 32


def median_us(f, *args, repeats: int) -> dict[str, int]:
    """Median wall time and median CPU time (time.process_time: steadier on a loaded machine) of a jitted call."""
    f = jax.jit(f)
    jax.block_until_ready(f(*args))
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": round(sorted(times)[repeats // 2] * 1e6), "cpu": round(sorted(cpu)[repeats // 2] * 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((WIDTH, BATCH, 784), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, (WIDTH, BATCH)))
    mask = jnp.ones((WIDTH, BATCH))
    out = {"load_start": round(os.getloadavg()[0], 2)}
    for layers, loss_kind in ((False, False), (True, True), (True, False), (False, True)):
        net = model.MLP(hidden=(128, 128), activation="relu", init_scheme="keras", fixed_order=layers)
        params = jax.vmap(lambda k, net=net: net.init(k, x[0]))(jax.random.split(jax.random.key(0), WIDTH))

        def loss(p, x, y, m, net=net, fixed=loss_kind):
            return model.batch_loss_sum("softmax_cross_entropy", net.apply(p, x), y, m, fixed=fixed)

        name = f"layers {'fixed' if layers else 'plain'}, loss {'fixed' if loss_kind else 'plain'}"
        out[name] = {
            "forward_us": median_us(jax.vmap(loss), params, x, y, mask, repeats=args.repeats),
            "gradient_us": median_us(jax.vmap(jax.grad(loss)), params, x, y, mask, repeats=args.repeats),
        }
    w = jnp.asarray(rng.standard_normal((WIDTH, 784, 128), dtype=np.float32))
    g = jnp.asarray(rng.standard_normal((WIDTH, BATCH, 128), dtype=np.float32))
    out["784x128 products, fixed-order"] = {
        "forward x @ w": median_us(jax.vmap(fo._dot), x, w, repeats=args.repeats),
        "weight gradient x^T @ g": median_us(jax.vmap(fo.weight_grad), x, g, repeats=args.repeats),
        "input gradient g @ w^T": median_us(jax.vmap(fo.input_grad), g, w, repeats=args.repeats),
    }
    out["load_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
