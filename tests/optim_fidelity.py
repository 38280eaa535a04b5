"""Shared harness of the optimizer, schedule and regularisation fidelity tests (tests/test_fidelity_optim*.py).

hpstudy's own `train_step` is driven over a fixed stream of mini-batches for a few epochs (the engine's
`at_epoch` called at each epoch's start, as `train_epoch` does), from hpstudy's initial parameters, and the
parameters after every epoch are returned, for comparison with the real library trained on the same
batches from the same parameters. Tolerances as in tests/test_fidelity.py: 1e-10 relative in float64 (JAX's
x64 mode, only inside these tests), and each test shows that a deliberately wrong variant (a misplaced
epsilon, a wrong default) lies far outside it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hpstudy import data as hdata
from hpstudy.config import RunConfig, pairs
from hpstudy.training.engine import Hyper, init_run, root_key, train_step
from hpstudy.training.model import float_dtype, preprocess
from hpstudy.training.optimizers import optimizer_for
from hpstudy.training.schedules import at_epoch

HIDDEN = (12, 8)
BATCH = 16
STEPS_PER_EPOCH = 4
EPOCHS = 3
N_EXAMPLES = (STEPS_PER_EPOCH - 1) * BATCH + 7  # the last batch of every epoch is a partial one of 7
TOLERANCE = 1e-10
INIT_KEY = np.array([0, 2025], np.uint32)


@functools.lru_cache(maxsize=1)
def examples() -> tuple[np.ndarray, np.ndarray]:
    """The examples every epoch trains on, in this fixed order (uint8 images, integer labels)."""
    train = hdata.synthetic(n_train=N_EXAMPLES, n_test=10, seed=5).train
    return train.images, train.labels.astype(np.int64)


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch's mini-batches (the same every epoch)."""
    images, labels = examples()
    return [(images[s : s + BATCH], labels[s : s + BATCH]) for s in range(0, N_EXAMPLES, BATCH)]


def float_inputs(images: np.ndarray) -> np.ndarray:
    """Pixels as float64 in [0, 1], as every reference receives them."""
    return images.astype(np.float64) / 255.0


def config(flavour: str, optimizer: str, learning_rate: float, args: dict | None = None, **fields) -> RunConfig:
    """A run configuration with these optimizer settings (ReLU, softmax cross-entropy, dropout 0)."""
    init = {"keras": "keras", "pytorch": "keras", "sklearn": "sklearn"}[flavour]
    for name in ("schedule_args",):
        if name in fields:
            fields[name] = pairs(fields[name])
    return RunConfig(
        flavour=flavour if flavour != "pytorch" else "keras",
        hidden=HIDDEN,
        activation="relu",
        dropout=0.0,
        init=init,
        loss="softmax_cross_entropy",
        optimizer=optimizer,
        optimizer_args=pairs(args or {}),
        learning_rate=learning_rate,
        batch_size=BATCH,
        **fields,
    )


def layers_of(params) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(kernel (fan_in, fan_out), bias)] per Dense layer in order, as float64 NumPy arrays."""
    names = sorted(params, key=lambda name: int(name.split("_")[-1]))
    return [(np.asarray(params[n]["kernel"], np.float64), np.asarray(params[n]["bias"], np.float64)) for n in names]


def run_hpstudy(
    cfg: RunConfig, epochs: int = EPOCHS, x64: bool = True, initial: list | None = None
) -> tuple[list, list[list]]:
    """hpstudy's initial layers and its layers after each epoch, trained by train_step on `batches()`;
    from hpstudy's own initialisation, or from `initial` layers when given."""
    with jax.enable_x64(x64):
        dtype = float_dtype()
        hp = Hyper(jnp.asarray(cfg.learning_rate, dtype), jnp.asarray(0.0, dtype))
        state = init_run(cfg, jnp.asarray(INIT_KEY), hp)
        params, opt_state = state.params, state.opt_state
        if initial is not None:
            params = {
                f"Dense_{i}": {"kernel": jnp.asarray(w, dtype), "bias": jnp.asarray(b, dtype)}
                for i, (w, b) in enumerate(initial)
            }
            opt_state = optimizer_for(cfg, hp.learning_rate).init(params)
        initial = layers_of(params)
        step = jax.jit(functools.partial(train_step, cfg))
        key = jnp.asarray(root_key(cfg, 0))
        after = []
        for epoch in range(epochs):
            opt_state = at_epoch(opt_state, jnp.asarray(epoch), N_EXAMPLES)
            for images, labels in batches():
                k = len(labels)
                x = np.zeros((BATCH, 784), np.uint8)
                y = np.zeros(BATCH, np.int32)
                x[:k], y[:k] = images, labels
                mask = (np.arange(BATCH) < k).astype(np.float32)
                params, opt_state, _, _ = step(
                    params,
                    opt_state,
                    preprocess(jnp.asarray(x)),
                    jnp.asarray(y),
                    jnp.asarray(mask),
                    jnp.asarray(0.0, dtype),
                    key,
                )
            after.append(layers_of(params))
    return initial, after


def relative_difference(ours: list, reference: list) -> float:
    """max |ours - reference| over every parameter, divided by max |reference parameter|."""
    diff = max(float(np.max(np.abs(a - b))) for pa, pb in zip(ours, reference) for a, b in zip(pa, pb))
    return diff / max(float(np.max(np.abs(b))) for pair in reference for b in pair)


def trajectory_difference(ours: list[list], reference: list[list]) -> float:
    """The largest relative difference over the parameters after every epoch."""
    return max(relative_difference(a, b) for a, b in zip(ours, reference))


def uniform_layers(seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    """Initial layers any library can rebuild without hpstudy: U(-0.3, 0.3) kernels and U(-0.1, 0.1) biases
    from NumPy's legacy RandomState (its stream is fixed across NumPy releases)."""
    rng = np.random.RandomState(seed)
    sizes = (784, *HIDDEN, 10)
    return [
        (rng.uniform(-0.3, 0.3, (a, b)) / np.sqrt(a / 16), rng.uniform(-0.1, 0.1, b))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]


# Golden files keep, after every epoch, the parameters at these positions only (a few KB per case; a wrong
# rule moves every parameter, so a sample of them catches it): the second and third layers whole, the first
# layer's bias and 64 of its kernel entries.
KERNEL0_SAMPLE = np.random.RandomState(11).choice(784 * HIDDEN[0], 64, replace=False)


def sample(layers: list) -> np.ndarray:
    """The sampled parameters of one snapshot, as one float64 vector."""
    (w0, b0), *rest = layers
    parts = [np.asarray(w0).reshape(-1)[KERNEL0_SAMPLE], np.asarray(b0)]
    for w, b in rest:
        parts += [np.asarray(w).reshape(-1), np.asarray(b)]
    return np.concatenate(parts).astype(np.float64)
