"""scikit-learn's MLPClassifier solvers and its invscaling schedule, against the real MLPClassifier.

Both start from the same layers (`uniform_layers()`) and train three epochs of the fixed mini-batch stream
(shuffle=False, batch_size 16, the last batch of each epoch partial), one partial_fit call per epoch; the final parameters must
agree to 1e-10 relative in float64. invscaling recomputes the rate after every epoch from the number of
samples seen, so three epochs exercise it.
"""

from __future__ import annotations

import warnings

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
