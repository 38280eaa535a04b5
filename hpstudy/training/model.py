"""The MLP (Flax linen), its initializers, losses and metrics.

Linen rather than NNX: linen modules are stateless descriptions whose `init`/`apply` are pure
functions of explicit parameter pytrees and keys, which is exactly what jit + vmap over runs needs;
NNX's mutable objects would have to be split back into pytrees at every vmap boundary.

In numerics mode "fixed-order" (hpstudy/training/numerics.py) the dense layers (`FixedOrderDense`), the loss's
log-softmax and sums (`per_example_loss`, `batch_loss_sum`, `mean_loss`) and the accuracy counts
(`correct_count`) use hpstudy/training/fixed_order.py; in mode "portable-v2" the dense layers' weight gradients
are computed from a materialised transpose (`TransposedGradDense`); in every other mode they are the code they
always were.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpstudy.config import ACTIVATIONS, INITS, LOSSES
from hpstudy.errors import EngineError
from hpstudy.flavours import keras as keras_flavour
from hpstudy.flavours import nielsen as nielsen_flavour
from hpstudy.flavours import pytorch as pytorch_flavour
from hpstudy.flavours import sklearn as sklearn_flavour
from hpstudy.training import fixed_order as fo
from hpstudy.training import numerics

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,  # alpha 1 (Keras' elu, PyTorch's nn.ELU)
    "selu": jax.nn.selu,  # Klambauer et al.'s alpha and scale, as Keras and PyTorch
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact (erf): Keras' and nn.GELU's default
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # the tanh approximation
    "softplus": jax.nn.softplus,  # log(1 + exp(x)); the pytorch flavour uses nn.Softplus's threshold
    "silu": jax.nn.silu,  # x * sigmoid(x), Keras' swish
    "identity": lambda x: x,  # Keras' "linear"
}
# The activation whose slope `negative_slope` sets (the flavour's library default when unset).
LEAKY_RELU = "leaky_relu"
assert set(ACTIVATIONS) == {*ACTIVATION_FNS, LEAKY_RELU}, "config.ACTIVATIONS names the activations defined here"
# Each library's own definition where it differs from hpstudy's (the flavour's ACTIVATIONS table).
FLAVOUR_MODULES = {"keras": keras_flavour, "pytorch": pytorch_flavour}


def activation_fn(name: str, flavour: str = "keras", negative_slope: float | None = None) -> Callable:
    """The hidden activation `name` as the flavour's library defines it."""
    module = FLAVOUR_MODULES.get(flavour)
    if name == LEAKY_RELU:
        slope = negative_slope if negative_slope is not None else getattr(module, "LEAKY_RELU_SLOPE", None)
        if slope is None:
            raise ValueError(
                f"activation 'leaky_relu' with flavour {flavour!r} needs negative_slope (no library default)."
            )
        return functools.partial(jax.nn.leaky_relu, negative_slope=slope)
    overrides = getattr(module, "ACTIVATIONS", {})
    return overrides.get(name, ACTIVATION_FNS[name])


def float_dtype() -> jnp.dtype:
    """float64 when JAX's x64 mode is on (fidelity tests), else float32."""
    return jnp.result_type(float)


def _uniform(bound: float) -> Callable:
    """Initializer drawing U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# Library-neutral schemes: (variance scale, fan mode, distribution) of jax.nn.initializers.variance_scaling,
# the arithmetic of Keras' VarianceScaling (truncated normal: the Keras constant 0.87962566 corrects the
# standard deviation) and of torch.nn.init's xavier_/kaiming_ functions (their "normal" is untruncated).
VARIANCE_SCALING = {
    f"{family}_{dist}": (scale, mode, dist)
    for family, scale, mode in (("glorot", 1.0, "fan_avg"), ("he", 2.0, "fan_in"), ("lecun", 1.0, "fan_in"))
    for dist in ("uniform", "normal", "truncated_normal")
}
assert set(INITS) == {"keras", "sklearn", "nielsen", "pytorch", *VARIANCE_SCALING, "orthogonal"}
# How each scheme's spread depends on the layer's fans (the padded-width rescaling in engine.py needs it):
# "avg": sqrt(1 / (fan_in + fan_out)), "in": sqrt(1 / fan_in), None: not at all (Nielsen's N(0, 1)).
FAN_MODE = {
    "keras": "avg",
    "sklearn": "avg",
    "nielsen": None,
    "pytorch": "in",
    **{name: "avg" if mode == "fan_avg" else "in" for name, (_, mode, _) in VARIANCE_SCALING.items()},
}


def initializers(scheme: str, fan_in: int, fan_out: int, activation: str) -> tuple[Callable, Callable]:
    """(kernel_init, bias_init) of one layer for the scheme (docs/studies.md lists each)."""
    if scheme == "keras":  # Dense defaults: glorot_uniform kernel, zero bias
        return nn.initializers.glorot_uniform(), nn.initializers.zeros
    if scheme == "sklearn":  # MLPClassifier: U(-b, b) for weights and biases
        bound = sklearn_flavour.init_bound(fan_in, fan_out, activation)
        return _uniform(bound), _uniform(bound)
    if scheme == "nielsen":  # network.py: np.random.randn for every weight and bias
        return nn.initializers.normal(nielsen_flavour.INIT_STDDEV), nn.initializers.normal(nielsen_flavour.INIT_STDDEV)
    if scheme == "pytorch":  # nn.Linear's reset_parameters: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
        bound = pytorch_flavour.linear_bound(fan_in)
        return _uniform(bound), _uniform(bound)
    if scheme in VARIANCE_SCALING:  # Keras' initialisers of these names: zero biases, as Dense's default
        scale, mode, dist = VARIANCE_SCALING[scheme]
        return nn.initializers.variance_scaling(scale, mode, dist), nn.initializers.zeros
    if scheme == "orthogonal":  # Keras' Orthogonal(gain=1), torch's orthogonal_(gain=1): Haar-distributed
        return nn.initializers.orthogonal(), nn.initializers.zeros
    raise ValueError(f"init={scheme!r} is unknown; expected one of {', '.join(INITS)}.")


def dropout_mask(rate: jax.Array, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Which units a dropout layer keeps (True: kept), drawn with probability 1 - rate."""
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def dropout(x: jax.Array, rate: jax.Array, key: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """Inverted dropout with a traced rate (rate 0 is the identity), as Keras applies it; the mask is drawn
    from `key`, or given (drawn beforehand by `dropout_mask` with the same key: the same values)."""
    keep = 1.0 - rate
    if mask is None:
        mask = dropout_mask(rate, key, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class BatchNorm(nn.Module):
    """Batch normalisation of one hidden layer with a library's conventions (`flavour`: keras or pytorch):
    a learned scale and bias (params), running mean and variance (the 'batch_stats' collection). In
    training, the batch's real rows (`mask`) give the statistics and the running ones are updated; in
    evaluation, the running ones are used."""

    flavour: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        lib = FLAVOUR_MODULES[self.flavour]
        dtype, width = x.dtype, x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (width,), dtype)
        bias = self.param("bias", nn.initializers.zeros, (width,), dtype)
        mean = self.variable("batch_stats", "mean", jnp.zeros, (width,), dtype)
        var = self.variable("batch_stats", "var", jnp.ones, (width,), dtype)
        if not train:
            return lib.normalise(x, mean.value, var.value, scale, bias)
        mask = jnp.ones(x.shape[:1], dtype) if mask is None else mask.astype(dtype)
        y, new_mean, new_var = lib.batch_norm_train(x, mask, scale, bias, mean.value, var.value)
        if not self.is_initializing():
            mean.value, var.value = new_mean, new_var
        return y


def fixed_order_on(fixed: bool | None = None) -> bool:
    """`fixed`, or when None whether this process trains in numerics mode "fixed-order" (read at trace time)."""
    return numerics.fixed_order_active() if fixed is None else fixed


# What fixed-order mode does not write in fixed order yet: their sums (batch statistics, gradient norms) are
# XLA reductions, whose order depends on the vector width. Refused rather than trained with other bits.
FIXED_ORDER_UNSUPPORTED = {
    "batch_norm": "none",
    "clip_grad_norm": None,
    "max_norm": None,
}


def check_fixed_order(config) -> None:
    """Refuse, naming the setting, a configuration fixed-order mode cannot train in fixed order."""
    for field, plain in FIXED_ORDER_UNSUPPORTED.items():
        value = getattr(config, field, plain)
        if value != plain:
            raise EngineError(
                f"{field}={value!r} is not supported in numerics mode 'fixed-order' (its sums are XLA reductions, "
                f"whose order depends on the CPU); expected {field}={plain!r}, or another numerics mode."
            )


class DenseParams(nn.Module):
    """nn.Dense's fields and parameters (the same names, shapes and initialisers, so the same initial values);
    the layers below differ from nn.Dense only in how they compute with them."""

    features: int
    kernel_init: Callable
    bias_init: Callable
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def inputs_and_params(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(x, kernel, bias) in the layer's dtype, the parameters created as nn.Dense creates them."""
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        return x, kernel, bias


class FixedOrderDense(DenseParams):
    """nn.Dense with the product and the bias gradient in a fixed order (fixed_order.dot, fixed_order.add_bias)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = self.inputs_and_params(x)
        return fo.add_bias(fo.dot(x, kernel), bias)


@jax.custom_vjp
def transposed_grad_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel (nn.Dense's product), whose weight gradient multiplies a materialised x^T (`_tgd_bwd`)."""
    return x @ kernel


def _tgd_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _tgd_bwd(residuals, g):
    # Autodiff would contract x and g over the batch (x^T @ g with x transposed in place), a form YNNPACK's
    # dot does not take, so it went to Eigen's kernel at a third of the speed. The barrier keeps XLA from
    # folding the transpose back into the product: x^T is written out, then YNNPACK multiplies it.
    x, kernel = residuals
    xt = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)
    return g @ kernel.T, xt @ g.reshape(-1, g.shape[-1])


transposed_grad_dot.defvjp(_tgd_fwd, _tgd_bwd)


class TransposedGradDense(DenseParams):
    """nn.Dense's forward values, with the weight gradient computed by `transposed_grad_dot` (numerics mode
    portable-v2)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = self.inputs_and_params(x)
        return transposed_grad_dot(x, kernel) + bias


class MLP(nn.Module):
    """Dense layers with an activation, optional batch normalisation and dropout after each hidden layer,
    optional dropout on the input; returns pre-activations of the output layer (logits)."""

    hidden: Sequence[int]
    activation: str
    init_scheme: str
    n_out: int = 10
    flavour: str = "keras"
    negative_slope: float | None = None
    input_dropout: float = 0.0
    layer_dropout: tuple[float, ...] | None = None  # per hidden layer, instead of the traced `rate`
    batch_norm: str = "none"
    fixed_order: bool | None = None  # FixedOrderDense layers (None: whether the process's mode is fixed-order)

    def dense(self, index: int, width: int, k_init: Callable, b_init: Callable, dtype) -> nn.Module:
        """Dense layer `index` (named Dense_<index>, as Flax names nn.Dense layers in order)."""
        if fixed_order_on(self.fixed_order):
            return FixedOrderDense(width, k_init, b_init, dtype, dtype, name=f"Dense_{index}")
        if numerics.transposed_grads_active():
            return TransposedGradDense(width, k_init, b_init, dtype, dtype, name=f"Dense_{index}")
        return nn.Dense(width, kernel_init=k_init, bias_init=b_init, dtype=dtype, param_dtype=dtype)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        rate: jax.Array | float = 0.0,
        train: bool = False,
        masks: tuple | None = None,
        example_mask: jax.Array | None = None,
        use_dropout: bool | None = None,
    ) -> jax.Array:
        """train: training mode (dropout layers and batch statistics). use_dropout=False leaves the dropout
        layers out in training mode (a program for runs without dropout; default: train). masks: the
        dropout masks of the hidden layers (then the input's), drawn beforehand from `dropout_keys` (the
        same values as drawing them here); otherwise each dropout layer draws its own from the same key
        sequence. example_mask: the batch's real rows, for batch statistics."""
        dropout_on = train if use_dropout is None else use_dropout
        act = activation_fn(self.activation, self.flavour, self.negative_slope)
        dtype = float_dtype()
        if dropout_on:
            keys = self.dropout_keys() if masks is None else None

            def drop(i, x, rate):  # dropout layer i (the hidden layers', then the input's)
                return dropout(x, rate, mask=masks[i]) if masks is not None else dropout(x, rate, keys[i])

            if self.input_dropout:
                x = drop(len(self.hidden), x, self.input_dropout)
        for i, width in enumerate(self.hidden):
            k_init, b_init = initializers(self.init_scheme, x.shape[-1], width, self.activation)
            x = self.dense(i, width, k_init, b_init, dtype)(x)
            if self.batch_norm == "before_activation":
                x = BatchNorm(self.flavour)(x, train, example_mask)
            x = act(x)
            if self.batch_norm == "after_activation":
                x = BatchNorm(self.flavour)(x, train, example_mask)
            if dropout_on:
                x = drop(i, x, rate if self.layer_dropout is None else self.layer_dropout[i])
        k_init, b_init = initializers(self.init_scheme, x.shape[-1], self.n_out, self.activation)
        return self.dense(len(self.hidden), self.n_out, k_init, b_init, dtype)(x)

    def dropout_keys(self) -> tuple:
        """The keys `__call__` draws its dropout masks from: the hidden layers' in layer order, then the
        input's (only with input dropout, so that runs without it keep their keys), one `make_rng` each."""
        return tuple(self.make_rng("dropout") for _ in range(len(self.hidden) + bool(self.input_dropout)))


@jax.custom_vjp
def pick(values: jax.Array, labels: jax.Array) -> jax.Array:
    """values[i, labels[i]] for every row i (take_along_axis), with a cheaper gradient (see _pick_bwd)."""
    return jnp.take_along_axis(values, labels[:, None], axis=-1)[:, 0]


def _pick_fwd(values, labels):
    return pick(values, labels), (labels, values)


def _pick_bwd(residuals, g):
    """The incoming gradient placed at each row's label by a product with one-hot labels: the same values
    as the scatter-add that take_along_axis differentiates to (zeros elsewhere), but an elementwise
    product, where XLA:CPU runs a scatter as a slow serial loop inside every training step."""
    labels, values = residuals
    return g[:, None] * jax.nn.one_hot(labels, values.shape[-1], dtype=values.dtype), None


pick.defvjp(_pick_fwd, _pick_bwd)


def per_example_loss(
    kind: str, outputs: jax.Array, labels: jax.Array, label_smoothing: float = 0.0, fixed: bool | None = None
) -> jax.Array:
    """Loss of each example from the output layer's pre-activations `outputs` and integer labels.

    softmax_cross_entropy: on logits; with label smoothing e the targets are (1 - e) * one_hot + e / K, as
      Keras' CategoricalCrossentropy(label_smoothing=e) and PyTorch's CrossEntropyLoss(label_smoothing=e).
    sigmoid_quadratic: Nielsen's quadratic cost 0.5 * ||sigmoid(z) - y||^2.
    mse: mean over the K outputs of (z - y)^2 on the raw (linear) outputs: Keras' MeanSquaredError after a
      linear Dense(10), nn.MSELoss() on one-hot targets (its mean over batch and outputs is the same).
    softmax_mse: the same on softmax(z): Keras' Dense(10, activation="softmax") with loss="mse".
    fixed (default: whether the process's numerics mode is fixed-order): log-softmax and the sums over the
    outputs in a fixed order (`_fixed_order_loss`).
    """
    if fixed_order_on(fixed):
        return _fixed_order_loss(kind, outputs, labels, label_smoothing)
    if kind == "softmax_cross_entropy":
        log_p = jax.nn.log_softmax(outputs)
        if not label_smoothing:
            return -pick(log_p, labels)
        k = outputs.shape[-1]
        targets = jax.nn.one_hot(labels, k, dtype=outputs.dtype) * (1.0 - label_smoothing) + label_smoothing / k
        return -jnp.sum(targets * log_p, axis=-1)
    onehot = jax.nn.one_hot(labels, outputs.shape[-1], dtype=outputs.dtype)
    if kind == "sigmoid_quadratic":
        return 0.5 * jnp.sum((jax.nn.sigmoid(outputs) - onehot) ** 2, axis=-1)
    if kind == "mse":
        return jnp.mean(jnp.square(outputs - onehot), axis=-1)
    if kind == "softmax_mse":
        return jnp.mean(jnp.square(jax.nn.softmax(outputs) - onehot), axis=-1)
    raise ValueError(f"loss={kind!r} is unknown; expected one of {', '.join(LOSSES)}.")


def _fixed_order_loss(kind: str, outputs: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """`per_example_loss` with log-softmax and every sum over the outputs in a fixed order (fixed_order.py)."""
    k = outputs.shape[-1]
    if kind == "softmax_cross_entropy":
        log_p = fo.log_softmax(outputs)
        if not label_smoothing:
            return -pick(log_p, labels)
        targets = jax.nn.one_hot(labels, k, dtype=outputs.dtype) * (1.0 - label_smoothing) + label_smoothing / k
        return -fo.sum(targets * log_p, axis=-1)
    onehot = jax.nn.one_hot(labels, k, dtype=outputs.dtype)
    if kind == "sigmoid_quadratic":
        return 0.5 * fo.sum((jax.nn.sigmoid(outputs) - onehot) ** 2, axis=-1)
    if kind == "mse":
        return fo.sum(jnp.square(outputs - onehot), axis=-1) / k
    if kind == "softmax_mse":
        return fo.sum(jnp.square(jnp.exp(fo.log_softmax(outputs)) - onehot), axis=-1) / k
    raise ValueError(f"loss={kind!r} is unknown; expected one of {', '.join(LOSSES)}.")


def batch_loss_sum(
    kind: str,
    outputs: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    label_smoothing: float = 0.0,
    fixed: bool | None = None,
) -> jax.Array:
    """The sum over a batch's real examples (`mask`) of their losses; in fixed-order mode summed in a fixed order."""
    losses = per_example_loss(kind, outputs, labels, label_smoothing, fixed) * mask
    return fo.sum(losses, axis=0) if fixed_order_on(fixed) else jnp.sum(losses)


def mean_loss(
    kind: str, outputs: jax.Array, labels: jax.Array, label_smoothing: float = 0.0, fixed: bool | None = None
) -> jax.Array:
    """The mean loss over a whole split (engine.evaluate); in fixed-order mode summed in a fixed order."""
    losses = per_example_loss(kind, outputs, labels, label_smoothing, fixed)
    return fo.sum(losses, axis=0) / losses.shape[0] if fixed_order_on(fixed) else jnp.mean(losses)


def correct_count(outputs: jax.Array, labels: jax.Array, mask: jax.Array, fixed: bool | None = None) -> jax.Array:
    """How many real examples (`mask`) the outputs classify correctly, as a float; in fixed-order mode summed in
    a fixed order (a sum of zeros and ones below 2**24 is exact in any order, so the bits are the same)."""
    hits = (jnp.argmax(outputs, -1) == labels) * mask
    return fo.sum(hits, axis=0) if fixed_order_on(fixed) else jnp.sum(hits)


def l2_penalty(params, fixed: bool | None = None) -> jax.Array:
    """0.5 * sum of squared kernel weights (biases excluded), scikit-learn's alpha term before scaling; in
    fixed-order mode each kernel summed in a fixed order (over its rows, then its columns)."""
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(path[-1])]
    if fixed_order_on(fixed):
        return 0.5 * sum(fo.sum(fo.sum(k * k, axis=0), axis=0) for k in kernels)
    return 0.5 * sum(jnp.sum(k * k) for k in kernels)


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 pixels to floats in [0, 1], on the device."""
    return images.astype(float_dtype()) / 255.0
