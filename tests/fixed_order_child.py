"""Print hashes of fixed-order products, sums and a few SGD steps, and of a plain XLA dot, as JSON.

Run by tests/test_fixed_order.py in fresh processes under different XLA settings (and, by hand, under
qemu-aarch64: docs/reproducibility.md). Imports hpstudy/training/fixed_order.py by path, so that it also runs where
only jax and numpy are installed:  python tests/fixed_order_child.py PATH/TO/fixed_order.py
"""

import hashlib
import importlib.util
import json
import os
import sys

if os.environ.get("FIXED_ORDER_ALL_CORES") and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # before JAX sizes its thread pool

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

spec = importlib.util.spec_from_file_location("fixed_order", sys.argv[1])
fo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fo)


def digest(tree) -> str:
    return hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(tree))).hexdigest()[:16]


rng = np.random.default_rng(0)
x = rng.standard_normal((2, 32, 784), dtype=np.float32)
w = rng.standard_normal((2, 784, 128), dtype=np.float32) * 0.05
g = rng.standard_normal((2, 32, 128), dtype=np.float32)
out = {
    "plain_dot": digest(jax.jit(jnp.matmul)(x, w)),
    "dot": digest(jax.jit(jax.vmap(fo.dot))(x, w)),
    "dot_vjp": digest(jax.jit(jax.vmap(lambda x, w, g: jax.vjp(fo.dot, x, w)[1](g)))(x, w, g)),
    "sum_batch": digest(jax.jit(lambda a: fo.sum(a, 1))(g)),
    "sum_784": digest(jax.jit(lambda a: fo.sum(a, -1))(x)),
    "logsumexp": digest(jax.jit(fo.logsumexp)(g)),
}
# A 784-64-10 ReLU MLP, cross-entropy, SGD: 5 steps as a lax.scan of the step.
X = rng.random((5, 32, 784), dtype=np.float32)
Y = rng.integers(0, 10, (5, 32))
params = {
    "w1": rng.standard_normal((784, 64), dtype=np.float32) * 0.05,
    "b1": np.zeros(64, np.float32),
    "w2": rng.standard_normal((64, 10), dtype=np.float32) * 0.1,
    "b2": np.zeros(10, np.float32),
}


def loss(p, x, y):
    a = jax.nn.relu(fo.add_bias(fo.dot(x, p["w1"]), p["b1"]))
    z = fo.add_bias(fo.dot(a, p["w2"]), p["b2"])
    nll = fo.logsumexp(z) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
    return fo.sum(nll, 0) / x.shape[0]


def step(p, batch):
    grads = jax.grad(loss)(p, *batch)
    return jax.tree.map(lambda a, b: a - 0.1 * b, p, grads), loss(p, *batch)


trained, losses = jax.jit(lambda p, xs: jax.lax.scan(step, p, xs))(params, (X, Y))
out["sgd_scan_5"] = digest((trained, losses))
print(json.dumps(out))
