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

