"""PyTorch (torch.nn, torch.optim, torch.utils.data): the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------
import jax
import jax.numpy as jnp

# nn.Linear's default initialisation: init "pytorch" (linear_bound below). nn.CrossEntropyLoss(reduction=
# "mean", label_smoothing=0.0): loss "softmax_cross_entropy" averaged over the batch's real examples.
# DataLoader(shuffle=True, drop_last=False): a fresh permutation every epoch (hpstudy's own, from the run's
# key: torch's generator is not reproduced), the last partial batch kept unless training.drop_last = true.
# nn.LeakyReLU(): negative_slope=0.01.
LEAKY_RELU_SLOPE = 0.01
# nn.Softplus(): beta=1, threshold=20 (the input itself above the threshold).
SOFTPLUS_THRESHOLD = 20.0
# nn.BatchNorm1d(): momentum=0.1 (running = (1 - momentum) * running + momentum * batch), eps=1e-5; the
# running variance takes the unbiased batch variance (n / (n - 1)), the normalisation the biased one.
BATCHNORM_MOMENTUM = 0.1
BATCHNORM_EPSILON = 1e-5


# --- initialisers, layers and losses ----------------------------------------------------------------------


def linear_bound(fan_in: int) -> float:
    """nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) for the weight, gain sqrt(2 / (1 + 5)),
    bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in); the bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return 1.0 / fan_in**0.5


def softplus(x):
    """F.softplus(x, beta=1, threshold=20): log(1 + exp(x)), and x itself where x > 20."""
    return jnp.where(x > SOFTPLUS_THRESHOLD, x, jnp.log1p(jnp.exp(jnp.minimum(x, SOFTPLUS_THRESHOLD))))


ACTIVATIONS = {
    "softplus": softplus,
}


def batch_norm_train(x, mask, scale, bias, mean, var):
    """BatchNorm1d in train mode on the batch's real rows (mask 1): outputs normalised with the biased
    batch variance, running variance updated with the unbiased one."""
    count = jnp.sum(mask)
    m = mask[:, None]
    batch_mean = jnp.sum(x * m, axis=0) / count
    batch_var = jnp.sum(jnp.square(x - batch_mean) * m, axis=0) / count
    unbiased = batch_var * count / (count - 1)
    new_mean = (1.0 - BATCHNORM_MOMENTUM) * mean + BATCHNORM_MOMENTUM * batch_mean
    new_var = (1.0 - BATCHNORM_MOMENTUM) * var + BATCHNORM_MOMENTUM * unbiased
    return normalise(x, batch_mean, batch_var, scale, bias), new_mean, new_var


def normalise(x, mean, var, scale, bias):
    """torch.batch_norm's formula: (x - mean) / sqrt(var + eps) * weight + bias."""
    return (x - mean) / jnp.sqrt(var + BATCHNORM_EPSILON) * scale + bias


# --- optimizers, schedules and regularisation -------------------------------------------------------------

# torch.optim's optimizers (their single-tensor code paths, torch/optim/*.py) and lr_scheduler classes as
# Optax transformations and schedules, with torch's own keyword arguments and defaults; `learning_rate` is
# hpstudy's traced (and possibly scheduled) lr. weight_decay is torch's L2 form (wd * w added to the gradient)
# except in AdamW (decoupled: w *= 1 - lr * wd). Where an Optax composition is torch's rule it is used (torch
# scales by lr last, after any momentum buffer, as Optax's sgd and scale_by_* chains do); elsewhere the rule
# is written out. tests/test_fidelity_optim_torch.py compares with golden trajectories made by real torch
# (tests/golden/make_torch_optim_golden.py).

from typing import NamedTuple  # noqa: E402 - this section's own imports

import optax  # noqa: E402


def _with_l2(weight_decay: float, rule: optax.GradientTransformation) -> optax.GradientTransformation:
    """torch's weight_decay: g + weight_decay * w, before the rule."""
    return optax.chain(optax.add_decayed_weights(weight_decay), rule) if weight_decay else rule


class DampenedState(NamedTuple):
    """Step count and torch's momentum buffer."""

    count: jax.Array
    buf: optax.Updates


def _dampened_momentum(momentum: float, dampening: float, nesterov: bool) -> optax.GradientTransformation:
    """torch SGD's buffer with dampening: buf = g on the first step, then momentum * buf + (1 - dampening) * g."""

    def init(params):
        return DampenedState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        first = state.count == 0
        buf = jax.tree.map(lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g), state.buf, grads)
        out = jax.tree.map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        return out, DampenedState(state.count + 1, buf)

    return optax.GradientTransformation(init, update)


def sgd(learning_rate, momentum=0, dampening=0, weight_decay=0, nesterov=False):
    """torch.optim.SGD: buf = momentum * buf + (1 - dampening) * g (g on the first step); w -= lr * buf
    (Nesterov: w -= lr * (g + momentum * buf))."""
    if momentum and dampening:
        rule = optax.chain(
            _dampened_momentum(momentum, dampening, nesterov), optax.scale_by_learning_rate(learning_rate)
        )
    else:  # Optax's trace starts from zeros: its first buffer is g, as torch's clone
        rule = optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
    return _with_l2(weight_decay, rule)


class TorchAdamState(NamedTuple):
    """Step count, moments, and (AMSGrad) the running maximum of the raw second moment."""

    count: jax.Array
    m: optax.Updates
    v: optax.Updates
    v_max: optax.Updates


def _torch_amsgrad(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """torch's AMSGrad (before the learning rate): the maximum of the raw second moments, then divided by
    sqrt(1 - b2^t) of the current step (Optax's amsgrad takes the maximum of bias-corrected moments)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return TorchAdamState(jnp.zeros([], jnp.int32), zeros, zeros, zeros)

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        tf = t.astype(jax.tree.leaves(grads)[0].dtype)
        m = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.v, grads)
        v_max = jax.tree.map(jnp.maximum, state.v_max, v)
        bc1, bc2_sqrt = 1 - b1**tf, jnp.sqrt(1 - b2**tf)
        out = jax.tree.map(lambda m, v: m / bc1 / (jnp.sqrt(v) / bc2_sqrt + eps), m, v_max)
        return out, TorchAdamState(t, m, v, v_max)

    return optax.GradientTransformation(init, update)


def adam(learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
    """torch.optim.Adam: w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), Optax's Adam (same
    epsilon placement); weight_decay as L2 in the gradient."""
    b1, b2 = betas
    if amsgrad:
        rule = optax.chain(_torch_amsgrad(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))
    else:
        rule = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    return _with_l2(weight_decay, rule)


def adamw(learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    """torch.optim.AdamW: w *= 1 - lr * weight_decay, then Adam's step (Optax's adamw)."""
    b1, b2 = betas
    if amsgrad:
        return optax.chain(
            _torch_amsgrad(b1, b2, eps),
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_learning_rate(learning_rate),
        )
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def rmsprop(learning_rate, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False):
    """torch.optim.RMSprop: v = alpha * v + (1 - alpha) * g^2; w -= lr * g / (sqrt(v) + eps) (epsilon outside
    the root; centered: sqrt(v - mean(g)^2)), through buf = momentum * buf + g / (...) when momentum > 0."""
    scale = (optax.scale_by_stddev if centered else optax.scale_by_rms)(decay=alpha, eps=eps, eps_in_sqrt=False)
    parts = (
        [scale] + ([optax.trace(decay=momentum)] if momentum else []) + [optax.scale_by_learning_rate(learning_rate)]
    )
    return _with_l2(weight_decay, optax.chain(*parts))


class TorchAdagradState(NamedTuple):
    """Step count and the sum of squared gradients."""

    count: jax.Array
    sum: optax.Updates


def adagrad(learning_rate, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10):
    """torch.optim.Adagrad: s += g^2; w -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps). (Optax's
    adagrad adds epsilon inside the root.)"""

    def init(params):
        return TorchAdagradState(
            jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        )

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        clr = learning_rate / (1 + (t - 1).astype(jnp.result_type(learning_rate)) * lr_decay)
        s = jax.tree.map(lambda s, g: s + g * g, state.sum, grads)
        return jax.tree.map(lambda g, s: -clr * (g / (jnp.sqrt(s) + eps)), grads, s), TorchAdagradState(t, s)

    return _with_l2(weight_decay, optax.GradientTransformation(init, update))


def adadelta(learning_rate, rho=0.9, eps=1e-6, weight_decay=0):
    """torch.optim.Adadelta: Zeiler's rule with sqrt(x + eps) on both accumulators, scaled by lr (Optax's)."""
    return _with_l2(weight_decay, optax.adadelta(learning_rate, rho=rho, eps=eps))


OPTIMIZERS = {"sgd": sgd, "adam": adam, "adamw": adamw, "rmsprop": rmsprop, "adagrad": adagrad, "adadelta": adadelta}


def clip_grad_norm(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: every gradient times min(max_norm / (total_norm + 1e-6), 1), the total
    norm over all parameters (Optax's clip_by_global_norm has no 1e-6)."""

    def update(grads, state, params=None):
        del params
        total = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
        coef = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * coef, grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# torch.optim.lr_scheduler classes in closed form, as a function of the number of scheduler.step() calls
# made: by default one after every epoch (interval="epoch", the usual loop), or after every batch
# (interval="step"). `lr` is the optimizer's initial lr (the scheduler's base_lr). `interval` is hpstudy's
# (where the training loop calls scheduler.step()); the other arguments are torch's.


def _count(interval: str, step, epoch):
    """How many times scheduler.step() has been called before this optimizer step."""
    return epoch if interval == "epoch" else step


def step_lr(step_size, gamma=0.1, interval="epoch"):
    """StepLR: lr * gamma^floor(n / step_size)."""
    return lambda lr, step, epoch, n_train: lr * gamma ** (_count(interval, step, epoch) // step_size).astype(lr.dtype)


def multistep_lr(milestones, gamma=0.1, interval="epoch"):
    """MultiStepLR: lr * gamma^(number of milestones <= n)."""

    def schedule(lr, step, epoch, n_train):
        passed = jnp.sum(jnp.asarray(milestones) <= _count(interval, step, epoch))
        return lr * gamma ** passed.astype(lr.dtype)

    return schedule


def exponential_lr(gamma, interval="epoch"):
    """ExponentialLR: lr * gamma^n."""
    return lambda lr, step, epoch, n_train: lr * gamma ** _count(interval, step, epoch).astype(lr.dtype)


def cosine_annealing_lr(T_max, eta_min=0.0, interval="epoch"):  # noqa: N803 - torch's argument name
    """CosineAnnealingLR: eta_min + (lr - eta_min) * (1 + cos(pi * n / T_max)) / 2."""

    def schedule(lr, step, epoch, n_train):
        n = _count(interval, step, epoch).astype(lr.dtype)
        return eta_min + (lr - eta_min) * (1 + jnp.cos(jnp.pi * n / T_max)) / 2

    return schedule


def linear_lr(start_factor=1.0 / 3, end_factor=1.0, total_iters=5, interval="epoch"):
    """LinearLR: lr * (start_factor + (end_factor - start_factor) * min(n, total_iters) / total_iters)."""

    def schedule(lr, step, epoch, n_train):
        n = jnp.minimum(_count(interval, step, epoch), total_iters).astype(lr.dtype)
        return lr * (start_factor + (end_factor - start_factor) * n / total_iters)

    return schedule


SCHEDULES = {
    "step_lr": step_lr,
    "multistep_lr": multistep_lr,
    "exponential_lr": exponential_lr,
    "cosine_annealing_lr": cosine_annealing_lr,
    "linear_lr": linear_lr,
}
