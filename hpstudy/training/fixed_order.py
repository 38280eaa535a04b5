"""Matrix products and sums whose every output element is computed in one fixed order, whatever the CPU.

Why: a kernel in which every output element is one sequential chain of fused multiply-adds over k, in a
fixed order, gives the same bits at any vector width (each vector lane is one output element; lanes never
meet), on AVX2, AVX-512, NEON or SVE alike. What breaks it is splitting k: blocking that depends on cache
sizes or the ISA (oneDNN, Eigen, YNNPACK), vectorising a reduction across k, tree sums.
docs/reproducibility.md ("A fixed-order dot") has the measurements.

How, with element-wise operations only (no XLA dot and no XLA reduce is left, so no library kernel
chooses an order by CPU, and no reduction is vectorised or split by XLA's own rules):
- `dot(x, w)`: every output element is ONE chain over k in k order, acc = round(x[0] * w[0]), then
  acc = fma(x[k], w[k], acc) (`_kchain`). It runs as one `lax.fori_loop` over blocks of `BLOCK` k carrying
  the accumulator, the block's multiply-adds unrolled in the body, which XLA fuses into one loop over the
  output vectorised along its minor axis (each lane its own element) and LLVM turns into FMAs; how k is cut
  into iterations changes the speed, never the order. Each add has exactly one product (the first product
  is kept apart behind an `optimization_barrier`), so FMA contraction has one choice. Element-wise adds keep
  their order: XLA does not reassociate floating-point adds without fast math (tests/test_fixed_order.py
  pins the order against NumPy).
- `custom_vjp`: the gradients are the same chains (`input_grad`: g @ w^T, a chain over n with w transposed
  once; `weight_grad`: x^T @ g, a chain over the batch), so autodiff inserts no XLA dot or reduction;
  `add_bias` does the same for bias gradients (a fixed-order sum over the batch).
- `sum(x, axis)`, `logsumexp` and `log_softmax`: chains within blocks of `SUM_BLOCK`, the blocks' sums
  chained in order, for mean losses, accuracy counts and the softmax (`log_softmax`'s `custom_vjp` sums its
  incoming gradient in fixed order too).
Measured: the same bits under XLA's defaults (YNNPACK, oneDNN, 512-bit code), with YNNPACK off, under
portable settings, with one core or a thread pool of two, and on aarch64 under qemu. FMA matters: CPUs
without FMA would give other bits.
Used by training in numerics mode "fixed-order" (hpstudy/training/numerics.py; the layers and losses in model.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

BLOCK = 16  # k per loop iteration of a dot: speed only, the bits do not depend on it (see `_kchain`)
SUM_BLOCK = 8  # elements per chain of `sum` (8 and 16 measured alike on the two networks)


def _blocks(n: int, block: int) -> tuple[int, int]:
    nb = -(-n // block)
    return nb, nb * block - n


def _chain(terms: list[jax.Array]) -> jax.Array:
    """terms[0] + terms[1] + ... left to right: element-wise adds whose order XLA may not change."""
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _kchain(a: jax.Array, b: jax.Array, block: int = BLOCK) -> jax.Array:
    """a [..., K, M], b [..., K, N] -> [..., M, N]: out[m, n] = sum over k of a[k, m] * b[k, n], as ONE chain in k
    order: acc = round(a[0] * b[0]), then acc = fma(a[k], b[k], acc) for k = 1 .. K-1.

    Vectorised over n (the minor axis of b and of the output: each vector lane is one output element, lanes never
    meet), so the order is the same at any vector width and thread count. The chain runs as one `lax.fori_loop`
    over blocks of `block` k, carrying the accumulator, with the block's multiply-adds unrolled in the body (one
    fused loop over the output per iteration), then the last K-1 mod `block` terms unrolled after it; how k is cut
    into iterations changes the speed only, never the order. Each add has one product and the running sum, so
    LLVM's FMA contraction has one choice; the first product is kept apart behind an `optimization_barrier`
    (otherwise the first add would have two products and LLVM would pick which to fuse). The block's rows are
    sliced out behind a barrier too: a dynamic slice fused into the multiply-adds is not vectorised (12x slower)."""
    k = a.shape[-2]
    if k == 0:
        return jnp.zeros((*a.shape[:-2], a.shape[-1], b.shape[-1]), jnp.result_type(a, b))

    def term(ak, bk):
        return ak[..., :, None] * bk[..., None, :]

    acc = jax.lax.optimization_barrier(term(a[..., 0, :], b[..., 0, :]))
    nb = (k - 1) // block  # loop iterations; the other k - 1 - nb * block terms are unrolled after the loop

    def body(j, acc):
        start = 1 + j * block
        ab = jax.lax.dynamic_slice_in_dim(a, start, block, axis=-2)
        bb = jax.lax.dynamic_slice_in_dim(b, start, block, axis=-2)
        ab, bb = jax.lax.optimization_barrier((ab, bb))
        for i in range(block):
            acc = term(ab[..., i, :], bb[..., i, :]) + acc
        return acc

    if nb:
        acc = jax.lax.fori_loop(0, nb, body, acc)
    for i in range(1 + nb * block, k):
        acc = term(a[..., i, :], b[..., i, :]) + acc
    return acc


def _dot(x: jax.Array, w: jax.Array, block: int = BLOCK) -> jax.Array:
    """x [..., K] @ w [K, N] -> [..., N], each output element one k-sequential FMA chain (`_kchain`).
    Only element-wise operations and one loop: no XLA dot, no XLA reduce."""
    x2 = x.reshape(-1, x.shape[-1])
    return _kchain(x2.T, w, block).reshape(*x.shape[:-1], w.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dot(x: jax.Array, w: jax.Array, block: int = BLOCK) -> jax.Array:
    """x [..., K] @ w [K, N] with every output element summed over k in one fixed order (`_kchain`)."""
    return _dot(x, w, block)


def _dot_fwd(x, w, block):
    return _dot(x, w, block), (x, w)


def input_grad(g: jax.Array, w: jax.Array, block: int = BLOCK) -> jax.Array:
    """g [M, N] @ w^T -> [M, K] (w [K, N]): one chain over n per element, vectorised over k (w transposed once)."""
    return _kchain(g.T, w.T, block)


def weight_grad(x: jax.Array, g: jax.Array, block: int = BLOCK) -> jax.Array:
    """x^T [K, M] @ g [M, N] -> [K, N]: one chain over the batch m, in batch order, vectorised over n (the rows
    x[m] and g[m] are contiguous, so nothing is transposed)."""
    return _kchain(x, g, block)


def _dot_bwd(block, res, g):
    x, w = res
    x2 = x.reshape(-1, x.shape[-1])
    g2 = g.reshape(-1, g.shape[-1])
    gx = input_grad(g2, w, block).reshape(x.shape)
    gw = weight_grad(x2, g2, block)
    return gx, gw


dot.defvjp(_dot_fwd, _dot_bwd)


def sum(x: jax.Array, axis: int = 0, block: int = SUM_BLOCK) -> jax.Array:  # noqa: A001 - mirrors jnp.sum
    """Sum over one axis in a fixed order, with element-wise adds only: a chain within each block of
    `block` elements, then the blocks' partial sums chained in order, behind an `optimization_barrier`
    (without it XLA recomputes the block sums inside every add)."""
    x = jnp.moveaxis(x, axis, -1)
    n = x.shape[-1]
    nb, pad = _blocks(n, block)
    if pad:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    xb = x.reshape(*x.shape[:-1], nb, block)
    partial = _chain([xb[..., j] for j in range(block)])  # [..., nb]
    if nb == 1:
        return partial[..., 0]
    partial = jax.lax.optimization_barrier(partial)
    return _chain([partial[..., i] for i in range(nb)])


@jax.custom_vjp
def add_bias(h: jax.Array, b: jax.Array) -> jax.Array:
    """h [M, N] + b [N], whose bias gradient is a fixed-order sum over the batch (`sum`), not XLA's reduce."""
    return h + b


def _add_bias_fwd(h, b):
    return h + b, None


def _add_bias_bwd(_, g):
    return g, sum(g.reshape(-1, g.shape[-1]), axis=0)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def logsumexp(z: jax.Array) -> jax.Array:
    """log(sum(exp(z))) over the last axis, the sum in a fixed order (the maximum is exact in any order)."""
    m = jax.lax.stop_gradient(jnp.max(z, axis=-1))
    return m + jnp.log(sum(jnp.exp(z - m[..., None]), axis=-1))


@jax.custom_vjp
def log_softmax(z: jax.Array) -> jax.Array:
    """z - logsumexp(z) over the last axis, with the sum in a fixed order; its gradient g - softmax * sum(g)
    sums g in a fixed order as well (autodiff of a broadcast subtraction would insert XLA's reduce)."""
    return _log_softmax(z)


def _log_softmax(z):
    shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))  # the maximum is exact in any order
    return shifted - jnp.log(sum(jnp.exp(shifted), axis=-1))[..., None]


def _log_softmax_fwd(z):
    out = _log_softmax(z)
    return out, out


def _log_softmax_bwd(out, g):
    return (g - jnp.exp(out) * sum(g, axis=-1)[..., None],)


log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)
