"""Model-steps per second of one chunk program at each chunk width, on the device JAX trains on: the
measurement behind `engine.chunk_width`'s rule for that device kind.

For each workload, compiles the chunk program (`engine.ChunkProgram`, what `hpstudy run` executes) at
every width, trains one untimed epoch, then times --epochs epochs of `width` real runs on a synthetic
MNIST-shaped dataset (no download; throughput does not depend on pixel values). Prints compile seconds,
model-steps/s and the share of the best rate for every width, the smallest width within 10% of the best
(the width to choose: narrower chunks waste less on padding and on runs that stopped early), and the
width the current rule picks. Writes benchmarks/chunk_width.json (or --out).

On a GPU (the reason it exists: the GPU rule is a design until this runs on one):

    python benchmarks/chunk_width.py --widths 8,16,32,64,128,256,512

On the CPU (the process is set up as `hpstudy run` sets up a training process: numerics settings, one
core):

    python benchmarks/chunk_width.py --widths 1,2,4,8 --n-train 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OUT = Path(__file__).resolve().parent / "chunk_width.json"
WORKLOADS = {"grid32": C.GRID32, "grid64": C.GRID64, "small10": C.SMALL10}


def rate_at(workload: C.Workload, device, width: int, epochs: int) -> dict:
    """Compile seconds and model-steps/s of `width` runs of `workload` trained together."""
    import jax.numpy as jnp

    from hpstudy.runs import RunSpec
    from hpstudy.training import engine

    program, compile_s = C.hpstudy_compile(workload, device, width)
    config = workload.config(epochs=epochs + 1)
    keys, hp = engine._lanes([RunSpec(config, seed) for seed in range(width)])
    state = program.init(keys, hp)
    state, metrics = program.epoch(state, hp, device, jnp.zeros(width, jnp.int32))  # untimed
    metrics.train_loss.block_until_ready()
    start = time.perf_counter()
    for e in range(1, epochs + 1):
        state, metrics = program.epoch(state, hp, device, jnp.full(width, e, jnp.int32))
    metrics.train_loss.block_until_ready()
    seconds = time.perf_counter() - start
    steps = -(-int(device.x_train.shape[0]) // workload.batch_size) * epochs * width
    return {
        "width": width,
        "compile_seconds": round(compile_s, 2),
        "seconds": round(seconds, 3),
        "model_steps_per_s": round(steps / seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1,2,4,8", help="comma-separated chunk widths (default: 1,2,4,8)")
    parser.add_argument("--workloads", default="grid32,small10", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--n-train", type=int, default=50000, help="synthetic training images per epoch")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per width")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    from hpstudy.training import numerics

    # as `hpstudy run` trains: numerics settings (on a GPU, --xla_gpu_deterministic_ops) and one core
    numerics.prepare_process(numerics.DEFAULT_MODE)
    import jax

    from hpstudy import data as hdata
    from hpstudy.training import engine

    backend = jax.default_backend()
    device = engine.device_data(hdata.synthetic(n_train=args.n_train, n_test=2000))
    print(f"backend {backend} ({jax.devices()[0].device_kind}), {args.n_train} training images", flush=True)
    result = {
        "what": "model-steps/s of one chunk program per width (synthetic data, after one untimed epoch)",
        "backend": backend,
        "device_kind": jax.devices()[0].device_kind,
        "machine": C.machine(),
        "n_train": args.n_train,
        "epochs": args.epochs,
        "workloads": {},
    }
    for name in args.workloads.split(","):
        workload = WORKLOADS[name]
        rows = [rate_at(workload, device, w, args.epochs) for w in widths]
        best = max(r["model_steps_per_s"] for r in rows)
        for r in rows:
            r["share_of_best"] = round(r["model_steps_per_s"] / best, 3)
        chosen = min(r["width"] for r in rows if r["share_of_best"] >= 0.9)
        rule = engine.chunk_width(workload.config().static(), backend)
        print(f"\n{workload.name}:")
        for r in rows:
            print(
                f"  width {r['width']:4d}: compile {r['compile_seconds']:6.1f} s, "
                f"{C.fmt_rate(r['model_steps_per_s'])} model-steps/s ({r['share_of_best']:.0%} of best)",
                flush=True,
            )
        print(f"  smallest width within 10% of the best: {chosen}; the rule picks {rule} on {backend}")
        result["workloads"][workload.name] = {"by_width": rows, "smallest_within_10pct": chosen, "rule_width": rule}
    C.write_json(Path(args.out), result)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
