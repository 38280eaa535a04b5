"""Hashes of matrix products under numerics mode portable-v2's settings, and whether each is one FMA chain over
k per output element: run on this CPU and under qemu-user emulating others, then compare the JSON lines.

    python benchmarks/ynn_products_probe.py [--cap]                       # this CPU
    qemu-x86_64 -cpu EPYC-Milan python benchmarks/ynn_products_probe.py   # an emulated AVX2 CPU
    QEMU_LD_PREFIX=ROOT PYTHONPATH=SITE qemu-aarch64 -cpu neoverse-n1 ROOT/usr/bin/python3.11 \
        benchmarks/ynn_products_probe.py                                 # an emulated ARM CPU

The settings are hpstudy/training/numerics.py's PORTABLE_V2_* (written out here, so that the script also runs
where hpstudy refuses the mode); `--no-cap` leaves out --xla_cpu_max_isa=AVX2 (which aarch64 ignores). The
shapes are the grid and 784-30-10 networks' products as a chunk of 2 or 4 runs computes them (vmapped), their
weight-gradient form (k = the batch), and larger ones whose working set exceeds an L2 cache, where YNNPACK's
schedule may cut k into chunks sized by the cache (docs/reproducibility.md, "Numerics mode portable-v2").
"chain_differs": how many output elements differ from one float32 FMA chain over k computed with NumPy
(float64 products rounded once per step); nonzero means the library summed k in another order (e.g. in chunks).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform

SETTINGS = (
    "--xla_cpu_enable_platform_dependent_math=false",
    "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
)
CAP = "--xla_cpu_max_isa=AVX2"
# (lanes, m, k, n): lanes > 1 is a vmapped product, as a chunk of runs computes it
SHAPES = [
    (2, 32, 784, 128),
    (2, 32, 128, 128),
    (2, 32, 128, 10),
    (4, 10, 30, 10),
    (4, 10, 784, 30),
    (2, 784, 32, 128),
    (4, 784, 10, 30),
    (1, 32, 2048, 128),
    (1, 32, 8192, 128),
    (1, 256, 4096, 512),
    (1, 784, 4096, 128),
    (1, 1024, 1024, 1024),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-cap", action="store_true", help="leave out --xla_cpu_max_isa=AVX2")
    parser.add_argument("--no-chain", action="store_true", help="hashes only (the NumPy chain is slow emulated)")
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = " ".join([*SETTINGS, *([] if args.no_cap else [CAP])])
    os.environ["TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"] = "false"
    import jax
    import numpy as np

    rng = np.random.default_rng(1)
    out = {}
    for lanes, m, k, n in SHAPES:
        x = rng.standard_normal((lanes, m, k), dtype=np.float32)
        w = rng.standard_normal((lanes, k, n), dtype=np.float32)
        f = jax.jit(jax.vmap(lambda a, c: a @ c))
        got = np.asarray(f(x, w))
        entry = {"sha256": hashlib.sha256(got.tobytes()).hexdigest()[:16]}
        if not args.no_chain:
            acc = np.zeros((lanes, m, n), np.float32)
            for i in range(k):
                acc = (x[:, :, i, None].astype(np.float64) * w[:, None, i] + acc).astype(np.float32)
            entry["chain_differs"] = int((got != acc).sum())
        out[f"{lanes}x({m}x{k}@{k}x{n})"] = entry
    print(json.dumps({"machine": platform.machine(), "products": out}))


if __name__ == "__main__":
    main()
