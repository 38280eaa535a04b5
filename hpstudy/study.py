"""Study files (TOML): parse, validate, and expand a study's design into trials and runs.

The format is documented key by key in docs/studies.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy import config as C
from hpstudy.config import EarlyStopping, RunConfig
from hpstudy.data import parse_validation
from hpstudy.engine import RunSpec
from hpstudy.errors import StudyError

# What each implementation flavour implies unless the study says otherwise (see docs/studies.md).
FLAVOUR_DEFAULTS: dict[str, dict[str, Any]] = {
    "keras": {"init": "keras", "loss": "softmax_cross_entropy", "optimizer": "adam_keras"},
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
    "nielsen": {"init": "nielsen", "loss": "sigmoid_quadratic", "optimizer": "sgd"},
}
MODEL_KEYS = {"flavour", "hidden", "activation", "dropout", "init", "loss"}
TRAINING_KEYS = {"optimizer", "learning_rate", "momentum", "l2", "batch_size", "epochs", "early_stopping"}
FACTOR_KEYS = (MODEL_KEYS | TRAINING_KEYS) - {"early_stopping"}
STUDY_KEYS = {"name", "title", "authors", "year", "citation", "doi", "url", "dataset", "validation", "seeds", "description"}
TOP_KEYS = {"study", "model", "training", "flavours", "design", "assumptions", "published"}
DESIGN_KEYS = {"kind", "factors", "sweeps", "trials", "sampler_seed", "space"}
SPACE_KEYS = {"type", "low", "high", "step", "log", "values"}
ES_KEYS = {"monitor", "min_delta", "patience", "restore_best_weights", "rule"}
METRICS = {
    "test_accuracy", "test_loss", "final_val_accuracy", "final_val_loss", "best_val_accuracy",
    "final_train_accuracy", "final_train_loss", "seconds", "epochs_run",
}
PUBLISHED_KEYS = METRICS | {"where", "source", "note"}
N_TRAIN = 60000


@dataclasses.dataclass(frozen=True)
class Trial:
    """One configuration of a study's design."""

    trial_id: str
    values: dict  # the design's values for this trial (factor -> value)
    config: RunConfig


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

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def default_seeds(self) -> int:
        return int(self.meta.get("seeds", 5))

    def runs(self, seeds: range) -> list[RunSpec]:
        """Every (trial, seed) run of the study for the given seed indices."""
        return [RunSpec(t.config, s, t.trial_id) for t in self.trials for s in seeds]

    def with_max_epochs(self, max_epochs: int) -> "Study":
        """A smoke-test copy whose runs train for at most max_epochs (its runs are different runs)."""
        trials = tuple(
            dataclasses.replace(t, config=dataclasses.replace(t.config, epochs=min(t.config.epochs, max_epochs)))
            for t in self.trials
        )
        meta = {**self.meta, "name": f"{self.name}.max_epochs-{max_epochs}"}
        return dataclasses.replace(self, trials=trials, meta=meta)


class _Checker:
    """Collects the file name so every error names file, key path, value and expectation."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, value: Any, expected: str) -> StudyError:
        return StudyError(f"{self.path}: {key} = {value!r} is invalid; expected {expected}.")

    def keys(self, table: Any, allowed: set[str], where: str) -> None:
        if not isinstance(table, dict):
            raise self.fail(where, table, "a table")
        for key in table:
            if key not in allowed:
                near = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise StudyError(
                    f"{self.path}: unknown key '{where + '.' if where else ''}{key}'{hint} "
                    f"(allowed here: {', '.join(sorted(allowed))})."
                )

    def typed(self, key: str, value: Any, kind: type | tuple, expected: str) -> Any:
        if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, value, expected)
        if not isinstance(value, kind):
            raise self.fail(key, value, expected)
        return value


def _check_value(chk: _Checker, key: str, name: str, value: Any) -> Any:
    """Validate one configuration value (from a base table or a factor level) and normalise it."""
    if name in ("flavour",):
        if value not in FLAVOUR_DEFAULTS:
            raise chk.fail(key, value, f"one of {', '.join(FLAVOUR_DEFAULTS)}")
    elif name == "activation":
        if value not in C.ACTIVATIONS:
            raise chk.fail(key, value, f"one of {', '.join(C.ACTIVATIONS)}")
    elif name == "init":
        if value not in C.INITS:
            raise chk.fail(key, value, f"one of {', '.join(C.INITS)}")
    elif name == "loss":
        if value not in C.LOSSES:
            raise chk.fail(key, value, f"one of {', '.join(C.LOSSES)}")
    elif name == "optimizer":
        if value not in C.OPTIMIZERS:
            raise chk.fail(key, value, f"one of {', '.join(C.OPTIMIZERS)}")
    elif name == "hidden":
        if not isinstance(value, list) or not value:
            raise chk.fail(key, value, "a non-empty list of layer widths (layers >= 1)")
        for width in value:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise chk.fail(key, value, "layer widths that are integers >= 1 (units >= 1)")
        return tuple(value)
    elif name == "learning_rate":
        chk.typed(key, value, (int, float), "a number > 0")
        if not (value > 0 and math.isfinite(value)):
            raise chk.fail(key, value, "a learning rate > 0")
        return float(value)
    elif name == "dropout":
        chk.typed(key, value, (int, float), "a number in [0, 1)")
        if not 0 <= value < 1:
            raise chk.fail(key, value, "a dropout rate in [0, 1)")
        return float(value)
    elif name in ("momentum", "l2"):
        chk.typed(key, value, (int, float), "a number >= 0")
        if value < 0:
            raise chk.fail(key, value, "a number >= 0")
        return float(value)
    elif name == "batch_size":
        chk.typed(key, value, int, f"an integer batch size in [1, {N_TRAIN}]")
        if not 1 <= value <= N_TRAIN:
            raise chk.fail(key, value, f"a batch size in [1, {N_TRAIN}] (the training set size)")
    elif name == "epochs":
        chk.typed(key, value, int, "an integer >= 1")
        if value < 1:
            raise chk.fail(key, value, "an integer number of epochs >= 1")
    return value


def _early_stopping(chk: _Checker, key: str, table: Any) -> EarlyStopping | None:
    """Parse an early-stopping table, or 'none'."""
    if table == "none":
        return None
    chk.keys(table, ES_KEYS, key)
    es = EarlyStopping(**table)
    if es.monitor not in C.MONITORS:
        raise chk.fail(f"{key}.monitor", es.monitor, f"one of {', '.join(C.MONITORS)}")
    if es.rule not in C.STOPPING_RULES:
        raise chk.fail(f"{key}.rule", es.rule, f"one of {', '.join(C.STOPPING_RULES)}")
    chk.typed(f"{key}.patience", es.patience, int, "an integer >= 0")
    if es.patience < 0:
        raise chk.fail(f"{key}.patience", es.patience, "an integer >= 0")
    chk.typed(f"{key}.min_delta", es.min_delta, (int, float), "a number >= 0")
    chk.typed(f"{key}.restore_best_weights", es.restore_best_weights, bool, "true or false")
    return dataclasses.replace(es, min_delta=float(es.min_delta))


def _resolve(chk: _Checker, base: dict, flavours: dict, values: dict, meta: dict, where: str) -> RunConfig:
    """Flavour defaults, then the study's base keys, then its per-flavour table, then the trial's values."""
    flavour = {**base, **values}.get("flavour", "keras")
    settings = {**FLAVOUR_DEFAULTS[flavour], **base, **flavours.get(flavour, {}), **values, "flavour": flavour}
    stop = settings.pop("early_stopping", None)
    es = _early_stopping(chk, f"{where}early_stopping", stop) if stop is not None else None
    cfg = RunConfig(
        dataset=meta.get("dataset", "mnist"), validation=meta.get("validation", "test"), early_stopping=es, **settings
    )
    if es is not None and es.monitor.startswith("val_") and cfg.validation == "none":
        raise chk.fail("study.validation", "none", f"a validation split, since early stopping monitors {es.monitor}")
    return cfg


def _levels(chk: _Checker, key: str, name: str, levels: Any) -> list:
    """A factor's list of levels, each validated."""
    if name not in FACTOR_KEYS:
        near = difflib.get_close_matches(name, sorted(FACTOR_KEYS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise StudyError(f"{chk.path}: unknown factor '{key}'{hint} (factors: {', '.join(sorted(FACTOR_KEYS))}).")
    if not isinstance(levels, list) or not levels:
        raise chk.fail(key, levels, "a non-empty list of levels (an empty grid has no trials)")
    return [_check_value(chk, key, name, v) for v in levels]


def _trial_id(values: dict) -> str:
    """A readable id from the trial's design values, independent of the order they were listed in."""
    def fmt(v):
        return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return ",".join(f"{k}={fmt(values[k])}" for k in sorted(values))


def _grid(chk: _Checker, factors: dict, where: str) -> list[dict]:
    """Cartesian product of the factors' levels."""
    chk.keys(factors, set(factors), where)
    names = list(factors)
    levels = [_levels(chk, f"{where}.{n}", n, factors[n]) for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*levels)]


def sample_trial(space: dict, sampler_seed: int, index: int) -> dict:
    """Trial `index` of a random search: a pure function of (sampler seed, index, space)."""
    rng = np.random.default_rng([int(sampler_seed), int(index)])
    values: dict[str, Any] = {}
    for name in sorted(space):
        spec = space[name]
        if spec["type"] == "int":
            step = spec.get("step", 1)
            values[name] = int(spec["low"] + step * rng.integers(0, (spec["high"] - spec["low"]) // step + 1))
        elif spec["type"] == "float":
            lo, hi = spec["low"], spec["high"]
            u = rng.random()
            values[name] = float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))) if spec.get("log") else float(lo + u * (hi - lo))
        else:
            values[name] = spec["values"][int(rng.integers(0, len(spec["values"])))]
    if "hidden_layers" in values:  # depth and per-layer width, as Keras Tuner's guide samples them
        depth = values.pop("hidden_layers")
        per_layer = space.get("units")
        widths = []
        for layer in range(depth):
            lrng = np.random.default_rng([int(sampler_seed), int(index), 1000 + layer])
            step = per_layer.get("step", 1)
            widths.append(int(per_layer["low"] + step * lrng.integers(0, (per_layer["high"] - per_layer["low"]) // step + 1)))
        values.pop("units", None)
        values["hidden"] = tuple(widths)
    return values


def _random(chk: _Checker, design: dict) -> list[tuple[str, dict]]:
    """Trials of a random-search design."""
    trials = chk.typed("design.trials", design.get("trials"), int, "an integer number of trials >= 1")
    if trials < 1:
        raise chk.fail("design.trials", trials, "an integer number of trials >= 1")
    seed = chk.typed("design.sampler_seed", design.get("sampler_seed", 0), int, "an integer")
    space = design.get("space")
    chk.keys(space, FACTOR_KEYS | {"hidden_layers", "units"}, "design.space")
    for name, spec in space.items():
        key = f"design.space.{name}"
        chk.keys(spec, SPACE_KEYS, key)
        kind = spec.get("type")
        if kind in ("int", "float"):
            if not all(isinstance(spec.get(b), (int, float)) and not isinstance(spec.get(b), bool) for b in ("low", "high")):
                raise chk.fail(key, spec, "numbers 'low' and 'high'")
            if spec["low"] > spec["high"] or (spec.get("log") and spec["low"] <= 0):
                raise chk.fail(key, spec, "low <= high (and low > 0 with log = true)")
        elif kind == "choice":
            if not isinstance(spec.get("values"), list) or not spec["values"]:
                raise chk.fail(f"{key}.values", spec.get("values"), "a non-empty list")
        else:
            raise chk.fail(f"{key}.type", kind, "'int', 'float' or 'choice'")
    if ("hidden_layers" in space) != ("units" in space):
        raise chk.fail("design.space", sorted(space), "'hidden_layers' and 'units' together")
    out = []
    for i in range(trials):
        values = sample_trial(space, seed, i)
        for name, v in values.items():
            if name != "hidden":
                _check_value(chk, f"design.space.{name}", name, v)
        out.append((f"trial-{i:03d}", values))
    return out


def _design(chk: _Checker, design: Any) -> tuple[str, list[tuple[str | None, dict]]]:
    """(kind, [(trial id or None, design values)]) of the design table."""
    chk.keys(design, DESIGN_KEYS, "design")
    kind = design.get("kind", "grid")
    if kind == "grid":
        return kind, [(None, v) for v in _grid(chk, design.get("factors", {}), "design.factors")]
    if kind == "sweeps":
        sweeps = design.get("sweeps")
        if not isinstance(sweeps, list) or not sweeps:
            raise chk.fail("design.sweeps", sweeps, "a non-empty array of tables [[design.sweeps]]")
        crossed = _grid(chk, design.get("factors", {}), "design.factors") if design.get("factors") else [{}]
        seen, out = set(), []
        for i, block in enumerate(sweeps):
            for values in _grid(chk, block, f"design.sweeps[{i}]"):
                for extra in crossed:
                    v = {**extra, **values}
                    if _trial_id(v) not in seen:
                        seen.add(_trial_id(v))
                        out.append((None, v))
        return kind, out
    if kind == "random":
        return kind, _random(chk, design)
    raise chk.fail("design.kind", kind, "'grid', 'sweeps' or 'random'")


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
    meta = doc.get("study")
    if meta is None:
        raise StudyError(f"{path}: missing table [study] with at least 'name'.")
    chk.keys(meta, STUDY_KEYS, "study")
    name = meta.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-." for c in name):
        raise chk.fail("study.name", name, "a non-empty name of letters, digits, '_', '-' or '.'")
    if meta.get("dataset", "mnist") != "mnist":
        raise chk.fail("study.dataset", meta.get("dataset"), "'mnist'")
    try:
        parse_validation(meta.get("validation", "test"))
    except ValueError:
        raise chk.fail("study.validation", meta.get("validation"), "'test', 'none' or 'holdout:N'") from None
    if "seeds" in meta and (not isinstance(meta["seeds"], int) or isinstance(meta["seeds"], bool) or meta["seeds"] < 1):
        raise chk.fail("study.seeds", meta["seeds"], "an integer number of seeds >= 1")
    base: dict[str, Any] = {}
    for section, allowed in (("model", MODEL_KEYS), ("training", TRAINING_KEYS)):
        table = doc.get(section, {})
        chk.keys(table, allowed, section)
        for key, value in table.items():
            base[key] = value if key == "early_stopping" else _check_value(chk, f"{section}.{key}", key, value)
    flavours = doc.get("flavours", {})
    chk.keys(flavours, set(FLAVOUR_DEFAULTS), "flavours")
    for flav, table in flavours.items():
        chk.keys(table, FACTOR_KEYS | {"early_stopping"}, f"flavours.{flav}")
        for key, value in table.items():
            if key != "early_stopping":
                table[key] = _check_value(chk, f"flavours.{flav}.{key}", key, value)
    kind, designed = _design(chk, doc.get("design", {"kind": "grid", "factors": {}}))
    trials = []
    for tid, values in designed:
        cfg = _resolve(chk, base, flavours, values, meta, "training.")
        trials.append(Trial(tid or _trial_id(values) or "base", values, cfg))
    ids = [t.trial_id for t in trials]
    if len(set(ids)) != len(ids):
        raise chk.fail("design", ids, "distinct trials")
    assumptions = doc.get("assumptions", [])
    for i, a in enumerate(assumptions):
        chk.keys(a, {"key", "value", "why"}, f"assumptions[{i}]")
    published = doc.get("published", [])
    for i, p in enumerate(published):
        chk.keys(p, PUBLISHED_KEYS, f"published[{i}]")
        chk.keys(p.get("where", {}), FACTOR_KEYS, f"published[{i}].where")
    return Study(
        path=path,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        meta=meta,
        trials=tuple(trials),
        assumptions=tuple(assumptions),
        published=tuple(published),
        design_kind=kind,
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
        raise StudyError(f"--seeds {text!r} is invalid; expected N (seeds 0..N-1, N >= 1) or A:B (seeds A..B-1, 0 <= A < B).")
    return range(a, b)
