"""Optimizers by name, with the learning rate a traced (per-run) hyperparameter.

Names: the first five ('adam', 'adam_keras', 'sgd', 'sgd_momentum', 'sgd_nesterov', whose bits the shipped
runs fix), a library's optimizer with that library's keyword arguments and update rule ('keras:rmsprop',
'torch:sgd', 'sklearn:adam'; hpstudy/flavours/<library>.py), or any Optax optimizer ('optax:adamw') with
the Optax function's keyword arguments. `optimizer_for` builds a configuration's whole optimizer.

Besides Optax's own Adam and SGD, two transformations reproduce reference libraries exactly:
Keras' Adam (epsilon added outside the bias correction) and scikit-learn's SGD momentum update
(velocity = momentum * velocity - lr * grad, Nesterov step = momentum * velocity - lr * grad).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpstudy.config import OPTIMIZERS as LEGACY_OPTIMIZERS  # the first five names, whose bits are fixed
from hpstudy.training.schedules import CONSTANT, make_schedule, scheduled

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
    learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = KERAS_ADAM_EPSILON, exact_betas: bool = False
) -> optax.GradientTransformation:
    """Adam as Keras applies it: w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).

    exact_betas: the bias-correction powers use the betas as given (Keras 3 on the JAX backend) instead of
    their float32 roundings (TF Keras); the same bits in float32, different in float64 only.
    """
    p1, p2 = (b1, b2) if exact_betas else (_f32(b1), _f32(b2))

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
        alpha = learning_rate * jnp.sqrt(1 - p2**tf) / (1 - p1**tf)
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


LIBRARIES = ("keras", "torch", "sklearn", "optax")


def legacy_rule(name: str, momentum: float, learning_rate) -> optax.GradientTransformation:
    """One of the first five optimizer names (their bits are fixed by the shipped runs)."""
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "adam_keras":
        return keras_adam(learning_rate)
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name == "sgd_momentum":
        return sklearn_sgd(learning_rate, momentum, nesterov=False)
    if name == "sgd_nesterov":
        return sklearn_sgd(learning_rate, momentum, nesterov=True)
    raise ValueError(
        f"optimizer={name!r} is unknown; expected one of 'adam', 'adam_keras', 'sgd', 'sgd_momentum', "
        "'sgd_nesterov', or a library optimizer such as 'keras:rmsprop', 'torch:sgd', 'optax:adamw'."
    )


def make_optimizer(name: str, momentum: float = 0.0, learning_rate=0.0) -> optax.GradientTransformation:
    """The named optimizer under optax.inject_hyperparams: the (traced, per-run) learning rate lives in
    the optimizer state from `init` on, and `update` reads it from there."""
    legacy_rule(name, momentum, learning_rate)  # an unknown name fails here, before any tracing
    return optax.inject_hyperparams(lambda learning_rate: legacy_rule(name, momentum, learning_rate))(
        learning_rate=learning_rate
    )


def library_optimizers() -> dict[str, dict[str, Callable[..., optax.GradientTransformation]]]:
    """Each library's optimizers by name (imported here: the flavour modules import this one)."""
    from hpstudy.flavours import keras, pytorch, sklearn

    return {"keras": keras.OPTIMIZERS, "torch": pytorch.OPTIMIZERS, "sklearn": sklearn.OPTIMIZERS}


def optax_optimizer(short: str) -> Callable[..., optax.GradientTransformation] | None:
    """Optax's public optimizer function of this name (one whose first parameter is learning_rate), or None."""
    fn = getattr(optax, short, None) if not short.startswith("_") else None
    if not callable(fn) or isinstance(fn, type):
        return None
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return fn if params and params[0] == "learning_rate" else None


def optimizer_factory(name: str) -> Callable[..., optax.GradientTransformation]:
    """The factory (learning_rate, **library keyword arguments) a library optimizer name stands for (KeyError if none)."""
    library, sep, short = name.partition(":")
    if not sep:
        raise KeyError(name)
    if library == "optax":
        fn = optax_optimizer(short)
        if fn is None:
            raise KeyError(name)
        return fn
    return library_optimizers()[library][short]


def optimizer_names() -> list[str]:
    """Every optimizer name a study may use (Optax's as the pattern 'optax:<name>')."""
    named = [f"{lib}:{short}" for lib, table in library_optimizers().items() for short in table]
    return [*LEGACY_OPTIMIZERS, *named, "optax:<any Optax optimizer, e.g. optax:adamw>"]


def check_arguments(what: str, name: str, signature: inspect.Signature, args: dict, skip: tuple = ()) -> str | None:
    """Why `args` do not fit the keyword arguments of `signature` (unknown or missing names), or None."""
    params = {k: p for k, p in signature.parameters.items() if k not in skip and p.kind is not p.VAR_KEYWORD}
    known = sorted(params)
    for key in args:
        if key not in params:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            return f"{what} {name!r} takes no argument {key!r}{hint}; its arguments are: {', '.join(known) or 'none'}"
    missing = [
        k for k, p in params.items() if p.default is p.empty and p.kind is not p.VAR_POSITIONAL and k not in args
    ]
    if missing:
        return f"{what} {name!r} needs the argument(s) {', '.join(missing)}"
    return None


def optimizer_error(name: str, args: dict) -> str | None:
    """Why the optimizer name and its keyword arguments are invalid, or None when they are valid."""
    if name in LEGACY_OPTIMIZERS:
        return (
            f"optimizer {name!r} takes no optimizer_args (its arguments are learning_rate and momentum)"
            if args
            else None
        )
    try:
        factory = optimizer_factory(name)
    except KeyError:
        return f"optimizer {name!r} is unknown; expected one of {', '.join(optimizer_names())}"
    error = check_arguments("optimizer", name, inspect.signature(factory), args, skip=("learning_rate",))
    if error is None and name.startswith("keras:"):
        from hpstudy.flavours.keras import EXCLUSIVE_ARGS

        clips = [k for k in EXCLUSIVE_ARGS if args.get(k)]
        if len(clips) > 1:
            error = f"optimizer {name!r} takes only one of {', '.join(EXCLUSIVE_ARGS)} (Keras refuses {' and '.join(clips)})"
    return error


def is_plain(config) -> bool:
    """Whether a configuration uses one of the first five optimizers with nothing added (their original program)."""
    return (
        config.optimizer in LEGACY_OPTIMIZERS
        and not config.optimizer_args
        and config.schedule == CONSTANT
        and config.max_norm is None
        and config.clip_grad_norm is None
        and config.clip_grad_value is None
    )


def optimizer_for(config, learning_rate=0.0) -> optax.GradientTransformation:
    """The whole optimizer of a configuration, the learning rate injected (traced) and possibly scheduled:
    torch's gradient clipping, the optimizer's rule (with its own clipping and weight decay), Keras'
    MaxNorm constraint on the kernels after the update. The first five names with nothing added are exactly
    `make_optimizer` (their bits)."""
    if is_plain(config):
        return make_optimizer(config.optimizer, config.momentum, learning_rate)
    args = dict(config.optimizer_args)

    def factory(learning_rate):
        from hpstudy.flavours import keras, pytorch

        parts = []
        if config.clip_grad_norm is not None:
            parts.append(pytorch.clip_grad_norm(config.clip_grad_norm))
        if config.clip_grad_value is not None:
            parts.append(optax.clip(config.clip_grad_value))  # torch.nn.utils.clip_grad_value_: clamp
        if config.optimizer in LEGACY_OPTIMIZERS:
            parts.append(legacy_rule(config.optimizer, config.momentum, learning_rate))
        else:
            parts.append(optimizer_factory(config.optimizer)(learning_rate, **args))
        if config.max_norm is not None:
            parts.append(keras.max_norm(config.max_norm))
        return parts[0] if len(parts) == 1 else optax.chain(*parts)

    tx = optax.inject_hyperparams(factory)(learning_rate=learning_rate)
    if config.schedule != CONSTANT:
        tx = scheduled(tx, make_schedule(config.schedule, config.schedule_args))
    return tx


@functools.lru_cache(maxsize=256)
def _build_error(static) -> str | None:
    """Why the optimizer of a (learning-rate-free) configuration fails to build or take a step, or None."""
    params = {"Dense_0": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}}
    try:
        tx = optimizer_for(static, 1e-3)
        jax.eval_shape(lambda p: tx.update(p, tx.init(p), p), params)
    except Exception as error:  # noqa: BLE001 - the library's own message is the useful part
        return f"{type(error).__name__}: {error}"
    return None


def build_error(config) -> str | None:
    """Why a configuration's optimizer cannot be built (bad argument values the library rejects), or None.
    Checked once per distinct optimizer setting (the model, data and learning rate do not enter)."""
    if is_plain(config):
        return None
    fields = (
        "optimizer",
        "optimizer_args",
        "momentum",
        "schedule",
        "schedule_args",
        "max_norm",
        "clip_grad_norm",
        "clip_grad_value",
    )
    return _build_error(type(config)(**{f: getattr(config, f) for f in fields}))
