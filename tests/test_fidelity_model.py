"""Model-side fidelity against the real Keras 3 (JAX backend): activations, dropout placement, losses,
batch normalisation and initialisers, each as Keras defines it.

Training comparisons follow tests/test_fidelity.py: from identical initial parameters (hpstudy's own, copied
into Keras) and identical mini-batches, hpstudy's `train_step` and Keras' `train_on_batch` take the same
steps in float64 (JAX's x64 mode, only inside these tests); the largest parameter difference, relative to the
largest parameter, must stay below 1e-10. Dropout masks are random: Keras' own dropout code runs, with the
key its seed generator would supply replaced by the key hpstudy's layer uses (the mask draw itself,
jax.random.bernoulli(key, 1 - rate, shape), is Keras' code). Initialisers draw from different random
streams, so their distributions are compared instead: many draws of Keras' initialiser against many of
hpstudy's, a two-sample Kolmogorov-Smirnov test, plus the bounds and variance each library documents.

The whole module is skipped where Keras 3 is not importable (it is in the `test` extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip(
    "keras", reason="Keras 3 is not installed (pip install keras): these tests need the real Keras"
)
if keras.backend.backend() != "jax":
    pytest.skip("Keras runs on another backend here; these tests need KERAS_BACKEND=jax", allow_module_level=True)

from test_fidelity import (  # noqa: E402
    BATCH,
    HIDDEN,
    INIT_KEY,
    TOLERANCE,
    batches,
    float_inputs,
    layers_of,
    relative_difference,
)

from hpstudy import preprocessing  # noqa: E402
from hpstudy.config import ACTIVATIONS, RunConfig  # noqa: E402
from hpstudy.training import model as hmodel  # noqa: E402
from hpstudy.training.engine import MLP, Hyper, evaluate, init_run, model_of, train_step  # noqa: E402

LR = 0.125  # exactly representable, plain SGD (Keras' SGD(momentum=0))
TOL = TOLERANCE["float64"]
DROPOUT_ROOT = np.array([7, 11], np.uint32)


def keras_config(activation: str = "relu", **override) -> RunConfig:
    """A keras-flavour configuration of the test network, trained with plain SGD."""
    settings = dict(
        flavour="keras",
        hidden=HIDDEN,
        activation=activation,
        init="keras",
        loss="softmax_cross_entropy",
        optimizer="sgd",
        learning_rate=LR,
        batch_size=BATCH,
    )
    return RunConfig(**{**settings, **override})


def step_key(i: int) -> jax.Array:
    """The dropout key of step i in these tests."""
    return jax.random.fold_in(jnp.asarray(DROPOUT_ROOT), i)


@dataclasses.dataclass
class Trained:
    """Initial and final parameters (as layers), final batch statistics and evaluation-mode outputs."""

    initial: list
    final: list
    stats: list
    outputs: np.ndarray


def padded(images, labels):
    """A (possibly partial) batch padded to BATCH rows, with its mask (as the engine pads it)."""
    k = len(labels)
    x = np.zeros((BATCH, 784), np.float64)
    y = np.zeros(BATCH, np.int32)
    x[:k], y[:k] = float_inputs(images), labels
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray((np.arange(BATCH) < k).astype(np.float64))


def stats_of(batch_stats) -> list:
    """[(mean, var)] per batch-normalisation layer, in order."""
    if batch_stats is None:
        return []
    names = sorted(batch_stats, key=lambda n: int(n.split("_")[-1]))
    return [(np.asarray(batch_stats[n]["mean"]), np.asarray(batch_stats[n]["var"])) for n in names]


def run_hpstudy(config: RunConfig, stream: list, rate: float = 0.0) -> Trained:
    """hpstudy's train_step over `stream` in float64 (step i's dropout key: step_key(i))."""
    with jax.enable_x64(True):
        hp = Hyper(jnp.asarray(config.learning_rate), jnp.asarray(rate))
        state = init_run(config, jnp.asarray(INIT_KEY), hp)
        params, opt_state, bstats = state.params, state.opt_state, state.batch_stats
        initial = [*dense_layers(params), *bn_layers(params)]
        step = jax.jit(functools.partial(train_step, config))
        for i, (images, labels) in enumerate(stream):
            x, y, mask = padded(images, labels)
            out = step(params, opt_state, x, y, mask, jnp.asarray(rate), step_key(i), batch_stats=bstats)
            params, opt_state = out[0], out[1]
            bstats = out[4] if bstats is not None else None
        probe = float_inputs(stream[0][0])
        variables = {"params": params} | ({"batch_stats": bstats} if bstats is not None else {})
        outputs = np.asarray(model_of(config).apply(variables, jnp.asarray(probe)))
        return Trained(initial, [*dense_layers(params), *bn_layers(params)], stats_of(bstats), outputs)


def dense_layers(params) -> list:
    """[(kernel, bias)] per Dense layer (batch normalisation's parameters left out)."""
    return layers_of({n: p for n, p in params.items() if n.startswith("Dense")})


def bn_layers(params) -> list:
    """[(scale, bias)] per batch-normalisation layer, as float64 arrays."""
    names = sorted((n for n in params if n.startswith("BatchNorm")), key=lambda n: int(n.split("_")[-1]))
    return [(np.asarray(params[n]["scale"], np.float64), np.asarray(params[n]["bias"], np.float64)) for n in names]


def keras_activation(name: str, negative_slope: float | None):
    """The Keras layer a hidden activation is in a Keras model."""
    if name == "leaky_relu":  # the layer (slope 0.3) unless a slope is given
        return (
            keras.layers.LeakyReLU()
            if negative_slope is None
            else keras.layers.Activation(functools.partial(keras.activations.leaky_relu, negative_slope=negative_slope))
        )
    if name == "gelu_tanh":
        return keras.layers.Activation(functools.partial(keras.activations.gelu, approximate=True))
    return keras.layers.Activation({"silu": "swish", "identity": "linear"}.get(name, name))


@contextlib.contextmanager
def keras_float64():
    """Keras with float64 variables and computations and JAX's x64 mode on: floatx and the global dtype
    policy (which Keras otherwise fixes at its first use), and Keras' type promotion let keep float64.

    Keras 3 on a non-TensorFlow backend maps float64 to float32 in its type promotion
    (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE: "aligned with JAX's default behavior"), so
    every op that promotes (tanh, mean, BatchNormalization, ...) would compute in float32 inside a float64
    model, as TensorFlow's Keras does not. Lifting that map changes precision only, never Keras' arithmetic.
    """
    from keras.src.backend.common import dtypes as keras_dtypes

    previous, policy = keras.config.floatx(), keras.config.dtype_policy()
    downcast = keras_dtypes.BIT64_TO_BIT32_DTYPE["float64"]
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    keras_dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
    try:
        with jax.enable_x64(True):
            yield
    finally:
        keras_dtypes.BIT64_TO_BIT32_DTYPE["float64"] = downcast
        keras.config.set_floatx(previous)
        keras.config.set_dtype_policy(policy)


@contextlib.contextmanager
def keras_dropout_keys(config: RunConfig, params, n_steps: int, rate: float):
    """Keras' dropout layers draw their masks, in forward order, from the keys hpstudy's layers use (Keras
    has no dropout layer where the rate is 0; hpstudy's draws a mask that keeps everything)."""
    from keras.src.backend.jax import random as keras_random

    queue = []
    module = model_of(config)
    n_hidden = len(config.hidden)
    rates = list(config.layer_dropout or (rate,) * n_hidden) + [config.input_dropout]
    order = [n_hidden, *range(n_hidden)]  # Keras runs the input's dropout first
    for i in range(n_steps):
        keys = module.apply({"params": params}, method=MLP.dropout_keys, rngs={"dropout": step_key(i)})
        queue.extend(keys[j] for j in order if j < len(keys) and rates[j])
    original = keras_random.jax_draw_seed
    keras_random.jax_draw_seed = lambda seed: queue.pop(0)
    try:
        yield queue
    finally:
        keras_random.jax_draw_seed = original


def run_keras(
    config: RunConfig,
    initial: list,
    stream: list,
    loss=None,
    output_activation=None,
    rate: float = 0.0,
    hpstudy_params=None,
) -> Trained:
    """The same network in Keras 3 (float64), one train_on_batch per mini-batch; `loss` makes the Keras loss
    (inside the float64 setting: a Keras loss computes in the dtype policy of its construction)."""
    with keras_float64():
        keras.utils.set_random_seed(0)
        layers = [keras.Input(shape=(784,), dtype="float64")]
        if config.input_dropout:
            layers.append(keras.layers.Dropout(config.input_dropout))
        rates = config.layer_dropout or (rate,) * len(config.hidden)
        for width, layer_rate in zip(config.hidden, rates):
            layers.append(keras.layers.Dense(width))
            if config.batch_norm == "before_activation":
                layers.append(keras.layers.BatchNormalization())
            layers.append(keras_activation(config.activation, config.negative_slope))
            if config.batch_norm == "after_activation":
                layers.append(keras.layers.BatchNormalization())
            if layer_rate:
                layers.append(keras.layers.Dropout(layer_rate))
        layers.append(keras.layers.Dense(10, activation=output_activation))
        model = keras.Sequential(layers)
        dropping = bool(config.input_dropout or rate or any(config.layer_dropout or ()))
        loss = (loss or functools.partial(keras.losses.SparseCategoricalCrossentropy, from_logits=True))()
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR), loss=loss, run_eagerly=dropping)
        dense, norms = initial[: len(config.hidden) + 1], initial[len(config.hidden) + 1 :]
        weights = []
        for i, (w, b) in enumerate(dense):
            weights += [w, b]
            if i < len(norms):
                weights += [norms[i][0], norms[i][1], np.zeros_like(w[0]), np.ones_like(w[0])]
        model.set_weights(weights)
        one_hot = isinstance(loss, (keras.losses.CategoricalCrossentropy, keras.losses.MeanSquaredError))
        guard = keras_dropout_keys(config, hpstudy_params, len(stream), rate) if dropping else contextlib.nullcontext()
        with guard as queue:
            for images, labels in stream:
                model.train_on_batch(float_inputs(images), np.eye(10)[labels] if one_hot else labels)
        if dropping:
            assert queue == [], "Keras drew exactly the dropout masks hpstudy drew"
        got = [np.asarray(w, np.float64) for w in model.get_weights()]
        outputs = np.asarray(model(float_inputs(stream[0][0]), training=False))
        if output_activation == "softmax":  # hpstudy's outputs are the logits
            outputs = np.log(outputs)
    dense_out, norm_out, stats = [], [], []
    k = 0
    for i in range(len(config.hidden) + 1):
        dense_out.append((got[k], got[k + 1]))
        k += 2
        if i < len(norms):
            norm_out.append((got[k], got[k + 1]))
            stats.append((got[k + 2], got[k + 3]))
            k += 4
    return Trained(initial, dense_out + norm_out, stats, outputs)


def compare(ours: Trained, ref: Trained, label: str) -> float:
    """Relative parameter difference after training (asserting both trained), with the statistics' too."""
    assert relative_difference(ref.initial, ref.final) > 1e-3, "the reference really trained"
    rel = relative_difference(ours.final, ref.final)
    if ref.stats:
        rel = max(rel, relative_difference(ours.stats, ref.stats))
    print(f"{label}: max relative difference {rel:.3e}")
    return rel


def initial_params(config: RunConfig):
    """hpstudy's initial parameters of a configuration (float64)."""
    with jax.enable_x64(True):
        hp = Hyper(jnp.asarray(config.learning_rate), jnp.asarray(0.0))
        return init_run(config, jnp.asarray(INIT_KEY), hp).params


# --- activations ------------------------------------------------------------------------------------------

KERAS_ACTIVATIONS = ACTIVATIONS  # every activation a study may name is trained against Keras


@pytest.mark.parametrize("activation", KERAS_ACTIVATIONS)
def test_keras_activations_train_the_same_steps(activation):
    config = keras_config(activation)
    ours = run_hpstudy(config, batches())
    ref = run_keras(config, ours.initial, batches())
    assert compare(ours, ref, f"keras {activation}") < TOL
    np.testing.assert_allclose(ours.outputs, ref.outputs, rtol=0, atol=TOL * np.abs(ref.outputs).max())


def test_keras_float64_setting_is_needed_and_complete():
    """Outside `keras_float64`, Keras' tanh of float64 is float32 (the promotion map); inside, float64."""
    x = np.linspace(-3, 3, 7)
    with jax.enable_x64(True):
        assert np.asarray(keras.activations.tanh(x)).dtype == np.float32
    with keras_float64():
        y = np.asarray(keras.activations.tanh(x))
    assert y.dtype == np.float64 and np.abs(y - np.tanh(x)).max() < 1e-15


def test_keras_leaky_relu_slopes_layer_and_string():
    """LeakyReLU() slopes 0.3 (the flavour's default); activation="leaky_relu" is 0.2 (negative_slope = 0.2)."""
    layer = keras.layers.LeakyReLU()
    assert layer.negative_slope == 0.3
    x = np.array([-2.0, 3.0])
    np.testing.assert_allclose(np.asarray(keras.activations.get("leaky_relu")(x)), [-0.4, 3.0])
    config = keras_config("leaky_relu", negative_slope=0.2)
    ours = run_hpstudy(config, batches())
    assert compare(ours, run_keras(config, ours.initial, batches()), "keras leaky_relu 0.2") < TOL
    # the wrong slope is caught: hpstudy's default (0.3) against Keras at 0.2
    wrong = run_hpstudy(keras_config("leaky_relu"), batches())
    assert relative_difference(wrong.final, run_keras(config, wrong.initial, batches()).final) > 1e3 * TOL


# --- losses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.2])
def test_keras_label_smoothing(smoothing):
    config = keras_config("elu", label_smoothing=smoothing)
    ours = run_hpstudy(config, batches())
    loss = functools.partial(keras.losses.CategoricalCrossentropy, from_logits=True, label_smoothing=smoothing)
    ref = run_keras(config, ours.initial, batches(), loss=loss)
    assert compare(ours, ref, f"keras label smoothing {smoothing}") < TOL
    plain = run_hpstudy(keras_config("elu"), batches())
    assert relative_difference(plain.final, ref.final) > 1e3 * TOL


@pytest.mark.parametrize("loss, output_activation", [("mse", None), ("softmax_mse", "softmax")])
def test_keras_mean_squared_error(loss, output_activation):
    """mse: MeanSquaredError on a linear output layer; softmax_mse: on Dense(10, activation='softmax')."""
    config = keras_config("elu", loss=loss)
    ours = run_hpstudy(config, batches())
    ref = run_keras(
        config, ours.initial, batches(), loss=keras.losses.MeanSquaredError, output_activation=output_activation
    )
    assert compare(ours, ref, f"keras {loss}") < TOL
    np.testing.assert_allclose(
        ours.outputs - ours.outputs.mean(-1, keepdims=True),
        ref.outputs - ref.outputs.mean(-1, keepdims=True),
        rtol=0,
        atol=1e-9,
    )


# --- dropout ----------------------------------------------------------------------------------------------

FULL = batches()[:-1]  # full batches only: a mask drawn for 9 rows is not the first 9 rows of one for 16


@pytest.mark.parametrize(
    "override, rate",
    [
        ({}, 0.25),
        ({"input_dropout": 0.2}, 0.0),
        ({"input_dropout": 0.1, "layer_dropout": (0.3, 0.0)}, 0.0),
    ],
    ids=["hidden", "input", "input-and-per-layer"],
)
def test_keras_dropout_placement_and_masks(override, rate):
    config = keras_config("relu", **override)
    params = initial_params(config)
    ours = run_hpstudy(config, FULL, rate=rate)
    ref = run_keras(config, ours.initial, FULL, rate=rate, hpstudy_params=params)
    assert compare(ours, ref, f"keras dropout {override} {rate}") < TOL
    without = run_hpstudy(dataclasses.replace(config, input_dropout=0.0, layer_dropout=None), FULL)
    assert relative_difference(without.final, ref.final) > 1e3 * TOL


# --- batch normalisation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("place", ["before_activation", "after_activation"])
def test_keras_batch_normalisation(place):
    """Train mode on every batch (the partial last one included: its real rows only), moving statistics with
    momentum 0.99 and the biased variance, epsilon 1e-3, evaluation mode on the moving statistics."""
    config = keras_config("relu", batch_norm=place)
    ours = run_hpstudy(config, batches())
    ref = run_keras(config, ours.initial, batches())
    assert compare(ours, ref, f"keras batch norm {place}") < TOL
    np.testing.assert_allclose(ours.outputs, ref.outputs, rtol=0, atol=TOL * np.abs(ref.outputs).max())
    # PyTorch's conventions (momentum 0.1, eps 1e-5, unbiased running variance) are visibly different
    torch_like = run_hpstudy(dataclasses.replace(config, flavour="pytorch"), batches())
    assert relative_difference(torch_like.stats, ref.stats) > 1e3 * TOL


def test_batch_norm_evaluation_uses_running_statistics():
    """evaluate() (the engine's) uses the stored statistics: changing them changes the loss."""
    config = keras_config("relu", batch_norm="before_activation")
    with jax.enable_x64(True):
        state = init_run(config, jnp.asarray(INIT_KEY), Hyper(jnp.asarray(LR), jnp.asarray(0.0)))
        images = (np.arange(4 * 784) % 251).astype(np.uint8).reshape(4, 784)
        labels = jnp.arange(4)
        stats = preprocessing.on_device(preprocessing.statistics(images))
        base = evaluate(config, state.params, images, labels, stats, state.batch_stats)
        shifted = jax.tree.map(lambda a: a + 0.5, state.batch_stats)
        assert float(evaluate(config, state.params, images, labels, stats, shifted)[0]) != float(base[0])


# --- initialisers -----------------------------------------------------------------------------------------

KERAS_INITIALIZERS = {  # hpstudy's scheme -> Keras' initialiser of the same distribution
    "keras": "glorot_uniform",
    "glorot_uniform": "glorot_uniform",
    "glorot_truncated_normal": "glorot_normal",  # Keras' "normal" schemes are truncated
    "he_uniform": "he_uniform",
    "he_truncated_normal": "he_normal",
    "lecun_uniform": "lecun_uniform",
    "lecun_truncated_normal": "lecun_normal",
    "orthogonal": "orthogonal",
}
FAN_IN, FAN_OUT = 300, 100


def hpstudy_kernel(scheme: str, seed: int, shape=(FAN_IN, FAN_OUT)) -> np.ndarray:
    """One kernel drawn by hpstudy's initialiser of `scheme`."""
    kernel_init, _ = hmodel.initializers(scheme, shape[0], shape[1], "relu")
    return np.asarray(kernel_init(jax.random.key(seed), shape, jnp.float32))


@pytest.mark.parametrize("scheme", tuple(KERAS_INITIALIZERS))
def test_keras_initialisers_draw_the_same_distribution(scheme):
    ours = np.concatenate([hpstudy_kernel(scheme, s).ravel() for s in range(4)])
    kind = type(keras.initializers.get(KERAS_INITIALIZERS[scheme]))
    theirs = np.concatenate(
        [np.asarray(kind(seed=100 + s)((FAN_IN, FAN_OUT), dtype="float32"), np.float64).ravel() for s in range(4)]
    )
    assert abs(ours.std() / theirs.std() - 1) < 0.02
    assert abs(np.abs(ours).max() / np.abs(theirs).max() - 1) < 0.05
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    # and a wrong scale is seen by the same test
    assert stats.ks_2samp(ours * 1.1, theirs).pvalue < 1e-6


def test_truncated_normal_keeps_keras_variance_and_bounds():
    """Keras' VarianceScaling truncated normal: stddev sqrt(scale / fan) / 0.87962566, cut at two of those."""
    from hpstudy.flavours import keras as keras_flavour

    kernel = hpstudy_kernel("he_truncated_normal", 0, (FAN_IN, 2000)).astype(np.float64)
    sigma = np.sqrt(2.0 / FAN_IN)
    assert abs(kernel.std() / sigma - 1) < 0.01
    assert np.abs(kernel).max() <= 2 * sigma / keras_flavour.TRUNCATED_NORMAL_CORRECTION * (1 + 1e-6)
    untruncated = hpstudy_kernel("he_normal", 0, (FAN_IN, 2000))
    assert abs(untruncated.std() / sigma - 1) < 0.01
    assert np.abs(untruncated).max() > 2.5 * sigma  # the untruncated (PyTorch kaiming_normal_) has tails


def test_orthogonal_kernels_are_orthogonal():
    kernel = hpstudy_kernel("orthogonal", 3).astype(np.float64)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(FAN_OUT), atol=1e-5)
