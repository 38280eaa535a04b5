"""Step-level fidelity: each implementation flavour takes the same steps as the library it stands for.

From identical initial weights (hpstudy's own initialisation, copied into the reference) and an
identical mini-batch order (23 full batches and one partial one), hpstudy's `train_step` and the
reference are driven side by side for 24 steps; the largest absolute parameter difference, divided by
the largest absolute reference parameter, must stay below 1e-10 when hpstudy runs in float64 (JAX's x64
mode, switched on only inside these tests) and below 1e-4 when it runs in float32. The references always
run in float64.

- sklearn: scikit-learn's real MLPClassifier (solver='sgd', its defaults: Nesterov momentum 0.9, L2 alpha
  1e-4, constant learning rate), fed one mini-batch per partial_fit call with shuffle=False.
- nielsen: a NumPy transcription of network.py's update_mini_batch/backprop (per-example gradients
  summed, w -= eta/len(batch) * sum; sigmoid output, quadratic cost), written below.
- keras: Keras 3 on its JAX backend (Adam with Keras' epsilon placement, and plain SGD) through
  train_on_batch; skipped, with the reason, where keras is not importable or runs on another backend.

A float64 tolerance of 1e-10 is what lets these tests see a wrong momentum, a missing L2 term or a
misplaced epsilon: each of those changes the parameters by far more (checked below), while float32 noise
alone would hide them. Each float64 test also checks that its setting is well conditioned (the reference
moves by less than 1e-12 when its initial weights move by 1e-15), so that agreement, or disagreement, is
about the algorithm and not about chaos: with N(0, 1) weights, network.py's tanh and ReLU runs at large
learning rates amplify a last-bit difference past 1e-9 within 24 steps, which is why the Nielsen tests
use smaller rates for those two activations.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported (run_keras)

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optim_fidelity import float_inputs  # pixels as every reference receives them

from hpstudy import data as hdata
from hpstudy.config import RunConfig
from hpstudy.study import FLAVOUR_DEFAULTS
from hpstudy.training.engine import Hyper, init_run, model_of, root_key, train_step
from hpstudy.training.model import float_dtype, preprocess

ACTIVATIONS = ("relu", "sigmoid", "tanh")
HIDDEN = (24, 16)  # two hidden layers, so back-propagation through a hidden layer is exercised
BATCH = 16
N_EXAMPLES = 23 * BATCH + 9  # 24 steps, the last one on a partial batch of 9 (as Keras and scikit-learn use it)
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
PRECISIONS = tuple(TOLERANCE)
# One initialisation key for every configuration: a deliberately wrong configuration starts from the
# same weights as the right one.
INIT_KEY = np.array([0, 2024], np.uint32)


@functools.lru_cache(maxsize=1)
def examples() -> tuple[np.ndarray, np.ndarray]:
    """The mini-batch stream every test trains on, in this fixed order (uint8 images, integer labels)."""
    train = hdata.synthetic(n_train=N_EXAMPLES, n_test=10, seed=3).train
    return train.images, train.labels.astype(np.int64)


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    images, labels = examples()
    return [(images[s : s + BATCH], labels[s : s + BATCH]) for s in range(0, N_EXAMPLES, BATCH)]


def flavour_config(flavour: str, activation: str, learning_rate: float, **override) -> RunConfig:
    """The configuration a study file of this flavour resolves to (the flavour's defaults), dropout 0."""
    settings = {k: v for k, v in FLAVOUR_DEFAULTS[flavour].items() if k != "early_stopping"}
    settings.update(override)
    return RunConfig(
        flavour=flavour,
        hidden=HIDDEN,
        activation=activation,
        dropout=0.0,
        learning_rate=learning_rate,
        batch_size=BATCH,
        **settings,
    )


def layers_of(params) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(kernel (fan_in, fan_out), bias)] per Dense layer in order, as float64 NumPy arrays."""
    names = sorted(params, key=lambda name: int(name.split("_")[-1]))
    return [(np.asarray(params[n]["kernel"], np.float64), np.asarray(params[n]["bias"], np.float64)) for n in names]


def run_hpstudy(config: RunConfig, precision: str) -> tuple[list, list]:
    """Initial and final layers of hpstudy driven by train_step over `batches()`, in float32 or float64."""
    with jax.enable_x64(precision == "float64"):
        dtype = float_dtype()
        assert jnp.dtype(dtype) == jnp.dtype(precision)
        hp = Hyper(jnp.asarray(config.learning_rate, dtype), jnp.asarray(0.0, dtype))
        state = init_run(config, jnp.asarray(INIT_KEY), hp)
        params, opt_state = state.params, state.opt_state
        assert jax.tree.leaves(params)[0].dtype == jnp.dtype(precision)
        assert model_of(config).init_scheme == config.init
        initial = layers_of(params)
        step = jax.jit(functools.partial(train_step, config))
        key = jnp.asarray(root_key(config, 0))  # the dropout key; rate 0 makes dropout the identity
        for images, labels in batches():
            k = len(labels)
            x = np.zeros((BATCH, 784), np.uint8)
            y = np.zeros(BATCH, np.int32)
            x[:k], y[:k] = images, labels
            mask = (np.arange(BATCH) < k).astype(np.float32)  # padded like the engine's last batch
            params, opt_state, _, _ = step(
                params,
                opt_state,
                preprocess(jnp.asarray(x)),
                jnp.asarray(y),
                jnp.asarray(mask),
                jnp.asarray(0.0, dtype),
                key,
            )
        final = layers_of(params)
    return initial, final


def relative_difference(ours: list, reference: list) -> float:
    """max |ours - reference| over every parameter, divided by max |reference parameter|."""
    diff = max(float(np.max(np.abs(a - b))) for pair_a, pair_b in zip(ours, reference) for a, b in zip(pair_a, pair_b))
    scale = max(float(np.max(np.abs(b))) for pair in reference for b in pair)
    return diff / scale


def moved(initial: list, final: list) -> float:
    """How far training moved the parameters (relative), so a test cannot pass by nothing happening."""
    return relative_difference(initial, final)


def sensitivity(reference, initial: list) -> float:
    """How far the reference itself moves when its initial weights change by 1e-15 (relative).

    A comparison to 1e-10 only means something where the training is well conditioned: with N(0, 1)
    weights (Nielsen) at large learning rates, saturated units and ReLU kinks amplify a last-bit
    difference by 1e5 or more within 24 steps, and two correct implementations part ways. Each float64
    test checks that its setting amplifies rounding by far less than its tolerance.
    """
    nudged = [(w * (1 + 1e-15), b) for w, b in initial]
    return relative_difference(reference(nudged), reference(initial))


# --- scikit-learn ------------------------------------------------------------------------------------------

SKLEARN_LR = 0.1
SKLEARN_ACTIVATION = {"relu": "relu", "sigmoid": "logistic", "tanh": "tanh"}


def run_sklearn(initial: list, activation: str) -> tuple[list, object]:
    """scikit-learn's MLPClassifier from `initial`, one partial_fit call per mini-batch; (final layers, model)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        activation=SKLEARN_ACTIVATION[activation],
        solver="sgd",
        learning_rate_init=SKLEARN_LR,
        batch_size="auto",  # min(200, n): each partial_fit call below takes its whole batch as one step
        shuffle=False,
        random_state=0,
    )  # alpha, momentum, nesterovs_momentum and learning_rate keep their defaults: that is the point
    (x0, y0), *_ = batches()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # The first call only builds the network (label binarizer, shapes, float64 parameters). Its step
        # is then undone: hpstudy's initial parameters are copied in and the optimizer is dropped, so the
        # next call starts a fresh SGDOptimizer with zero velocities, as fit() would.
        clf.partial_fit(float_inputs(x0), y0, classes=np.arange(10))
        clf.coefs_ = [w.copy() for w, _ in initial]
        clf.intercepts_ = [b.copy() for _, b in initial]
        del clf._optimizer
        for images, labels in batches():
            clf.partial_fit(float_inputs(images), labels)
    assert clf.coefs_[0].dtype == np.float64
    return [(w.copy(), b.copy()) for w, b in zip(clf.coefs_, clf.intercepts_)], clf


def assert_matches_reference(label: str, initial, ours, reference, run_reference, precision: str) -> None:
    """The reference really trained (and, in float64, is a deterministic function of its start), and our
    parameters equal its within the precision's tolerance."""
    assert moved(initial, reference) > 1e-3
    if precision == "float64":
        assert sensitivity(run_reference, initial) < 1e-12
    rel = relative_difference(ours, reference)
    print(f"{label} {precision}: max relative difference {rel:.3e}")
    assert rel < TOLERANCE[precision]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_sklearn_flavour_matches_mlpclassifier(activation, precision):
    config = flavour_config("sklearn", activation, SKLEARN_LR)
    initial, ours = run_hpstudy(config, precision)
    reference, clf = run_sklearn(initial, activation)
    # The reference really runs scikit-learn's defaults, and the flavour claims the same ones.
    assert (clf.alpha, clf.momentum, clf.nesterovs_momentum, clf.learning_rate) == (1e-4, 0.9, True, "constant")
    assert (config.l2, config.momentum, config.optimizer) == (1e-4, 0.9, "sgd_nesterov")
    assert clf.out_activation_ == "softmax" and clf.loss == "log_loss"
    assert_matches_reference(
        f"sklearn {activation}", initial, ours, reference, lambda start: run_sklearn(start, activation)[0], precision
    )


@pytest.mark.parametrize(
    "override",
    [{"l2": 0.0}, {"optimizer": "sgd_momentum"}, {"momentum": 0.0}, {"momentum": 0.8}],
    ids=["without-l2", "momentum-not-nesterov", "without-momentum", "wrong-momentum"],
)
def test_sklearn_reference_detects_a_missing_l2_term_or_wrong_momentum(override):
    """Each of these mistakes moves the parameters by far more than the float64 tolerance."""
    _, right = run_hpstudy(flavour_config("sklearn", "tanh", SKLEARN_LR), "float64")
    initial, wrong = run_hpstudy(flavour_config("sklearn", "tanh", SKLEARN_LR, **override), "float64")
    reference, _ = run_sklearn(initial, "tanh")
    assert relative_difference(right, reference) < TOLERANCE["float64"]
    assert relative_difference(wrong, reference) > 1e3 * TOLERANCE["float64"]


# --- Nielsen's network.py ----------------------------------------------------------------------------------

# network.py's chapter-1 rate for sigmoid; smaller ones where N(0, 1) weights make tanh and ReLU training
# ill-conditioned at large rates (see `sensitivity`): 0.1 is the paper's best tanh rate.
NIELSEN_LR = {"sigmoid": 3.0, "tanh": 0.1, "relu": 0.01}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _sigmoid_prime(z):
    return _sigmoid(z) * (1 - _sigmoid(z))


NIELSEN_HIDDEN = {  # (activation, its derivative) of the hidden layers in the study's modified copy
    "sigmoid": (_sigmoid, _sigmoid_prime),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
}


class NielsenNetwork:
    """network.py's Network, with its column-vector conventions (weights[l] has shape (out, in))."""

    def __init__(self, layers: list, activation: str):
        self.weights = [w.T.copy() for w, _ in layers]
        self.biases = [b.reshape(-1, 1).copy() for _, b in layers]
        self.act, self.act_prime = NIELSEN_HIDDEN[activation]

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation, activations, zs = x, [x], []
        last = len(self.weights) - 1
        for layer, (b, w) in enumerate(zip(self.biases, self.weights)):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = _sigmoid(z) if layer == last else self.act(z)  # sigmoid output layer
            activations.append(activation)
        delta = (activations[-1] - y) * _sigmoid_prime(zs[-1])  # quadratic cost's derivative
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, len(self.weights) + 1):  # noqa: E741 - network.py's own name
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * self.act_prime(zs[-l])
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w

    def layers(self) -> list:
        return [(w.T.copy(), b.ravel().copy()) for w, b in zip(self.weights, self.biases)]


def run_nielsen(initial: list, activation: str, eta: float) -> list:
    net = NielsenNetwork(initial, activation)
    for images, labels in batches():
        x = float_inputs(images)
        mini_batch = [(x[i].reshape(784, 1), np.eye(10)[labels[i]].reshape(10, 1)) for i in range(len(labels))]
        net.update_mini_batch(mini_batch, eta)
    return net.layers()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nielsen_flavour_matches_network_py(activation, precision):
    lr = NIELSEN_LR[activation]
    config = flavour_config("nielsen", activation, lr)
    assert (config.init, config.loss, config.optimizer, config.l2) == ("nielsen", "sigmoid_quadratic", "sgd", 0.0)
    initial, ours = run_hpstudy(config, precision)
    reference = run_nielsen(initial, activation, lr)
    assert_matches_reference(
        f"nielsen {activation}", initial, ours, reference, lambda start: run_nielsen(start, activation, lr), precision
    )


def test_nielsen_reference_detects_a_mean_versus_sum_mistake():
    """Stepping on the summed instead of the mean gradient (eta not divided by the batch) is caught."""
    lr = NIELSEN_LR["sigmoid"]
    initial, ours = run_hpstudy(flavour_config("nielsen", "sigmoid", lr), "float64")
    assert relative_difference(ours, run_nielsen(initial, "sigmoid", lr)) < TOLERANCE["float64"]
    assert relative_difference(ours, run_nielsen(initial, "sigmoid", lr * 1.01)) > 1e3 * TOLERANCE["float64"]


# --- Keras 3 (JAX backend) -------------------------------------------------------------------------------

# Learning rates exactly representable in float32, so a float32 learning-rate variable inside Keras
# cannot differ from hpstudy's float64 one.
KERAS_LR = {"adam_keras": 2.0**-10, "sgd": 0.125}
# In float64, Keras 3 computes Adam's bias-correction powers from the betas as given, while 'adam_keras' (TF
# Keras' rule, the bits of the shipped runs) takes them from the betas' float32 roundings; 'keras:adam' is
# Keras 3's rule. The same steps in float32 (tests/test_optim_config.py), so the float32 runs compare
# 'adam_keras' itself, and the float64 runs compare 'keras:adam' and check that 'adam_keras' is off by that
# rounding alone.
KERAS3_OPTIMIZER = {"adam_keras": "keras:adam", "sgd": "sgd"}


def keras3():
    """Keras 3 on the JAX backend (the test extra installs keras), or skip with the reason."""
    keras = pytest.importorskip("keras", reason="keras is not installed: the Keras fidelity tests train the real Keras")
    if keras.backend.backend() != "jax":
        pytest.skip(f"Keras runs on the {keras.backend.backend()} backend here; these tests need KERAS_BACKEND=jax")
    return keras


@functools.cache
def keras_model(activation: str, optimizer: str):
    """The float64 Keras model and optimizer of one setting, built (and its train step compiled) once per
    process; `run_keras` resets its weights and optimizer state before every run."""
    keras = keras3()
    model = keras.Sequential(
        [keras.Input(shape=(784,), dtype="float64")]
        + [keras.layers.Dense(w, activation=activation) for w in HIDDEN]
        + [keras.layers.Dense(10)]
    )
    if optimizer == "adam_keras":
        opt = keras.optimizers.Adam(learning_rate=KERAS_LR[optimizer])  # beta 0.9/0.999, epsilon 1e-7
        assert opt.epsilon == 1e-7
    else:
        opt = keras.optimizers.SGD(learning_rate=KERAS_LR[optimizer])  # momentum 0, no Nesterov
        assert opt.momentum == 0.0 and not opt.nesterov
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def run_keras(initial: list, activation: str, optimizer: str) -> list:
    """Keras 3 (JAX backend) in float64 from `initial`, one train_on_batch call per mini-batch."""
    keras3()
    from tests.test_fidelity_model import keras_float64  # float64 all through, restored afterwards

    with keras_float64():
        model = keras_model(activation, optimizer)
        model.set_weights([a for layer in initial for a in layer])
        for v in model.optimizer.variables:  # a fresh optimizer: step 0, zero moments, the same rate
            if v is not model.optimizer._learning_rate:
                v.assign(np.zeros(v.shape, v.dtype))
        assert float(model.optimizer.learning_rate) == KERAS_LR[optimizer]
        for images, labels in batches():
            model.train_on_batch(float_inputs(images), labels)
        weights = [np.asarray(w) for w in model.get_weights()]
        assert all(w.dtype == np.float64 for w in weights)
    return [(weights[i], weights[i + 1]) for i in range(0, len(weights), 2)]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("optimizer", tuple(KERAS_LR))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_keras_flavour_matches_keras(activation, optimizer, precision):
    keras3()
    name = KERAS3_OPTIMIZER[optimizer] if precision == "float64" else optimizer
    config = flavour_config("keras", activation, KERAS_LR[optimizer], optimizer=name)
    assert (config.init, config.loss) == ("keras", "softmax_cross_entropy")
    initial, ours = run_hpstudy(config, precision)
    reference = run_keras(initial, activation, optimizer)
    assert_matches_reference(
        f"keras {name} {activation}",
        initial,
        ours,
        reference,
        lambda start: run_keras(start, activation, optimizer),
        precision,
    )
    if optimizer == "adam_keras" and precision == "float64":
        # TF Keras' float32-rounded betas in the bias correction: off by that rounding, not by a rule
        _, tf_rule = run_hpstudy(dataclasses.replace(config, optimizer="adam_keras"), precision)
        assert TOLERANCE["float64"] < relative_difference(tf_rule, reference) < TOLERANCE["float32"]
        # Optax's Adam (epsilon added to the bias-corrected second moment) is visibly different.
        _, optax_adam = run_hpstudy(dataclasses.replace(config, optimizer="adam"), precision)
        assert relative_difference(optax_adam, reference) > 1e3 * TOLERANCE["float64"]


def test_x64_mode_does_not_leak_out_of_these_tests():
    """The float64 runs above switch x64 on only inside a context manager: the engine stays float32."""
    run_hpstudy(flavour_config("nielsen", "sigmoid", NIELSEN_LR["sigmoid"]), "float64")
    assert jnp.dtype(float_dtype()) == jnp.float32
    assert jnp.zeros(1).dtype == jnp.float32
