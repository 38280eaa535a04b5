"""Learning-rate schedules: the traced learning rate made a function of the optimizer step or the epoch.

A schedule is named like an optimizer: "keras:<name>" (a keras.optimizers.schedules class, evaluated at every
optimizer step with Keras' 0-based `iterations`, or with `interval = "epoch"` at the 0-based epoch index as
keras.callbacks.LearningRateScheduler sets it; "keras:step_decay" is the per-epoch step decay written as a
LearningRateScheduler function), "torch:<name>" (a torch.optim.lr_scheduler class, stepped
once per epoch as `scheduler.step()` after each epoch, or once per step with `interval = "step"`),
"sklearn:invscaling" (MLPClassifier's learning_rate='invscaling', recomputed after each epoch), or
"optax:<name>" (any Optax schedule function of keyword arguments, e.g. optax:cosine_decay_schedule; its value, a function of the step count, multiplies the
learning rate). The library schedules live with their library in hpstudy/flavours/; their arguments are the
library's own, and the study's learning_rate is the library's initial learning rate (Keras'
initial_learning_rate, torch's optimizer lr), so it stays a traced per-run value.

`scheduled` wraps the optimizer: its state carries the base learning rate, the step count and the epoch,
and before every update it writes the schedule's learning rate into the inner inject_hyperparams state.
The engine tells it the epoch (and the training-set size, which scikit-learn's schedule counts in) with
`at_epoch` at the start of every epoch. "sklearn:adaptive" also acts at the end of an epoch: where the
run's `rule = "sklearn"` early stopping would stop, `at_epoch_end` divides the base learning rate in the
state by 5 instead (and lets the run stop only once it is <= 1e-6), all on traced per-run values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

# A schedule: (base learning rate, 0-based optimizer step, 0-based epoch, training-set size) -> learning rate.
Schedule = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
CONSTANT = "constant"
# Public functions of optax.schedules that do not make a schedule from keyword arguments.
NOT_SCHEDULES = ("inject_hyperparams", "inject_stateful_hyperparams", "join_schedules", "sgdr_schedule")


class ScheduleState(NamedTuple):
    """The base (traced) learning rate, the optimizer steps taken, the current epoch and the training-set size."""

    base_lr: jax.Array
    step: jax.Array
    epoch: jax.Array
    n_train: jax.Array
    inner: optax.OptState


def library_schedules() -> dict[str, dict[str, Callable[..., Schedule]]]:
    """Each library's schedule factories by name (imported here: the flavour modules import hpstudy.training.optimizers)."""
    from hpstudy.flavours import keras, pytorch, sklearn

    return {"keras": keras.SCHEDULES, "torch": pytorch.SCHEDULES, "sklearn": sklearn.SCHEDULES}


def optax_schedule(name: str, **kwargs) -> Schedule:
    """An Optax schedule function by name; its value at the step count multiplies the base learning rate."""
    schedule = getattr(optax.schedules, name)(**kwargs)
    return lambda lr, step, epoch, n_train: lr * schedule(step)


def schedule_factory(name: str) -> Callable[..., Schedule]:
    """The factory a schedule name stands for (KeyError if none)."""
    library, _, short = name.partition(":")
    if library == "optax":
        fn = getattr(optax.schedules, short, None) if not short.startswith("_") else None
        if not inspect.isfunction(fn) or short in NOT_SCHEDULES:
            raise KeyError(name)
        return lambda **kw: optax_schedule(short, **kw)
    return library_schedules()[library][short]


def signature_of(name: str) -> inspect.Signature:
    """The keyword arguments a schedule takes (the library's own)."""
    library, _, short = name.partition(":")
    if library == "optax":
        return inspect.signature(getattr(optax.schedules, short))
    return inspect.signature(schedule_factory(name))


def make_schedule(name: str, args: tuple) -> Schedule:
    """The schedule `name` with its (name, value) arguments."""
    return schedule_factory(name)(**dict(args))


def scheduled(inner: optax.GradientTransformation, schedule: Schedule) -> optax.GradientTransformation:
    """`inner` (an inject_hyperparams transformation) with its learning rate set from `schedule` before each update."""

    def init(params):
        state = inner.init(params)
        lr = state.hyperparams["learning_rate"]
        zero = jnp.zeros([], jnp.int32)
        return ScheduleState(lr, zero, zero, zero, state)

    def update(grads, state, params=None):
        lr = schedule(state.base_lr, state.step, state.epoch, state.n_train).astype(state.base_lr.dtype)
        hyper = {**state.inner.hyperparams, "learning_rate": lr}
        updates, new_inner = inner.update(grads, state.inner._replace(hyperparams=hyper), params)
        return updates, state._replace(step=state.step + 1, inner=new_inner)

    return optax.GradientTransformation(init, update)


def at_epoch(opt_state: Any, epoch: jax.Array, n_train: int) -> Any:
    """The optimizer state told that epoch `epoch` (0-based) begins; unchanged without a schedule."""
    if not isinstance(opt_state, ScheduleState):
        return opt_state
    return opt_state._replace(epoch=jnp.asarray(epoch, jnp.int32), n_train=jnp.asarray(n_train, jnp.int32))


def epoch_end_rule(name: str) -> Callable | None:
    """The end-of-epoch rule of a schedule ((rate, triggered) -> (next rate, stop)), or None for the schedules
    that are functions of the step and epoch only."""
    from hpstudy.flavours import sklearn

    library, _, short = name.partition(":")
    return sklearn.EPOCH_END.get(short) if library == "sklearn" else None


def at_epoch_end(name: str, opt_state: ScheduleState, wait: jax.Array, stop: jax.Array):
    """(optimizer state, no-improvement count, stop) after the end-of-epoch rule of schedule `name` has seen
    the early-stopping rule's verdict `stop` (for sklearn:adaptive: a verdict that does not stop the run
    divides the rate held in the state and restarts the count at 0)."""
    rule = epoch_end_rule(name)
    lr, really_stop = rule(opt_state.base_lr, stop)
    divided = stop & ~really_stop
    return opt_state._replace(base_lr=lr.astype(opt_state.base_lr.dtype)), jnp.where(divided, 0, wait), really_stop


def schedule_names() -> list[str]:
    """Every schedule name a study may use (Optax's as the pattern 'optax:<name>_schedule')."""
    named = [f"{lib}:{short}" for lib, table in library_schedules().items() for short in table]
    return [CONSTANT, *named, "optax:<an Optax schedule, e.g. optax:warmup_cosine_decay_schedule>"]


def schedule_error(name: str, args: dict, learning_rate: float) -> str | None:
    """Why a schedule and its arguments are invalid, or None."""
    from hpstudy.training.optimizers import check_arguments

    if name == CONSTANT:
        return "the constant schedule takes no schedule_args" if args else None
    error = check_arguments("schedule", name, signature_of(name), args)
    if error:
        return error
    if name == "keras:piecewise_constant_decay":
        boundaries, values = args["boundaries"], args["values"]
        if not isinstance(boundaries, tuple) or not isinstance(values, tuple) or len(boundaries) != len(values) - 1:
            return "boundaries and values are lists with one more value than boundaries"
        if abs(values[0] - learning_rate) > 1e-12 * abs(learning_rate):
            return f"values[0] = {values[0]} must equal learning_rate = {learning_rate} (Keras starts from values[0])"
    if name.startswith("torch:") and args.get("interval", "epoch") not in ("epoch", "step"):
        return "interval is 'epoch' (scheduler.step() after every epoch, the default) or 'step' (after every batch)"
    if name.startswith("keras:") and args.get("interval", "step") not in ("epoch", "step"):
        return (
            "interval is 'step' (the schedule at the optimizer's iterations, the default) or 'epoch' (at the "
            "0-based epoch index, as keras.callbacks.LearningRateScheduler)"
        )
    for key in ("decay_steps", "first_decay_steps", "epochs_drop"):
        value = args.get(key)
        if name.startswith("keras:") and value is not None and not (isinstance(value, (int, float)) and value > 0):
            return f"{key} = {value!r} must be a number > 0"
    if name == "keras:cosine_decay_restarts" and not (
        isinstance(args.get("t_mul", 2.0), (int, float)) and args.get("t_mul", 2.0) > 0
    ):
        return f"t_mul = {args['t_mul']!r} must be a number > 0 (each period is t_mul times the one before)"
    return None


def config_error(config) -> str | None:
    """Why a configuration's schedule does not fit the rest of it, or None (the schedule's arguments are
    checked by `schedule_error`)."""
    if epoch_end_rule(config.schedule) is None:
        return None
    es = config.early_stopping
    if es is None or es.rule != "sklearn":
        found = "no early_stopping" if es is None else f"early_stopping.rule = {es.rule!r}"
        return (
            f"{config.schedule!r} acts where scikit-learn's no-improvement rule would stop, so it needs "
            f"early_stopping with rule = 'sklearn' (tol is min_delta, n_iter_no_change is patience; monitor "
            f"'train_loss', or 'val_accuracy' for MLPClassifier(early_stopping=True)); found {found}"
        )
    if config.optimizer == "sklearn:adam":
        return (
            f"{config.schedule!r} with optimizer 'sklearn:sgd' (MLPClassifier ignores learning_rate with solver='adam')"
        )
    return None
