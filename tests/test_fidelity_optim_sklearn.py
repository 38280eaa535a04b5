"""scikit-learn's MLPClassifier solvers and its invscaling schedule, against the real MLPClassifier.

Both start from the same layers (`uniform_layers()`) and train three epochs of the fixed mini-batch stream
(shuffle=False, batch_size 16, the last batch of each epoch partial), one partial_fit call per epoch; the final parameters must
agree to 1e-10 relative in float64. invscaling recomputes the rate after every epoch from the number of
samples seen, so three epochs exercise it.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from optim_fidelity import (
    BATCH,
    EPOCHS,
    HIDDEN,
    TOLERANCE,
    config,
    examples,
    float_inputs,
    relative_difference,
    run_hpstudy,
    uniform_layers,
)

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the test extra)")


def run_sklearn(solver: str, lr: float, **params) -> list:
    """MLPClassifier from `uniform_layers()`, one partial_fit call per epoch over the whole stream (each is one
    epoch of `fit`: its mini-batches, then t_ += n_samples and the optimizer's iteration_ends); final layers."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    images, labels = examples()
    x = float_inputs(images)
    clf = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        activation="relu",
        solver=solver,
        learning_rate_init=lr,
        batch_size=BATCH,
        shuffle=False,
        n_iter_no_change=10_000,
        random_state=0,
        **params,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.partial_fit(x[:BATCH], labels[:BATCH], classes=np.arange(10))  # builds the network only
        initial = uniform_layers()
        clf.coefs_ = [w.copy() for w, _ in initial]
        clf.intercepts_ = [b.copy() for _, b in initial]
        clf.t_ = 0
        del clf._optimizer  # the next call starts a fresh optimizer (zero moments), as fit would
        for _ in range(EPOCHS):
            clf.partial_fit(x, labels)
    assert clf.t_ == EPOCHS * len(labels)
    return [(w.copy(), b.copy()) for w, b in zip(clf.coefs_, clf.intercepts_)]


CASES = {  # id: (sklearn solver and parameters, hpstudy optimizer, args, schedule and its args, learning rate)
    "sgd-defaults": (("sgd", {}), "sklearn:sgd", {}, None, {}, 0.05),
    "sgd-momentum-not-nesterov": (
        ("sgd", {"momentum": 0.5, "nesterovs_momentum": False}),
        "sklearn:sgd",
        {"momentum": 0.5, "nesterovs_momentum": False},
        None,
        {},
        0.05,
    ),
    "sgd-invscaling": (
        ("sgd", {"learning_rate": "invscaling", "power_t": 0.25}),
        "sklearn:sgd",
        {},
        "sklearn:invscaling",
        {"power_t": 0.25},
        0.2,
    ),
    "adam": (("adam", {}), "sklearn:adam", {}, None, {}, 0.002),
    "adam-betas": (
        ("adam", {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6}),
        "sklearn:adam",
        {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6},
        None,
        {},
        0.002,
    ),
}


def ours(optimizer: str, args: dict, schedule: str | None, schedule_args: dict, lr: float) -> list:
    """hpstudy's final layers with scikit-learn's alpha (l2 = 1e-4) and these optimizer settings."""
    extra = {"schedule": schedule, "schedule_args": schedule_args} if schedule else {}
    cfg = config("sklearn", optimizer, lr, args, l2=1e-4, **extra)
    _, after = run_hpstudy(cfg, initial=uniform_layers())
    return after[-1]


@pytest.mark.parametrize("case", tuple(CASES))
def test_sklearn_solver_matches_mlpclassifier(case):
    (solver, params), optimizer, args, schedule, schedule_args, lr = CASES[case]
    reference = run_sklearn(solver, lr, **params)
    assert relative_difference(uniform_layers(), reference) > 1e-3
    rel = relative_difference(ours(optimizer, args, schedule, schedule_args, lr), reference)
    print(f"sklearn {case}: max relative difference {rel:.3e}")
    assert rel < TOLERANCE


def test_wrong_variants_are_caught():
    """`adam_keras` (Keras' epsilon 1e-7 and TF's float32-rounded betas in the bias correction) and a
    forgotten invscaling land far outside the tolerance; Keras 3's Adam at scikit-learn's epsilon is the
    same rule (agreeing to rounding)."""
    reference = run_sklearn("adam", 0.002)
    keras_like = ours("keras:adam", {"epsilon": 1e-8}, None, {}, 0.002)
    assert relative_difference(ours("adam_keras", {}, None, {}, 0.002), reference) > 1e3 * TOLERANCE
    assert relative_difference(keras_like, reference) < TOLERANCE
    reference = run_sklearn("sgd", 0.2, learning_rate="invscaling", power_t=0.25)
    assert relative_difference(ours("sklearn:sgd", {}, None, {}, 0.2), reference) > 1e3 * TOLERANCE


# --- learning_rate='adaptive', through the engine's own vmapped epoch program -----------------------------
#
# The adaptive rate acts on the epoch's mean training loss (or, with early_stopping=True, the validation
# score), so it is tested through the engine's compiled chunk program (init_run and train_epoch, vmapped over
# two runs with different learning rates: per-run traced state) against MLPClassifier.fit. Both sides see the
# same examples in the same order: scikit-learn's per-epoch `shuffle` is replaced by hpstudy's permutation of
# that epoch, its `_init_coef` hands out hpstudy's initial layers, and with early_stopping=True its
# `train_test_split` returns hpstudy's training and validation splits. tol is large, so that within a few
# epochs the rate is divided by 5 several times and the run stops once it is <= 1e-6.

ADAPTIVE_BATCH = 16
ADAPTIVE_MAX_ITER = 30


def adaptive_data(early_stopping: bool):
    """A tiny synthetic dataset with every class in its training split (60 examples: 3 full batches and a
    partial one of 12); the validation split is its test split (40 examples)."""
    from hpstudy import data as hdata

    dataset = hdata.synthetic(n_train=60, n_test=40, seed=3)
    assert set(np.unique(dataset.train.labels)) == set(range(10))
    return dataset


def adaptive_config(lr: float, tol: float, n_iter_no_change: int, early_stopping: bool, **fields):
    """hpstudy's MLPClassifier(solver='sgd', learning_rate='adaptive', tol, n_iter_no_change, early_stopping)."""
    from hpstudy.config import EarlyStopping, RunConfig

    es = EarlyStopping(
        monitor="val_accuracy" if early_stopping else "train_loss",
        min_delta=tol,
        patience=n_iter_no_change,
        restore_best_weights=early_stopping,
        rule="sklearn",
    )
    settings = dict(schedule="sklearn:adaptive")
    settings.update(fields)
    return RunConfig(
        flavour="sklearn",
        hidden=HIDDEN,
        activation="relu",
        init="sklearn",
        loss="softmax_cross_entropy",
        optimizer="sklearn:sgd",
        learning_rate=lr,
        l2=1e-4,
        batch_size=ADAPTIVE_BATCH,
        epochs=ADAPTIVE_MAX_ITER,
        early_stopping=es,
        **settings,
    )


def run_engine(configs: list, dataset) -> list[dict]:
    """The engine's chunk program (one lane per configuration, all of one compile group) in float64, epoch by
    epoch until every lane has stopped or trained its epochs: per lane its initial layers, each epoch's
    example order, training losses and validation accuracies, epochs run, final layers and final rate."""
    import jax.numpy as jnp

    from hpstudy.training.engine import ChunkProgram, Hyper, device_data, epoch_batches, root_key, shapes_of

    static = configs[0].static()
    assert all(c.static() == static for c in configs)
    with jax.enable_x64(True):
        data = device_data(dataset)
        program = ChunkProgram(static, len(configs), shapes_of(data), dropout=False, val_is_test=True)
        keys = jnp.asarray(np.stack([root_key(c, 0) for c in configs]))
        hp = Hyper(jnp.asarray([c.learning_rate for c in configs]), jnp.zeros(len(configs)))
        state = program.init(keys, hp)
        lanes = [
            {"initial": layers_of_lane(state.params, i), "orders": [], "loss": [], "val": []}
            for i in range(len(configs))
        ]
        n = data.x_train.shape[0]
        for epoch in range(ADAPTIVE_MAX_ITER):
            stopped = np.asarray(state.stopped)
            for i, lane in enumerate(lanes):
                idx, mask = epoch_batches(static, jax.random.fold_in(state.data_key[i], epoch), n)
                lane["orders"].append(np.asarray(idx).reshape(-1)[np.asarray(mask).reshape(-1) > 0])
            state, metrics = program.epoch(state, hp, data, jnp.full(len(configs), epoch, jnp.int32))
            for i, lane in enumerate(lanes):
                if not stopped[i]:
                    lane["loss"].append(float(metrics.train_loss[i]))
                    lane["val"].append(float(metrics.val_accuracy[i]))
            if np.asarray(state.stopped).all():
                break
        params, _, _ = program.final(state, data)
        for i, lane in enumerate(lanes):
            lane["epochs"] = int(state.epochs_run[i])
            lane["final"] = layers_of_lane(params, i)
            rate = getattr(state.opt_state, "base_lr", hp.learning_rate)  # the constant rate: no schedule state
            lane["rate"] = float(rate[i])
    return lanes


def layers_of_lane(params, lane: int) -> list:
    """One lane's [(kernel, bias)] per Dense layer, as float64 NumPy arrays."""
    return [
        (np.asarray(params[f"Dense_{k}"]["kernel"][lane]), np.asarray(params[f"Dense_{k}"]["bias"][lane]))
        for k in range(len(HIDDEN) + 1)
    ]


def run_mlpclassifier(
    monkeypatch, lane: dict, dataset, lr: float, tol: float, n_iter_no_change: int, early_stopping: bool
):
    """MLPClassifier.fit from the lane's initial layers over the lane's example orders."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.neural_network import _multilayer_perceptron as mlp

    x_train, y_train = float_inputs(dataset.train.images), dataset.train.labels.astype(np.int64)
    x_val, y_val = float_inputs(dataset.test.images), dataset.test.labels.astype(np.int64)
    n = len(y_train)
    orders = iter(lane["orders"])
    monkeypatch.setattr(mlp, "shuffle", lambda idx, random_state=None: next(orders))

    def split(x, y, **kwargs):  # hpstudy's training and validation splits (y is label-binarised here)
        return x[:n], x[n:], y[:n], y[n:]

    monkeypatch.setattr(mlp, "train_test_split", split)
    clf = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        activation="relu",
        solver="sgd",
        learning_rate="adaptive",
        learning_rate_init=lr,
        batch_size=ADAPTIVE_BATCH,
        max_iter=ADAPTIVE_MAX_ITER,
        tol=tol,
        n_iter_no_change=n_iter_no_change,
        early_stopping=early_stopping,
        shuffle=True,
        random_state=0,
    )
    layers = iter(lane["initial"])
    clf._init_coef = lambda fan_in, fan_out, dtype: tuple(a.copy() for a in next(layers))
    x, y = (
        (np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])) if early_stopping else (x_train, y_train)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


# id: (the two lanes' learning rates, tol, n_iter_no_change, early_stopping)
ADAPTIVE_CASES = {
    "training-loss": ((0.2, 0.002), 0.05, 1, False),
    "validation-score": ((0.2, 0.002), 0.01, 1, True),
}


def adaptive_lanes(case: str, **fields):
    rates, tol, patience, early = ADAPTIVE_CASES[case]
    dataset = adaptive_data(early)
    return dataset, run_engine([adaptive_config(lr, tol, patience, early, **fields) for lr in rates], dataset)


@pytest.mark.parametrize("case", tuple(ADAPTIVE_CASES))
def test_adaptive_rate_matches_mlpclassifier(monkeypatch, case):
    """learning_rate='adaptive': the same epochs (n_iter_), per-epoch losses (loss_curve_), validation
    scores, final rate and final layers (with early_stopping=True, the best epoch's) as MLPClassifier, and
    each lane saw at least one division by 5 and stopped on the rate <= 1e-6 before max_iter."""
    rates, tol, patience, early = ADAPTIVE_CASES[case]
    dataset, lanes = adaptive_lanes(case)
    for lr, lane in zip(rates, lanes):
        clf = run_mlpclassifier(monkeypatch, lane, dataset, lr, tol, patience, early)
        rate = clf._optimizer.learning_rate
        print(f"adaptive {case} lr={lr}: n_iter_ {clf.n_iter_}, final rate {rate:.3e}, ours {lane['rate']:.3e}")
        assert rate <= 1e-6 < lr and clf.n_iter_ < ADAPTIVE_MAX_ITER  # divided, then stopped on the rate
        assert lane["epochs"] == clf.n_iter_
        np.testing.assert_allclose(lane["loss"], clf.loss_curve_, rtol=TOLERANCE, atol=0)
        if early:
            # hpstudy's accuracy is a float32 mean (as in every shipped run): k / n to float32 rounding
            np.testing.assert_allclose(lane["val"], clf.validation_scores_, rtol=1e-7, atol=0)
        assert lane["rate"] == pytest.approx(rate, rel=1e-15)
        reference = list(zip(clf.coefs_, clf.intercepts_))
        assert relative_difference(lane["initial"], reference) > 1e-3, "the reference hardly trained"
        rel = relative_difference(lane["final"], reference)
        print(f"adaptive {case} lr={lr}: max relative parameter difference {rel:.3e}")
        assert rel < TOLERANCE


def test_adaptive_wrong_rules_are_caught(monkeypatch):
    """Stopping at the first no-improvement verdict (the constant rate) and dividing by 10 instead of 5 land
    far from MLPClassifier: other epochs run and parameters over 1e3 times the tolerance away."""
    from hpstudy.flavours import sklearn as ours

    rates, tol, patience, early = ADAPTIVE_CASES["training-loss"]
    dataset, lanes = adaptive_lanes("training-loss")
    reference = [
        run_mlpclassifier(monkeypatch, lane, dataset, lr, tol, patience, early) for lr, lane in zip(rates, lanes)
    ]
    _, constant = adaptive_lanes("training-loss", schedule="constant")
    monkeypatch.setattr(ours, "ADAPTIVE_DIVISOR", 10.0)
    _, tenth = adaptive_lanes("training-loss")
    for wrong in (constant, tenth):
        for lane, clf in zip(wrong, reference):
            assert lane["epochs"] != clf.n_iter_
            far = relative_difference(lane["final"], list(zip(clf.coefs_, clf.intercepts_)))
            assert far > 1e3 * TOLERANCE
