"""Keras 3 (and TF2 Keras: the same update rules): the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------

import jax
import jax.numpy as jnp

# keras.layers.LeakyReLU(): negative_slope=0.3. The string activation Dense(activation="leaky_relu") is
# keras.activations.leaky_relu, whose slope is 0.2: set model.negative_slope = 0.2 to reproduce that.
LEAKY_RELU_SLOPE = 0.3
# keras.layers.BatchNormalization(): momentum=0.99 (moving = moving * momentum + batch * (1 - momentum)),
# epsilon=1e-3, moving statistics updated with the biased batch variance (ops.moments is jnp.var).
BATCHNORM_MOMENTUM = 0.99
BATCHNORM_EPSILON = 1e-3
# VarianceScaling(distribution="truncated_normal"): stddev = sqrt(scale / fan) / 0.87962566103423978, the
# standard deviation of a standard normal truncated to [-2, 2], so the draws have variance scale / fan.
TRUNCATED_NORMAL_CORRECTION = 0.87962566103423978


# --- initialisers, layers and losses ----------------------------------------------------------------------

# Keras' activations on the JAX backend are jax.nn's (keras/src/backend/jax/nn.py), which hpstudy's own
# definitions (hpstudy/model.py) already are: nothing to override. Its "gelu" is keras.activations.gelu,
# approximate=False (exact, erf), unlike jax.nn.gelu's default; hpstudy's "gelu" is the exact one too.
ACTIVATIONS: dict = {}


def batch_norm_train(x, mask, scale, bias, mean, var):
    """BatchNormalization(training=True) on the batch's real rows (mask 1): normalised outputs and the new
    moving mean and variance, updated with the biased variance, in Keras' arithmetic."""
    count = jnp.sum(mask)
    m = mask[:, None]
    batch_mean = jnp.sum(x * m, axis=0) / count
    batch_var = jnp.sum(jnp.square(x - batch_mean) * m, axis=0) / count
    new_mean = mean * BATCHNORM_MOMENTUM + batch_mean * (1.0 - BATCHNORM_MOMENTUM)
    new_var = var * BATCHNORM_MOMENTUM + batch_var * (1.0 - BATCHNORM_MOMENTUM)
    return normalise(x, batch_mean, batch_var, scale, bias), new_mean, new_var


def normalise(x, mean, var, scale, bias):
    """ops.batch_normalization as the JAX backend computes it: x * inv + (bias - mean * inv)."""
    inv = jax.lax.rsqrt(var + BATCHNORM_EPSILON) * scale
    return x * inv + (bias - mean * inv)


# --- optimizers, schedules and regularisation -------------------------------------------------------------

