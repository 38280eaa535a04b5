"""Typed, frozen run configuration: what one training run is, and the identity derived from it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# The model's choices (hpstudy/training/model.py defines each; docs/studies.md documents them).
ACTIVATIONS = (
    "relu",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "gelu",
    "gelu_tanh",
    "softplus",
    "leaky_relu",
    "silu",
    "identity",
)
INITS = (
    "keras",
    "sklearn",
    "nielsen",
    "pytorch",
    *(f"{family}_{dist}" for family in ("glorot", "he", "lecun") for dist in ("uniform", "normal", "truncated_normal")),
    "orthogonal",
)
LOSSES = ("softmax_cross_entropy", "sigmoid_quadratic", "mse", "softmax_mse")
BATCH_NORMS = ("none", "before_activation", "after_activation")
OPTIMIZERS = ("adam", "adam_keras", "sgd", "sgd_momentum", "sgd_nesterov")
MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
STOPPING_RULES = ("keras", "sklearn")
# How uint8 pixels become the network's inputs (hpstudy/preprocessing.py); "scale" (x / 255) is the default.
PREPROCESSINGS = ("scale", "scale_symmetric", "standardise", "standardise_global")
# How a run's PRNG keys are derived: from its whole configuration (independent, the default) or from the
# dataset, validation split and seed index alone (common random numbers, shared by every configuration).
SEEDINGS = ("independent", "common")
# Hyperparameters that are traced values inside the compiled program: runs differing only in these
# share one compile group (and one compiled program).
TRACED_FIELDS = ("learning_rate", "dropout")


def frozen(value: Any) -> Any:
    """A TOML/JSON value made hashable: lists become tuples, recursively."""
    return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def pairs(items: Any) -> tuple:
    """Keyword arguments (a dict or (name, value) pairs) as sorted, hashable (name, value) pairs."""
    items = items.items() if isinstance(items, dict) else items
    return tuple(sorted((str(k), frozen(v)) for k, v in items))


def late(default: Any) -> Any:
    """A RunConfig field added after runs were stored: left out of the canonical text at its default."""
    return dataclasses.field(default=default, metadata={"late": True})


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """When to stop a run early, with Keras' or scikit-learn's rule.

    keras: improvement means monitored < best - min_delta (> for accuracies); wait counts epochs
    without improvement and training stops when wait >= patience (never after the first epoch).
    sklearn: no-improvement means loss > best - min_delta (its tol); best tracks the plain minimum;
    training stops when the count exceeds patience (its n_iter_no_change).
    """

    monitor: str = "val_loss"
    min_delta: float = 0.0
    patience: int = 0
    restore_best_weights: bool = False
    rule: str = "keras"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's result, apart from its seed and the data."""

    dataset: str = "mnist"
    validation: str = "test"
    flavour: str = "keras"
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"
    dropout: float = 0.0
    init: str = "keras"
    loss: str = "softmax_cross_entropy"
    optimizer: str = "adam_keras"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    l2: float = 0.0
    batch_size: int = 32
    epochs: int = 5
    early_stopping: EarlyStopping | None = None
    seeding: str = late("independent")
    # Random designs with width buckets only (study.py): the hidden widths the program is built with; the
    # units beyond `hidden` are masked (zero, and they stay zero). Part of the run's identity when set.
    pad_hidden: tuple[int, ...] | None = late(None)
    # Fields added after the first shipped runs are declared with `late(default)`: each one enters the
    # canonical text (the run's identity, keys and bits) only when it differs from its default, so every
    # run made before it existed keeps its identity.
    #
    # -- data (input shape, preprocessing) --
    # The input shape and number of classes come from `dataset` (hpstudy/data.py: shape_of), not from here.
    preprocessing: str = late("scale")
    #
    # -- model (activations, initialisers, dropout, normalisation, loss) --
    # leaky_relu's slope; None: the flavour's library default (keras 0.3, pytorch 0.01)
    negative_slope: float | None = late(None)
    # inverted dropout on the input pixels, and per hidden layer (instead of `dropout`, which stays 0)
    input_dropout: float = late(0.0)
    layer_dropout: tuple[float, ...] | None = late(None)
    # batch normalisation of every hidden layer with the flavour's conventions: "none", "before_activation"
    # or "after_activation"
    batch_norm: str = late("none")
    label_smoothing: float = late(0.0)
    # DataLoader(drop_last=True): the last, partial mini-batch of each epoch is left out
    drop_last: bool = late(False)
    #
    # -- optimizer, schedule, regularisation --
    # A library optimizer's keyword arguments ("keras:rmsprop", "torch:sgd", "optax:adamw", ...) as sorted
    # (name, value) pairs, a learning-rate schedule (a factor on the traced learning rate) with its arguments,
    # Keras' kernel_regularizer L2, Keras' MaxNorm kernel constraint, and torch's gradient clipping
    # (hpstudy/training/optimizers.py, hpstudy/training/schedules.py, docs/studies.md).
    optimizer_args: tuple = late(())
    schedule: str = late("constant")
    schedule_args: tuple = late(())
    kernel_l2: float = late(0.0)
    max_norm: float | None = late(None)
    clip_grad_norm: float | None = late(None)
    clip_grad_value: float | None = late(None)

    def _fields(self) -> dict[str, Any]:
        """Every field; `seeding`, `pad_hidden` and the late fields only when they are not their defaults, so
        that every run made before they existed keeps its identity, keys and bits."""
        fields = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("late") and fields[f.name] == f.default:
                del fields[f.name]
        return fields

    def canonical(self) -> str:
        """A stable JSON text of every field: the basis of run identity (a run without padding or common
        seeding keeps the text, and so the identity, it had before those existed)."""
        return json.dumps(self._fields(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_canonical(cls, text: str) -> RunConfig:
        """The configuration a `canonical()` text describes (its inverse; fields it lacks take their defaults)."""
        fields = json.loads(text)
        stop = fields.pop("early_stopping", None)
        for name in ("hidden", "pad_hidden", "layer_dropout"):
            if fields.get(name) is not None:
                fields[name] = tuple(fields[name])
        for name in ("optimizer_args", "schedule_args"):  # JSON lists back to the frozen (name, value) pairs
            if name in fields:
                fields[name] = pairs(fields[name])
        return cls(**fields, early_stopping=EarlyStopping(**stop) if stop else None)

    def static(self) -> RunConfig:
        """The compile-group part: this config with traced hyperparameters zeroed; with padding, the hidden
        widths are the padded ones (the real widths are traced: which units are masked)."""
        if self.pad_hidden is not None:
            return dataclasses.replace(self, hidden=self.pad_hidden, **{f: 0.0 for f in TRACED_FIELDS})
        return dataclasses.replace(self, **{f: 0.0 for f in TRACED_FIELDS})

    def group_id(self) -> str:
        """A short stable id of the compile group."""
        return hashlib.sha256(self.static().canonical().encode()).hexdigest()[:12]

    def as_flat_dict(self) -> dict[str, Any]:
        """Fields as a flat dict (early stopping fields prefixed) for tables and stores."""
        flat = self._fields()
        stop = flat.pop("early_stopping")
        flat["hidden"] = list(self.hidden)
        if self.pad_hidden is not None:
            flat["pad_hidden"] = list(self.pad_hidden)
        for name in ("optimizer_args", "schedule_args"):
            if name in flat:
                flat[name] = json.loads(json.dumps(flat[name]))  # nested lists, as the canonical text has them
        if self.layer_dropout is not None:
            flat["layer_dropout"] = list(self.layer_dropout)
        for k, v in (stop or {}).items():
            flat[f"early_stopping.{k}"] = v
        return flat


def run_digest(config: RunConfig, seed: int) -> bytes:
    """SHA-256 of (canonical configuration, seed): a run's identity, independent of any list position."""
    return hashlib.sha256(f"{config.canonical()}|seed={int(seed)}".encode()).digest()


def key_digest(config: RunConfig, seed: int) -> bytes:
    """The bytes a run's root PRNG key is taken from.

    independent: the run's own digest, so runs of different configurations share no randomness.
    common: a hash of the dataset, the validation split and the seed index only, so that every configuration
    run with seed index s draws the same initialisation, data-order and dropout keys (common random numbers).
    """
    if config.seeding == "common":
        text = f"common|dataset={config.dataset}|validation={config.validation}|seed={int(seed)}"
        return hashlib.sha256(text.encode()).digest()
    return run_digest(config, seed)


def run_id(config: RunConfig, seed: int) -> str:
    """Hex id of a run (first 16 bytes of its digest)."""
    return run_digest(config, seed)[:16].hex()
