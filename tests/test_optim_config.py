"""Optimizer, schedule and regularisation settings: study-file validation, Optax by name, and the engine path.

The library-exact rules are proven against their libraries in tests/test_fidelity_optim_*.py; here: names and
arguments are checked against the factories' signatures with errors naming file, key, value and expectation;
an "optax:<name>" optimizer or schedule is exactly that Optax function; the engine tells a schedule the epoch
(`at_epoch` in train_epoch); and the first five optimizer names keep their program (and so their bits).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hpstudy import data as hdata
from hpstudy.config import EarlyStopping, RunConfig, pairs
from hpstudy.errors import StudyError
from hpstudy.study import load_study
from hpstudy.training.engine import Hyper, device_data, init_run, train_epoch
from hpstudy.training.optimizers import is_plain, make_optimizer, optimizer_for

BASE = """
[study]
name = "t"
[model]
hidden = [8]
[training]
epochs = 1
{training}
[design]
kind = "grid"
[design.factors]
{factors}
"""


def study(tmp_path, training: str = "", factors: str = ""):
    path = tmp_path / "t.toml"
    path.write_text(BASE.format(training=training, factors=factors))
    return load_study(path)


def error(tmp_path, training: str = "", factors: str = "") -> str:
    with pytest.raises(StudyError) as info:
        study(tmp_path, training, factors)
    return str(info.value)


def test_library_optimizers_and_their_arguments_are_factors(tmp_path):
    s = study(
        tmp_path,
        'optimizer = "keras:rmsprop"',
        "optimizer_args = [{ rho = 0.9 }, { rho = 0.8, centered = true }]\nlearning_rate = [0.001, 0.01]",
    )
    assert len(s.trials) == 4
    assert {t.config.optimizer_args for t in s.trials} == {(("rho", 0.9),), (("centered", True), ("rho", 0.8))}
    assert "learning_rate=0.01,optimizer_args={centered=True;rho=0.8}" in {t.trial_id for t in s.trials}
    # the learning rate stays traced: the two rates of one optimizer setting share a compile group
    assert len({t.config.group_id() for t in s.trials}) == 2


@pytest.mark.parametrize(
    "training,factors,expected",
    [
        (
            'optimizer = "keras:rmsprob"',
            "",
            "training.optimizer = 'keras:rmsprob' is invalid; expected an optimizer, one of",
        ),
        ('optimizer = "optax:not_an_optimizer"', "", "expected an optimizer, one of"),
        (
            'optimizer = "keras:rmsprop"\noptimizer_args = { rhoo = 0.9 }',
            "",
            "takes no argument 'rhoo'; did you mean 'rho'?; its arguments are: centered, clipnorm",
        ),
        (
            'optimizer = "keras:sgd"\noptimizer_args = { clipnorm = 1.0, clipvalue = 0.5 }',
            "",
            "takes only one of clipnorm",
        ),
        ('optimizer = "keras:sgd"\nmomentum = 0.9', "", "give it as optimizer_args.momentum"),
        ('optimizer = "adam"\noptimizer_args = { eps = 1e-7 }', "", "takes no optimizer_args"),
        (
            'optimizer = "optax:adamw"\noptimizer_args = { b1 = "high" }',
            "",
            "an optimizer that builds with these settings",
        ),
        ('schedule = "torch:step_lr"', "", "needs the argument(s) step_size"),
        (
            'schedule = "keras:piecewise_constant_decay"\nschedule_args = { boundaries = [10], values = [0.1, 0.01] }',
            "",
            "values[0] = 0.1 must equal learning_rate = 0.001",
        ),
        (
            'schedule = "torch:step_lr"\nschedule_args = { step_size = 1, interval = "batch" }',
            "",
            "interval is 'epoch'",
        ),
        ('schedule = "optax:cosine_decay"', "", "a learning-rate schedule, one of"),
        ('schedule = "optax:join_schedules"', "", "a learning-rate schedule, one of"),
        ("max_norm = 0", "", "training.max_norm = 0 is invalid; expected a number > 0"),
        (
            "",
            "clip_grad_norm = [1.0, -1.0]",
            "design.factors.clip_grad_norm[1] = -1.0 is invalid; expected a number > 0",
        ),
        ('optimizer = "optax:sgd"\noptimizer_args = { momentum = [0.9, "x"] }', "", "a list of numbers"),
        (
            'schedule = "sklearn:adaptive"',
            "",
            "training.schedule = 'sklearn:adaptive' is invalid; expected 'sklearn:adaptive' acts where "
            "scikit-learn's no-improvement rule would stop, so it needs early_stopping with rule = 'sklearn'",
        ),
        (
            'schedule = "sklearn:adaptive"\nearly_stopping = { monitor = "val_loss", patience = 2 }',
            "",
            "found early_stopping.rule = 'keras'",
        ),
        (
            'schedule = "sklearn:adaptive"\noptimizer = "sklearn:adam"\n'
            'early_stopping = { monitor = "train_loss", min_delta = 1e-4, patience = 10, rule = "sklearn" }',
            "",
            "with optimizer 'sklearn:sgd' (MLPClassifier ignores learning_rate with solver='adam')",
        ),
        ('schedule = "sklearn:adaptive"\nschedule_args = { tol = 0.1 }', "", "takes no argument 'tol'"),
        (
            'schedule = "keras:exponential_decay"\nschedule_args = { decay_steps = 2, decay_rate = 0.5, interval = "batch" }',
            "",
            "interval is 'step' (the schedule at the optimizer's iterations, the default) or 'epoch'",
        ),
        ('schedule = "keras:step_decay"\nschedule_args = { drop = 0.5 }', "", "needs the argument(s) epochs_drop"),
        (
            'schedule = "keras:step_decay"\nschedule_args = { drop = 0.5, epochs_drop = 0 }',
            "",
            "epochs_drop = 0 must be a number > 0",
        ),
        (
            'schedule = "keras:cosine_decay_restarts"\nschedule_args = { first_decay_steps = 10, t_mul = -1.0 }',
            "",
            "t_mul = -1.0 must be a number > 0",
        ),
        (
            'schedule = "keras:cosine_decay_restarts"\nschedule_args = { first_decay_step = 10 }',
            "",
            "did you mean 'first_decay_steps'?",
        ),
    ],
)
def test_bad_settings_are_named_clearly(tmp_path, training, factors, expected):
    message = error(tmp_path, training, factors or "learning_rate = [0.001]")
    assert str(tmp_path / "t.toml") in message
    assert expected in message


def test_first_five_names_keep_their_program():
    """A configuration with one of the first five names and nothing added builds exactly make_optimizer's
    transformation (the same state tree, so the same compiled program and bits)."""
    for name in ("adam", "adam_keras", "sgd", "sgd_momentum", "sgd_nesterov"):
        cfg = RunConfig(optimizer=name, momentum=0.9 if "momentum" in name or "nesterov" in name else 0.0)
        assert is_plain(cfg)
        params = {"w": jnp.ones(3)}
        ours = optimizer_for(cfg, 0.01).init(params)
        theirs = make_optimizer(cfg.optimizer, cfg.momentum, 0.01).init(params)
        assert jax.tree.structure(ours) == jax.tree.structure(theirs)
        assert not is_plain(dataclasses.replace(cfg, schedule="torch:exponential_lr", schedule_args=(("gamma", 0.5),)))


def _steps(tx, params, grads, n=5):
    state = tx.init(params)
    for _ in range(n):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_optax_by_name_is_optax():
    """'optax:adamw' with arguments, and an 'optax:' schedule, take exactly Optax's steps (bit for bit)."""
    params = {"w": jnp.linspace(-1.0, 1.0, 7)}
    grads = {"w": jnp.cos(jnp.arange(7.0))}
    cfg = RunConfig(optimizer="optax:adamw", optimizer_args=pairs({"b1": 0.8, "weight_decay": 0.1}))
    ours = _steps(optimizer_for(cfg, 0.01), params, grads)
    theirs = _steps(optax.adamw(0.01, b1=0.8, weight_decay=0.1), params, grads)
    np.testing.assert_array_equal(ours["w"], theirs["w"])
    # an Optax schedule's value multiplies the learning rate
    cfg = dataclasses.replace(
        cfg,
        optimizer="optax:sgd",
        optimizer_args=(),
        schedule="optax:exponential_decay",
        schedule_args=pairs({"init_value": 1.0, "transition_steps": 2, "decay_rate": 0.5}),
    )
    ours = _steps(optimizer_for(cfg, 0.01), params, grads)
    sched = optax.exponential_decay(1.0, transition_steps=2, decay_rate=0.5)
    theirs = _steps(optax.sgd(lambda count: 0.01 * sched(count)), params, grads)
    np.testing.assert_allclose(ours["w"], theirs["w"], rtol=1e-6)


def test_engine_tells_the_schedule_the_epoch():
    """Through train_epoch itself: torch's StepLR with gamma 0 trains the first epoch and freezes the second
    (its rate is 0 from epoch 1 on), while the constant rate keeps moving."""
    data = device_data(hdata.synthetic(n_train=64, n_test=16))
    base = RunConfig(hidden=(8,), optimizer="torch:sgd", learning_rate=0.1, batch_size=16, epochs=2)
    stepped = dataclasses.replace(base, schedule="torch:step_lr", schedule_args=pairs({"step_size": 1, "gamma": 0.0}))
    hp = Hyper(jnp.asarray(0.1), jnp.asarray(0.0))
    moved = {}
    for name, cfg in (("constant", base), ("stepped", stepped)):
        state = init_run(cfg, jnp.asarray(np.array([0, 1], np.uint32)), hp)
        state, _ = train_epoch(cfg, state, hp, data, jnp.asarray(0))
        first = state.params
        state, _ = train_epoch(cfg, state, hp, data, jnp.asarray(1))
        moved[name] = float(jnp.max(jnp.abs(state.params["Dense_0"]["kernel"] - first["Dense_0"]["kernel"])))
    assert moved["stepped"] == 0.0
    assert moved["constant"] > 1e-4


def test_keras_adam_is_adam_keras_in_float32():
    """'keras:adam' at its defaults takes the same float32 steps, bit for bit, as 'adam_keras' (Keras 3 casts
    the betas to float32 as TF Keras did); they differ only in float64 fidelity tests."""
    params = {"w": jnp.linspace(-1.0, 1.0, 7, dtype=jnp.float32)}
    grads = {"w": jnp.cos(jnp.arange(7.0, dtype=jnp.float32)) * 1e-3}
    ours = _steps(optimizer_for(RunConfig(optimizer="keras:adam"), jnp.float32(0.001)), params, grads, n=20)
    theirs = _steps(optimizer_for(RunConfig(optimizer="adam_keras"), jnp.float32(0.001)), params, grads, n=20)
    np.testing.assert_array_equal(ours["w"], theirs["w"])


def test_sklearn_adaptive_takes_the_flavour_stopping_rule(tmp_path):
    """With flavour 'sklearn' the adaptive rate divides where MLPClassifier's default rule (tol 1e-4,
    n_iter_no_change 10 on the training loss) would stop; the schedule takes no arguments of its own."""
    s = study(tmp_path, 'schedule = "sklearn:adaptive"', 'flavour = ["sklearn"]\nlearning_rate = [0.1, 0.01]')
    cfg = s.trials[0].config
    assert (cfg.schedule, cfg.schedule_args, cfg.early_stopping.rule) == ("sklearn:adaptive", (), "sklearn")
    assert (cfg.early_stopping.min_delta, cfg.early_stopping.patience) == (1e-4, 10)
    assert len({t.config.group_id() for t in s.trials}) == 1  # the rate stays traced: one compile group


def test_engine_divides_the_adaptive_rate_in_float32():
    """Through train_epoch in float32 (the engine's precision): with a tol no loss can beat, the no-improvement
    count is 0 after the first epoch (the best is still inf), 1 after the second and exceeds n_iter_no_change
    = 1 after the third, where the rate held in the state is divided by 5 and the count restarts; the run
    goes on."""
    data = device_data(hdata.synthetic(n_train=64, n_test=16))
    es = EarlyStopping(monitor="train_loss", min_delta=100.0, patience=1, rule="sklearn")
    cfg = RunConfig(
        flavour="sklearn",
        hidden=(8,),
        init="sklearn",
        optimizer="sklearn:sgd",
        learning_rate=0.1,
        batch_size=16,
        epochs=3,
        early_stopping=es,
        schedule="sklearn:adaptive",
    )
    hp = Hyper(jnp.asarray(0.1, jnp.float32), jnp.asarray(0.0, jnp.float32))
    state = init_run(cfg, jnp.asarray(np.array([0, 1], np.uint32)), hp)
    seen = []
    for epoch in range(3):
        state, _ = train_epoch(cfg, state, hp, data, jnp.asarray(epoch))
        seen.append((float(state.opt_state.base_lr), int(state.wait), bool(state.stopped)))
    assert state.opt_state.base_lr.dtype == jnp.float32
    fifth = float(np.float32(0.1) / np.float32(5.0))
    assert seen == [(float(np.float32(0.1)), 0, False), (float(np.float32(0.1)), 1, False), (fifth, 0, False)]
