"""Optax optimizers by name, with the learning rate a traced (per-run) hyperparameter.

Besides Optax's own Adam and SGD, two transformations reproduce reference libraries exactly:
Keras' Adam (epsilon added outside the bias correction) and scikit-learn's SGD momentum update
(velocity = momentum * velocity - lr * grad, Nesterov step = momentum * velocity - lr * grad).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

KERAS_ADAM_EPSILON = 1e-7


def _f32(value: float) -> float:
    """A Python float rounded to the nearest float32, as tf.cast(python_float, dtype) sees it."""
    return float(np.float32(value))


class KerasAdamState(NamedTuple):
    """Step count and first/second moments."""

    count: jax.Array
    m: optax.Updates
    v: optax.Updates


def keras_adam(
    learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = KERAS_ADAM_EPSILON
) -> optax.GradientTransformation:
    """Adam as Keras applies it: w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        dtype = jax.tree.leaves(grads)[0].dtype
        tf = t.astype(dtype)
        # Keras computes the bias-correction powers as ops.power(ops.cast(beta, dtype), t), and on the
        # TensorFlow backend that cast makes a float32 tensor of the Python float first: the powers use
        # float32-rounded betas while the moment updates use the Python floats. Identical bits in float32;
        # in float64 it is what Keras really computes.
        alpha = learning_rate * jnp.sqrt(1 - _f32(b2) ** tf) / (1 - _f32(b1) ** tf)
        m = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.m, grads)
        v = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - b2), state.v, grads)
        updates = jax.tree.map(lambda m, v: -alpha * m / (jnp.sqrt(v) + eps), m, v)
        return updates, KerasAdamState(t, m, v)

    return optax.GradientTransformation(init, update)


class VelocityState(NamedTuple):
    """scikit-learn's per-parameter velocities."""

    velocity: optax.Updates


def sklearn_sgd(learning_rate: float, momentum: float = 0.9, nesterov: bool = True) -> optax.GradientTransformation:
    """scikit-learn's SGDOptimizer update (momentum, optionally Nesterov), learning rate included."""

    def init(params):
        return VelocityState(jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        velocity = jax.tree.map(lambda v, g: momentum * v - learning_rate * g, state.velocity, grads)
        if nesterov:
            updates = jax.tree.map(lambda v, g: momentum * v - learning_rate * g, velocity, grads)
        else:
            updates = velocity
        return updates, VelocityState(velocity)

    return optax.GradientTransformation(init, update)


def make_optimizer(name: str, momentum: float = 0.0, learning_rate=0.0) -> optax.GradientTransformation:
    """The named optimizer under optax.inject_hyperparams: the (traced, per-run) learning rate lives in
    the optimizer state from `init` on, and `update` reads it from there."""
    if name == "adam":
        factory = lambda learning_rate: optax.adam(learning_rate)  # noqa: E731
    elif name == "adam_keras":
        factory = lambda learning_rate: keras_adam(learning_rate)  # noqa: E731
    elif name == "sgd":
        factory = lambda learning_rate: optax.sgd(learning_rate)  # noqa: E731
    elif name == "sgd_momentum":
        factory = lambda learning_rate: sklearn_sgd(learning_rate, momentum, nesterov=False)  # noqa: E731
    elif name == "sgd_nesterov":
        factory = lambda learning_rate: sklearn_sgd(learning_rate, momentum, nesterov=True)  # noqa: E731
    else:
        raise ValueError(
            f"optimizer={name!r} is unknown; expected one of 'adam', 'adam_keras', 'sgd', 'sgd_momentum', "
            "'sgd_nesterov'."
        )
    return optax.inject_hyperparams(factory)(learning_rate=learning_rate)
