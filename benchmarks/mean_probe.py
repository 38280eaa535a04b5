"""Does XLA's plain mean (jnp.mean, the evaluation's mean loss in engine.evaluate) give the same bits under other
XLA settings and CPUs? Prints the hex value of means over 200 to 10,000 values, alone and vmapped over 2, as
JSON. Run under each setting and compare (docs/reproducibility.md, "The same bits on ARM"); needs only jax/numpy:
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/mean_probe.py
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= qemu-aarch64 -cpu neoverse-n1 ARM_PYTHON benchmarks/mean_probe.py
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

rng = np.random.default_rng(0)
out = {}
for n in (200, 256, 1000, 10000):
    x = rng.standard_normal((n,), dtype=np.float32) ** 2
    out[f"mean{n}"] = float(jax.jit(jnp.mean)(x)).hex()
    xs = rng.standard_normal((2, n), dtype=np.float32) ** 2
    out[f"vmean{n}"] = [float(v).hex() for v in jax.jit(jax.vmap(jnp.mean))(xs)]
print(json.dumps(out))
