"""Keras 3's optimizers, learning-rate schedules and regularisers, step by step against the real Keras.

Keras runs on its JAX backend in float64 (keras.config.set_floatx inside JAX's x64 mode, only inside these
tests); both sides start from hpstudy's initial parameters and train the same mini-batches for three epochs
of four steps (the last one partial), with `train_on_batch` on the Keras side; the parameters after every
epoch must agree to 1e-10 relative (tests/optim_fidelity.py). Skipped, with the reason, where keras is not
importable.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from optim_fidelity import (  # noqa: E402
    EPOCHS,
    HIDDEN,
    TOLERANCE,
    batches,
    config,
    float_inputs,
    relative_difference,
    run_hpstudy,
    trajectory_difference,
)

keras = pytest.importorskip(
    "keras", reason="keras is not installed: these tests train the real Keras (pip install keras)"
)
if keras.backend.backend() != "jax":
    pytest.skip(
        f"Keras runs on the {keras.backend.backend()} backend here; these tests need KERAS_BACKEND=jax",
        allow_module_level=True,
    )

LR = 2.0**-7  # exactly representable, so Keras' learning-rate variable holds the same number


def run_keras(initial: list, optimizer, kernel_regularizer=None, kernel_constraint=None) -> list[list]:
    """Keras in float64 from `initial`: the layers after each epoch of `batches()` (train_on_batch per batch)."""
    with jax.enable_x64(True):
        # floatx and the global dtype policy both: a policy set earlier in the process (another test file
        # restores the one it found) would otherwise keep the layers in float32
        previous, policy = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        try:
            dense = dict(kernel_regularizer=kernel_regularizer, kernel_constraint=kernel_constraint)
            model = keras.Sequential(
                [keras.Input(shape=(784,), dtype="float64")]
                + [keras.layers.Dense(w, activation="relu", **dense) for w in HIDDEN]
                + [keras.layers.Dense(10, **dense)]
            )
            model.compile(optimizer=optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.set_weights([a for layer in initial for a in layer])
            after = []
            for _ in range(EPOCHS):
                for images, labels in batches():
                    model.train_on_batch(float_inputs(images), labels)
                weights = [np.asarray(w) for w in model.get_weights()]
                assert weights[0].dtype == np.float64
                after.append([(weights[i], weights[i + 1]) for i in range(0, len(weights), 2)])
        finally:
            keras.config.set_floatx(previous)
            keras.config.set_dtype_policy(policy)
    return after


def check(cfg, optimizer, tolerance=TOLERANCE, **layer_args) -> tuple[list, list[list]]:
    """hpstudy's `cfg` and Keras' `optimizer` agree after every epoch; returns (initial, Keras' trajectory)."""
    initial, ours = run_hpstudy(cfg)
    reference = run_keras(initial, optimizer, **layer_args)
    assert relative_difference(initial, reference[-1]) > 1e-3, "the reference hardly trained"
    rel = trajectory_difference(ours, reference)
    print(f"{cfg.optimizer} {dict(cfg.optimizer_args)} {cfg.schedule}: max relative difference {rel:.3e}")
    assert rel < tolerance
    return initial, reference


O = keras.optimizers  # noqa: E741 - short, as the table below reads
OPTIMIZERS = {  # id: (hpstudy optimizer, its arguments, learning rate, the Keras optimizer)
    "sgd": ("keras:sgd", {}, LR * 16, lambda: O.SGD(LR * 16)),
    "sgd-momentum": ("keras:sgd", {"momentum": 0.9}, LR, lambda: O.SGD(LR, momentum=0.9)),
    "sgd-nesterov": (
        "keras:sgd",
        {"momentum": 0.8, "nesterov": True},
        LR,
        lambda: O.SGD(LR, momentum=0.8, nesterov=True),
    ),
    "rmsprop": ("keras:rmsprop", {}, LR / 8, lambda: O.RMSprop(LR / 8)),
    "rmsprop-momentum-centered": (
        "keras:rmsprop",
        {"momentum": 0.5, "centered": True, "rho": 0.8},
        LR / 8,
        lambda: O.RMSprop(LR / 8, rho=0.8, momentum=0.5, centered=True),
    ),
    "adagrad": ("keras:adagrad", {}, LR, lambda: O.Adagrad(LR)),
    "adadelta": ("keras:adadelta", {}, 1.0, lambda: O.Adadelta(1.0)),
    "adam": ("keras:adam", {}, LR / 8, lambda: O.Adam(LR / 8)),
    "adam-amsgrad": (
        "keras:adam",
        {"amsgrad": True, "beta_2": 0.99},
        LR / 8,
        lambda: O.Adam(LR / 8, beta_2=0.99, amsgrad=True),
    ),
    "adamw": ("keras:adamw", {}, LR / 8, lambda: O.AdamW(LR / 8)),
    "adamax": ("keras:adamax", {}, LR / 8, lambda: O.Adamax(LR / 8)),
    "nadam": ("keras:nadam", {}, LR / 8, lambda: O.Nadam(LR / 8)),
    # the base optimizer's options: decoupled weight decay and the three kinds of clipping
    "sgd-weight-decay": ("keras:sgd", {"weight_decay": 0.5}, LR * 16, lambda: O.SGD(LR * 16, weight_decay=0.5)),
    "rmsprop-clipnorm": ("keras:rmsprop", {"clipnorm": 0.05}, LR / 8, lambda: O.RMSprop(LR / 8, clipnorm=0.05)),
    "sgd-clipnorm": ("keras:sgd", {"clipnorm": 0.05}, LR * 16, lambda: O.SGD(LR * 16, clipnorm=0.05)),
    "sgd-global-clipnorm": (
        "keras:sgd",
        {"global_clipnorm": 0.1},
        LR * 16,
        lambda: O.SGD(LR * 16, global_clipnorm=0.1),
    ),
    "sgd-clipvalue": ("keras:sgd", {"clipvalue": 0.002}, LR * 16, lambda: O.SGD(LR * 16, clipvalue=0.002)),
}


@pytest.mark.parametrize("case", tuple(OPTIMIZERS))
def test_keras_optimizer_matches_keras(case):
    name, args, lr, optimizer = OPTIMIZERS[case]
    check(config("keras", name, lr, args), optimizer)


def test_defaults_are_keras_defaults():
    """hpstudy's signatures carry Keras' own defaults (what a study gets when it leaves an argument out)."""
    import inspect

    from hpstudy.flavours import keras as ours

    classes = {
        "sgd": O.SGD,
        "rmsprop": O.RMSprop,
        "adagrad": O.Adagrad,
        "adadelta": O.Adadelta,
        "adam": O.Adam,
        "adamw": O.AdamW,
        "adamax": O.Adamax,
        "nadam": O.Nadam,
    }
    assert set(classes) == set(ours.OPTIMIZERS)
    for short, cls in classes.items():
        theirs = inspect.signature(cls).parameters
        for arg, p in inspect.signature(ours.OPTIMIZERS[short]).parameters.items():
            assert arg in theirs, (short, arg)
            if arg != "learning_rate":
                assert p.default == theirs[arg].default, (short, arg, p.default, theirs[arg].default)


WRONG = {  # id: (the right case, a wrong hpstudy variant that must fall far outside the tolerance)
    "rmsprop-epsilon-outside-the-root": ("rmsprop", "optax:rmsprop", {"decay": 0.9, "eps": 1e-7, "eps_in_sqrt": False}),
    "adam-optax-epsilon": ("adam", "optax:adam", {"eps": 1e-7}),
    "adamax-optax-epsilon": ("adamax", "optax:adamax", {"eps": 1e-7}),
    "nadam-optax": ("nadam", "optax:nadam", {"eps": 1e-7}),
    "clipnorm-global-instead-of-per-variable": ("sgd-clipnorm", "keras:sgd", {"global_clipnorm": 0.05}),
    "adagrad-zero-initial-accumulator": ("adagrad", "keras:adagrad", {"initial_accumulator_value": 0.0}),
}


@pytest.mark.parametrize("case", tuple(WRONG))
def test_a_wrong_variant_is_caught(case):
    """A misplaced epsilon or a wrong default moves the parameters by over 100 times the tolerance (Optax's Adamax,
    epsilon inside the maximum: about 600 times; the others by far more)."""
    right, name, args = WRONG[case]
    _, _, lr, optimizer = OPTIMIZERS[right]
    initial, wrong = run_hpstudy(config("keras", name, lr, args))
    assert trajectory_difference(wrong, run_keras(initial, optimizer)) > 1e2 * TOLERANCE


S = keras.optimizers.schedules
SCHEDULES = {  # id: (hpstudy schedule, its arguments, the Keras schedule from the initial rate)
    "exponential": (
        "keras:exponential_decay",
        {"decay_steps": 3, "decay_rate": 0.5},
        lambda lr: S.ExponentialDecay(lr, decay_steps=3, decay_rate=0.5),
    ),
    "exponential-staircase": (
        "keras:exponential_decay",
        {"decay_steps": 5, "decay_rate": 0.3, "staircase": True},
        lambda lr: S.ExponentialDecay(lr, decay_steps=5, decay_rate=0.3, staircase=True),
    ),
    "inverse-time": (
        "keras:inverse_time_decay",
        {"decay_steps": 2, "decay_rate": 0.7},
        lambda lr: S.InverseTimeDecay(lr, decay_steps=2, decay_rate=0.7),
    ),
    "polynomial-linear": (
        "keras:polynomial_decay",
        {"decay_steps": 9, "end_learning_rate": 0.001},
        lambda lr: S.PolynomialDecay(lr, decay_steps=9, end_learning_rate=0.001),
    ),
    "piecewise": (
        "keras:piecewise_constant_decay",
        {"boundaries": [3, 7], "values": [LR * 16, LR * 4, LR]},
        lambda lr: S.PiecewiseConstantDecay([3, 7], [LR * 16, LR * 4, LR]),
    ),
    "cosine": ("keras:cosine_decay", {"decay_steps": 10, "alpha": 0.1}, lambda lr: S.CosineDecay(lr, 10, alpha=0.1)),
    "cosine-warmup": (
        "keras:cosine_decay",
        {"decay_steps": 6, "warmup_target": LR * 32, "warmup_steps": 4},
        lambda lr: S.CosineDecay(lr, 6, warmup_target=LR * 32, warmup_steps=4),
    ),
    # SGDR: periods of 3, 6, 12 steps (restarts at steps 3 and 9), each starting from half the one before
    "cosine-restarts": (
        "keras:cosine_decay_restarts",
        {"first_decay_steps": 3, "t_mul": 2.0, "m_mul": 0.5, "alpha": 0.1},
        lambda lr: S.CosineDecayRestarts(lr, 3, t_mul=2.0, m_mul=0.5, alpha=0.1),
    ),
    "cosine-restarts-equal-periods": (
        "keras:cosine_decay_restarts",
        {"first_decay_steps": 4, "t_mul": 1.0, "m_mul": 0.8},
        lambda lr: S.CosineDecayRestarts(lr, 4, t_mul=1.0, m_mul=0.8),
    ),
}
COSINES = ("keras:cosine_decay", "keras:cosine_decay_restarts")


@pytest.mark.parametrize("case", tuple(SCHEDULES))
def test_keras_schedule_matches_keras(case):
    """Each LearningRateSchedule, evaluated per optimizer step, on SGD with momentum (and Keras' AdamW, whose
    weight decay also uses the scheduled rate)."""
    name, args, schedule = SCHEDULES[case]
    lr = LR * 16
    # Keras' CosineDecay turns its Python-float initial rate into a float32 tensor and computes the cosine
    # in float32 even under floatx float64 (checked: its values carry float32 rounding, about 1e-8
    # relative), so the float64 comparison of the cosine cases is bounded by float32 rounding instead.
    tolerance = 1e-6 if name in COSINES else TOLERANCE
    check(
        config("keras", "keras:sgd", lr, {"momentum": 0.5}, schedule=name, schedule_args=args),
        lambda: O.SGD(schedule(lr), momentum=0.5),
        tolerance,
    )
    if case == "exponential":
        check(
            config("keras", "keras:adamw", lr / 64, {"weight_decay": 0.5}, schedule=name, schedule_args=args),
            lambda: O.AdamW(schedule(lr / 64), weight_decay=0.5),
        )


def test_schedule_defaults_are_keras_defaults():
    """hpstudy's Keras schedules take the classes' own arguments and defaults (interval is hpstudy's;
    step_decay is a LearningRateScheduler function, not a class)."""
    import inspect

    from hpstudy.flavours import keras as ours

    classes = {
        "exponential_decay": S.ExponentialDecay,
        "inverse_time_decay": S.InverseTimeDecay,
        "polynomial_decay": S.PolynomialDecay,
        "piecewise_constant_decay": S.PiecewiseConstantDecay,
        "cosine_decay": S.CosineDecay,
        "cosine_decay_restarts": S.CosineDecayRestarts,
    }
    assert set(classes) == set(ours.SCHEDULES) - {"step_decay"}
    for short, cls in classes.items():
        theirs = inspect.signature(cls).parameters
        for arg, p in inspect.signature(ours.SCHEDULES[short]).parameters.items():
            if arg != "interval":
                assert arg in theirs, (short, arg)
                assert p.default == theirs[arg].default, (short, arg, p.default, theirs[arg].default)


def test_cosine_restarts_wrong_variants_are_caught():
    """Equal periods instead of t_mul = 2, or no m_mul, land far outside even the float32-bounded tolerance."""
    name, args, schedule = SCHEDULES["cosine-restarts"]
    lr = LR * 16
    for wrong in ({**args, "t_mul": 1.0}, {**args, "m_mul": 1.0}):
        initial, ours = run_hpstudy(
            config("keras", "keras:sgd", lr, {"momentum": 0.5}, schedule=name, schedule_args=wrong)
        )
        reference = run_keras(initial, lambda: O.SGD(schedule(lr), momentum=0.5))
        assert trajectory_difference(ours, reference) > 1e2 * 1e-6


def run_keras_fit(initial: list, optimizer, schedule) -> list[list]:
    """Keras in float64 from `initial`, trained by model.fit (batch size 16, shuffle=False: the mini-batches of
    `batches()`) with keras.callbacks.LearningRateScheduler(schedule); the layers after each epoch and the
    rate the callback set for each epoch."""
    images = np.concatenate([b[0] for b in batches()])
    labels = np.concatenate([b[1] for b in batches()])
    with jax.enable_x64(True):
        previous, policy = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        try:
            model = keras.Sequential(
                [keras.Input(shape=(784,), dtype="float64")]
                + [keras.layers.Dense(w, activation="relu") for w in HIDDEN]
                + [keras.layers.Dense(10)]
            )
            model.compile(optimizer=optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.set_weights([a for layer in initial for a in layer])
            after, rates = [], []

            def snapshot(epoch, logs):
                weights = [np.asarray(w) for w in model.get_weights()]
                assert weights[0].dtype == np.float64
                after.append([(weights[i], weights[i + 1]) for i in range(0, len(weights), 2)])
                rates.append(logs["learning_rate"])

            callbacks = [
                keras.callbacks.LearningRateScheduler(schedule),
                keras.callbacks.LambdaCallback(on_epoch_end=snapshot),
            ]
            model.fit(
                float_inputs(images),
                labels,
                batch_size=len(batches()[0][1]),
                epochs=EPOCHS,
                shuffle=False,
                verbose=0,
                callbacks=callbacks,
            )
        finally:
            keras.config.set_floatx(previous)
            keras.config.set_dtype_policy(policy)
    return after, rates


EPOCH_SCHEDULES = {  # id: (hpstudy schedule, its arguments, the LearningRateScheduler function of the initial rate)
    "step-decay": (
        "keras:step_decay",
        {"drop": 0.5, "epochs_drop": 1},
        lambda lr: lambda epoch: lr * 0.5 ** math.floor(epoch / 1),
    ),
    # the (1 + epoch) variant: floor((epoch + 1) / 2) drops at epoch index 1, not 2
    "step-decay-offset": (
        "keras:step_decay",
        {"drop": 0.25, "epochs_drop": 2, "offset": 1},
        lambda lr: lambda epoch: lr * 0.25 ** math.floor((1 + epoch) / 2),
    ),
    "exponential-per-epoch": (
        "keras:exponential_decay",
        {"decay_steps": 1, "decay_rate": 0.5, "interval": "epoch"},
        lambda lr: lambda epoch: float(S.ExponentialDecay(lr, decay_steps=1, decay_rate=0.5)(epoch)),
    ),
    "piecewise-per-epoch": (
        "keras:piecewise_constant_decay",
        {"boundaries": [0, 1], "values": [LR * 16, LR * 4, LR], "interval": "epoch"},
        lambda lr: lambda epoch: float(S.PiecewiseConstantDecay([0, 1], [LR * 16, LR * 4, LR])(epoch)),
    ),
}


@pytest.mark.parametrize("case", tuple(EPOCH_SCHEDULES))
def test_learning_rate_scheduler_matches_keras(case):
    """keras.callbacks.LearningRateScheduler: the rate set at the start of each epoch from its 0-based index,
    through model.fit, against the schedule evaluated at the epoch."""
    name, args, schedule = EPOCH_SCHEDULES[case]
    lr = LR * 16
    initial, ours = run_hpstudy(config("keras", "keras:sgd", lr, {"momentum": 0.5}, schedule=name, schedule_args=args))
    reference, rates = run_keras_fit(initial, lambda: O.SGD(lr, momentum=0.5), schedule(lr))
    assert rates[0] == float(schedule(lr)(0)) and len(set(rates)) > 1, rates  # epoch 0 at schedule(0), then a change
    assert relative_difference(initial, reference[-1]) > 1e-3, "the reference hardly trained"
    rel = trajectory_difference(ours, reference)
    print(f"LearningRateScheduler {case}: rates {rates}, max relative difference {rel:.3e}")
    assert rel < TOLERANCE


def test_learning_rate_scheduler_wrong_counting_is_caught():
    """The same step decay counted from 1 (the first drop an epoch early), or per optimizer step, lands far
    outside the tolerance."""
    name, args, schedule = EPOCH_SCHEDULES["exponential-per-epoch"]
    lr = LR * 16
    wrong = [("keras:step_decay", {"drop": 0.5, "epochs_drop": 1, "offset": 1}), (name, {**args, "interval": "step"})]
    for wrong_name, wrong_args in wrong:
        initial, ours = run_hpstudy(
            config("keras", "keras:sgd", lr, {"momentum": 0.5}, schedule=wrong_name, schedule_args=wrong_args)
        )
        reference, _ = run_keras_fit(initial, lambda: O.SGD(lr, momentum=0.5), schedule(lr))
        assert trajectory_difference(ours, reference) > 1e3 * TOLERANCE


def test_kernel_l2_is_keras_kernel_regularizer():
    """kernel_l2 adds kernel_l2 * sum(w^2) of every kernel to the loss, as Dense(kernel_regularizer=L2(...))."""
    cfg = config("keras", "keras:sgd", LR * 16, kernel_l2=0.01)
    check(cfg, lambda: O.SGD(LR * 16), kernel_regularizer=keras.regularizers.L2(0.01))
    # scikit-learn's l2 (alpha / 2 * sum(w^2) / batch size) at the same number is a different term
    initial, wrong = run_hpstudy(config("keras", "keras:sgd", LR * 16, l2=0.01))
    reference = run_keras(initial, lambda: O.SGD(LR * 16), kernel_regularizer=keras.regularizers.L2(0.01))
    assert trajectory_difference(wrong, reference) > 1e3 * TOLERANCE


def test_max_norm_is_keras_max_norm_constraint():
    """max_norm projects every kernel's columns after each update, as Dense(kernel_constraint=MaxNorm(...))."""
    cfg = config("keras", "keras:sgd", LR * 16, max_norm=0.35)
    initial, reference = check(cfg, lambda: O.SGD(LR * 16), kernel_constraint=keras.constraints.MaxNorm(0.35))
    _, free = run_hpstudy(config("keras", "keras:sgd", LR * 16))
    assert trajectory_difference(free, reference) > 1e3 * TOLERANCE  # the constraint was active
