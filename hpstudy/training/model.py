"""The MLP (Flax linen), its initializers, losses and metrics.

Linen rather than NNX: linen modules are stateless descriptions whose `init`/`apply` are pure
functions of explicit parameter pytrees and keys, which is exactly what jit + vmap over runs needs;
NNX's mutable objects would have to be split back into pytrees at every vmap boundary.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
}


def float_dtype() -> jnp.dtype:
    """float64 when JAX's x64 mode is on (fidelity tests), else float32."""
    return jnp.result_type(float)


def _uniform(bound: float) -> Callable:
    """Initializer drawing U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def initializers(scheme: str, fan_in: int, fan_out: int, activation: str) -> tuple[Callable, Callable]:
    """(kernel_init, bias_init) of one layer for the 'keras', 'sklearn' or 'nielsen' scheme."""
    if scheme == "keras":  # Dense defaults: glorot_uniform kernel, zero bias
        return nn.initializers.glorot_uniform(), nn.initializers.zeros
    if scheme == "sklearn":  # MLPClassifier: U(-b, b) for weights and biases, f = 2 for logistic
        factor = 2.0 if activation == "sigmoid" else 6.0
        bound = math.sqrt(factor / (fan_in + fan_out))
        return _uniform(bound), _uniform(bound)
    if scheme == "nielsen":  # network.py: np.random.randn for every weight and bias
        return nn.initializers.normal(1.0), nn.initializers.normal(1.0)
    raise ValueError(f"init={scheme!r} is unknown; expected one of 'keras', 'sklearn', 'nielsen'.")


def dropout_mask(rate: jax.Array, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Which units a dropout layer keeps (True: kept), drawn with probability 1 - rate."""
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def dropout(x: jax.Array, rate: jax.Array, key: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """Inverted dropout with a traced rate (rate 0 is the identity), as Keras applies it; the mask is drawn
    from `key`, or given (drawn beforehand by `dropout_mask` with the same key: the same values)."""
    keep = 1.0 - rate
    if mask is None:
        mask = dropout_mask(rate, key, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class MLP(nn.Module):
    """Dense layers with an activation and dropout after each hidden layer; returns pre-activations
    of the output layer (logits)."""

    hidden: Sequence[int]
    activation: str
    init_scheme: str
    n_out: int = 10

    @nn.compact
    def __call__(
        self, x: jax.Array, rate: jax.Array | float = 0.0, train: bool = False, masks: tuple | None = None
    ) -> jax.Array:
        """masks: the dropout masks of the hidden layers, drawn beforehand from `dropout_keys` (the same
        values as drawing them here); otherwise each dropout layer draws its own."""
        act = ACTIVATION_FNS[self.activation]
        dtype = float_dtype()
        for i, width in enumerate(self.hidden):
            k_init, b_init = initializers(self.init_scheme, x.shape[-1], width, self.activation)
            x = act(nn.Dense(width, kernel_init=k_init, bias_init=b_init, dtype=dtype, param_dtype=dtype)(x))
            if train:
                x = dropout(x, rate, mask=masks[i]) if masks is not None else dropout(x, rate, self.make_rng("dropout"))
        k_init, b_init = initializers(self.init_scheme, x.shape[-1], self.n_out, self.activation)
        return nn.Dense(self.n_out, kernel_init=k_init, bias_init=b_init, dtype=dtype, param_dtype=dtype)(x)

    def dropout_keys(self) -> tuple:
        """The keys `__call__` would draw its dropout masks from, in layer order (the same `make_rng`
        sequence of this module's scope)."""
        return tuple(self.make_rng("dropout") for _ in self.hidden)


@jax.custom_vjp
def pick(values: jax.Array, labels: jax.Array) -> jax.Array:
    """values[i, labels[i]] for every row i (take_along_axis), with a cheaper gradient (see _pick_bwd)."""
    return jnp.take_along_axis(values, labels[:, None], axis=-1)[:, 0]


def _pick_fwd(values, labels):
    return pick(values, labels), (labels, values)


def _pick_bwd(residuals, g):
    """The incoming gradient placed at each row's label by a product with one-hot labels: the same values
    as the scatter-add that take_along_axis differentiates to (zeros elsewhere), but an elementwise
    product, where XLA:CPU runs a scatter as a slow serial loop inside every training step."""
    labels, values = residuals
    return g[:, None] * jax.nn.one_hot(labels, values.shape[-1], dtype=values.dtype), None


pick.defvjp(_pick_fwd, _pick_bwd)


def per_example_loss(kind: str, outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Loss of each example: softmax cross-entropy on logits, or Nielsen's quadratic cost on sigmoid outputs."""
    if kind == "softmax_cross_entropy":
        return -pick(jax.nn.log_softmax(outputs), labels)
    if kind == "sigmoid_quadratic":
        onehot = jax.nn.one_hot(labels, outputs.shape[-1], dtype=outputs.dtype)
        return 0.5 * jnp.sum((jax.nn.sigmoid(outputs) - onehot) ** 2, axis=-1)
    raise ValueError(f"loss={kind!r} is unknown; expected 'softmax_cross_entropy' or 'sigmoid_quadratic'.")


def l2_penalty(params) -> jax.Array:
    """0.5 * sum of squared kernel weights (biases excluded), scikit-learn's alpha term before scaling."""
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(path[-1])]
    return 0.5 * sum(jnp.sum(k * k) for k in kernels)


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 pixels to floats in [0, 1], on the device."""
    return images.astype(float_dtype()) / 255.0
