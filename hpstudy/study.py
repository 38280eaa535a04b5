"""Study files (TOML): parse, validate, and expand a study's design into trials and runs.

The format is documented key by key in docs/studies.md. Every validation error is a StudyError (exit
code 2) whose message names the file, the key path, the offending value and what was expected; nothing
is run or written before a study file has loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy import config as C
from hpstudy import data as hdata
from hpstudy.config import SEEDINGS, EarlyStopping, RunConfig
from hpstudy.data import DataShape, parse_validation
from hpstudy.errors import DataError, StudyError
from hpstudy.runs import RunSpec
from hpstudy.training import optimizers, schedules

# What each implementation flavour implies unless the study says otherwise (see docs/studies.md and
# ../shared/notes/implementations.md; tests/test_fidelity.py proves each against its library).
FLAVOUR_DEFAULTS: dict[str, dict[str, Any]] = {
    # TF2 Keras: Dense with glorot_uniform kernels and zero biases, softmax cross-entropy, Keras' Adam.
    "keras": {"init": "keras", "loss": "softmax_cross_entropy", "optimizer": "adam_keras"},
    # scikit-learn MLPClassifier(solver='sgd'): U(-b, b) weights and biases, softmax log-loss, Nesterov
    # momentum 0.9 (its velocity formulation), L2 alpha 1e-4, and its tol/n_iter_no_change stopping rule.
    "sklearn": {
        "init": "sklearn",
        "loss": "softmax_cross_entropy",
        "optimizer": "sgd_nesterov",
        "momentum": 0.9,
        "l2": 1e-4,
        # MLPClassifier stops when the training loss has not improved by tol=1e-4 for more than
        # n_iter_no_change=10 epochs.
        "early_stopping": {"monitor": "train_loss", "min_delta": 1e-4, "patience": 10, "rule": "sklearn"},
    },
    # Nielsen's network.py: N(0, 1) weights and biases, sigmoid output with quadratic cost, plain SGD.
    "nielsen": {"init": "nielsen", "loss": "sigmoid_quadratic", "optimizer": "sgd"},
    # PyTorch: nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases, nn.CrossEntropyLoss (mean
    # over the batch), DataLoader(shuffle=True) keeping the last partial batch (drop_last=False), and
    # torch.optim.SGD: without momentum, dampening or weight decay its rule is p -= lr * grad, the same
    # rule (and the same arithmetic) as plain "sgd".
    "pytorch": {"init": "pytorch", "loss": "softmax_cross_entropy", "optimizer": "sgd"},
}
MODEL_KEYS = {
    "flavour",
    "hidden",
    "activation",
    "dropout",
    "init",
    "loss",
    "preprocessing",
    "negative_slope",
    "input_dropout",
    "layer_dropout",
    "batch_norm",
    "label_smoothing",
}
TRAINING_KEYS = {
    "optimizer",
    "learning_rate",
    "momentum",
    "l2",
    "batch_size",
    "epochs",
    "early_stopping",
    "optimizer_args",
    "schedule",
    "schedule_args",
    "kernel_l2",
    "max_norm",
    "clip_grad_norm",
    "clip_grad_value",
}
TRAINING_KEYS = TRAINING_KEYS | {"drop_last"}  # how the epoch is cut into mini-batches (PyTorch's DataLoader)
FACTOR_KEYS = (MODEL_KEYS | TRAINING_KEYS) - {"early_stopping"}
FLAVOUR_KEYS = (FACTOR_KEYS - {"flavour"}) | {"early_stopping"}
STUDY_KEYS = {
    "name",
    "title",
    "authors",
    "year",
    "citation",
    "doi",
    "url",
    "dataset",
    "validation",
    "seeds",
    "description",
    "seeding",
    "smallest_effect",
    "compare_with",
}
DEFAULT_SMALLEST_EFFECT = 0.002  # 0.2 percentage points of accuracy: the smallest difference worth seeds
STUDY_STRINGS = {"title", "citation", "doi", "url", "description", "compare_with"}  # compare_with: a study name
TOP_KEYS = {"study", "model", "training", "flavours", "design", "assumptions", "published"}
DESIGN_KINDS = ("grid", "sweeps", "random")
DESIGN_KEYS_BY_KIND = {
    "grid": {"kind", "factors", "objective"},
    "sweeps": {"kind", "factors", "sweeps", "objective"},
    "random": {"kind", "trials", "sampler_seed", "space", "objective", "width_buckets"},
}
DESIGN_KEYS = set().union(*DESIGN_KEYS_BY_KIND.values())
SPACE_KEYS = {"type", "low", "high", "step", "log", "values"}
SPACE_EXTRA = {"hidden_layers", "units"}  # depth, and the range every hidden layer's width is drawn from
ES_KEYS = {"monitor", "min_delta", "patience", "restore_best_weights", "rule"}
METRICS = {
    "test_accuracy",
    "test_loss",
    "final_val_accuracy",
    "final_val_loss",
    "best_val_accuracy",
    "final_train_accuracy",
    "final_train_loss",
    "seconds",
    "epochs_run",
}
PUBLISHED_KEYS = METRICS | {"where", "source", "note", "best_over"}
PUBLISHED_MAX = 1e6  # bounds losses, seconds and epochs: beyond it a value is a typo, and would print as one
ASSUMPTION_KEYS = {"key", "value", "why"}
# A study's name becomes a folder name under --results and --out: letters, digits, '_', '-' and '.', starting
# with a letter or digit (so never '.', '..' or a hidden name), at most 100 characters (with the
# '.max_epochs-N' suffix of a smoke test it stays far below the usual 255-byte limit of a file name).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# A design may expand to at most this many trials: beyond it, expanding alone takes minutes and memory,
# and running it would take years on a CPU.
MAX_TRIALS = 100_000
# Datasets a study may name: the two native IDX datasets, any dataset prepared by tensorflow-datasets, or a
# .npz file of the researcher's own arrays (named by its content: hpstudy/npz_source.py).
NATIVE_DATASETS = ("mnist", "fashion_mnist")
TFDS_PATTERN = re.compile(r"tfds:[a-z0-9_]+(/[A-Za-z0-9_.-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?")
DATASETS_EXPECTED = (
    "'mnist', 'fashion_mnist', 'tfds:NAME' for a dataset prepared by tensorflow-datasets (e.g. "
    "'tfds:kmnist', 'tfds:cifar10:3.0.2'), or 'npz:PATH' for a .npz file of your own arrays"
)
# Published configurations are matched to trials with this tolerance (a paper's 0.01 is our 0.01).
MATCH_REL_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Trial:
    """One configuration of a study's design."""

    trial_id: str
    values: dict  # the design's values for this trial (factor -> value)
    config: RunConfig

    def value(self, key: str) -> Any:
        """A factor's value: from the design values, else from the resolved configuration."""
        if key in self.values:
            return self.values[key]
        return getattr(self.config, key)


def same_value(a: Any, b: Any) -> bool:
    """Equal configuration values: numbers within MATCH_REL_TOL, lists and tuples element-wise."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple))
            and isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(same_value(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=MATCH_REL_TOL, abs_tol=1e-12)
    return a == b


def matches(trial: Trial, where: dict) -> bool:
    """Whether a published entry's `where` names this trial."""
    return all(same_value(trial.value(k), v) for k, v in where.items())


@dataclasses.dataclass(frozen=True)
class Study:
    """A parsed, validated study file."""

    path: Path
    sha256: str
    meta: dict
    trials: tuple[Trial, ...]
    assumptions: tuple[dict, ...]
    published: tuple[dict, ...]
    design_kind: str
    design: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def default_seeds(self) -> int:
        return int(self.meta.get("seeds", 5))

    @property
    def validation(self) -> str:
        return self.meta.get("validation", "test")

    @property
    def dataset(self) -> str:
        """The dataset every run of the study names (a .npz file by its content name)."""
        return self.trials[0].config.dataset

    @property
    def data_shape(self) -> DataShape:
        """The dataset's sizes (inputs, classes, training- and test-set sizes), without reading its examples."""
        return hdata.shape_of(self.dataset)

    @property
    def seeding(self) -> str:
        """'independent' (each run's keys from its whole configuration) or 'common' (from its seed index)."""
        return self.meta.get("seeding", "independent")

    @property
    def smallest_effect(self) -> float:
        """The smallest difference of the objective worth resolving (study.smallest_effect)."""
        return float(self.meta.get("smallest_effect", DEFAULT_SMALLEST_EFFECT))

    @property
    def objective(self) -> str:
        """The metric that ranks trials (design.objective; default best_val_accuracy for a random search,
        test_accuracy otherwise). Accuracies are maximised, losses, seconds and epochs minimised."""
        return self.design.get("objective", "best_val_accuracy" if self.design_kind == "random" else "test_accuracy")

    def trials_matching(self, where: dict) -> list[Trial]:
        """The trials a `where` table names (float-tolerant; empty `where` names every trial)."""
        return [t for t in self.trials if matches(t, where)]

    def published_for(self, trial: Trial) -> list[dict]:
        """The published entries whose `where` names this trial (float-tolerant)."""
        return [p for p in self.published if matches(trial, p.get("where", {}))]

    def runs(self, seeds: range) -> list[RunSpec]:
        """Every (trial, seed) run of the study for the given seed indices."""
        return [RunSpec(t.config, s, t.trial_id) for t in self.trials for s in seeds]

    def with_max_epochs(self, max_epochs: int) -> Study:
        """A smoke-test copy whose runs train for at most max_epochs (its runs are different runs)."""
        trials = tuple(
            dataclasses.replace(t, config=dataclasses.replace(t.config, epochs=min(t.config.epochs, max_epochs)))
            for t in self.trials
        )
        meta = {
            **self.meta,
            "name": f"{self.name}.max_epochs-{max_epochs}",
            "base_name": self.meta.get("base_name", self.name),
            "variant_args": f"{self.meta.get('variant_args', '')} --max-epochs {max_epochs}",
        }  # how to make it
        return dataclasses.replace(self, trials=trials, meta=meta)

    def with_dataset(self, dataset: str) -> Study:
        """This study's design on another dataset: its runs are other runs (the dataset is part of each
        run's identity), stored as the study NAME.DATASET, and the paper's numbers (which were measured on
        the study's own dataset) are dropped so that no report compares against them."""
        if not isinstance(dataset, str) or not (
            dataset in NATIVE_DATASETS or TFDS_PATTERN.fullmatch(dataset) or dataset.startswith("npz:")
        ):
            raise StudyError(f"--dataset {dataset!r} is invalid; expected {DATASETS_EXPECTED}.")
        if dataset.startswith("npz:"):  # a path from the current folder, named by its content
            from hpstudy.npz_source import dataset_id, is_id

            dataset = dataset if is_id(dataset) else dataset_id(dataset.removeprefix("npz:"))
        if dataset == self.dataset:
            return self
        shape = _known_shape(dataset)
        if shape is not None:
            _check_sizes(f"--dataset {dataset}", self.validation, shape, [t.config for t in self.trials])
        trials = tuple(
            dataclasses.replace(t, config=dataclasses.replace(t.config, dataset=dataset)) for t in self.trials
        )
        suffix = re.sub(r"[^A-Za-z0-9_.-]", "-", dataset)
        meta = {
            **self.meta,
            "name": f"{self.name}.{suffix}",
            "dataset": dataset,
            "base_name": self.meta.get("base_name", self.name),
            "variant_args": f"{self.meta.get('variant_args', '')} --dataset {dataset}",
        }  # how to make it
        return dataclasses.replace(self, trials=trials, meta=meta, published=())


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps cost 1."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def closest(word: str, choices) -> str | None:
    """The choice nearest to a typo: fewest edits (a swapped pair of letters is one), ties broken by
    difflib's similarity; None when even the nearest needs more edits than a third of the word."""
    choices = sorted(choices)
    if not choices:
        return None
    best = min(choices, key=lambda c: (edit_distance(word, c), -difflib.SequenceMatcher(None, word, c).ratio()))
    if edit_distance(word, best) <= max(1, len(word) // 3):
        return best
    near = difflib.get_close_matches(word, choices, n=1)
    return near[0] if near else None


def _did_you_mean(key: str, allowed: set[str]) -> str:
    near = closest(key, allowed)
    return f" Did you mean '{near}'?" if near else ""


def _known_shape(dataset: str) -> DataShape | None:
    """The dataset's sizes, or None for a tensorflow-datasets dataset that cannot be looked up here (not
    installed or not prepared: running it says so; its sizes are checked when it can be looked up)."""
    try:
        return hdata.shape_of(dataset)
    except DataError:
        if dataset.startswith("tfds:"):
            return None
        raise


def _check_sizes(where: str, validation: str, shape: DataShape, configs) -> None:
    """Raise StudyError unless the holdout and every batch fit the dataset's training set."""
    holdout = parse_validation(validation) or 0
    if holdout >= shape.n_train:
        raise StudyError(
            f"{where}: validation = {validation!r} holds out {holdout} of only {shape.n_train} training "
            f"images; expected 'holdout:N' with 0 < N < {shape.n_train}."
        )
    fit = shape.n_train - holdout
    for config in configs:
        if config.batch_size > fit:
            raise StudyError(
                f"{where}: batch_size = {config.batch_size} is larger than the {fit} training images; "
                f"expected an integer batch size in [1, {fit}]."
            )


class _Checker:
    """Knows the file (and the training-set size) so every error names file, key path, value and expectation."""

    def __init__(self, path: Path):
        self.path = path
        self.n_train: int | None = None  # unknown until [study] names the dataset (and where it cannot be looked up)

    def fail(self, key: str, value: Any, expected: str) -> StudyError:
        return StudyError(f"{self.path}: {key} = {value!r} is invalid; expected {expected}.")

    def keys(self, table: Any, allowed: set[str], where: str, hint: dict[str, str] | None = None) -> None:
        """Raise unless `table` is a table whose keys are all allowed (unknown keys get a did-you-mean)."""
        if not isinstance(table, dict):
            raise self.fail(where or "<document>", table, "a table")
        for key, value in table.items():
            if key not in allowed:
                path = f"{where}.{key}" if where else key
                suggestion = _did_you_mean(key, allowed)
                if not suggestion and hint and key in hint:
                    suggestion = f" '{key}' belongs in {hint[key]}."
                raise StudyError(
                    f"{self.path}: unknown key '{path}' (= {value!r}); expected one of: "
                    f"{', '.join(sorted(allowed))}.{suggestion}"
                )

    def typed(self, key: str, value: Any, kind: type | tuple, expected: str) -> Any:
        """Raise unless value has the type (bools are never numbers)."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, value, expected)
        if not isinstance(value, kinds):
            raise self.fail(key, value, expected)
        return value


def _check_value(chk: _Checker, key: str, name: str, value: Any) -> Any:
    """Validate one configuration value (from a base table, a flavour table or a factor level); normalise it."""
    choices = {
        "flavour": ("a flavour", tuple(FLAVOUR_DEFAULTS)),
        "activation": ("an activation", C.ACTIVATIONS),
        "init": ("an initialisation scheme", C.INITS),
        "loss": ("a loss", C.LOSSES),
        "preprocessing": ("an input preprocessing", C.PREPROCESSINGS),
        "batch_norm": ("a batch-normalisation placement", C.BATCH_NORMS),
    }
    if name in ("optimizer", "schedule"):
        return _check_name(chk, key, name, value)
    if name in ("optimizer_args", "schedule_args"):
        return _check_args(chk, key, value)
    if name in choices:
        what, allowed = choices[name]
        if not isinstance(value, str) or value not in allowed:
            raise chk.fail(key, value, f"{what}, one of {', '.join(allowed)}")
    elif name == "hidden":
        if not isinstance(value, (list, tuple)) or not value:
            raise chk.fail(key, value, "a non-empty list of hidden-layer widths (layers >= 1)")
        for width in value:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise chk.fail(key, value, "hidden-layer widths that are integers >= 1 (units >= 1)")
        return tuple(value)
    elif name == "learning_rate":
        chk.typed(key, value, (int, float), "a learning rate, a number > 0")
        if not (value > 0 and math.isfinite(value)):
            raise chk.fail(key, value, "a learning rate > 0")
        return float(value)
    elif name in ("dropout", "input_dropout"):
        chk.typed(key, value, (int, float), "a dropout rate, a number in [0, 1)")
        if not 0 <= value < 1:
            raise chk.fail(key, value, "a dropout rate in [0, 1)")
        return float(value)
    elif name == "layer_dropout":
        expected = "a non-empty list of dropout rates in [0, 1), one per hidden layer"
        if not isinstance(value, (list, tuple)) or not value:
            raise chk.fail(key, value, expected)
        for rate in value:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise chk.fail(key, value, expected)
        return tuple(float(rate) for rate in value)
    elif name == "label_smoothing":
        chk.typed(key, value, (int, float), "a label-smoothing factor, a number in [0, 1]")
        if not 0 <= value <= 1:
            raise chk.fail(key, value, "a label-smoothing factor in [0, 1]")
        return float(value)
    elif name == "negative_slope":
        chk.typed(key, value, (int, float), "a leaky_relu slope, a finite number >= 0")
        if not (value >= 0 and math.isfinite(value)):
            raise chk.fail(key, value, "a leaky_relu slope, a finite number >= 0")
        return float(value)
    elif name == "drop_last":
        chk.typed(key, value, bool, "true or false")
    elif name in ("momentum", "l2"):
        chk.typed(key, value, (int, float), "a number >= 0")
        if not (value >= 0 and math.isfinite(value)):
            raise chk.fail(key, value, "a number >= 0")
        if name == "momentum" and value >= 1:
            raise chk.fail(key, value, "a momentum in [0, 1)")
        return float(value)
    elif name == "kernel_l2":
        chk.typed(key, value, (int, float), "a number >= 0 (Keras' L2 factor)")
        if not (value >= 0 and math.isfinite(value)):
            raise chk.fail(key, value, "a number >= 0 (Keras' L2 factor)")
        return float(value)
    elif name in ("max_norm", "clip_grad_norm", "clip_grad_value"):
        chk.typed(key, value, (int, float), "a number > 0")
        if not (value > 0 and math.isfinite(value)):
            raise chk.fail(key, value, "a number > 0")
        return float(value)
    elif name == "batch_size":
        expected = (
            f"an integer batch size in [1, {chk.n_train}] (the training set has {chk.n_train} images)"
            if chk.n_train
            else "an integer batch size >= 1"
        )
        chk.typed(key, value, int, expected)
        if not 1 <= value <= (chk.n_train or value):
            raise chk.fail(key, value, expected)
    elif name == "epochs":
        chk.typed(key, value, int, "an integer number of epochs >= 1")
        if value < 1:
            raise chk.fail(key, value, "an integer number of epochs >= 1")
    return value


def _check_name(chk: _Checker, key: str, name: str, value: Any) -> str:
    """An optimizer or schedule name: one of hpstudy's, a library's ('keras:rmsprop') or Optax's ('optax:adamw')."""
    if name == "optimizer":
        ok = isinstance(value, str) and (
            value in optimizers.LEGACY_OPTIMIZERS or _known(optimizers.optimizer_factory, value)
        )
        if not ok:
            raise chk.fail(key, value, f"an optimizer, one of {', '.join(optimizers.optimizer_names())}")
    else:
        ok = isinstance(value, str) and (value == schedules.CONSTANT or _known(schedules.schedule_factory, value))
        if not ok:
            raise chk.fail(key, value, f"a learning-rate schedule, one of {', '.join(schedules.schedule_names())}")
    return value


def _known(factory, name: str) -> bool:
    """Whether a library name resolves (KeyError: it does not)."""
    try:
        factory(name)
    except KeyError:
        return False
    return True


def _check_args(chk: _Checker, key: str, table: Any) -> tuple:
    """A table of keyword arguments: numbers, booleans, strings or lists of numbers (checked against the
    optimizer's or schedule's signature once the trial is resolved); returned as sorted (name, value) pairs."""
    if not isinstance(table, dict):
        raise chk.fail(key, table, "a table of keyword arguments, e.g. { rho = 0.9 }")
    for k, v in table.items():
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise chk.fail(f"{key}.{k}", v, "a finite number")
            if not isinstance(item, (bool, int, float, str)) or (isinstance(v, list) and isinstance(item, (bool, str))):
                raise chk.fail(f"{key}.{k}", v, "a number, a boolean, a string or a list of numbers")
    return C.pairs(table)


def _check_training(chk: _Checker, cfg: RunConfig, where: str) -> None:
    """The resolved optimizer and schedule take the arguments given and build (their own checks included)."""
    args = dict(cfg.optimizer_args)
    error = optimizers.optimizer_error(cfg.optimizer, args)
    if error:
        raise chk.fail(f"{where}optimizer_args", args, f"arguments that {cfg.optimizer!r} takes ({error})")
    error = schedules.schedule_error(cfg.schedule, dict(cfg.schedule_args), cfg.learning_rate)
    if error:
        raise chk.fail(
            f"{where}schedule_args", dict(cfg.schedule_args), f"arguments that {cfg.schedule!r} takes ({error})"
        )
    error = schedules.config_error(cfg)
    if error:
        raise chk.fail(f"{where}schedule", cfg.schedule, error)
    error = optimizers.build_error(cfg)
    if error:
        raise chk.fail(f"{where}optimizer", cfg.optimizer, f"an optimizer that builds with these settings ({error})")


def _early_stopping(chk: _Checker, key: str, table: Any) -> EarlyStopping | None:
    """Parse an early-stopping table, or the string 'none'."""
    if isinstance(table, str):
        if table == "none":
            return None
        raise chk.fail(key, table, "a table of early-stopping settings or the string 'none'")
    chk.keys(table, ES_KEYS, key)
    es = EarlyStopping(**table)
    if not isinstance(es.monitor, str) or es.monitor not in C.MONITORS:
        raise chk.fail(f"{key}.monitor", es.monitor, f"one of {', '.join(C.MONITORS)}")
    if not isinstance(es.rule, str) or es.rule not in C.STOPPING_RULES:
        raise chk.fail(f"{key}.rule", es.rule, f"one of {', '.join(C.STOPPING_RULES)}")
    chk.typed(f"{key}.patience", es.patience, int, "an integer >= 0")
    if es.patience < 0:
        raise chk.fail(f"{key}.patience", es.patience, "an integer >= 0")
    chk.typed(f"{key}.min_delta", es.min_delta, (int, float), "a number >= 0")
    if not (es.min_delta >= 0 and math.isfinite(es.min_delta)):
        raise chk.fail(f"{key}.min_delta", es.min_delta, "a number >= 0")
    chk.typed(f"{key}.restore_best_weights", es.restore_best_weights, bool, "true or false")
    return dataclasses.replace(es, min_delta=float(es.min_delta))


def _settings_table(chk: _Checker, table: Any, allowed: set[str], where: str, hint: dict[str, str]) -> dict:
    """A [model], [training] or [flavours.<name>] table, every value validated and normalised."""
    chk.keys(table, allowed, where, hint)
    out = {}
    for key, value in table.items():
        if key == "early_stopping":
            _early_stopping(chk, f"{where}.early_stopping", value)  # validated now, parsed per trial
            out[key] = value
        else:
            out[key] = _check_value(chk, f"{where}.{key}", key, value)
    return out


def _resolve(chk: _Checker, base: dict, flavours: dict, values: dict, meta: dict, where: str) -> RunConfig:
    """Flavour defaults, then the study's base keys, then its per-flavour table, then the trial's values."""
    flavour = {**base, **values}.get("flavour", "keras")
    given = {**base, **flavours.get(flavour, {}), **values}
    settings = {**FLAVOUR_DEFAULTS[flavour], **given, "flavour": flavour}
    if settings.get("optimizer") not in optimizers.LEGACY_OPTIMIZERS:
        # a library optimizer takes its momentum among its own arguments (optimizer_args.momentum)
        if "momentum" in given:
            raise chk.fail(
                f"{where}momentum",
                given["momentum"],
                f"no 'momentum' key with optimizer {settings['optimizer']!r}; give it as optimizer_args.momentum",
            )
        settings["momentum"] = 0.0
    stop = settings.pop("early_stopping", None)
    es = _early_stopping(chk, f"{where}early_stopping", stop) if stop is not None else None
    cfg = RunConfig(
        dataset=meta.get("dataset", "mnist"),
        validation=meta.get("validation", "test"),
        early_stopping=es,
        seeding=meta.get("seeding", "independent"),
        **settings,
    )
    if es is not None and es.monitor.startswith("val_") and cfg.validation == "none":
        raise chk.fail("study.validation", "none", f"a validation split, since early stopping monitors {es.monitor}")
    _check_training(chk, cfg, where)
    _check_model(chk, cfg)
    return cfg


# The flavours whose library has a leaky_relu slope default and batch normalisation (hpstudy/flavours/).
LEAKY_RELU_DEFAULTS = ("keras", "pytorch")
BATCH_NORM_FLAVOURS = ("keras", "pytorch")


def _check_model(chk: _Checker, cfg: RunConfig) -> None:
    """Checks that span model keys, on a trial's resolved configuration."""
    if cfg.activation == "leaky_relu" and cfg.negative_slope is None and cfg.flavour not in LEAKY_RELU_DEFAULTS:
        raise chk.fail(
            "model.negative_slope",
            None,
            f"a leaky_relu slope: flavour {cfg.flavour!r} has no default (keras: 0.3, pytorch: 0.01)",
        )
    if cfg.layer_dropout is not None:
        if len(cfg.layer_dropout) != len(cfg.hidden):
            raise chk.fail(
                "model.layer_dropout",
                list(cfg.layer_dropout),
                f"one dropout rate per hidden layer ({len(cfg.hidden)}, hidden = {list(cfg.hidden)})",
            )
        if cfg.dropout:
            raise chk.fail("model.dropout", cfg.dropout, "0 when layer_dropout gives each hidden layer its rate")
    if cfg.batch_norm != "none":
        if cfg.flavour not in BATCH_NORM_FLAVOURS:
            raise chk.fail(
                "model.batch_norm",
                cfg.batch_norm,
                f"'none' with flavour {cfg.flavour!r} (batch normalisation follows keras' or pytorch's conventions)",
            )
        last = chk.n_train % cfg.batch_size
        if cfg.flavour == "pytorch" and (cfg.batch_size == 1 or (last == 1 and not cfg.drop_last)):
            raise chk.fail(
                "training.batch_size",
                cfg.batch_size,
                "a batch size that leaves no mini-batch of one example (PyTorch's BatchNorm1d refuses to "
                "train on one; its running variance divides by n - 1), or drop_last = true",
            )


def _levels(chk: _Checker, key: str, name: str, levels: Any) -> list:
    """A factor's list of levels, each validated."""
    if name not in FACTOR_KEYS:
        raise StudyError(
            f"{chk.path}: unknown factor '{key}' (= {levels!r}); expected one of: "
            f"{', '.join(sorted(FACTOR_KEYS))}.{_did_you_mean(name, FACTOR_KEYS)}"
        )
    if not isinstance(levels, list) or not levels:
        raise chk.fail(key, levels, "a non-empty list of levels (an empty grid has no trials)")
    normalised = [_check_value(chk, f"{key}[{i}]", name, v) for i, v in enumerate(levels)]
    for i, v in enumerate(normalised):
        if any(same_value(v, w) for w in normalised[:i]):
            raise chk.fail(f"{key}[{i}]", levels[i], "distinct levels (this one is repeated)")
    return normalised


def _trial_id(values: dict) -> str:
    """A readable id from the trial's design values, independent of the order they were listed in."""

    def fmt(v):
        if isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in v):  # keyword arguments
            return "{" + ";".join(f"{k}={fmt(x)}" for k, x in v) + "}"
        return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)

    return ",".join(f"{k}={fmt(values[k])}" for k in sorted(values))


def _grid(chk: _Checker, factors: Any, where: str) -> list[dict]:
    """Cartesian product of the factors' levels."""
    if not isinstance(factors, dict):
        raise chk.fail(where, factors, "a table of factors, each a list of levels")
    names = list(factors)
    levels = [_levels(chk, f"{where}.{n}", n, factors[n]) for n in names]
    size = math.prod(len(lv) for lv in levels)
    if size > MAX_TRIALS:
        raise chk.fail(
            where,
            {n: f"{len(lv)} levels" for n, lv in zip(names, levels)},
            f"at most {MAX_TRIALS:,} trials (these levels cross to {size:,})",
        )
    return [dict(zip(names, combo)) for combo in itertools.product(*levels)]


def _draw_int(rng: np.random.Generator, spec: dict) -> int:
    step = spec.get("step", 1)
    return int(spec["low"] + step * rng.integers(0, (spec["high"] - spec["low"]) // step + 1))


def sample_trial(space: dict, sampler_seed: int, index: int) -> dict:
    """Trial `index` of a random search: a pure function of (sampler seed, index, space).

    Each trial draws from its own generator seeded with (sampler seed, index), never from a stream shared
    with earlier trials, so raising the number of trials leaves the earlier trials unchanged. Names are
    drawn in sorted order; with 'hidden_layers' the depth is drawn first and every layer's width from
    'units' with a generator of its own (sampler seed, index, 1000 + layer), as Keras Tuner's guide
    samples one width per layer.
    """
    rng = np.random.default_rng([int(sampler_seed), int(index)])
    values: dict[str, Any] = {}
    for name in sorted(space):
        spec = space[name]
        if spec["type"] == "int":
            values[name] = _draw_int(rng, spec)
        elif spec["type"] == "float":
            lo, hi = spec["low"], spec["high"]
            u = rng.random()
            values[name] = (
                float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
                if spec.get("log")
                else float(lo + u * (hi - lo))
            )
        else:
            values[name] = spec["values"][int(rng.integers(0, len(spec["values"])))]
    if "hidden_layers" in values:
        depth = values.pop("hidden_layers")
        values.pop("units", None)
        values["hidden"] = tuple(
            _draw_int(np.random.default_rng([int(sampler_seed), int(index), 1000 + layer]), space["units"])
            for layer in range(depth)
        )
    return values


def _space(chk: _Checker, space: Any) -> dict:
    """Validate a random design's search space (bounds checked like any other configuration value)."""
    if not isinstance(space, dict) or not space:
        raise chk.fail("design.space", space, "a non-empty table of search dimensions")
    chk.keys(space, FACTOR_KEYS | SPACE_EXTRA, "design.space")
    for name, spec in space.items():
        key = f"design.space.{name}"
        chk.keys(spec, SPACE_KEYS, key)
        kind = spec.get("type")
        if kind == "int":
            for bound in ("low", "high"):
                chk.typed(f"{key}.{bound}", spec.get(bound), int, "an integer")
            step = chk.typed(f"{key}.step", spec.get("step", 1), int, "an integer step >= 1")
            if step < 1:
                raise chk.fail(f"{key}.step", step, "an integer step >= 1")
            if spec["low"] > spec["high"]:
                raise chk.fail(f"{key}.high", spec["high"], f"an integer >= low ({spec['low']})")
            if "log" in spec:
                raise chk.fail(f"{key}.log", spec["log"], "no 'log' on an integer range (log sampling is for floats)")
        elif kind == "float":
            for bound in ("low", "high"):
                chk.typed(f"{key}.{bound}", spec.get(bound), (int, float), "a number")
            if "step" in spec:
                raise chk.fail(f"{key}.step", spec["step"], "no 'step' on a float range (use type = 'choice')")
            log = chk.typed(f"{key}.log", spec.get("log", False), bool, "true or false")
            if spec["low"] > spec["high"]:
                raise chk.fail(f"{key}.high", spec["high"], f"a number >= low ({spec['low']})")
            if log and spec["low"] <= 0:
                raise chk.fail(f"{key}.low", spec["low"], "a number > 0 for log-uniform sampling")
        elif kind == "choice":
            if not isinstance(spec.get("values"), list) or not spec["values"]:
                raise chk.fail(f"{key}.values", spec.get("values"), "a non-empty list of choices")
            extra = set(spec) - {"type", "values"}
            if extra:
                raise chk.fail(
                    f"{key}.{sorted(extra)[0]}", spec[sorted(extra)[0]], "only 'values' with type = 'choice'"
                )
        else:
            raise chk.fail(f"{key}.type", kind, "'int', 'float' or 'choice'")
        if kind != "choice" and "values" in spec:
            raise chk.fail(f"{key}.values", spec["values"], f"no 'values' with type = '{kind}' (use 'low' and 'high')")
        # Every value the dimension can produce must be a valid configuration value: check both ends.
        if name == "hidden_layers":
            if kind != "int":
                raise chk.fail(f"{key}.type", kind, "'int' (the number of hidden layers)")
            if spec["low"] < 1:
                raise chk.fail(f"{key}.low", spec["low"], "an integer number of hidden layers >= 1 (layers >= 1)")
        elif name == "units":
            if kind != "int":
                raise chk.fail(f"{key}.type", kind, "'int' (the width of each hidden layer)")
            if spec["low"] < 1:
                raise chk.fail(f"{key}.low", spec["low"], "an integer number of units >= 1 (units >= 1)")
        elif kind == "choice":
            spec["values"] = [_check_value(chk, f"{key}.values[{i}]", name, v) for i, v in enumerate(spec["values"])]
        else:
            for bound in ("low", "high"):
                _check_value(chk, f"{key}.{bound}", name, spec[bound])
    if ("hidden_layers" in space) != ("units" in space):
        raise chk.fail(
            "design.space", sorted(space), "'hidden_layers' and 'units' together (depth and width per layer)"
        )
    if "hidden" in space and "hidden_layers" in space:
        raise chk.fail(
            "design.space.hidden", space["hidden"], "either 'hidden' or 'hidden_layers' with 'units', not both"
        )
    return space


def _random(chk: _Checker, design: dict) -> list[tuple[str, dict]]:
    """Trials of a random-search design."""
    if "trials" not in design:
        raise chk.fail("design.trials", None, "an integer number of trials >= 1 (a random design needs one)")
    trials = chk.typed("design.trials", design["trials"], int, "an integer number of trials >= 1")
    if not 1 <= trials <= MAX_TRIALS:
        raise chk.fail("design.trials", trials, f"an integer number of trials >= 1 (and at most {MAX_TRIALS:,})")
    seed = chk.typed("design.sampler_seed", design.get("sampler_seed", 0), int, "an integer >= 0")
    if seed < 0:
        raise chk.fail("design.sampler_seed", seed, "an integer >= 0")
    space = _space(chk, design.get("space"))
    out = []
    for i in range(trials):
        values = sample_trial(space, seed, i)
        values = {name: _check_value(chk, f"design.space.{name}", name, v) for name, v in values.items()}
        out.append((f"trial-{i:03d}", values))
    return out


# Activations under which a masked unit (zero weights in and out, zero bias) outputs 0 and stays zero:
# relu(0) = 0 with a zero gradient there, tanh(0) = 0; sigmoid(0) = 0.5 would feed the next layer.
PADDABLE_ACTIVATIONS = ("relu", "tanh", "elu", "selu", "gelu", "gelu_tanh", "leaky_relu", "silu", "identity")
# Initialisers whose draw a padded run can rescale to the real fans (engine.mask_padded_units, model.FAN_MODE):
# an orthogonal matrix cut out of a larger one is not orthogonal.
PADDABLE_INITS = tuple(init for init in C.INITS if init != "orthogonal")


def _width_buckets(chk: _Checker, design: dict) -> tuple[int, ...] | None:
    """A random design's width buckets (increasing integers >= 1), or None."""
    if "width_buckets" not in design:
        return None
    buckets = design["width_buckets"]
    if (
        not isinstance(buckets, list)
        or not buckets
        or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in buckets)
        or buckets != sorted(set(buckets))
    ):
        raise chk.fail(
            "design.width_buckets", buckets, "a non-empty list of increasing integer widths, e.g. [128, 256, 512]"
        )
    return tuple(buckets)


def _padded(chk: _Checker, cfg: RunConfig, buckets: tuple[int, ...], trial: str) -> RunConfig:
    """The trial's configuration with each hidden width padded up to the smallest bucket that holds it."""
    if cfg.activation not in PADDABLE_ACTIVATIONS:
        raise chk.fail(
            "design.width_buckets",
            list(buckets),
            f"no width buckets with activation {cfg.activation!r} (only {', '.join(PADDABLE_ACTIVATIONS)}: "
            "a masked unit must output 0)",
        )
    if cfg.init not in PADDABLE_INITS:
        raise chk.fail(
            "design.width_buckets",
            list(buckets),
            f"no width buckets with init {cfg.init!r} (a padded run's initial draw must rescale to the real "
            "widths; a block of an orthogonal matrix is not orthogonal)",
        )
    if cfg.batch_norm != "none":
        raise chk.fail(
            "design.width_buckets",
            list(buckets),
            f"no width buckets with batch_norm {cfg.batch_norm!r} (a masked unit must stay zero)",
        )
    if max(cfg.hidden) > buckets[-1]:
        raise chk.fail(
            "design.width_buckets",
            list(buckets),
            f"buckets up to at least {max(cfg.hidden)} ({trial} has hidden widths {list(cfg.hidden)})",
        )
    return dataclasses.replace(cfg, pad_hidden=tuple(next(b for b in buckets if b >= w) for w in cfg.hidden))


def _design(chk: _Checker, design: Any) -> tuple[str, list[tuple[str | None, dict]]]:
    """(kind, [(trial id or None, design values)]) of the design table."""
    chk.keys(design, DESIGN_KEYS, "design")
    kind = design.get("kind", "grid")
    if kind not in DESIGN_KINDS:
        raise chk.fail("design.kind", kind, "'grid', 'sweeps' or 'random'")
    for key in design:
        if key not in DESIGN_KEYS_BY_KIND[kind]:
            allowed = ", ".join(sorted(DESIGN_KEYS_BY_KIND[kind]))
            raise chk.fail(f"design.{key}", design[key], f"no '{key}' in a '{kind}' design (its keys: {allowed})")
    if "objective" in design and (not isinstance(design["objective"], str) or design["objective"] not in METRICS):
        raise chk.fail("design.objective", design["objective"], f"a metric, one of {', '.join(sorted(METRICS))}")
    if kind == "grid":
        return kind, [(None, v) for v in _grid(chk, design.get("factors", {}), "design.factors")]
    if kind == "sweeps":
        sweeps = design.get("sweeps")
        if not isinstance(sweeps, list) or not sweeps:
            raise chk.fail("design.sweeps", sweeps, "a non-empty array of tables [[design.sweeps]]")
        crossed_factors = design.get("factors", {})
        crossed = _grid(chk, crossed_factors, "design.factors") if crossed_factors else [{}]
        seen, out = set(), []
        for i, block in enumerate(sweeps):
            where = f"design.sweeps[{i}]"
            if not isinstance(block, dict) or not block:
                raise chk.fail(where, block, "a non-empty table of swept factors")
            for name in block:
                if isinstance(crossed_factors, dict) and name in crossed_factors:
                    raise chk.fail(
                        f"{where}.{name}", block[name], "a factor that is not also crossed in design.factors"
                    )
            for values in _grid(chk, block, where):
                for extra in crossed:
                    v = {**extra, **values}
                    if _trial_id(v) not in seen:
                        seen.add(_trial_id(v))
                        out.append((None, v))
        return kind, out
    return kind, _random(chk, design)


def _meta(chk: _Checker, meta: Any) -> dict:
    """The [study] table."""
    if meta is None:
        raise chk.fail("study", None, "a [study] table with at least 'name'")
    chk.keys(meta, STUDY_KEYS, "study")
    name = meta.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise chk.fail(
            "study.name",
            name,
            "a name of at most 100 letters, digits, '_', '-' or '.', starting with a letter or digit "
            "(it names the study's folders)",
        )
    for key in STUDY_STRINGS & set(meta):
        chk.typed(f"study.{key}", meta[key], str, "a string")
    if "authors" in meta:
        authors = meta["authors"]
        if not isinstance(authors, list) or not all(isinstance(a, str) for a in authors):
            raise chk.fail("study.authors", authors, "a list of strings")
    if "year" in meta:
        chk.typed("study.year", meta["year"], int, "an integer year")
    dataset = meta.get("dataset", "mnist")
    if not isinstance(dataset, str) or not (
        dataset in NATIVE_DATASETS or TFDS_PATTERN.fullmatch(dataset) or dataset.startswith("npz:")
    ):
        raise chk.fail("study.dataset", dataset, DATASETS_EXPECTED)
    if dataset.startswith("npz:"):
        meta["dataset"] = dataset = _npz(chk, dataset)
    shape = _known_shape(dataset)
    validation = meta.get("validation", "test")
    try:
        holdout = parse_validation(validation) if isinstance(validation, str) else -1
    except ValueError:
        holdout = -1
    if holdout == -1 or (holdout and shape and holdout >= shape.n_train):
        bound = f"0 < N < {shape.n_train}" if shape else "N > 0"
        raise chk.fail("study.validation", validation, f"'test', 'none' or 'holdout:N' with {bound}")
    chk.n_train = shape.n_train - (holdout or 0) if shape else None
    if meta.get("seeding", "independent") not in SEEDINGS:
        raise chk.fail("study.seeding", meta.get("seeding"), f"one of {', '.join(repr(x) for x in SEEDINGS)}")
    if "smallest_effect" in meta:
        effect = meta["smallest_effect"]
        if isinstance(effect, bool) or not isinstance(effect, (int, float)) or not (0 < effect < math.inf):
            raise chk.fail(
                "study.smallest_effect",
                effect,
                "a number > 0 in the objective's units (accuracies as fractions: 0.002 is 0.2 pp)",
            )
    if "seeds" in meta:
        chk.typed("study.seeds", meta["seeds"], int, "an integer number of seeds >= 1")
        if meta["seeds"] < 1:
            raise chk.fail("study.seeds", meta["seeds"], "an integer number of seeds >= 1")
    return meta


def _npz(chk: _Checker, dataset: str) -> str:
    """The content name of a study's `npz:PATH` (a path relative to the study file's folder)."""
    from hpstudy.npz_source import dataset_id, is_id

    if is_id(dataset):
        return dataset
    path = Path(dataset.removeprefix("npz:")).expanduser()
    try:
        return dataset_id(path if path.is_absolute() else chk.path.parent / path)
    except DataError as exc:
        raise DataError(f"{chk.path}: study.dataset = {dataset!r}: {exc}") from exc


def _assumptions(chk: _Checker, assumptions: Any) -> tuple[dict, ...]:
    if not isinstance(assumptions, list):
        raise chk.fail("assumptions", assumptions, "an array of tables [[assumptions]] with key, value and why")
    for i, a in enumerate(assumptions):
        where = f"assumptions[{i}]"
        chk.keys(a, ASSUMPTION_KEYS, where)
        for key in ("key", "why"):
            if not isinstance(a.get(key), str) or not a[key].strip():
                raise chk.fail(f"{where}.{key}", a.get(key), "a non-empty string")
        if "value" not in a:
            raise chk.fail(f"{where}.value", None, "the value chosen")
    return tuple(assumptions)


def _published(chk: _Checker, published: Any, trials: list[Trial], kind: str) -> tuple[dict, ...]:
    if not isinstance(published, list):
        raise chk.fail("published", published, "an array of tables [[published]]")
    factors = {k for t in trials for k in t.values}
    for i, p in enumerate(published):
        where_key = f"published[{i}]"
        chk.keys(p, PUBLISHED_KEYS, where_key)
        where = p.get("where", {})
        chk.keys(where, FACTOR_KEYS, f"{where_key}.where")
        p["where"] = {k: _check_value(chk, f"{where_key}.where.{k}", k, v) for k, v in where.items()}
        values = [k for k in p if k in METRICS]
        if not values:
            raise chk.fail(where_key, sorted(p), f"at least one published metric, from: {', '.join(sorted(METRICS))}")
        for k in values:
            chk.typed(f"{where_key}.{k}", p[k], (int, float), "a number")
            if not (p[k] >= 0 and math.isfinite(p[k])):
                raise chk.fail(f"{where_key}.{k}", p[k], "a number >= 0")
            if k.endswith("accuracy") and p[k] > 100:  # a report reads 1 < value <= 100 as a percentage
                raise chk.fail(
                    f"{where_key}.{k}", p[k], "an accuracy as a fraction (0.9716) or a percentage (97.16), at most 100"
                )
            if p[k] > PUBLISHED_MAX:
                raise chk.fail(
                    f"{where_key}.{k}", p[k], f"a number of at most {PUBLISHED_MAX:,.0f} (no paper prints more)"
                )
        for k in ("source", "note"):
            if k in p:
                chk.typed(f"{where_key}.{k}", p[k], str, "a string")
        if "best_over" in p:
            best_over = p["best_over"]
            if not isinstance(best_over, list) or not best_over or not all(isinstance(f, str) for f in best_over):
                raise chk.fail(f"{where_key}.best_over", best_over, "a non-empty list of design factors")
            for f in best_over:
                if f not in factors:
                    raise chk.fail(
                        f"{where_key}.best_over", best_over, f"factors of the design ({', '.join(sorted(factors))})"
                    )
        # A paper's configuration must name one of the design's trials, or it is a typo; a random
        # search reports the configuration its own search found, which ours need not sample.
        if kind != "random" and not any(matches(t, p["where"]) for t in trials):
            raise chk.fail(f"{where_key}.where", where, "a configuration that matches at least one trial of the design")
        # Two entries giving the same metric for the same configuration (and the same best_over) would
        # put two published numbers against one of ours: a copy-paste slip.
        for j, q in enumerate(published[:i]):
            same_where = q["where"].keys() == p["where"].keys() and all(
                same_value(q["where"][k], p["where"][k]) for k in p["where"]
            )
            shared = sorted(set(values) & {k for k in q if k in METRICS})
            if same_where and shared and q.get("best_over") == p.get("best_over"):
                raise chk.fail(
                    where_key,
                    p["where"],
                    f"one entry per configuration and metric; published[{j}] already gives {shared[0]} for it",
                )
    return tuple(published)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; StudyError (exit 2) names file, key, value and expectation."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study file ({exc.strerror}).") from exc
    try:
        doc = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid TOML ({exc}).") from exc
    chk = _Checker(path)
    chk.keys(doc, TOP_KEYS, "")
    meta = _meta(chk, doc.get("study"))
    hint = {**{k: "[model]" for k in MODEL_KEYS}, **{k: "[training]" for k in TRAINING_KEYS}}
    base: dict[str, Any] = {}
    for section, allowed in (("model", MODEL_KEYS), ("training", TRAINING_KEYS)):
        base.update(_settings_table(chk, doc.get(section, {}), allowed, section, hint))
    flavours_doc = doc.get("flavours", {})
    chk.keys(flavours_doc, set(FLAVOUR_DEFAULTS), "flavours")
    flavours = {
        flav: _settings_table(chk, table, FLAVOUR_KEYS, f"flavours.{flav}", hint)
        for flav, table in flavours_doc.items()
    }
    design = doc.get("design", {"kind": "grid", "factors": {}})
    kind, designed = _design(chk, design)
    trials = []
    order = list(dict.fromkeys(k for _, values in designed for k in values))
    buckets = _width_buckets(chk, design) if kind == "random" else None
    for tid, values in designed:
        cfg = _resolve(chk, base, flavours, values, meta, "training.")
        if buckets is not None:  # random designs only: grid and sweep trials keep their programs
            cfg = _padded(chk, cfg, buckets, tid)
        if kind == "sweeps":
            # Every trial of a sweeps design names every swept factor, the held-fixed ones at their base
            # values, so the point where two sweeps cross is one trial, found in both sweeps.
            values = {k: values[k] if k in values else getattr(cfg, k) for k in order}
            if any(t.values == values for t in trials):
                continue
        trials.append(Trial(tid or _trial_id(values) or "base", values, cfg))
    ids = [t.trial_id for t in trials]
    if len(set(ids)) != len(ids):
        raise chk.fail("design", ids, "distinct trials")
    if kind != "random":
        seen: dict[RunConfig, str] = {}
        for t in trials:
            if t.config in seen:
                raise chk.fail(
                    "design", t.trial_id, f"trials with distinct configurations (it equals {seen[t.config]})"
                )
            seen[t.config] = t.trial_id
    assumptions = _assumptions(chk, doc.get("assumptions", []))
    published = _published(chk, doc.get("published", []), trials, kind)
    return Study(
        path=path,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        meta=meta,
        trials=tuple(trials),
        assumptions=assumptions,
        published=published,
        design_kind=kind,
        design={
            k: v for k, v in design.items() if k in ("kind", "objective", "trials", "sampler_seed", "width_buckets")
        },
    )


def parse_seeds(text: str | None, default: int) -> range:
    """'N' -> seeds 0..N-1, 'A:B' -> seeds A..B-1, None -> the study's default count."""
    if text is None:
        return range(default)
    try:
        if ":" in text:
            a, b = (int(x) for x in text.split(":", 1))
        else:
            a, b = 0, int(text)
    except ValueError:
        a, b = 0, -1
    if not (0 <= a < b):
        raise StudyError(
            f"--seeds {text!r} is invalid; expected N (seeds 0..N-1, N >= 1) or A:B (seeds A..B-1, 0 <= A < B)."
        )
    return range(a, b)
