"""scikit-learn's MLPClassifier: the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------
import math

# --- initialisers, layers and losses ----------------------------------------------------------------------


def init_bound(fan_in: int, fan_out: int, activation: str) -> float:
    """MLPClassifier._init_coef: weights and biases U(-b, b), b = sqrt(f / (fan_in + fan_out)), f = 2 for
    activation='logistic' (hpstudy's sigmoid), 6 otherwise."""
    factor = 2.0 if activation == "sigmoid" else 6.0
    return math.sqrt(factor / (fan_in + fan_out))


# --- optimizers, schedules and regularisation -------------------------------------------------------------

# MLPClassifier's solvers (sklearn/neural_network/_stochastic_optimizers.py) with its own parameter names and
# defaults, and its learning_rate='invscaling' and 'adaptive' schedules. alpha (the L2 term
# alpha / 2 * ||W||^2 / batch size, weights only) is the `l2` key, added to the loss by the engine for every
# solver.

from typing import NamedTuple  # noqa: E402 - this section's own imports

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from hpstudy.training.optimizers import sklearn_sgd  # noqa: E402


def sgd(learning_rate, momentum=0.9, nesterovs_momentum=True):
    """solver='sgd': v = momentum * v - lr * g; w += v (Nesterov: w += momentum * v - lr * g)."""
    return sklearn_sgd(learning_rate, momentum, nesterovs_momentum)


class SklearnAdamState(NamedTuple):
    """Step count and first/second moments."""

    count: jax.Array
    m: optax.Updates
    v: optax.Updates


def adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """solver='adam': lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t * m / (sqrt(v) + epsilon) (epsilon
    outside the bias correction, as Keras, with the betas as given)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return SklearnAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        tf = t.astype(jax.tree.leaves(grads)[0].dtype)
        m = jax.tree.map(lambda m, g: beta_1 * m + (1 - beta_1) * g, state.m, grads)
        v = jax.tree.map(lambda v, g: beta_2 * v + (1 - beta_2) * (g * g), state.v, grads)
        lr = learning_rate * jnp.sqrt(1 - beta_2**tf) / (1 - beta_1**tf)
        return jax.tree.map(lambda m, v: -lr * m / (jnp.sqrt(v) + epsilon), m, v), SklearnAdamState(t, m, v)

    return optax.GradientTransformation(init, update)


OPTIMIZERS = {"sgd": sgd, "adam": adam}


def invscaling(power_t=0.5):
    """learning_rate='invscaling' (solver='sgd'): after each epoch lr = learning_rate_init / (t + 1)^power_t,
    t the number of training samples seen so far; the first epoch trains at learning_rate_init."""

    def schedule(lr, step, epoch, n_train):
        seen = (epoch * n_train).astype(lr.dtype)
        return lr / (seen + 1) ** power_t

    return schedule


# learning_rate='adaptive' (solver='sgd', SGDOptimizer.trigger_stopping): where the no-improvement rule
# (the `rule = "sklearn"` early stopping: training loss against tol, or the validation score with
# early_stopping=True) would stop, the current rate is divided by 5 and the count restarts at 0; only once the
# rate is already <= 1e-6 does training stop.
ADAPTIVE_DIVISOR = 5.0
ADAPTIVE_MIN_LR = 1e-6


def adaptive():
    """learning_rate='adaptive': the rate stays the current one (learning_rate_init until the first
    division); `adaptive_epoch_end` divides it after an epoch whose no-improvement count exceeded
    n_iter_no_change."""

    def schedule(lr, step, epoch, n_train):
        return lr

    return schedule


def adaptive_epoch_end(lr: jax.Array, triggered: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the rate for the next epoch, stop) after an epoch whose no-improvement count exceeded n_iter_no_change
    (`triggered`): stop if the rate is <= 1e-6, otherwise lr / 5 (trigger_stopping's `learning_rate /= 5.0`)."""
    stop = triggered & (lr <= ADAPTIVE_MIN_LR)
    return jnp.where(triggered & ~stop, lr / ADAPTIVE_DIVISOR, lr), stop


SCHEDULES = {"invscaling": invscaling, "adaptive": adaptive}
# Schedules that act at the end of an epoch on the early-stopping rule's verdict (hpstudy/training/schedules.py).
EPOCH_END = {"adaptive": adaptive_epoch_end}
