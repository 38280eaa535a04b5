"""What per-lane evaluation costs (docs/reproducibility.md, "Evaluation values and a run's slot").

The engine evaluates each lane of a chunk on its own copy of the evaluation images, so that a run's
evaluation values do not depend on its slot (the shared-image form let XLA make one product over every
lane's columns, whose bits depended on the slot). This times, in one portable-numerics single-core
process on real MNIST, for the two benchmark workloads at their chunk widths:
- `shared`: one evaluation of the 10,000 test images, vmapped over the chunk with the images shared
  (the former engine);
- `per_lane`: the same with a copy per lane (today's engine);
- `epoch`: one whole training epoch of the chunk through today's engine (60,000 images, evaluation
  included),
each the median of `--repeats` calls after a warm-up, and prints the per-lane evaluation's extra time as a
share of the epoch. Writes benchmarks/eval_per_lane.json.

    python benchmarks/eval_per_lane.py --data-dir DIR [--repeats 7]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OUT = Path(__file__).resolve().parent / "eval_per_lane.json"


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of fn() (which blocks until its result is ready), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(workload, device, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from hpstudy.runs import RunSpec
    from hpstudy.training import engine

    static = workload.config().static()
    width = engine.chunk_width(static)
    program, _ = C.hpstudy_compile(workload, device, width)
    keys, hp = engine._lanes([RunSpec(workload.config(), s) for s in range(width)])
    state = program.init(keys, hp)
    evaluate = functools.partial(engine.evaluate, static)
    shared = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None, None)))
    per_lane = jax.jit(
        lambda p, x, y, s: jax.vmap(evaluate, in_axes=(0, 0, None, None))(p, engine.lanes_of(x, width), y, s)
    )
    args = (state.params, device.x_test, device.y_test, device.stats)
    epoch = jnp.zeros(width, jnp.int32)
    return {
        "width": width,
        "shared_s": median_seconds(lambda: jax.block_until_ready(shared(*args)), repeats),
        "per_lane_s": median_seconds(lambda: jax.block_until_ready(per_lane(*args)), repeats),
        # the epoch donates its state: each call gets a fresh copy (the copy is outside the timed call's work)
        "epoch_s": median_seconds(
            lambda: jax.block_until_ready(program.epoch(jax.tree.map(jnp.copy, state), hp, device, epoch)),
            max(1, repeats // 3),
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from hpstudy.training import numerics

    assert numerics.prepare_process("portable")
    from hpstudy.training import engine

    device = engine.device_data(C.load_mnist(args.data_dir))
    results = {}
    for w in (C.GRID32, C.SMALL10):
        r = measure(w, device, args.repeats)
        r["extra_share_of_epoch"] = (r["per_lane_s"] - r["shared_s"]) / r["epoch_s"]
        results[w.name] = r
        print(
            f"{w.name} (width {r['width']}): evaluation shared {1e3 * r['shared_s']:.1f} ms, per lane "
            f"{1e3 * r['per_lane_s']:.1f} ms; epoch {r['epoch_s']:.2f} s; per-lane extra = "
            f"{100 * r['extra_share_of_epoch']:.2f} % of an epoch"
        )
    payload = {"machine": C.machine(), "repeats": args.repeats, "results": results}
    C.write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
