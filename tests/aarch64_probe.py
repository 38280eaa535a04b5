"""Same bits on x86 and aarch64? Hashes of plain and fixed-order ops and of 20 training steps, as JSON
(two lines). A probe run by hand (docs/reproducibility.md, "The same bits on ARM"), natively and under
qemu-aarch64, with hpstudy/training/fixed_order.py's path as its argument; needs only jax and numpy.
    python tests/aarch64_probe.py hpstudy/training/fixed_order.py"""

import hashlib
import importlib.util
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

spec = importlib.util.spec_from_file_location("fixed_order", sys.argv[1])
fo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fo)
rng = np.random.default_rng(0)


def h(t):
    return hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(t))).hexdigest()[:12]


out = {}
x = rng.standard_normal((2, 32, 784), dtype=np.float32)
W = rng.standard_normal((2, 784, 128), dtype=np.float32) * 0.05
g = rng.standard_normal((2, 32, 128), dtype=np.float32)
out["plain dot"] = h(jax.jit(jnp.matmul)(x, W))
out["fixed dot"] = h(jax.jit(jax.vmap(fo.dot))(x, W))
out["fixed dot vjp"] = h(jax.jit(jax.vmap(lambda x, W, g: jax.vjp(fo.dot, x, W)[1](g)))(x, W, g))
out["fixed sum 32"] = h(jax.jit(lambda a: fo.sum(a, 1))(g))
out["fixed sum 784"] = h(jax.jit(lambda a: fo.sum(a, -1))(x))
out["fixed logsumexp"] = h(jax.jit(fo.logsumexp)(g))
# a 784-64-10 MLP, SGD and Adam, 20 steps: Python loop over a jitted step, and one lax.scan
X = rng.random((20, 32, 784), dtype=np.float32)
Y = rng.integers(0, 10, (20, 32))
p0 = {
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


def sgd(state, batch):
    (p,) = state
    gr = jax.grad(loss)(p, *batch)
    return (jax.tree.map(lambda a, b: a - 0.1 * b, p, gr),), None


def adam(state, batch):
    p, m, v, t = state
    gr = jax.grad(loss)(p, *batch)
    t = t + 1
    m = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, m, gr)
    v = jax.tree.map(lambda a, b: 0.999 * a + 0.001 * b * b, v, gr)
    lr = 1e-3 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    return (jax.tree.map(lambda a, b, c: a - lr * b / (jnp.sqrt(c) + 1e-7), p, m, v), m, v, t), None


z = jax.tree.map(np.zeros_like, p0)
for name, step, s0 in [("sgd", sgd, (p0,)), ("adam", adam, (p0, z, z, jnp.float32(0)))]:
    f = jax.jit(step)
    s = s0
    per = []
    for i in range(20):
        s, _ = f(s, (X[i], Y[i]))
        per.append(h(s[0]))
    out[f"{name} loop 20"] = per[-1]
    sc = jax.jit(lambda s, xs: jax.lax.scan(step, s, xs)[0])(s0, (X, Y))  # noqa: B023 - called within this iteration
    out[f"{name} scan 20"] = h(sc[0])
    out[f"{name} scan 2"] = h(jax.jit(lambda s, xs: jax.lax.scan(step, s, xs)[0])(s0, (X[:2], Y[:2]))[0])  # noqa: B023 - called within this iteration
    out[f"{name} loop 2"] = per[1]
    out[f"{name} scan==loop"] = out[f"{name} scan 20"] == out[f"{name} loop 20"]
print(json.dumps(out))
gr = jax.jit(jax.grad(loss))(p0, X[0], Y[0])
extra = {f"grad0 {k}": h(v) for k, v in gr.items()}
extra["loss0"] = h(jax.jit(loss)(p0, X[0], Y[0]))
a1 = jax.jit(lambda p, x: fo.add_bias(fo.dot(x, p["w1"]), p["b1"]))(p0, X[0])
extra["layer1"] = h(a1)
extra["fixed dot 32x784x64"] = h(jax.jit(fo.dot)(X[0], p0["w1"]))
print(json.dumps(extra))
