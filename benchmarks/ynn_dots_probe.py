"""Hashes of matrix products and of two networks' gradients under explicit XLA settings (issue 19), to compare
the bits of candidate numerics settings between CPUs (natively and under qemu-x86_64 -cpu EPYC-Milan):

    python benchmarks/ynn_dots_probe.py '[["--xla_cpu_experimental_ynn_fusion_type=individual_dot"], {}]' [--chain]

The products: the grid network's (784-128-128-10, batch 32, vmapped over a chunk of 2) and the 784-30-10
network's (batch 10, chunk of 4) in the three forms a training step uses (x @ w, x^T @ g, g @ w^T, each on its
own random operands), and a 7x1001x33 one; then the loss and all gradients of both networks (ReLU and sigmoid MLPs, softmax cross-entropy,
vmapped). `ops` counts YNNPACK fusions and plain dots in the optimized programs. With --chain, also how many
elements of each product differ from one sequential FMA chain over k per element (NumPy: the float32 product
is exact in float64, each step rounded to float32), which is what makes a product's bits independent of the
vector width. With --time, the median microseconds of some of the grid network's products, among them the
weight gradient x^T @ g as the step has it (Eigen: YNNPACK does not take it) and with x^T materialised behind
an optimization_barrier (a transpose and a YNNPACK dot); run it under `perf record` to see which kernels run.
Prints one JSON object. The process is pinned to one core, as training processes are.
"""

import glob
import hashlib
import json
import os
import sys
import tempfile

flags, env = json.loads(sys.argv[1])
dump = tempfile.mkdtemp(prefix="hpstudy-ynn-probe-")
os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_dump_to={dump}", "--xla_dump_hlo_as_text"])
os.environ.update(env)
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def digest(a) -> str:
    return hashlib.sha256(np.asarray(a).tobytes()).hexdigest()[:8]


def chain(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (b, m, k) @ w (b, k, n), each element one FMA chain over k from k = 0."""
    acc = np.zeros((x.shape[0], x.shape[1], w.shape[2]), np.float32)
    for i in range(x.shape[2]):
        acc = (x[:, :, i, None].astype(np.float64) * w[:, None, i] + acc).astype(np.float32)
    return acc


rng = np.random.default_rng(0)


def arr(*shape):
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))


out: dict = {"flags": flags, "env": env, "products": {}}
shapes = [(2, 32, 784, 128), (2, 32, 128, 128), (2, 32, 128, 10), (4, 10, 784, 30), (4, 10, 30, 10), (1, 7, 1001, 33)]
for b, m, k, n in shapes:  # each form on its own random operands, drawn in this order
    x, w = arr(b, m, k), arr(b, k, n)
    out["products"][f"{b}x({m}x{k}@{k}x{n})"] = digest(jax.jit(jax.vmap(lambda a, c: a @ c))(x, w))
    xt = arr(b, m, k)
    out["products"][f"{b}x({m}x{k}^T@{m}x{n})"] = digest(jax.jit(jax.vmap(lambda a, c: a.T @ c))(xt, arr(b, m, n)))
    g = arr(b, m, n)
    out["products"][f"{b}x({m}x{n}@{k}x{n}^T)"] = digest(jax.jit(jax.vmap(lambda a, c: a @ c.T))(g, arr(b, k, n)))


def mlp(params, x, y, act):
    for i, (w, bias) in enumerate(params):
        x = x @ w + bias
        if i < len(params) - 1:
            x = act(x)
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(x) * y, -1))


for name, sizes, act, b, width in [
    ("grid", [784, 128, 128, 10], jax.nn.relu, 32, 2),
    ("small", [784, 30, 10], jax.nn.sigmoid, 10, 4),
]:
    params = [(arr(width, i, o) * 0.05, arr(width, o) * 0.05) for i, o in zip(sizes[:-1], sizes[1:])]
    x = jnp.abs(arr(width, b, 784))
    y = jax.nn.one_hot(jnp.asarray(rng.integers(0, 10, (width, b))), 10)
    loss, grads = jax.jit(jax.vmap(jax.value_and_grad(lambda p, xx, yy, act=act: mlp(p, xx, yy, act))))(params, x, y)
    out["products"][f"{name} loss"] = digest(loss)
    leaves = jax.tree_util.tree_leaves(grads)
    out["products"][f"{name} gradients"] = digest(jnp.concatenate([leaf.ravel() for leaf in leaves]))
if "--chain" in sys.argv:  # fresh operands (seed 1), each product against the NumPy chain, three forms
    chain_rng, out["chain_differing"] = np.random.default_rng(1), {}
    for b, m, k, n in [*shapes, (1, 64, 784, 128)]:
        for form in ("a@b", "a@bT", "aT@b"):
            x = chain_rng.standard_normal((b, m, k), dtype=np.float32)
            w = chain_rng.standard_normal((b, k, n), dtype=np.float32)
            if form == "a@b":
                got = jax.jit(jax.vmap(lambda a, c: a @ c))(x, w)
            elif form == "a@bT":
                got = jax.jit(jax.vmap(lambda a, c: a @ c.T))(x, np.ascontiguousarray(np.swapaxes(w, 1, 2)))
            else:
                got = jax.jit(jax.vmap(lambda a, c: a.T @ c))(np.ascontiguousarray(np.swapaxes(x, 1, 2)), w)
            out["chain_differing"][f"{b}x{m}x{k}x{n} {form}"] = int((np.asarray(got) != chain(x, w)).sum())
if "--time" in sys.argv:  # median us of 1,000 calls (also the loop to run under `perf record`)
    import time

    from jax import lax

    x, w, g = arr(2, 32, 784), arr(2, 784, 128), arr(2, 32, 128)
    timed = {
        "2x(32x784@784x128)": (lambda a, c: a @ c, x, w),
        "2x(32x128@(128x128)^T)": (lambda a, c: a @ c.T, g, arr(2, 128, 128)),
        "2x(32x128@128x10)": (lambda a, c: a @ c, g, arr(2, 128, 10)),
        # the weight gradient: as the step has it, and with x^T materialised behind a barrier (YNNPACK takes it)
        "2x((32x784)^T@32x128)": (lambda a, c: a.T @ c, x, g),
        "2x(barrier((32x784)^T)@32x128)": (lambda a, c: lax.optimization_barrier(a.T) @ c, x, g),
    }
    out["median_us"] = {}
    for name, (f, a, c) in timed.items():
        f = jax.jit(jax.vmap(f))
        f(a, c).block_until_ready()
        times = []
        for _ in range(1000):
            t = time.perf_counter()
            f(a, c).block_until_ready()
            times.append(time.perf_counter() - t)
        out["median_us"][name] = round(sorted(times)[len(times) // 2] * 1e6, 1)
    plain, barrier = (timed[k] for k in ("2x((32x784)^T@32x128)", "2x(barrier((32x784)^T)@32x128)"))
    out["barrier_same_bits"] = bool((jax.jit(jax.vmap(plain[0]))(x, g) == jax.jit(jax.vmap(barrier[0]))(x, g)).all())
    out["load_average_1min"] = os.getloadavg()[0]
ops = {"ynn_fusions": 0, "dots": 0}
for path in glob.glob(f"{dump}/*after_optimizations.txt"):
    for line in open(path):
        if "kind=kCustom" in line and "ynn" in line and " = " in line:
            ops["ynn_fusions"] += 1
        elif " dot(" in line:
            ops["dots"] += 1
out["ops"] = ops
out["cpu_features"] = sorted(
    f for f in ("AVX2", "FMA3", "AVX512F") if __import__("numpy")._core._multiarray_umath.__cpu_features__.get(f)
)
print(json.dumps(out))
