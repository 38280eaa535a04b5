"""Matrix products and sums whose every output element is computed in one fixed order, whatever the CPU.

Why: a kernel in which every output element is one sequential chain of fused multiply-adds over k, in a
fixed order, gives the same bits at any vector width (each vector lane is one output element; lanes never
meet), on AVX2, AVX-512, NEON or SVE alike. What breaks it is splitting k: blocking that depends on cache
sizes or the ISA (oneDNN, Eigen, YNNPACK), vectorising a reduction across k, tree sums.
docs/reproducibility.md ("A fixed-order dot") has the measurements.

How, with element-wise operations only (no XLA dot and no XLA reduce is left, so no library kernel
chooses an order by CPU, and no reduction is vectorised or split by XLA's own rules):
- `dot(x, w)`: k is cut into blocks of `BLOCK` (zero padding at the end adds exact zeros); within a
  block each output element is a chain of multiply-adds x[k]*w[k] + acc in k order, which XLA fuses into
  one loop vectorised over the output's elements (each lane its own element) and LLVM turns into FMAs;
  the blocks' partial sums are then added in block order, behind an `optimization_barrier` (without
  it XLA recomputes the block products inside every add). Element-wise adds keep their order: XLA does
  not reassociate floating-point adds without fast math. In each block's first add, which has two
  products, LLVM fuses the first: fma(x0, w0, round(x1 * w1)) (tests/test_fixed_order.py).
- `custom_vjp`: the gradients are fixed-order products too (g @ w^T and x^T @ g), so autodiff inserts no
  XLA dot or reduction; `add_bias` does the same for bias gradients (a fixed-order sum over the batch).
- `sum(x, axis)`, `logsumexp` and `log_softmax`: the same block scheme, for mean losses, accuracy counts and
  the softmax (`log_softmax`'s `custom_vjp` sums its incoming gradient in fixed order too).
Measured: the same bits under XLA's defaults (YNNPACK, oneDNN, 512-bit code), with YNNPACK off, under
portable settings, with one core or a thread pool of two, and on aarch64 under qemu; 1.1-1.25x the
time of portable numerics' Eigen dots. FMA matters: CPUs without FMA would
give other bits.
Used by training in numerics mode "fixed-order" (hpstudy/training/numerics.py; the layers and losses in model.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

BLOCK = 8  # k per multiply-add chain: 8 and 16 measured alike (within the load noise) on the two networks


def _blocks(n: int, block: int) -> tuple[int, int]:
    nb = -(-n // block)
    return nb, nb * block - n


def _chain(terms: list[jax.Array]) -> jax.Array:
    """terms[0] + terms[1] + ... left to right: element-wise adds whose order XLA may not change."""
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _dot(x: jax.Array, w: jax.Array, block: int) -> jax.Array:
    """x [..., K] @ w [K, N] -> [..., N], each output element in a fixed order (see module docstring):
    within each block of k a chain of multiply-adds, then the blocks' partial sums chained in order.
    Only element-wise operations: no XLA dot, no XLA reduce."""
    k = x.shape[-1]
    nb, pad = _blocks(k, block)
    if pad:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
        w = jnp.pad(w, [(0, pad), (0, 0)])
    xb = x.reshape(*x.shape[:-1], nb, block)  # [..., nb, B]
    wb = w.reshape(nb, block, w.shape[-1])  # [nb, B, N]
    partial = _chain([xb[..., :, j, None] * wb[:, j, :] for j in range(block)])  # [..., nb, N]
    if nb == 1:
        return partial[..., 0, :]
    partial = jax.lax.optimization_barrier(partial)  # computed once, not inside every add below
    return _chain([partial[..., i, :] for i in range(nb)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dot(x: jax.Array, w: jax.Array, block: int = BLOCK) -> jax.Array:
    """x [..., K] @ w [K, N] with every output element summed over k in one fixed order."""
    return _dot(x, w, block)


def _dot_fwd(x, w, block):
    return _dot(x, w, block), (x, w)


def _dot_bwd(block, res, g):
    x, w = res
    gx = _dot(g, w.T, block)  # [..., N] @ [N, K]
    x2 = x.reshape(-1, x.shape[-1])
    g2 = g.reshape(-1, g.shape[-1])
    gw = _dot(x2.T, g2, block)  # [K, M] @ [M, N]: a sum over the batch, in batch order
    return gx, gw


dot.defvjp(_dot_fwd, _dot_bwd)


def sum(x: jax.Array, axis: int = 0, block: int = BLOCK) -> jax.Array:  # noqa: A001 - mirrors jnp.sum
    """Sum over one axis in a fixed order, with element-wise adds only: a chain within each block of
    `block` elements, then the blocks' partial sums chained in order (as in `dot`)."""
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
