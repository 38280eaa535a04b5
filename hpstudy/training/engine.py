"""The training engine: pure per-run functions, vmapped over a fixed-width chunk of runs, jitted.

Reproducibility rests on four rules (see docs/design.md):
- a run's keys come from its own identity (configuration + seed), never from its position;
- runs are executed in chunks of a fixed width chosen from the compile group's static shapes only,
  padded with dummy runs, so the compiled program, and so every run's bits, never depends on how
  many runs a study has or which runs share a chunk;
- every epoch is one jitted lax.scan over mini-batches; the Python loop over epochs only sequences
  calls of the same compiled program;
- the process that runs these programs is pinned to one core (hpstudy/training/parallel.py), because XLA:CPU
  splits work by the number of cores it may use.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpstudy import preprocessing
from hpstudy.config import EarlyStopping, RunConfig, key_digest
from hpstudy.data import Dataset, shape_of
from hpstudy.runs import HISTORY_FIELDS, RunResult, RunSpec  # noqa: F401 - RunSpec: part of this module's API
from hpstudy.training import numerics
from hpstudy.training.compilation import use_unrolled_threefry
from hpstudy.training.model import (
    FAN_MODE,
    MLP,
    batch_loss_sum,
    check_fixed_order,
    correct_count,
    dropout_mask,
    float_dtype,
    l2_penalty,
    mean_loss,
)
from hpstudy.training.optimizers import optimizer_for
from hpstudy.training.schedules import at_epoch, at_epoch_end, epoch_end_rule

# Every program this module compiles lowers Threefry without loops on CPU: the same bits, faster (see
# hpstudy/training/compilation.py).
use_unrolled_threefry()


class Hyper(NamedTuple):
    """Traced per-run hyperparameters; `units`: the real hidden widths of a padded run (None without
    padding, so that the programs of unpadded groups have exactly the inputs they always had)."""

    learning_rate: jax.Array
    dropout: jax.Array
    units: jax.Array | None = None


class DeviceData(NamedTuple):
    """The dataset on the device: images stay uint8, labels int32; the training images' statistics for
    preprocessing (hpstudy/preprocessing.py)."""

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    stats: preprocessing.InputStats


class RunState(NamedTuple):
    """Everything one run carries from epoch to epoch."""

    params: dict
    opt_state: optax.OptState
    best_params: dict | None
    best: jax.Array  # best monitored value so far, sign-flipped so that lower is better
    wait: jax.Array
    stopped: jax.Array
    epochs_run: jax.Array
    best_epoch: jax.Array
    data_key: jax.Array
    dropout_key: jax.Array
    # Validation loss and accuracy of the last epoch trained, and of the best epoch: when the validation
    # set is the test set, these are the final test metrics and `finalize` need not evaluate again.
    val: tuple | None = None
    best_val: tuple | None = None
    # Running batch-normalisation statistics (None without batch normalisation), and the best epoch's.
    batch_stats: dict | None = None
    best_batch_stats: dict | None = None


class EpochMetrics(NamedTuple):
    """Per-epoch metrics of one run; train metrics are running means over the epoch's batches, as Keras reports."""

    train_loss: jax.Array
    train_accuracy: jax.Array
    val_loss: jax.Array
    val_accuracy: jax.Array


assert EpochMetrics._fields == HISTORY_FIELDS, "the store's history columns follow the engine's metrics"


def model_of(config: RunConfig) -> MLP:
    """The Flax module a configuration describes (as many outputs as its dataset has classes); in numerics
    mode "fixed-order" its dense layers and losses are fixed-order ones (model.py), and a configuration with
    parts the mode does not cover is refused."""
    if numerics.fixed_order_active():
        check_fixed_order(config)
    return MLP(
        hidden=tuple(config.hidden),
        activation=config.activation,
        init_scheme=config.init,
        flavour=config.flavour,
        negative_slope=config.negative_slope,
        input_dropout=config.input_dropout,
        layer_dropout=config.layer_dropout,
        batch_norm=config.batch_norm,
        n_out=shape_of(config.dataset).classes,
    )


def root_key(config: RunConfig, seed: int) -> np.ndarray:
    """The run's root PRNG key (raw uint32[2]): the first 8 bytes of config.key_digest (its configuration and
    seed, or with common random numbers its seed index alone)."""
    return np.frombuffer(key_digest(config, seed)[:8], dtype="<u4").astype(np.uint32)


def mask_padded_units(config: RunConfig, params: dict, units: jax.Array) -> dict:
    """Initial parameters of a padded run: each layer's draw rescaled from the padded fans to the real ones
    (Glorot's and scikit-learn's bounds depend on them; Nielsen's normal draw does not), and every weight
    and bias of a masked unit zero. Under ReLU or tanh a unit with zero weights in and out and a zero bias
    outputs 0 and gets zero gradients, so it stays zero: the run trains the real network."""
    widths = [units[i] for i in range(len(config.hidden))]
    out = {}
    for k in range(len(config.hidden) + 1):
        layer = params[f"Dense_{k}"]
        pad_in, pad_out = layer["kernel"].shape
        real_in = pad_in if k == 0 else widths[k - 1]  # the inputs are never padded
        real_out = widths[k] if k < len(widths) else pad_out
        dtype = layer["kernel"].dtype
        mode = FAN_MODE[config.init]
        if mode is None:
            scale = jnp.ones((), dtype)
        elif mode == "avg":
            scale = jnp.sqrt(jnp.asarray(pad_in + pad_out, dtype) / jnp.asarray(real_in + real_out).astype(dtype))
        else:  # fan_in schemes (He, LeCun, PyTorch's nn.Linear)
            scale = jnp.sqrt(jnp.asarray(pad_in, dtype) / jnp.asarray(real_in).astype(dtype))
        rows = jnp.arange(pad_in) < real_in
        cols = jnp.arange(pad_out) < real_out
        out[f"Dense_{k}"] = {
            "kernel": jnp.where(rows[:, None] & cols[None, :], layer["kernel"] * scale, 0.0).astype(dtype),
            "bias": jnp.where(cols, layer["bias"] * scale, 0.0).astype(dtype),
        }
    return out


def real_params(params: dict, hidden: Sequence[int]) -> dict:
    """The real network inside a padded run's parameters (the masked units cut away)."""
    widths = (params["Dense_0"]["kernel"].shape[0], *hidden, params[f"Dense_{len(hidden)}"]["kernel"].shape[1])
    return {
        f"Dense_{k}": {
            "kernel": params[f"Dense_{k}"]["kernel"][: widths[k], : widths[k + 1]],
            "bias": params[f"Dense_{k}"]["bias"][: widths[k + 1]],
        }
        for k in range(len(hidden) + 1)
    }


def init_run(config: RunConfig, key: jax.Array, hp: Hyper) -> RunState:
    """Initial parameters, optimizer state and early-stopping state of one run."""
    init_key, data_key, dropout_key = jax.random.split(key, 3)
    inputs = shape_of(config.dataset).inputs
    variables = model_of(config).init(init_key, jnp.zeros((1, inputs), float_dtype()))
    params, batch_stats = variables["params"], variables.get("batch_stats")
    if config.pad_hidden is not None:
        params = mask_padded_units(config, params, hp.units)
    opt_state = optimizer_for(config, hp.learning_rate).init(params)
    keep_best = config.early_stopping is not None and config.early_stopping.restore_best_weights
    dtype = jax.tree.leaves(params)[0].dtype
    nan = jnp.array(jnp.nan, dtype)
    return RunState(
        params=params,
        opt_state=opt_state,
        best_params=params if keep_best else None,
        best=jnp.array(jnp.inf, dtype),
        wait=jnp.array(0, jnp.int32),
        stopped=jnp.array(False),
        epochs_run=jnp.array(0, jnp.int32),
        best_epoch=jnp.array(-1, jnp.int32),
        data_key=data_key,
        dropout_key=dropout_key,
        val=(nan, nan),
        best_val=(nan, nan) if keep_best else None,
        batch_stats=batch_stats,
        best_batch_stats=batch_stats if keep_best else None,
    )


def forward_train(config: RunConfig, params, x, mask, rate, key, dropout: bool, masks, batch_stats):
    """The model's outputs in training mode, and its updated batch statistics (None without batch
    normalisation, whose layers are in training mode even in a program without dropout layers)."""
    model = model_of(config)
    if batch_stats is None:
        out = model.apply({"params": params}, x, rate, train=dropout, masks=masks, rngs={"dropout": key})
        return out, None
    out, updated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        rate,
        train=True,
        masks=masks,
        example_mask=mask,
        use_dropout=dropout,
        rngs={"dropout": key},
        mutable=["batch_stats"],
    )
    return out, updated["batch_stats"]


def objective(config: RunConfig, params, x, y, mask, rate, key, dropout: bool = True, masks=None, batch_stats=None):
    """Mean loss over the batch's real examples (plus scikit-learn's scaled L2 term); aux: (outputs, new
    batch statistics).

    dropout=False leaves the dropout layers out: the same values as rate 0 (which keeps every unit and
    divides by 1.0), without drawing masks nobody needs. masks: dropout masks drawn beforehand from
    `key` (see `step_dropout_masks`); the same values as drawing them inside the model.
    """
    out, new_stats = forward_train(config, params, x, mask, rate, key, dropout, masks, batch_stats)
    count = jnp.sum(mask)
    loss = batch_loss_sum(config.loss, out, y, mask, config.label_smoothing) / count
    if config.l2:
        loss = loss + config.l2 * l2_penalty(params) / count
    if config.kernel_l2:  # Keras' kernel_regularizer=L2(kernel_l2): kernel_l2 * sum(w^2), not scaled by the batch
        loss = loss + config.kernel_l2 * 2 * l2_penalty(params)
    return loss, (out, new_stats)


def train_step(
    config: RunConfig, params, opt_state, x, y, mask, rate, key, dropout: bool = True, masks=None, batch_stats=None
):
    """One optimizer step on one mini-batch of floats; returns (params, opt_state, loss * count, correct),
    followed by the updated batch statistics when the model has batch normalisation (batch_stats given)."""
    (loss, (out, new_stats)), grads = jax.value_and_grad(objective, argnums=1, has_aux=True)(
        config, params, x, y, mask, rate, key, dropout, masks, batch_stats
    )
    tx = optimizer_for(config)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    correct = correct_count(out, y, mask)
    if batch_stats is not None:
        return params, opt_state, loss * jnp.sum(mask), correct, new_stats
    return params, opt_state, loss * jnp.sum(mask), correct


def step_dropout_masks(config: RunConfig, params, rate: jax.Array, key: jax.Array) -> tuple:
    """The dropout masks one training step uses with this step key: the model's own key sequence
    (`MLP.dropout_keys`), drawn as its dropout layers draw them."""
    model = model_of(config)
    keys = model.apply({"params": params}, method=MLP.dropout_keys, rngs={"dropout": key})
    rates = [rate] * len(config.hidden) if config.layer_dropout is None else list(config.layer_dropout)
    widths = [params[f"Dense_{i}"]["kernel"].shape[1] for i in range(len(config.hidden))]
    if config.input_dropout:  # the input's mask comes after the hidden layers' (`MLP.dropout_keys`)
        rates.append(config.input_dropout)
        widths.append(params["Dense_0"]["kernel"].shape[0])
    return tuple(dropout_mask(r, k, (config.batch_size, w)) for k, r, w in zip(keys, rates, widths))


def evaluate(
    config: RunConfig, params, images, labels, stats: preprocessing.InputStats, batch_stats=None
) -> tuple[jax.Array, jax.Array]:
    """Mean loss and accuracy on a whole split, without dropout (batch normalisation in evaluation mode:
    the running statistics)."""
    variables = {"params": params} if batch_stats is None else {"params": params, "batch_stats": batch_stats}
    out = model_of(config).apply(variables, preprocessing.apply(config.preprocessing, images, stats))
    loss = mean_loss(config.loss, out, labels, config.label_smoothing)  # fixed-order in that mode
    if numerics.fixed_order_active():
        return loss, correct_count(out, labels, jnp.ones_like(labels)) / labels.shape[0]
    return loss, jnp.mean(jnp.argmax(out, -1) == labels)


def epoch_batches(config: RunConfig, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """This epoch's shuffled indices as (steps, batch) plus a mask; the last batch may be partial, as in Keras,
    or is left out with drop_last (PyTorch's DataLoader(drop_last=True))."""
    b = config.batch_size
    if config.drop_last:
        perm = jax.random.permutation(key, n).astype(jnp.int32)
        steps = n // b
        return perm[: steps * b].reshape(steps, b), jnp.ones((steps, b), jnp.float32)
    steps = -(-n // b)
    perm = jax.random.permutation(key, n).astype(jnp.int32)
    padded = jnp.concatenate([perm, jnp.zeros(steps * b - n, jnp.int32)])
    mask = (jnp.arange(steps * b) < n).astype(jnp.float32)
    return padded.reshape(steps, b), mask.reshape(steps, b)


def early_stopping_update(es: EarlyStopping, state: RunState, metrics: EpochMetrics, epoch: jax.Array):
    """(improved, new best, new wait, stop now) under Keras' or scikit-learn's rule."""
    value = getattr(metrics, es.monitor)
    value = -value if es.monitor.endswith("accuracy") else value  # lower is better from here on
    if es.rule == "keras":
        improved = value + es.min_delta < state.best  # Keras: monitor_op(current - min_delta, best)
        best = jnp.where(improved, value, state.best)
        wait = jnp.where(improved, 0, state.wait + 1)
        stop = (~improved) & (wait >= es.patience) & (epoch > 0)
    else:  # scikit-learn's _update_no_improvement_count
        improved = value < state.best
        wait = jnp.where(value > state.best - es.min_delta, state.wait + 1, 0)
        best = jnp.minimum(value, state.best)
        stop = wait > es.patience
    return improved, best.astype(state.best.dtype), wait.astype(jnp.int32), stop


def select(flag: jax.Array, if_true, if_false):
    """Pytree-wise jnp.where on a scalar flag."""
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), if_true, if_false)


def train_epoch(
    config: RunConfig, state: RunState, hp: Hyper, data: DeviceData, epoch: jax.Array, dropout: bool = True
):
    """One epoch of one run: shuffled mini-batches in a lax.scan, evaluation, early stopping; a stopped run stays frozen.

    dropout=False compiles the epoch without dropout layers, for chunks whose runs all have rate 0.
    """
    n = data.x_train.shape[0]
    idx, mask = epoch_batches(config, jax.random.fold_in(state.data_key, epoch), n)
    # Every step's dropout key in one vectorised hash before the loop: the same keys as folding the
    # step index in at each step, without a key derivation inside the loop.
    epoch_dropout_key = jax.random.fold_in(state.dropout_key, epoch)
    steps = idx.shape[0]
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(epoch_dropout_key, jnp.arange(steps + 1))

    def masks_of(key):  # this step's dropout masks, drawn ahead (see below); () without dropout
        return step_dropout_masks(config, state.params, hp.dropout, key) if dropout else ()

    # Each step draws the dropout masks of the next step and carries them over. Drawn inside the step,
    # XLA fuses the mask's hash into both of its consumers (the forward and the backward pass) and so
    # computes it twice; carried, it is computed once and read twice. The same keys, the same masks.
    # The batch statistics ride in the carry only with batch normalisation, so that the programs of runs
    # without it are the ones they always were.
    def step(carry, batch):
        params, opt_state, loss_sum, correct_sum, masks, *stats = carry
        key, next_key, b_idx, b_mask = batch
        # one gather of uint8 rows, fused with the conversion
        x = preprocessing.apply(config.preprocessing, data.x_train[b_idx], data.stats)
        y = data.y_train[b_idx]
        params, opt_state, loss, correct, *stats = train_step(
            config, params, opt_state, x, y, b_mask, hp.dropout, key, dropout, masks if dropout else None, *stats
        )
        return (params, opt_state, loss_sum + loss, correct_sum + correct, masks_of(next_key), *stats), None

    dtype = state.best.dtype
    zero = jnp.zeros((), dtype)
    opt_state = at_epoch(state.opt_state, epoch, n)  # a schedule's epoch (unchanged without one)
    stats = () if state.batch_stats is None else (state.batch_stats,)
    (params, opt_state, loss_sum, correct_sum, _, *stats), _ = jax.lax.scan(
        step,
        (state.params, opt_state, zero, zero, masks_of(step_keys[0]), *stats),
        (step_keys[:-1], step_keys[1:], idx, mask),
    )
    batch_stats = stats[0] if stats else None
    val_loss, val_acc = evaluate(config, params, data.x_val, data.y_val, data.stats, batch_stats)
    val_acc = val_acc.astype(dtype)
    trained = idx.size if config.drop_last else n  # the examples this epoch's steps saw
    metrics = EpochMetrics(loss_sum / trained, correct_sum / trained, val_loss, val_acc)
    new = state._replace(
        params=params,
        opt_state=opt_state,
        epochs_run=state.epochs_run + 1,
        val=(val_loss, val_acc),
        batch_stats=batch_stats,
    )
    es = config.early_stopping
    acts_at_epoch_end = epoch_end_rule(config.schedule) is not None  # sklearn:adaptive (decided at trace time)
    if es is None and acts_at_epoch_end:
        raise ValueError(
            f"schedule {config.schedule!r} needs early_stopping with rule 'sklearn' (its no-improvement rule)"
        )
    if es is not None:
        improved, best, wait, stop = early_stopping_update(es, state, metrics, epoch)
        if acts_at_epoch_end:  # divide the rate where the rule would stop
            opt_state, wait, stop = at_epoch_end(config.schedule, opt_state, wait, stop)
            new = new._replace(opt_state=opt_state)
        new = new._replace(best=best, wait=wait, stopped=stop, best_epoch=jnp.where(improved, epoch, state.best_epoch))
        if es.restore_best_weights:
            new = new._replace(
                best_params=select(improved, params, state.best_params),
                best_val=select(improved, (val_loss, val_acc), state.best_val),
                best_batch_stats=select(improved, batch_stats, state.best_batch_stats),
            )
    return select(state.stopped, state, new), metrics


def finalize(config: RunConfig, state: RunState, data: DeviceData, val_is_test: bool = False):
    """Final parameters (best ones if restoring; with batch normalisation, the running statistics under
    'batch_stats' beside them) and their test loss and accuracy.

    val_is_test: the validation set is the test set (the grid and three-implementation studies), so the
    final parameters were already evaluated on it at the end of their epoch; those metrics are returned
    instead of evaluating the same parameters on the same images again.
    """
    params, batch_stats = state.params, state.batch_stats
    es = config.early_stopping
    restoring = es is not None and es.restore_best_weights
    if restoring:
        params = select(state.best_epoch >= 0, state.best_params, params)
        batch_stats = select(state.best_epoch >= 0, state.best_batch_stats, batch_stats)
    if val_is_test:
        test_loss, test_acc = select(state.best_epoch >= 0, state.best_val, state.val) if restoring else state.val
    else:
        test_loss, test_acc = evaluate(config, params, data.x_test, data.y_test, data.stats, batch_stats)
    if batch_stats is not None:
        params = {**params, "batch_stats": batch_stats}
    return params, test_loss, test_acc


def test_predictions(config: RunConfig, params, images, stats: preprocessing.InputStats) -> jax.Array:
    """The predicted class of every test image (uint8), from the final parameters (with batch normalisation,
    its running statistics, kept beside them by `finalize`), without dropout."""
    variables = {"params": {k: v for k, v in params.items() if k != "batch_stats"}}
    if "batch_stats" in params:
        variables["batch_stats"] = params["batch_stats"]
    out = model_of(config).apply(variables, preprocessing.apply(config.preprocessing, images, stats))
    return jnp.argmax(out, -1).astype(jnp.uint8)


CHUNK_WORK = 8e6  # multiply-adds per chunk step the width rule aims at
CHUNK_MIN, CHUNK_MAX = 1, 4
# On a GPU (or TPU) a chunk should fill the device: about 1 G multiply-adds per chunk step, a power of two
# in [8, 256] (the grid network at batch 32 gets 256, at batch 128 64). A first design, NOT yet measured:
# to be set by benchmarks/engine.py on a GPU (docs/scaling.md); no CPU result depends on it.
GPU_CHUNK_WORK = 1e9
GPU_CHUNK_MIN, GPU_CHUNK_MAX = 8, 256


def chunk_width(config: RunConfig, platform: str = "cpu") -> int:
    """Runs per vmapped chunk, from the group's static shapes and the device kind only (never from the
    number of runs).

    On the CPU (`platform="cpu"`): about 8 M multiply-adds per chunk step, a power of two in [1, 4].
    Measured in single-core processes (hpstudy/training/parallel.py) on the 2-core machine (docs/design.md): the
    grid network at batch 32 trains fastest per core at width 2 (about 30% more model-steps/s than at 1 or
    4; at 8 its parameters, gradients and Adam moments fall out of cache); the 30-unit network of study 001 at batch
    10 is as fast at 4 as at 1 and slower at 8 (XLA:CPU's batched small matrix products gain nothing from
    width on one core); under portable numerics it is about 20% faster at 1 (docs/design.md), a change of
    rule left for a re-make of the runs it would change. Narrow chunks also waste less on padding and on
    runs that stopped early.
    On an accelerator (any other JAX platform: "gpu", "tpu"): the wider GPU rule above. The width is
    recorded with every run: it is part of a result's identity, like the device kind.
    """
    shape = shape_of(config.dataset)
    sizes = (shape.inputs, *config.hidden, shape.classes)
    work = config.batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    target, low, high = (
        (CHUNK_WORK, CHUNK_MIN, CHUNK_MAX) if platform == "cpu" else (GPU_CHUNK_WORK, GPU_CHUNK_MIN, GPU_CHUNK_MAX)
    )
    width = 2 ** int(math.floor(math.log2(max(1.0, target / work))))
    return int(min(high, max(low, width)))


def device_chunk_width(config: RunConfig) -> int:
    """`chunk_width` for the device this process trains on (JAX's default backend)."""
    return chunk_width(config, jax.default_backend())


def param_hash(params) -> str:
    """SHA-256 over every parameter's path, dtype, shape and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda t: jax.tree_util.keystr(t[0])):
        arr = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def device_data(dataset: Dataset) -> DeviceData:
    """Put a dataset on the default device once (images as uint8).

    Where the validation split is the test split, both fields hold the same device arrays, which is how
    `execute` knows the final test evaluation would repeat the last validation one.
    """
    val = dataset.validation
    x_val = val.images if val is not None else np.zeros((0, dataset.train.images.shape[1]), np.uint8)
    y_val = val.labels if val is not None else np.zeros((0,), np.uint8)
    x_train, y_train = jnp.asarray(dataset.train.images), jnp.asarray(dataset.train.labels, jnp.int32)
    x_test, y_test = jnp.asarray(dataset.test.images), jnp.asarray(dataset.test.labels, jnp.int32)
    stats = preprocessing.on_device(preprocessing.statistics(dataset.train.images))
    if val is dataset.test:
        return DeviceData(x_train, y_train, x_test, y_test, x_test, y_test, stats)
    return DeviceData(x_train, y_train, jnp.asarray(x_val), jnp.asarray(y_val, jnp.int32), x_test, y_test, stats)


def validation_is_test(data: DeviceData) -> bool:
    """Whether the validation split is the test split (the same device arrays)."""
    return data.x_val is data.x_test and data.y_val is data.y_test


# Evaluation images, one copy per lane. Shared by all lanes (in_axes None), jax.vmap turns a layer's
# product into ONE product over every run's columns (rows x inputs @ inputs x width*units), and the kernel then
# gives a run's columns other bits in slot 0, in slot 1 and alone (docs/reproducibility.md, "Evaluation
# values and a run's slot"). With a copy per lane each run gets a product of its own, batched over the
# lanes: a run's values are those of the same run in any slot, beside any runs. The training images need
# no copy: each lane gathers its own batches.
PER_LANE = DeviceData(x_train=None, y_train=None, x_val=0, y_val=None, x_test=0, y_test=None, stats=None)


def lanes_of(images: jax.Array, width: int) -> jax.Array:
    """`images` once per lane (a broadcast: XLA materialises it only where a consumer needs it)."""
    return jnp.broadcast_to(images, (width, *images.shape))


def per_lane(data: DeviceData, width: int) -> DeviceData:
    """`data` with its evaluation images once per lane, to be vmapped with in_axes PER_LANE."""
    return data._replace(x_val=lanes_of(data.x_val, width), x_test=lanes_of(data.x_test, width))


class ChunkProgram:
    """The compiled functions of one compile group at one chunk width (see `program_for`).

    dropout=False: every run of the chunk has dropout rate 0, so the program leaves the dropout layers
    out (the same values, no masks drawn). val_is_test: the final test metrics are the last validation
    metrics (see `finalize`).
    """

    def __init__(
        self, static: RunConfig, width: int, data: DeviceData, dropout: bool = True, val_is_test: bool = False
    ):
        self.width = width
        self.dropout = dropout
        self.val_is_test = val_is_test
        self.compile_seconds = 0.0
        start = time.perf_counter()
        keys = jnp.zeros((width, 2), jnp.uint32)
        units = jnp.zeros((width, len(static.hidden)), jnp.int32) if static.pad_hidden is not None else None
        hp = Hyper(jnp.zeros(width, float_dtype()), jnp.zeros(width, float_dtype()), units)
        init = jax.jit(jax.vmap(functools.partial(init_run, static)))
        self.init = init.lower(keys, hp).compile()
        state = jax.eval_shape(init, keys, hp)
        # the epoch index is per lane: a lane refilled with a new run starts at epoch 0 beside older runs
        epoch_fn = jax.vmap(functools.partial(train_epoch, static, dropout=dropout), in_axes=(0, 0, PER_LANE, 0))
        epoch = jax.jit(lambda s, h, d, e: epoch_fn(s, h, per_lane(d, width), e), donate_argnums=0)
        self.epoch = epoch.lower(state, hp, data, jnp.zeros(width, jnp.int32)).compile()
        final_fn = jax.vmap(functools.partial(finalize, static, val_is_test=val_is_test), in_axes=(0, PER_LANE))
        final = jax.jit(lambda s, d: final_fn(s, per_lane(d, width)))
        self.final = final.lower(state, data).compile()
        # A program of its own, so that `final`, and every value it gives, stays exactly what it was.
        predict_fn = jax.vmap(functools.partial(test_predictions, static), in_axes=(0, 0, None))
        predict = jax.jit(lambda p, images, stats: predict_fn(p, lanes_of(images, width), stats))
        self.predict = predict.lower(jax.eval_shape(final, state, data)[0], data.x_test, data.stats).compile()
        self.compile_seconds = time.perf_counter() - start


def _lanes(specs: Sequence[RunSpec]) -> tuple[jax.Array, Hyper]:
    """Root keys and traced hyperparameters of one run per lane."""
    dtype = float_dtype()
    keys = jnp.asarray(np.stack([root_key(s.config, s.seed) for s in specs]))
    padded = specs[0].config.pad_hidden is not None
    hp = Hyper(
        jnp.asarray([s.config.learning_rate for s in specs], dtype),
        jnp.asarray([s.config.dropout for s in specs], dtype),
        jnp.asarray([s.config.hidden for s in specs], jnp.int32) if padded else None,
    )
    return keys, hp


@jax.jit
def _splice(lanes: jax.Array, new, old):
    """Per lane (leading axis), take `new` where lanes is true, else `old`."""

    def one(a, b):
        return jnp.where(lanes.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(one, new, old)


def run_group(
    program: ChunkProgram,
    specs: Sequence[RunSpec],
    data: DeviceData,
    group_id: str,
    on_results: Callable[[list[RunResult]], None],
) -> None:
    """Train runs of one compile group through a chunk of `program.width` lanes, refilling lanes as runs end.

    A chunk no longer waits for its slowest run: after every epoch, each lane whose run has stopped early
    or trained its last epoch hands its result to `on_results` and takes the next waiting run, which starts
    at its own epoch 0 beside the older runs. A lane's computation never depends on the other lanes (the
    width is fixed), so every run's bits are those of the same run in any other chunk of this program;
    runs that stopped early no longer ride along in their chunk until its last run stops. Lanes left without a run near the end stay frozen.
    """
    width = program.width
    waiting = list(specs)
    lanes: list[RunSpec | None] = [waiting.pop(0) if waiting else None for _ in range(width)]
    filled = [s for s in lanes if s is not None]
    keys, hp = _lanes([s if s is not None else filled[-1] for s in lanes])
    state = program.init(keys, hp)
    epoch = np.zeros(width, np.int32)
    history: list[list] = [[] for _ in range(width)]
    seconds = np.zeros(width)
    labels = None  # the test labels on the host, fetched once when the first run finishes
    while any(s is not None for s in lanes):
        start = time.perf_counter()
        state, metrics = program.epoch(state, hp, data, jnp.asarray(epoch))
        metrics = jax.device_get(metrics)
        stopped = np.asarray(jax.device_get(state.stopped))
        active = [i for i, s in enumerate(lanes) if s is not None]
        for i in active:
            history[i].append({name: float(getattr(metrics, name)[i]) for name in EpochMetrics._fields})
            epoch[i] += 1
            seconds[i] += (time.perf_counter() - start) / len(active)
        done = [i for i in active if stopped[i] or epoch[i] >= lanes[i].config.epochs]
        if not done:
            continue
        start = time.perf_counter()
        final = program.final(state, data)
        params, test_loss, test_acc = jax.device_get(final)
        predicted = np.asarray(jax.device_get(program.predict(final[0], data.x_test, data.stats)))
        if labels is None:
            labels = np.asarray(jax.device_get(data.y_test))
        epochs_run = np.asarray(jax.device_get(state.epochs_run))
        best_epoch = np.asarray(jax.device_get(state.best_epoch))
        results = []
        for i in done:
            n = int(epochs_run[i])
            results.append(
                RunResult(
                    spec=lanes[i],
                    history={name: [h[name] for h in history[i][:n]] for name in EpochMetrics._fields},
                    epochs_run=n,
                    best_epoch=int(best_epoch[i]),
                    test_loss=float(test_loss[i]),
                    test_accuracy=float(test_acc[i]),
                    param_sha256=param_hash(_lane_params(params, i, lanes[i].config)),
                    chunk_width=width,
                    group_id=group_id,
                    seconds=float(seconds[i]) + (time.perf_counter() - start) / len(done),
                    compile_seconds=program.compile_seconds,
                    test_predictions=predicted[i].tobytes(),
                    test_correct=correct_bits(predicted[i], labels),
                )
            )
        # refill: a finished lane takes the next waiting run; one left empty is frozen where it is
        refill = np.zeros(width, bool)
        for i in done:
            lanes[i] = waiting.pop(0) if waiting else None
            history[i], seconds[i], epoch[i] = [], 0.0, 0
            refill[i] = lanes[i] is not None
        if refill.any():
            new_keys, new_hp = _lanes([s if s is not None else filled[-1] for s in lanes])
            fresh = program.init(new_keys, new_hp)
            mask = jnp.asarray(refill)
            state = _splice(mask, fresh, state)
            hp = _splice(mask, new_hp, hp)
        idle = np.array([s is None for s in lanes])
        if idle.any():  # freeze lanes that finished without a successor (a run at its last epoch is not 'stopped')
            state = state._replace(stopped=state.stopped | jnp.asarray(idle))
        on_results(results)


def correct_bits(predicted: np.ndarray, labels: np.ndarray) -> bytes:
    """Which test images a run classified correctly, one bit per image (np.packbits order, zero-padded)."""
    return np.packbits(predicted.astype(np.int64) == np.asarray(labels).astype(np.int64)).tobytes()


def _lane_params(params, lane: int, config: RunConfig) -> dict:
    """One lane's trained parameters, the masked units cut away for a padded run."""
    mine = jax.tree.map(lambda a: a[lane], params)
    return real_params(mine, config.hidden) if config.pad_hidden is not None else mine


@functools.lru_cache(maxsize=32)
def program_for(
    static: RunConfig, width: int, data_shapes: DeviceData, dropout: bool = True, val_is_test: bool = False
) -> ChunkProgram:
    """Compile once per (compile group, width, data shapes, variant) in a process; later studies reuse it."""
    return ChunkProgram(static, width, data_shapes, dropout, val_is_test)


def shapes_of(data: DeviceData) -> DeviceData:
    """The data's shapes and dtypes only (hashable, enough to compile against)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), data)


def check_shape(config: RunConfig, data: DeviceData) -> None:
    """Refuse data whose images or labels do not fit the network the configuration's dataset sizes."""
    shape = shape_of(config.dataset)
    if data.x_train.shape[1] != shape.inputs or data.x_test.shape[1] != shape.inputs:
        raise ValueError(
            f"runs of dataset {config.dataset} take {shape.inputs} inputs per image, but the data given "
            f"has {data.x_train.shape[1]}: it is not the dataset the runs name."
        )


def compile_groups(specs: Iterable[RunSpec]) -> dict[RunConfig, list[RunSpec]]:
    """Runs grouped by the static part of their configuration, in first-seen order."""
    groups: dict[RunConfig, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.config.static(), []).append(spec)
    return groups


def uses_dropout(spec: RunSpec) -> bool:
    """Whether a run draws dropout masks (a rate > 0 anywhere)."""
    config = spec.config
    return config.dropout != 0.0 or config.input_dropout != 0.0 or any(config.layer_dropout or ())


def execute(
    specs: Sequence[RunSpec],
    data_for: Callable[[RunConfig], DeviceData],
    on_chunk: Callable[[list[RunResult]], None],
    width_rule: Callable[[RunConfig], int] = device_chunk_width,
) -> None:
    """Run every spec, group by group through refilled chunks (`run_group`), handing the runs that finish
    at each epoch boundary to `on_chunk`.

    Within a group, runs with dropout and runs without are chunked apart, so that chunks of dropout-free
    runs use the program without dropout layers; a run's bits do not depend on its chunk's company.
    """
    for static, group in compile_groups(specs).items():
        data = data_for(static)
        check_shape(static, data)
        width = width_rule(static)
        group_id = static.group_id()
        for dropout in (True, False):
            runs = [spec for spec in group if uses_dropout(spec) == dropout]
            if not runs:
                continue
            program = program_for(static, width, shapes_of(data), dropout, validation_is_test(data))
            run_group(program, runs, data, group_id, on_chunk)
