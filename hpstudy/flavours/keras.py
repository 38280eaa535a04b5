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
# definitions (hpstudy/training/model.py) already are: nothing to override. Its "gelu" is keras.activations.gelu,
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

# Keras 3's optimizers (keras/src/optimizers/*.py) as Optax transformations, each taking the library's own
# keyword arguments and defaults; `learning_rate` is hpstudy's traced (and possibly scheduled) rate. Where
# Optax's transformation is exactly Keras' rule (SGD without momentum, RMSprop, Adagrad, Adadelta) it is
# used; elsewhere the rule is written out. tests/test_fidelity_optim_keras.py trains each against Keras.
# Every optimizer first clips the gradients (clipnorm per variable, global_clipnorm, clipvalue), then, with
# weight_decay, shrinks every variable by weight_decay * learning_rate before its update (Keras'
# BaseOptimizer._apply_weight_decay: decoupled, biases included), then applies its rule.

from typing import NamedTuple  # noqa: E402 - this section's own imports

import optax  # noqa: E402

from hpstudy.training.optimizers import keras_adam, sklearn_sgd  # noqa: E402


def clip_by_norm_each(clipnorm: float) -> optax.GradientTransformation:
    """Keras' clipnorm: each variable's gradient scaled by clipnorm / max(||g||, clipnorm) (one norm per tensor)."""

    def update(grads, state, params=None):
        del params

        def clip(g):
            norm = jnp.sqrt(jnp.sum(g * g))
            return g * clipnorm / jnp.maximum(norm, clipnorm)

        return jax.tree.map(clip, grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def keras_clipping(clipnorm=None, clipvalue=None, global_clipnorm=None) -> list:
    """The gradient clipping one Keras optimizer applies (at most one kind: Keras refuses two)."""
    if clipnorm:
        return [clip_by_norm_each(clipnorm)]
    if global_clipnorm:
        return [optax.clip_by_global_norm(global_clipnorm)]  # g * clip / ||g|| where ||g|| > clip: Keras' rule
    if clipvalue:
        return [optax.clip(clipvalue)]
    return []


def keras_chain(rule, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
    """Clipping, then decoupled weight decay (w -= w * weight_decay * lr), then the optimizer's own rule."""
    parts = keras_clipping(clipnorm, clipvalue, global_clipnorm) + [rule]
    if weight_decay:
        # the decay term is computed from the variables before this step, as Keras assigns it before the update
        parts.append(optax.add_decayed_weights(-weight_decay * learning_rate))
    return optax.chain(*parts)


class AmsgradState(NamedTuple):
    """Step count, moments and the running maximum of the second moment."""

    count: jax.Array
    m: optax.Updates
    v: optax.Updates
    v_hat: optax.Updates


def keras_adam_rule(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
    """Keras' Adam (epsilon outside the bias correction); with amsgrad, the running maximum of v in its place.

    Without amsgrad this is hpstudy.training.optimizers.keras_adam (the bits of `adam_keras`): Keras 3 casts the betas
    to the variables' dtype, which in float32 is that function's float32 rounding; in float64 it differs from
    TF Keras' powers by about 1e-8 relative, so the amsgrad variant follows Keras 3 and uses the exact betas.
    """
    if not amsgrad:
        return keras_adam(learning_rate, beta_1, beta_2, epsilon, exact_betas=True)

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AmsgradState(jnp.zeros([], jnp.int32), zeros, zeros, zeros)

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        tf = t.astype(jax.tree.leaves(grads)[0].dtype)
        alpha = learning_rate * jnp.sqrt(1 - beta_2**tf) / (1 - beta_1**tf)
        m = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.m, grads)
        v = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - beta_2), state.v, grads)
        v_hat = jax.tree.map(jnp.maximum, state.v_hat, v)
        updates = jax.tree.map(lambda m, v: -(m * alpha) / (jnp.sqrt(v) + epsilon), m, v_hat)
        return updates, AmsgradState(t, m, v, v_hat)

    return optax.GradientTransformation(init, update)


class AdamaxState(NamedTuple):
    """Step count, first moment and the exponentially weighted infinity norm."""

    count: jax.Array
    m: optax.Updates
    u: optax.Updates


def keras_adamax_rule(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras' Adamax: u = max(beta_2 * u, |g|), w -= lr * m / ((1 - beta_1^t) * (u + epsilon)).
    (Optax's adamax adds epsilon inside the maximum instead.)"""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamaxState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        tf = t.astype(jax.tree.leaves(grads)[0].dtype)
        m = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.m, grads)
        u = jax.tree.map(lambda u, g: jnp.maximum(beta_2 * u, jnp.abs(g)), state.u, grads)
        updates = jax.tree.map(lambda m, u: -(learning_rate * m) / ((1 - beta_1**tf) * (u + epsilon)), m, u)
        return updates, AdamaxState(t, m, u)

    return optax.GradientTransformation(init, update)


class NadamState(NamedTuple):
    """Step count, the running product of the momentum schedule, and the moments."""

    count: jax.Array
    u_product: jax.Array
    m: optax.Updates
    v: optax.Updates


def keras_nadam_rule(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras' Nadam (Dozat's momentum schedule u_t = beta_1 * (1 - 0.5 * 0.96^t)). (Optax's nadam has no
    momentum schedule.)"""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        dtype = jax.tree.leaves(params)[0].dtype
        return NadamState(jnp.zeros([], jnp.int32), jnp.ones([], dtype), zeros, zeros)

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        tf = t.astype(state.u_product.dtype)
        u_t = beta_1 * (1.0 - 0.5 * 0.96**tf)
        u_t_1 = beta_1 * (1.0 - 0.5 * 0.96 ** (tf + 1))
        u_product = state.u_product * beta_1 * (1.0 - 0.5 * 0.96**tf)
        u_product_1 = u_product * u_t_1
        m = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.m, grads)
        v = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - beta_2), state.v, grads)

        def step(m, v, g):
            m_hat = u_t_1 * m / (1 - u_product_1) + (1 - u_t) * g / (1 - u_product)
            v_hat = v / (1 - beta_2**tf)
            return -(m_hat * learning_rate) / (jnp.sqrt(v_hat) + epsilon)

        return jax.tree.map(step, m, v, grads), NadamState(t, u_product, m, v)

    return optax.GradientTransformation(init, update)


def sgd(
    learning_rate, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None
):
    """keras.optimizers.SGD: m = momentum * m - lr * g; w += m (Nesterov: w += momentum * m - lr * g)."""
    rule = sklearn_sgd(learning_rate, momentum, nesterov) if momentum else optax.sgd(learning_rate)
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def rmsprop(
    learning_rate,
    rho=0.9,
    momentum=0.0,
    epsilon=1e-7,
    centered=False,
    weight_decay=None,
    clipnorm=None,
    clipvalue=None,
    global_clipnorm=None,
):
    """keras.optimizers.RMSprop: v = rho * v + (1 - rho) * g^2; w -= lr * g / sqrt(v + epsilon) (epsilon
    inside the root; centered: v - mean(g)^2 + epsilon), through a momentum buffer when momentum > 0."""
    rule = optax.rmsprop(
        learning_rate, decay=rho, eps=epsilon, eps_in_sqrt=True, centered=centered, momentum=momentum or None
    )
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adagrad(
    learning_rate,
    initial_accumulator_value=0.1,
    epsilon=1e-7,
    weight_decay=None,
    clipnorm=None,
    clipvalue=None,
    global_clipnorm=None,
):
    """keras.optimizers.Adagrad: a += g^2 (from 0.1); w -= lr * g / sqrt(a + epsilon)."""
    rule = optax.adagrad(learning_rate, initial_accumulator_value=initial_accumulator_value, eps=epsilon)
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adadelta(
    learning_rate, rho=0.95, epsilon=1e-7, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None
):
    """keras.optimizers.Adadelta: Zeiler's rule with rms(x) = sqrt(x + epsilon), scaled by lr."""
    rule = optax.adadelta(learning_rate, rho=rho, eps=epsilon)
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adam(
    learning_rate,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    amsgrad=False,
    weight_decay=None,
    clipnorm=None,
    clipvalue=None,
    global_clipnorm=None,
):
    """keras.optimizers.Adam (epsilon outside the bias correction), optionally AMSGrad."""
    rule = keras_adam_rule(learning_rate, beta_1, beta_2, epsilon, amsgrad)
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adamw(
    learning_rate,
    weight_decay=0.004,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    amsgrad=False,
    clipnorm=None,
    clipvalue=None,
    global_clipnorm=None,
):
    """keras.optimizers.AdamW: Keras' Adam with decoupled weight decay (default 0.004)."""
    rule = keras_adam_rule(learning_rate, beta_1, beta_2, epsilon, amsgrad)
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adamax(
    learning_rate,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    weight_decay=None,
    clipnorm=None,
    clipvalue=None,
    global_clipnorm=None,
):
    """keras.optimizers.Adamax."""
    rule = keras_adamax_rule(learning_rate, beta_1, beta_2, epsilon)
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def nadam(
    learning_rate,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    weight_decay=None,
    clipnorm=None,
    clipvalue=None,
    global_clipnorm=None,
):
    """keras.optimizers.Nadam."""
    rule = keras_nadam_rule(learning_rate, beta_1, beta_2, epsilon)
    return keras_chain(rule, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


# The optimizers a study names as "keras:<name>"; their keyword arguments are Keras' own.
OPTIMIZERS = {
    "sgd": sgd,
    "rmsprop": rmsprop,
    "adagrad": adagrad,
    "adadelta": adadelta,
    "adam": adam,
    "adamw": adamw,
    "adamax": adamax,
    "nadam": nadam,
}
# Keras refuses more than one of these in one optimizer.
EXCLUSIVE_ARGS = ("clipnorm", "clipvalue", "global_clipnorm")


def max_norm(max_value: float = 2.0) -> optax.GradientTransformation:
    """keras.constraints.MaxNorm(max_value, axis=0) on every kernel, applied after the update as Keras applies
    a kernel_constraint: w * clip(||w_col||, 0, max_value) / (1e-7 + ||w_col||), one norm per unit's incoming
    weights; biases are not constrained. Returned as the update that moves w to its constrained value."""

    def constrain(path, w, u):
        if "kernel" not in str(path[-1]):
            return u
        new = w + u
        norms = jnp.sqrt(jnp.sum(new * new, axis=0, keepdims=True))
        return new * (jnp.clip(norms, 0, max_value) / (1e-7 + norms)) - w

    def update(updates, state, params=None):
        return jax.tree_util.tree_map_with_path(constrain, params, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# Keras' LearningRateSchedule classes (keras/src/optimizers/schedules/learning_rate_schedule.py), evaluated at
# every optimizer step with the optimizer's 0-based `iterations`; `lr` is their initial_learning_rate.
# interval="epoch" (hpstudy's) evaluates the schedule at the 0-based epoch index instead, as
# keras.callbacks.LearningRateScheduler(lambda epoch: float(schedule(epoch))) does: the callback's
# on_epoch_begin(epoch) sets the optimizer's rate for every step of that epoch, so the first epoch trains at
# schedule(0) and the first change applies to epoch index 1 (the second epoch).


def _count(interval: str, step, epoch):
    """The schedule's argument: the optimizer's iterations, or the epoch index under LearningRateScheduler."""
    return epoch if interval == "epoch" else step


def exponential_decay(decay_steps, decay_rate, staircase=False, interval="step"):
    """ExponentialDecay: lr * decay_rate^(step / decay_steps), the exponent floored when staircase."""

    def schedule(lr, step, epoch, n_train):
        p = _count(interval, step, epoch).astype(lr.dtype) / decay_steps
        return lr * jnp.power(decay_rate, jnp.floor(p) if staircase else p).astype(lr.dtype)

    return schedule


def inverse_time_decay(decay_steps, decay_rate, staircase=False, interval="step"):
    """InverseTimeDecay: lr / (1 + decay_rate * step / decay_steps), the ratio floored when staircase."""

    def schedule(lr, step, epoch, n_train):
        p = _count(interval, step, epoch).astype(lr.dtype) / decay_steps
        return lr / (1 + decay_rate * (jnp.floor(p) if staircase else p))

    return schedule


def polynomial_decay(decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False, interval="step"):
    """PolynomialDecay: (lr - end) * (1 - step / decay_steps)^power + end (power 1: linear decay)."""

    def schedule(lr, step, epoch, n_train):
        s = _count(interval, step, epoch).astype(lr.dtype)
        steps = jnp.asarray(decay_steps, lr.dtype)
        if cycle:
            steps = steps * jnp.where(s == 0, 1.0, jnp.ceil(s / decay_steps))
        else:
            s = jnp.minimum(s, steps)
        return (lr - end_learning_rate) * jnp.power(1 - s / steps, power) + end_learning_rate

    return schedule


def piecewise_constant_decay(boundaries, values, interval="step"):
    """PiecewiseConstantDecay: values[i] while boundaries[i-1] < step <= boundaries[i]. The study's
    learning_rate must equal values[0] (Keras takes no initial rate; study.py checks it)."""

    def schedule(lr, step, epoch, n_train):
        # how many boundaries lie strictly below the step
        index = jnp.sum(_count(interval, step, epoch) > jnp.asarray(boundaries))
        return jnp.asarray(values, lr.dtype)[index] * (lr / lr)  # lr / lr keeps the traced rate's dtype

    return schedule


def cosine_decay(decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0, interval="step"):
    """CosineDecay: with warmup_target, a linear warm-up from lr to warmup_target over warmup_steps, then
    the cosine decay from it to alpha times it over decay_steps; without, the cosine decay from lr."""

    def decay(step, peak):
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * (step / decay_steps)))
        return peak * ((1 - alpha) * cosine + alpha)

    def schedule(lr, step, epoch, n_train):
        s = _count(interval, step, epoch).astype(lr.dtype)
        if warmup_target is None:
            return decay(jnp.minimum(s, decay_steps), lr)
        s = jnp.minimum(s, decay_steps + warmup_steps)
        warm = (warmup_target - lr) * (s / max(warmup_steps, 1)) + lr
        return jnp.where(s < warmup_steps, warm, decay(s - warmup_steps, jnp.asarray(warmup_target, lr.dtype)))

    return schedule


def cosine_decay_restarts(first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, interval="step"):
    """CosineDecayRestarts (SGDR): period i lasts first_decay_steps * t_mul^i steps and starts from
    lr * m_mul^i; within it the rate falls as lr * m_mul^i * ((1 - alpha) * (1 + cos(pi * f)) / 2 + alpha), f the
    fraction of the period done. The period index and fraction are Keras' closed form: with t_mul = 1,
    i = floor(c) and f = c - i (c = step / first_decay_steps); otherwise
    i = floor(log(1 - c * (1 - t_mul)) / log(t_mul)), f = (c - (1 - t_mul^i) / (1 - t_mul)) / t_mul^i."""

    def schedule(lr, step, epoch, n_train):
        c = _count(interval, step, epoch).astype(lr.dtype) / first_decay_steps
        if t_mul == 1.0:
            i = jnp.floor(c)
            f = c - i
        else:
            t = jnp.asarray(t_mul, lr.dtype)
            i = jnp.floor(jnp.log(1.0 - c * (1.0 - t)) / jnp.log(t))
            f = (c - (1.0 - t**i) / (1.0 - t)) / t**i
        cosine = 0.5 * jnp.asarray(m_mul, lr.dtype) ** i * (1.0 + jnp.cos(jnp.pi * f))
        return lr * ((1 - alpha) * cosine + alpha)

    return schedule


def step_decay(drop, epochs_drop, offset=0):
    """The per-epoch step decay written as a keras.callbacks.LearningRateScheduler function (no Keras class):
    LearningRateScheduler(lambda epoch: lr * drop ** math.floor((epoch + offset) / epochs_drop)), with Keras'
    0-based epoch index. offset=0: the rate first drops at epoch index epochs_drop; offset=1 is the variant
    written with (1 + epoch), which first drops at epoch index epochs_drop - 1."""

    def schedule(lr, step, epoch, n_train):
        return lr * jnp.power(drop, jnp.floor((epoch + offset) / epochs_drop).astype(lr.dtype))

    return schedule


SCHEDULES = {
    "exponential_decay": exponential_decay,
    "inverse_time_decay": inverse_time_decay,
    "polynomial_decay": polynomial_decay,
    "piecewise_constant_decay": piecewise_constant_decay,
    "cosine_decay": cosine_decay,
    "cosine_decay_restarts": cosine_decay_restarts,
    "step_decay": step_decay,
}
