"""The analysis model of a report: metrics, per-trial cells, published verdicts, comparisons, and
`analyze`, which computes every number a report shows from the stored runs (pure: writes nothing).

tables.py, figures.py, readme.py and report.py import this module; it imports none of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hpstudy import store
from hpstudy.config import run_id
from hpstudy.errors import StoreError
from hpstudy.reporting import stats
from hpstudy.study import Study, Trial, matches, same_value

CONFIDENCE = 0.95
POWER = 0.8
ALPHA = 0.05
MAX_FACTOR_COMPARISONS = 60
SMALL_N = 5  # below this many seeds per configuration, t-tests use a variance pooled over configurations


@dataclasses.dataclass(frozen=True)
class Metric:
    """A per-run metric as the report shows it: column, label, kind and which direction is better."""

    column: str
    label: str
    kind: str  # "acc" (fraction, shown in %), "loss", "time", "count"
    better: int  # +1 higher is better, -1 lower is better, 0 neither

    def scale(self, value: float) -> float:
        """The value in display units (accuracies in percent)."""
        return value * 100.0 if self.kind == "acc" else value

    @property
    def interval_scale(self) -> str:
        """Where its intervals are computed so that they stay in the possible range (stats.summarize)."""
        return {"acc": "logit", "loss": "log", "time": "log"}.get(self.kind, "linear")


METRICS: tuple[Metric, ...] = (
    Metric("test_accuracy", "test acc. (%)", "acc", +1),
    Metric("test_loss", "test loss", "loss", -1),
    Metric("final_val_accuracy", "final val. acc. (%)", "acc", +1),
    Metric("final_val_loss", "final val. loss", "loss", -1),
    Metric("best_val_accuracy", "best val. acc. (%)", "acc", +1),
    Metric("epochs_run", "epochs run", "count", 0),
)
METRIC = {m.column: m for m in METRICS}
# Training time is a measurement of chunks, not of runs: reported apart (Analysis.timing), never with
# per-run intervals or a "best".
SECONDS = Metric("seconds", "seconds / run", "time", 0)
# Published metrics that may be placed against the seeds, besides the table's: the training metrics
# (each seed's value, as for the table's metrics, but not tabulated) and the time (reference only).
TRAIN_METRICS = (
    Metric("final_train_accuracy", "final train acc. (%)", "acc", +1),
    Metric("final_train_loss", "final train loss", "loss", -1),
)
EXTRA_METRICS = {"seconds": SECONDS, **{m.column: m for m in TRAIN_METRICS}}
PRIMARY_PREFERENCE = ("test_accuracy", "best_val_accuracy", "final_val_accuracy")
FACTOR_LABELS = {
    "learning_rate": "learning rate",
    "batch_size": "batch size",
    "dropout": "dropout",
    "flavour": "flavour",
    "activation": "activation",
    "hidden": "hidden widths",
    "optimizer": "optimizer",
    "momentum": "momentum",
    "l2": "L2",
    "epochs": "epochs",
    "init": "init",
    "loss": "loss",
}


def metric_of(column: str) -> Metric:
    """The Metric describing a column (table metrics and the extra published ones)."""
    return METRIC.get(column) or EXTRA_METRICS[column]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


# The columns a report reads (hp.* and config are not needed: the study file's trials give the design).
COLUMNS = (
    "study_sha256",
    "trial_id",
    "run_id",
    "seed",
    *store.HISTORY_FIELDS,
    "epochs_run",
    *(m.column for m in METRICS if m.column != "epochs_run"),
    *(m.column for m in TRAIN_METRICS),
    "seconds",
    "chunk_width",
    "group_id",
    "compile_seconds",
    "dataset_fingerprint",
    "environment",
)


def _run_ids(trial: Trial, seeds: Sequence[int]) -> list[str]:
    """config.run_id of each seed, serialising the configuration once per trial instead of once per seed.

    The shortcut is checked against config.run_id on the first seed and dropped if it ever disagrees.
    """
    if not seeds:
        return []
    canonical = trial.config.canonical()

    def fast(seed: int) -> str:
        return hashlib.sha256(f"{canonical}|seed={int(seed)}".encode()).digest()[:16].hex()

    if fast(seeds[0]) != run_id(trial.config, seeds[0]):
        return [run_id(trial.config, s) for s in seeds]
    return [fast(s) for s in seeds]


def load_runs(
    study: Study, results: str | os.PathLike, seeds: Sequence[int] | None = None, checked: bool = False
) -> pd.DataFrame:
    """The stored runs of `study` whose configuration the study file still describes, sorted.

    Only runs whose run id is (trial configuration, seed) of the current study file are kept, so runs
    stored under an older version of a trial's configuration never mix in. `seeds` filters; None keeps
    every stored seed. No runs at all is a StoreError naming the folder and the command that makes them.
    `checked`: read through store.read_runs, which checks every part (foreign, mistyped or conflicting
    parts are a StoreError), in the same single pass; otherwise the faster unchecked column read.
    """
    directory = store.study_dir(results, study.name)
    if checked:
        runs = store.read_runs(directory, study.name, list(COLUMNS))  # empty when none; a link loop says so
    else:
        runs = store.read_columns(directory, list(COLUMNS))
    how = (
        f"hpstudy run {study.meta.get('base_name', study.name)}{study.meta.get('variant_args', '')} --results {results}"
    )
    if len(runs) == 0:
        raise StoreError(
            f"no stored runs for study '{study.name}' in {directory}: run the study first ({how}), "
            "or pass --results with the folder that holds them. Nothing was written."
        )
    stored_seeds = sorted({int(s) for s in runs["seed"]})
    wanted = stored_seeds if seeds is None else sorted({int(s) for s in seeds})
    expected = {rid for t in study.trials for rid in _run_ids(t, wanted)}
    keep = runs[runs["run_id"].isin(expected)].copy()
    if len(keep) == 0:
        which = "" if seeds is None else f" for seeds {describe_seeds(wanted)}"
        raise StoreError(
            f"{directory} holds {len(runs)} runs, but none{which} of the configurations in {study.path}: "
            f"the study file changed since they were stored, or other seeds were run. Run them with {how}"
            + ("" if seeds is None else f" --seeds {wanted[0]}:{wanted[-1] + 1}")
            + ". Nothing was written."
        )
    keep["seed"] = keep["seed"].astype(int)
    order = {t.trial_id: i for i, t in enumerate(study.trials)}
    keep["_order"] = keep["trial_id"].map(order)
    keep = keep.sort_values(["_order", "seed"], kind="stable").drop(columns="_order").reset_index(drop=True)
    keep.attrs["ignored"] = int(len(runs) - len(keep))  # other seeds, or configurations no longer in the file
    keep.attrs["amendments"] = amendments_of(directory, set(keep["run_id"]))
    return keep


def amendments_of(directory, run_ids: set[str]) -> list[tuple[str, str, int]]:
    """(date, reason, runs of `run_ids` amended) for each date and reason of the store's amendment log
    (hpstudy/amend.py) that touched one of these runs, in the log's order (a pass writes one entry per
    chunk, counted together here)."""
    from hpstudy.amend import read_log

    touched: dict[tuple[str, str], set] = {}
    for entry in read_log(directory):
        runs = set(entry["runs"]) & run_ids
        if runs:
            touched.setdefault((entry["when"][:10], entry["reason"]), set()).update(runs)
    return [(when, reason, len(runs)) for (when, reason), runs in touched.items()]


# ----------------------------------------------------------------------------------------------
# Analysis
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """One metric of one trial: the finite values by seed and their summary (intervals on the metric's
    interval scale, so that they stay within the possible range)."""

    values: dict[int, float]  # seed -> value (finite only)
    n_nonfinite: int
    summary: stats.Summary | None  # None when no finite value

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def has_interval(self) -> bool:
        return self.summary is not None and self.summary.n >= 2 and math.isfinite(self.summary.ci_low)


@dataclasses.dataclass(frozen=True)
class Row:
    """One trial: its runs' seeds, one Cell per metric, and the published values that name it alone."""

    trial: Trial
    seeds: tuple[int, ...]
    cells: dict[str, Cell]
    published: dict[str, float]
    boot: tuple[float, float]  # bootstrap CI of the primary metric's mean (NaN below stats.MIN_BOOTSTRAP_N)
    # published metrics that are the paper's best over other factors (e.g. its maximum over learning
    # rates), placed at the configuration where it was found, with the factors maximised over
    published_best_over: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One published number placed against the seeds."""

    source: str
    where: str
    metric: str
    published: float
    against: str  # what the seeds' values are when not one trial's: the best of several per seed
    n: int
    placement: stats.Placement | None
    note: str
    trial_id: str = ""  # the one trial the number is placed against, if it names one
    also: tuple[str, ...] = ()  # the same number against the same seeds, listed elsewhere: counted once
    trials: tuple[str, ...] = ()  # every trial whose runs the number is placed against
    holm_p: float = math.nan  # p_outside, Holm-corrected over the study's counted published numbers
    against_label: str = ""  # the configuration the seeds are, when it is not the published `where` (a search's best)
    qualified_by: tuple[str, ...] = ()  # assumptions recording a known setup difference for these runs
    ties: tuple[str, ...] = ()  # seeds at which the best configuration was a tie, and how it was broken
    by_epoch: tuple[str, ...] = ()  # the state had training stopped after epoch 1, 2, ... (one value's 95%)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """a - b on the primary metric, with its Holm-adjusted p within its family."""

    a: str
    b: str
    result: stats.Difference
    holm_p: float


@dataclasses.dataclass(frozen=True)
class Timing:
    """What was measured of one configuration's training time (hardware-dependent): chunks' wall time."""

    trial_id: str
    runs: int
    chunk_width: int
    seconds_per_run: float  # median over runs of chunk wall time / runs in the chunk
    model_steps_per_s: float  # median over runs of (steps per epoch * epochs run) / seconds per run


@dataclasses.dataclass(frozen=True)
class Analysis:
    study: Study
    runs: pd.DataFrame
    rows: tuple[Row, ...]
    metrics: tuple[Metric, ...]  # the table's metrics with at least one finite value
    primary: Metric
    factors: tuple[str, ...]
    verdicts: tuple[Verdict, ...]
    best_vs_rest: tuple[Comparison, ...]
    factor_effects: tuple[Comparison, ...]
    factor_note: str
    add_seeds: str
    paired: bool = False  # common random numbers: comparisons pair runs by seed index
    significant_best: frozenset = frozenset()  # trials better than every other of their family (Holm)
    timing: tuple[Timing, ...] = ()
    effects: tuple[stats.Effect, ...] = ()  # 2^k factorial main effects and interactions
    effects_factors: tuple[str, ...] = ()
    simple_effects: tuple = ()  # SimpleEffect per significant two-factor interaction, factor and level
    selection: tuple = ()  # SplitEstimate: the best chosen on one half of the seeds, estimated on the other
    best_sets: tuple = ()  # BestSet per group: Hsu's MCB, the configurations that may be the best
    contrast: StudyContrast | None = None  # each configuration against the same one of another study
    dropped: tuple[str, ...] = ()  # metrics left out because they repeat others (validation = test)
    pooled: dict | None = None  # group -> (variance, df) pooled over its configurations, for few seeds

    def row(self, trial_id: str) -> Row:
        return next(r for r in self.rows if r.trial.trial_id == trial_id)

    @property
    def seeds(self) -> list[int]:
        return sorted({int(x) for x in self.runs["seed"]})


_same = same_value  # equal design values as the study file's own matching decides (float-tolerant)


def matching_trials(study: Study, where: dict) -> list[Trial]:
    """The trials a published entry's `where` names (float-tolerant; empty names every trial)."""
    return [t for t in study.trials if matches(t, where)]


def design_factors(study: Study) -> tuple[str, ...]:
    """The design's factors in the order they first appear in the trials' values."""
    seen: dict[str, None] = {}
    for t in study.trials:
        for k in t.values:
            seen.setdefault(k, None)
    return tuple(seen)


def factor_levels(study: Study, factor: str) -> list:
    """The distinct levels of a factor, in design order (numbers sorted ascending)."""
    levels: list = []
    for t in study.trials:
        if factor in t.values and not any(_same(t.values[factor], v) for v in levels):
            levels.append(t.values[factor])
    if levels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        levels.sort()
    return levels


# The implementations the flavours stand for, as a reader knows them.
IMPLEMENTATIONS = {"keras": "Keras", "sklearn": "scikit-learn", "nielsen": "Nielsen"}


def is_pairs(value: Any) -> bool:
    """Whether a design value is a tuple of (name, value) pairs (optimizer_args, schedule_args)."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in value
    )


def _pair_value(value: Any) -> str:
    """One value of a (name, value) pair as the study file writes it: true/false, numbers, text."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def format_value(factor: str, value: Any) -> str:
    """A design value as text: 0.001, 32, 416x288, scikit-learn, decay=0.9, eps=1e-08 (pairs; none: '')."""
    if factor == "flavour" and isinstance(value, str):
        return IMPLEMENTATIONS.get(value, value)
    if is_pairs(value) and value:
        return ", ".join(f"{name}={_pair_value(v)}" for name, v in value)
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def trial_label(trial: Trial, factors: Sequence[str] | None = None, sep: str = ", ") -> str:
    """Short label of a trial from its design values ('lr 0.001, batch 32')."""
    short = {"learning_rate": "lr", "batch_size": "batch", "hidden": "hidden"}
    keys = factors if factors is not None else list(trial.values)

    def text(k: str) -> str:
        v = trial.values[k]
        return f"({format_value(k, v)})" if is_pairs(v) else format_value(k, v)  # its commas kept apart

    parts = [text(k) if k == "flavour" else f"{short.get(k, k)} {text(k)}" for k in keys if k in trial.values]
    return sep.join(parts) if parts else trial.trial_id


def _primary(study: Study) -> Metric:
    """The study's objective (design.objective), else the accuracy its published numbers use most."""
    objective = getattr(study, "objective", None)
    if objective in METRIC:
        return METRIC[objective]
    counts = Counter(k for p in study.published for k in p if k in PRIMARY_PREFERENCE)
    best = max(PRIMARY_PREFERENCE, key=lambda k: (counts.get(k, 0), -PRIMARY_PREFERENCE.index(k)))
    return METRIC[best]


def _published_value(metric: Metric, value: float) -> tuple[float, str]:
    """A published value in the store's units: accuracies given in percent are converted."""
    value = float(value)
    if metric.kind == "acc" and value > 1.0:
        return value / 100.0, "given in percent, converted"
    return value, ""


def _published_rounding(metric: Metric, value: float) -> tuple[float, float]:
    """The rounding interval of a published value as printed (its last decimal), in the store's units."""
    lo, hi = stats.rounding_interval(float(value))
    return (lo / 100.0, hi / 100.0) if metric.kind == "acc" and float(value) > 1.0 else (lo, hi)


def _margin(study: Study, metric: Metric) -> float | None:
    """The equivalence margin for a metric: the study's smallest effect for accuracies (the objective's
    units); none is stated for losses, so a loss is never called reproduced."""
    return study.smallest_effect if metric.kind == "acc" else None


# The implementations a flavour stands for, as the text of an assumption names them.
_FLAVOUR_NAMES = {
    "nielsen": ("nielsen", "network.py"),
    "sklearn": ("scikit-learn", "sklearn", "mlpclassifier"),
    "keras": ("keras",),
}


def _qualifying(study: Study, trials: Sequence[Trial]) -> tuple[str, ...]:
    """The assumptions that record a known setup difference for these trials: those whose key names a
    flavour the trials use (flavours.nielsen...), or whose text names its implementation and no other one (a
    difference that a study-wide setting imposes on one implementation, such as Nielsen's 50,000 training
    images; an assumption naming several implementations is a shared choice, not a difference of one)."""
    flavours = {t.values.get("flavour") for t in trials} - {None}
    if not flavours:
        return ()
    out = []
    for x in study.assumptions:
        key, text = str(x.get("key", "")), f"{x.get('value', '')} {x.get('why', '')}".lower()
        named = {f for f, names in _FLAVOUR_NAMES.items() if any(n in text for n in names)}
        for f in sorted(flavours):
            if key.startswith(f"flavours.{f}") or (not key.startswith("flavours.") and named == {f}):
                out.append(f"{key} ({x.get('value', '')})")
                break
    return tuple(out)


def _cell(values: dict[int, float], metric: Metric, epochs: int | None = None) -> Cell:
    """A metric's values by seed and their summary; a count (epochs run) keeps its intervals in [1, epochs]."""
    finite = {s: v for s, v in values.items() if math.isfinite(v)}
    bounds = (1.0, float(epochs)) if metric.kind == "count" and epochs else None
    summary = stats.summarize(list(finite.values()), CONFIDENCE, metric.interval_scale, bounds) if finite else None
    return Cell(finite, len(values) - len(finite), summary)


_PER_RUN = ("seed", "seconds", "epochs_run", "chunk_width")  # besides the metrics: what analyze reads per run


def _columns_by_trial(runs: pd.DataFrame) -> dict[str, dict[str, list]]:
    """Each configuration's runs as plain lists per column, in stored order (built in one pass: indexing a
    pandas group per metric costs more than the statistics once there are thousands of configurations)."""
    wanted = [c for c in (*_PER_RUN, *(m.column for m in (*METRICS, *TRAIN_METRICS))) if c in runs.columns]
    columns = {c: runs[c].tolist() for c in wanted}
    return {
        tid: {c: [v[i] for i in idx] for c, v in columns.items()}
        for tid, idx in runs.groupby("trial_id", sort=False).indices.items()
    }


def _values(group: dict[str, list], column: str) -> dict[int, float]:
    if column not in group:
        return {}
    return {int(s): float(v) if v is not None else math.nan for s, v in zip(group["seed"], group[column])}


def _selected_per_seed(group: Sequence[Trial], by_id: dict, objective: Metric) -> dict[int, Trial]:
    """Per seed that every trial of the group has: the trial that is best on the study's objective; a tie
    goes to the trial listed first in the design (`_ties` reports each)."""
    cells = [(t, by_id[t.trial_id].cells[objective.column]) for t in group if t.trial_id in by_id]
    if len(cells) < len(group) or not cells:
        return {}
    seeds = sorted(set.intersection(*(set(c.values) for _, c in cells)))
    sign = objective.better or 1
    return {s: max(cells, key=lambda tc: sign * tc[1].values[s])[0] for s in seeds}  # max keeps the first of a tie


def _ties(group: Sequence[Trial], by_id: dict, objective: Metric, selected: dict[int, Trial]) -> tuple[str, ...]:
    """'seed 2: batch 32 = batch 128 (97.96), batch 32 taken' for each seed whose best is a tie."""
    out = []
    for seed, chosen in selected.items():
        best = by_id[chosen.trial_id].cells[objective.column].values[seed]
        tied = [t for t in group if by_id[t.trial_id].cells[objective.column].values.get(seed) == best]
        if len(tied) > 1:
            names = " = ".join(trial_label(t) for t in tied)
            out.append(
                f"seed {seed}: {names} ({_value_text(objective, best)}), {trial_label(chosen)} taken "
                "(the rule: the first in the design's order)"
            )
    return tuple(out)


def _value_text(metric: Metric, value: float) -> str:
    return f"{metric.scale(value):.2f}" if metric.kind == "acc" else f"{value:.4g}"


def _selected_by_mean(group: Sequence[Trial], by_id: dict, objective: Metric) -> Trial | None:
    """The trial with the best mean objective over its seeds: how a random search scores its trials."""
    ranked = [t for t in group if t.trial_id in by_id and by_id[t.trial_id].cells[objective.column].n > 0]
    if not ranked:
        return None
    sign = objective.better or 1
    return max(ranked, key=lambda t: sign * by_id[t.trial_id].cells[objective.column].summary.mean)


def _argmax_note(study: Study, selected: dict[int, Trial], factors: Sequence[str]) -> str:
    """Where our per-seed best lies: 'our best per seed: learning rate 0.1 (2 seeds), learning rate 1 (1 seed)'."""
    counts: Counter = Counter()
    order: list[str] = []
    for trial in selected.values():
        if study.design_kind == "random":
            text = f"{trial.trial_id} ({trial_label(trial)})"
        else:
            text = ", ".join(
                f"{FACTOR_LABELS.get(f, f)} {format_value(f, trial.values.get(f, getattr(trial.config, f, None)))}"
                for f in factors
            )
        if text not in counts:
            order.append(text)
        counts[text] += 1
    parts = [
        f"{t} ({counts[t]} seed{'s' if counts[t] > 1 else ''})"
        for t in sorted(order, key=lambda t: (-counts[t], order.index(t)))
    ]
    return f"our best per seed: {', '.join(parts)}" if parts else ""


def _verdicts(study: Study, rows: Sequence[Row], objective: Metric) -> list[Verdict]:
    """Every published number against the seeds, each distinct one once.

    - `where` names one trial: that trial's runs;
    - `best_over` lists factors the paper maximised over (grid and sweeps): per seed, the trial that is best
      on the study's objective among those sharing the rest of `where` (the paper's number is the best of
      one run per configuration, so that is what it is compared with), and that trial's value of the metric;
    - `where` names several trials: likewise among them;
    - a random search: the trial the search selects as the study file scores trials (the best mean of the
      objective over seeds), and that trial's seeds.
    A published number placed against exactly the same seeds' values as one before it (a final validation
    value that repeats the test value when validation is the test set; a tie listed at two configurations)
    is merged into that verdict (`also`) and counted once.
    """
    by_id = {r.trial.trial_id: r for r in rows}
    out: list[Verdict] = []
    seen: dict[tuple, int] = {}
    for p in study.published:
        where = dict(p.get("where", {}))
        best_over = [f for f in p.get("best_over", []) if isinstance(f, str)]
        where_text = ", ".join(f"{k} = {format_value(k, v)}" for k, v in where.items()) or "(any)"
        source = str(p.get("source", ""))
        exact = matching_trials(study, where)
        random_search = study.design_kind == "random" and (not exact or best_over)
        if random_search:
            group = list(study.trials)
            chosen = _selected_by_mean(group, by_id, objective)
            against = (
                f"search's outcome: the trial with the best mean {objective.label} over seeds"
                + (f" ({chosen.trial_id})" if chosen else "")
                + ", selected on these same runs, so its mean is biased upwards"
            )
        elif best_over:
            group = matching_trials(study, {k: v for k, v in where.items() if k not in best_over})
            against = (
                f"best over {', '.join(FACTOR_LABELS.get(f, f) for f in best_over)} per seed "
                f"({len(group)} configurations)"
            )
        elif len(exact) > 1:
            group, against = exact, f"best of {len(exact)} configurations per seed"
        else:
            group, against = exact, ""
        first = True
        for key in [m.column for m in METRICS] + list(EXTRA_METRICS):
            if key not in p:
                continue
            metric = metric_of(key)
            value, note = _published_value(metric, p[key])
            rounded = _published_rounding(metric, p[key])
            notes = [note] if note else []
            if first and p.get("note"):
                notes.append(f"study file: {p['note']}")
            first = False
            if key == "seconds":
                notes.append("depends on the hardware")
            if not exact and study.design_kind == "random":
                notes.append("the published configuration is not among the sampled trials")
            if not group:
                out.append(
                    Verdict(
                        source, where_text, key, value, "no stored configuration matches", 0, None, "; ".join(notes)
                    )
                )
                continue
            trial_id, against_label, ties = "", "", ()
            if random_search:
                cell = by_id[chosen.trial_id].cells.get(key) if chosen is not None else None
                vals = dict(cell.values) if cell is not None else {}
                trial_id = chosen.trial_id if chosen is not None else ""
                if chosen is not None:
                    against_label = f"the search's best trial, {chosen.trial_id} ({trial_label(chosen)})"
            elif len(group) == 1:
                cell = by_id[group[0].trial_id].cells.get(key) if group[0].trial_id in by_id else None
                vals = dict(cell.values) if cell is not None else {}
                trial_id = group[0].trial_id
            else:
                selected = _selected_per_seed(group, by_id, objective)
                vals = {}
                for seed, trial in selected.items():
                    cell = by_id[trial.trial_id].cells.get(key)
                    if cell is not None and seed in cell.values:
                        vals[seed] = cell.values[seed]
                if vals:
                    factors = best_over or [f for f in design_factors(study) if f not in where]
                    notes.append(_argmax_note(study, selected, factors))
                    ties = _ties(group, by_id, objective, selected)
                    if key != objective.column:
                        notes.append(f"each seed's best configuration chosen by {objective.label}")
            family = "accuracy" if metric.kind == "acc" else metric.kind
            same_key = (family, round(value, 12), tuple(sorted((k, round(v, 12)) for k, v in vals.items())))
            label = f"{metric.label} at {where_text}"
            if vals and same_key in seen:
                k = seen[same_key]
                out[k] = dataclasses.replace(out[k], also=out[k].also + (label,))
                continue
            placement = (
                stats.place_published(
                    value, list(vals.values()), CONFIDENCE, metric.interval_scale, _margin(study, metric), rounded
                )
                if vals
                else None
            )
            if vals:
                seen[same_key] = len(out)
            used = [by_id[trial_id].trial] if trial_id else list(group)
            out.append(
                Verdict(
                    source,
                    where_text,
                    key,
                    value,
                    against,
                    len(vals),
                    placement,
                    "; ".join(n for n in notes if n),
                    trial_id,
                    trials=(trial_id,) if trial_id else tuple(t.trial_id for t in group),
                    against_label=against_label,
                    qualified_by=_qualifying(study, used),
                    ties=ties,
                )
            )
    return _holm_verdicts(out)


def is_counted(v: Verdict) -> bool:
    """Whether a verdict is one of the distinct published accuracies and losses placed against 2+ seeds."""
    return (
        v.placement is not None and metric_of(v.metric).kind in ("acc", "loss") and v.placement.state != "too few seeds"
    )


def counted(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The distinct published accuracies and losses placed against two or more seeds (each counted once)."""
    return [v for v in verdicts if is_counted(v)]


def _history_column(study: Study, metric: str) -> tuple[str, bool] | None:
    """The per-epoch history that gives a final metric after each epoch, and whether it is a running best
    (best_val_accuracy); None when no history measures it (test metrics when validation is not the test set)."""
    if metric in HISTORY_OF:
        return HISTORY_OF[metric], False
    if metric in HISTORY_OF_TEST and str(study.validation) == "test":
        return HISTORY_OF_TEST[metric], False
    if metric == "best_val_accuracy" and str(study.validation) != "none":
        return "val_accuracy", True
    return None


def _epoch_sensitivity(study: Study, runs: pd.DataFrame, v: Verdict) -> tuple[str, ...]:
    """The verdict had every run stopped after epoch 1, 2, ..., E (early-stopped runs carried forward at their
    last value): which epochs' runs would reproduce the published value, be consistent with it, or not.
    Only for a number placed against one configuration whose per-epoch history measures it."""
    found = _history_column(study, v.metric)
    if not v.trial_id or v.placement is None or found is None or found[0] not in runs.columns:
        return ()
    column, running_best = found
    histories = [list(h) for h in runs.loc[runs["trial_id"] == v.trial_id, column] if h is not None]
    if len(histories) < 2:
        return ()
    longest = max(len(h) for h in histories)
    padded = [carried_forward(h, longest) for h in histories]
    if running_best:
        padded = [
            [max((x for x in h[: e + 1] if math.isfinite(x)), default=math.nan) for e in range(longest)] for h in padded
        ]
    metric = metric_of(v.metric)
    out = []
    for e in range(longest):
        values = [h[e] for h in padded if math.isfinite(h[e])]
        if len(values) < 2:
            out.append("too few seeds")
            continue
        p = stats.place_published(
            v.published, values, CONFIDENCE, metric.interval_scale, _margin(study, metric), v.placement.rounded
        )
        out.append(p.state)
    return tuple(out)


def _holm_verdicts(verdicts: list[Verdict]) -> list[Verdict]:
    """'Outside' corrected for the number of published values: Holm over the counted verdicts' p_outside;
    a value beyond its 95% prediction interval whose corrected p is not below ALPHA becomes consistent."""
    family = [i for i, v in enumerate(verdicts) if is_counted(v)]
    if not family:
        return verdicts
    adjusted = stats.holm([verdicts[i].placement.p_outside for i in family])
    out = list(verdicts)
    for i, h in zip(family, adjusted):
        v = out[i]
        p = v.placement
        if p.state == "outside" and not (h < ALPHA) and not p.all_equal:
            p = dataclasses.replace(
                p,
                state="consistent",
                inside=True,
                verdict=f"consistent after Holm's correction ({p.verdict} at one value's 95%)",
            )
        out[i] = dataclasses.replace(v, placement=p, holm_p=float(h))
    return out


def _group_key(cats: Sequence[str], trial: Trial) -> tuple:
    """The levels of the categorical factors a trial has: its group (its family of comparisons)."""
    return tuple(format_value(c, trial.values.get(c)) for c in cats)


def _pools(study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str]) -> dict | None:
    """Per group of configurations (those sharing the categorical factors' levels: one implementation and
    activation; the whole study when it has none), the primary metric's within-configuration variance pooled
    over the group, when the study has fewer than SMALL_N seeds per configuration (None otherwise: each
    pair's own variances, Welch). Groups, because implementations differ in spread by orders of magnitude."""
    cells = [r for r in rows if r.cells[primary.column].n >= 1]
    if not cells or min(r.cells[primary.column].n for r in cells) >= SMALL_N:
        return None
    cats = _categorical(study, factors)
    members: dict[tuple, list[list[float]]] = {}
    for r in cells:
        members.setdefault(_group_key(cats, r.trial), []).append(list(r.cells[primary.column].values.values()))
    return {k: stats.pooled_variance(v) for k, v in members.items()}


def _pool_for(pools: dict | None, cats: Sequence[str], a: Row, b: Row) -> tuple[float, int] | None:
    """The pooled (variance, df) for comparing a and b: their group's, or both groups' combined."""
    if pools is None:
        return None
    ka, kb = _group_key(cats, a.trial), _group_key(cats, b.trial)
    (va, da), (vb, db) = pools[ka], pools[kb]
    if ka == kb:
        return (va, da) if da >= 1 else None
    df = da + db
    if df < 1:
        return None
    return ((va * da if da else 0.0) + (vb * db if db else 0.0)) / df, df


def _compare(a: Cell, b: Cell, paired: bool, pooled: tuple[float, int] | None = None) -> stats.Difference | None:
    """a - b: independent samples (every seed of each), or pairs on common seeds under common seeding."""
    if paired:
        common = sorted(set(a.values) & set(b.values))
        if len(common) < 2:
            return None
        return stats.compare([a.values[s] for s in common], [b.values[s] for s in common], True, CONFIDENCE)
    if a.n < 2 or b.n < 2:
        return None
    return stats.compare(list(a.values.values()), list(b.values.values()), False, CONFIDENCE, pooled)


def _family(pairs: list[tuple[str, str, stats.Difference]]) -> tuple[Comparison, ...]:
    if not pairs:
        return ()
    ps = [p.t_pvalue if math.isfinite(p.t_pvalue) else math.nan for _, _, p in pairs]
    adjusted = stats.holm(ps)
    return tuple(Comparison(a, b, p, float(h)) for (a, b, p), h in zip(pairs, adjusted))


def _categorical(study: Study, factors: Sequence[str]) -> list[str]:
    return [f for f in factors if all(isinstance(t.values.get(f, ""), str) for t in study.trials)]


def _best_vs_rest(
    study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str], paired: bool, pools: dict | None = None
) -> tuple[tuple[Comparison, ...], frozenset]:
    """Within each combination of categorical factors: its best configuration against each other one.

    Also returns the best configurations whose every comparison is significant after Holm's correction
    (the only ones a table may set in bold). The best is chosen on the same runs it is tested on, so these
    p-values are optimistic; the README says so."""
    groups: dict[tuple, list[Row]] = {}
    cats = _categorical(study, factors)
    for r in rows:
        groups.setdefault(tuple(str(r.trial.values.get(c)) for c in cats), []).append(r)
    pairs, families = [], []
    for members in groups.values():
        ranked = [r for r in members if r.cells[primary.column].n >= 2]
        if len(ranked) < 2:
            continue
        best = max(ranked, key=lambda r: primary.better * r.cells[primary.column].summary.mean)
        start = len(pairs)
        for r in ranked:
            if r is best:
                continue
            res = _compare(best.cells[primary.column], r.cells[primary.column], paired, _pool_for(pools, cats, best, r))
            if res is not None:
                pairs.append((best.trial.trial_id, r.trial.trial_id, res))
        families.append((best.trial.trial_id, start, len(pairs)))
    comps = _family(pairs)
    significant = frozenset(
        tid
        for tid, start, stop in families
        if stop > start and all(c.holm_p < ALPHA and primary.better * c.result.mean_diff > 0 for c in comps[start:stop])
    )
    return comps, significant


def _factor_effects(
    study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str], paired: bool, pools: dict | None = None
) -> tuple[tuple[Comparison, ...], str]:
    """Grid designs: pairs of configurations that differ in one factor only, a - b with a the later level.

    Numeric factors compare adjacent levels (0.001 with 0.01, 0.01 with 0.1); categorical ones every pair.
    """
    if study.design_kind != "grid":
        return (), ""
    by_key = {}
    for r in rows:
        by_key[tuple((f, _key(r.trial.values.get(f))) for f in factors)] = r
    pairs = []
    for f in factors:
        levels = factor_levels(study, f)
        for r in rows:
            v = r.trial.values.get(f)
            i = next((j for j, lv in enumerate(levels) if _same(lv, v)), None)
            if i is None:
                continue
            later = levels[i + 1 : i + 2] if _numeric_levels(levels) else levels[i + 1 :]
            for level in later:
                other = {**r.trial.values, f: level}
                partner = by_key.get(tuple((g, _key(other.get(g))) for g in factors))
                if partner is None:
                    continue
                res = _compare(
                    partner.cells[primary.column],
                    r.cells[primary.column],
                    paired,
                    _pool_for(pools, _categorical(study, factors), partner, r),
                )
                if res is not None:
                    pairs.append((partner.trial.trial_id, r.trial.trial_id, res))
    if len(pairs) > MAX_FACTOR_COMPARISONS:
        return (), (
            f"The {len(pairs)} one-factor comparisons are more than the {MAX_FACTOR_COMPARISONS} a README "
            "shows, so none is shown or tested; the best-against-the-others family above covers the main "
            "question, and table.csv holds each configuration's numbers to compare any pair."
        )
    return _family(pairs), ""


def _numeric_levels(levels: Sequence) -> bool:
    return bool(levels) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)


def _key(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_key(x) for x in v)
    if isinstance(v, float):
        return round(v, 12)
    return v


def eval_images(study: Study) -> int:
    """How many images the study's validation metrics are measured on (the holdout, else the test set)."""
    return study.data_shape.eval_images(str(study.validation))


def _add_seeds(study: Study, rows: Sequence[Row], primary: Metric, paired: bool) -> str:
    """How many seeds would resolve the study's smallest effect of interest (never an observed difference).

    The sd is pooled over the two best configurations (the ones a reader wants told apart); its chi-square
    interval gives the interval of the seeds needed. For accuracies the effect is never below the binomial
    standard error of the set they are measured on: a smaller difference is below what that set resolves.
    """
    ranked = sorted(
        (r for r in rows if r.cells[primary.column].n >= 2),
        key=lambda r: -primary.better * r.cells[primary.column].summary.mean,
    )
    if len(ranked) < 2:
        return "Add seeds? Not decidable: fewer than two configurations have at least 2 seeds."
    a, b = ranked[0], ranked[1]
    ca, cb = a.cells[primary.column], b.cells[primary.column]
    df = ca.n + cb.n - 2
    sd = math.sqrt(((ca.n - 1) * ca.summary.std**2 + (cb.n - 1) * cb.summary.std**2) / df)
    effect = study.smallest_effect
    wanted = effect
    floor_note = ""
    if primary.kind == "acc":
        images = study.data_shape.n_test if primary.column.startswith("test") else eval_images(study)
        floor = stats.binomial_se(ca.summary.mean, images)
        if effect < floor:
            effect = floor
            floor_note = (
                f" The study's smallest effect of interest, {_fmt_diff(primary, wanted)}, is below the binomial "
                f"standard error of an accuracy measured on {images:,} images ({_fmt_diff(primary, floor)}): "
                "a smaller difference is not resolved by that set, so the advice uses the latter."
            )
    test = "paired t-test (common random numbers)" if paired else "two-sample t-test"
    head = (
        f"Add seeds? To tell apart two configurations whose {primary.label} differs by "
        f"{_fmt_diff(primary, effect)} (the study's smallest effect of interest, `smallest_effect`), with "
        f"{int(POWER * 100)}% power at alpha {ALPHA} in a two-sided {test}, using the seeds' sd pooled over the two "
        f"best configurations ({trial_label(a.trial)} and {trial_label(b.trial)}): sd {_fmt_diff(primary, sd)} "
        f"from {df} degrees of freedom"
    )
    if sd == 0:
        return head + ": no spread between seeds; 2 seeds per configuration suffice." + floor_note
    advice = stats.seeds_for_effect(effect, sd, df, POWER, ALPHA, paired=False, confidence=CONFIDENCE)

    def n_text(n: int | None) -> str:
        return "more than 100,000" if n is None else f"{n:,}"

    have = min(ca.n, cb.n)
    eq, eq_low, eq_high = stats.seeds_for_equivalence(effect, sd, df, ALPHA, CONFIDENCE)
    equivalence = (
        f" To call a published value reproduced (the mean's 90% interval within ±{_fmt_diff(primary, effect)} "
        f"of it, were it equal to the mean), about {n_text(eq)} seeds per configuration (from {n_text(eq_low)} "
        f"to {n_text(eq_high)} over the sd's interval); a published value farther than that from the mean is "
        "never reproduced, whatever the seeds."
    )
    return (
        head + f" (95% CI {_fmt_diff(primary, advice.sd_low)} to {_fmt_diff(primary, advice.sd_high)}), "
        f"{n_text(advice.n)} seeds per configuration are needed (from {n_text(advice.n_low)} to "
        f"{n_text(advice.n_high)} over the sd's interval); {have} are stored." + equivalence + floor_note
    )


def _fmt_diff(metric: Metric, value: float) -> str:
    return f"{metric.scale(value):.2g} pp" if metric.kind == "acc" else f"{value:.2g}"


def _timing(study: Study, rows: Sequence[Row], groups: dict[str, dict[str, list]]) -> tuple[Timing, ...]:
    """Per configuration: what was measured (chunk wall time / runs in it), the chunk width and the
    model-steps per second it implies. Medians over runs; no interval: runs of one chunk share one clock."""
    train = study.data_shape.fit_images(str(study.validation))
    out = []
    for r in rows:
        g = groups.get(r.trial.trial_id)
        if g is None or "seconds" not in g or not g["seconds"]:
            continue
        secs = [float(x) for x in g["seconds"] if x is not None and math.isfinite(float(x)) and float(x) > 0]
        if not secs:
            continue
        steps = math.ceil(train / r.trial.config.batch_size)
        rates = [
            steps * int(e) / float(x)
            for e, x in zip(g["epochs_run"], g["seconds"])
            if x is not None and math.isfinite(float(x)) and float(x) > 0
        ]
        widths = Counter(int(w) for w in g["chunk_width"])
        out.append(
            Timing(r.trial.trial_id, len(g["seconds"]), widths.most_common(1)[0][0], _median(secs), _median(rates))
        )
    return tuple(out)


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    n = len(v)
    return math.nan if n == 0 else (v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0)


@dataclasses.dataclass(frozen=True)
class SimpleEffect:
    """The effect of one factor at one level of another it interacts with (averaged over the rest)."""

    factor: str
    within: str
    level: Any
    effect: stats.Effect  # estimate and CI on the metric's own scale; t_pvalue and holm_p on the test scale


def _factorial_cells(study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str]) -> dict | None:
    """Each cell of a full 2^k factorial grid (every factor at two levels) -> its runs' primary values."""
    if study.design_kind != "grid" or not factors or len(rows) != 2 ** len(factors):
        return None
    levels = {f: factor_levels(study, f) for f in factors}
    if any(len(levels[f]) != 2 for f in factors):
        return None
    cells = {}
    for r in rows:
        combo = tuple(next(i for i, lv in enumerate(levels[f]) if _same(lv, r.trial.values.get(f))) for f in factors)
        values = list(r.cells[primary.column].values.values())
        if not values:
            return None
        cells[combo] = values
    return cells


def _on_test_scale(effect: stats.Effect, tested: stats.Effect, holm_p: float) -> stats.Effect:
    """An effect estimated in the metric's units, with the p of the same contrast on the interval scale."""
    return dataclasses.replace(effect, t_pvalue=tested.t_pvalue, holm_p=float(holm_p))


def _two_level_factorial(
    study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str]
) -> tuple[tuple[stats.Effect, ...], tuple[str, ...], tuple[SimpleEffect, ...]]:
    """Main effects and interactions when the grid is a full 2^k factorial (every factor at two levels):
    estimated in the metric's units, tested on its interval scale (logit for accuracies), Holm over the
    terms; for each significant two-factor interaction, the simple effects of each factor at each level of
    the other (Holm over those)."""
    cells = _factorial_cells(study, rows, primary, factors)
    if cells is None:
        return (), (), ()
    scale = primary.interval_scale
    tested_cells = {c: [stats.to_scale(v, scale) for v in vals] for c, vals in cells.items()}
    try:
        shown = stats.factorial_effects(cells, list(factors), CONFIDENCE)
        tested = stats.factorial_effects(tested_cells, list(factors), CONFIDENCE)
    except ValueError:
        return (), (), ()
    holm = stats.holm([e.t_pvalue for e in tested])
    effects = tuple(_on_test_scale(e, t, h) for e, t, h in zip(shown, tested, holm))
    simple: list[tuple[str, str, Any, stats.Effect, stats.Effect]] = []
    for e in effects:
        if len(e.term) == 2 and e.holm_p < ALPHA:
            for factor, within in (e.term, e.term[::-1]):
                pairs = zip(
                    stats.simple_effects(cells, list(factors), factor, within, CONFIDENCE),
                    stats.simple_effects(tested_cells, list(factors), factor, within, CONFIDENCE),
                )
                for level, (se, st) in zip(factor_levels(study, within), pairs):
                    simple.append((factor, within, level, se, st))
    holm_simple = stats.holm([st.t_pvalue for *_, st in simple]) if simple else []
    return (
        effects,
        tuple(factors),
        tuple(SimpleEffect(f, w, lv, _on_test_scale(se, st, h)) for (f, w, lv, se, st), h in zip(simple, holm_simple)),
    )


@dataclasses.dataclass(frozen=True)
class SplitEstimate:
    """The best configuration chosen on one half of the seeds, and its mean on the other half (unbiased by
    the choice): a selection-corrected estimate of the best configuration's score."""

    selected_on: tuple[int, ...]  # the seeds the choice was made on
    trial_id: str
    estimated_on: tuple[int, ...]
    summary: stats.Summary  # of the chosen configuration's values on the other half


MIN_SPLIT_N = 4  # seeds per configuration for a split: at least 2 to choose on and 2 to estimate on


def _split_halves(seeds: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Seeds in order, alternately into two halves (0, 2, 4... and 1, 3, 5...): a fixed, stated split."""
    ordered = sorted(seeds)
    return tuple(ordered[0::2]), tuple(ordered[1::2])


def _selection_corrected(rows: Sequence[Row], primary: Metric) -> tuple[SplitEstimate, ...]:
    """Choose the best configuration on each half of the seeds that every configuration has, and estimate
    its mean on the other half (both ways round). Empty below MIN_SPLIT_N common seeds or two configurations."""
    cells = [(r.trial.trial_id, r.cells[primary.column]) for r in rows if r.cells[primary.column].n > 0]
    if len(cells) < 2:
        return ()
    common = sorted(set.intersection(*(set(c.values) for _, c in cells)))
    if len(common) < MIN_SPLIT_N:
        return ()
    sign = primary.better or 1
    out = []
    first, second = _split_halves(common)
    for choose, estimate in ((first, second), (second, first)):
        best = max(cells, key=lambda tc: sign * math.fsum(tc[1].values[s] for s in choose))  # first of a tie
        values = [best[1].values[s] for s in estimate]
        out.append(
            SplitEstimate(choose, best[0], estimate, stats.summarize(values, CONFIDENCE, primary.interval_scale))
        )
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class BestSet:
    """Hsu's MCB within one group of configurations: those that may be the best, and the one shown best."""

    group: str  # the categorical levels the group shares ('' when the study has none)
    size: int
    may_be_best: tuple[str, ...]  # trial ids whose interval for (mean - best of the others) reaches above 0
    is_best: str  # the trial whose interval's lower end is 0 (better than every other), or ''
    equal_n: bool = True  # every configuration of the group has the same number of runs (Dunnett's value exact)


def _best_sets(study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str]) -> tuple[BestSet, ...]:
    """Hsu's MCB within each group the best-against-the-others family uses, on the within-configuration
    variance pooled over the group: which configurations the seeds cannot rule out as the best."""
    cells = [r for r in rows if r.cells[primary.column].n >= 1]
    cats = _categorical(study, factors)
    groups: dict[tuple, list[Row]] = {}
    for r in cells:
        groups.setdefault(_group_key(cats, r.trial), []).append(r)
    sign = primary.better or 1
    out = []
    for key, members in groups.items():
        variance, df = stats.pooled_variance([list(r.cells[primary.column].values.values()) for r in members])
        if len(members) < 2 or df < 1:
            continue
        means = [sign * r.cells[primary.column].summary.mean for r in members]
        ns = [r.cells[primary.column].n for r in members]
        intervals = stats.mcb_intervals(means, ns, variance, df, CONFIDENCE)
        may = tuple(r.trial.trial_id for r, (lo, hi) in zip(members, intervals) if hi > 0)
        best = next((r.trial.trial_id for r, (lo, hi) in zip(members, intervals) if lo == 0.0 and hi > 0), "")
        out.append(BestSet(", ".join(key), len(members), may, best, len(set(ns)) == 1))
    return tuple(out)


def _duplicate_metrics(study: Study, rows: Sequence[Row]) -> tuple[str, ...]:
    """Final validation metrics that repeat the test metrics run for run (validation is the test set and
    the final weights are the tested ones): shown once, as test metrics."""
    if str(study.validation) != "test":
        return ()
    out = []
    for final, test in (("final_val_accuracy", "test_accuracy"), ("final_val_loss", "test_loss")):
        pairs = [
            (r.cells[final].values.get(s), r.cells[test].values.get(s)) for r in rows for s in r.cells[final].values
        ]
        if pairs and all(b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in pairs):
            out.append(final)
    return tuple(out)


def analyze(study: Study, runs: pd.DataFrame) -> Analysis:
    """Every number the report shows, computed from the runs (pure; writes nothing)."""
    primary = _primary(study)
    factors = design_factors(study)
    paired = study.seeding == "common"
    groups = _columns_by_trial(runs)
    rows = []
    published_single: dict[str, dict[str, float]] = {}
    best_over: dict[str, dict[str, tuple[str, ...]]] = {}
    for p in study.published:
        trials = matching_trials(study, p.get("where", {}))
        if len(trials) == 1:
            for key in METRIC:
                if key in p:
                    published_single.setdefault(trials[0].trial_id, {})[key] = _published_value(METRIC[key], p[key])[0]
                    if p.get("best_over"):
                        best_over.setdefault(trials[0].trial_id, {})[key] = tuple(p["best_over"])
    for t in study.trials:
        g = groups.get(t.trial_id, {"seed": []})
        cells = {m.column: _cell(_values(g, m.column), m, t.config.epochs) for m in (*METRICS, *TRAIN_METRICS)}
        pc = cells[primary.column]
        boot = (
            stats.bootstrap_ci(list(pc.values.values()), CONFIDENCE, n_resamples=2000, seed=0)
            if pc.n >= 2
            else (math.nan, math.nan)
        )
        rows.append(
            Row(
                t,
                tuple(sorted(int(s) for s in g["seed"])),
                cells,
                published_single.get(t.trial_id, {}),
                boot,
                best_over.get(t.trial_id, {}),
            )
        )
    if study.design_kind != "random":  # factor by factor, each in its design order (sweeps list the swept factor first)
        levels = {f: factor_levels(study, f) for f in factors}

        def position(row: Row) -> tuple:
            return tuple(
                next((i for i, lv in enumerate(levels[f]) if _same(lv, row.trial.values[f])), len(levels[f]))
                if f in row.trial.values
                else len(levels[f])
                for f in factors
            )

        rows.sort(key=position)
    dropped = _duplicate_metrics(study, rows)
    metrics = tuple(m for m in METRICS if m.column not in dropped and any(r.cells[m.column].n > 0 for r in rows))
    if primary not in metrics:
        primary = next((m for m in metrics if m.kind == "acc"), primary)
    pools = None if paired else _pools(study, rows, primary, factors)
    effects, note = _factor_effects(study, rows, primary, factors, paired, pools)
    best_vs_rest, significant = _best_vs_rest(study, rows, primary, factors, paired, pools)
    factorial, factorial_factors, simple = _two_level_factorial(study, rows, primary, factors)
    return Analysis(
        study=study,
        runs=runs,
        rows=tuple(rows),
        metrics=metrics,
        primary=primary,
        factors=factors,
        verdicts=tuple(
            dataclasses.replace(v, by_epoch=_epoch_sensitivity(study, runs, v)) for v in _verdicts(study, rows, primary)
        ),
        best_vs_rest=best_vs_rest,
        factor_effects=effects,
        factor_note=note,
        add_seeds=_add_seeds(study, rows, primary, paired),
        paired=paired,
        significant_best=significant,
        timing=_timing(study, rows, groups),
        effects=factorial,
        effects_factors=factorial_factors,
        simple_effects=simple,
        selection=_selection_corrected(rows, primary),
        best_sets=_best_sets(study, rows, primary, factors),
        dropped=dropped,
        pooled=pools,
    )


@dataclasses.dataclass(frozen=True)
class OtherRuns:
    """One verdict of this study placed again against the other study's runs of the same configuration
    (one value's 95% on both sides, not corrected over the family): the training-set-size sensitivity."""

    verdict: Verdict
    here: str  # the state on this study's runs (uncorrected, as `there`)
    there: str  # the state on the other study's runs
    n: int  # the other study's runs of the configuration
    mean: float  # their mean


@dataclasses.dataclass(frozen=True)
class StudyContrast:
    """This study's configurations against the same configurations of another study (study.compare_with)."""

    other: str
    metric: Metric
    comparisons: tuple[Comparison, ...]  # a: this study's configuration, b: the other's (same trial id)
    confound: str  # what differs between the two studies besides what the comparison is about
    verdicts: tuple[OtherRuns, ...] = ()  # this study's verdicts on the other study's runs
    training_images: tuple[int, int] = (0, 0)  # (this study's, the other's) images a run trains on


def training_images(study: Study) -> int:
    """How many images a run trains on (the training set less a holdout)."""
    return study.data_shape.fit_images(str(study.validation))


def _validation_text(study: Study) -> str:
    validation = str(study.validation)
    if validation == "test":
        return "validates (and stops early) on the test set"
    if validation == "none":
        return "has no validation set"
    return f"validates (and stops early) on a holdout of {int(validation.partition(':')[2]):,} training images"


def contrast_studies(a: Analysis, other: Analysis) -> StudyContrast | None:
    """Each configuration's test accuracy against the same configuration of another study (Welch, Holm);
    the training-set size and the validation data that differ between the two are stated as the confound."""
    metric = METRIC["test_accuracy"]
    theirs = {r.trial.trial_id: r for r in other.rows}
    pairs = []
    for r in a.rows:
        o = theirs.get(r.trial.trial_id)
        if (
            o is None
            or set(o.trial.values) != set(r.trial.values)
            or not all(same_value(o.trial.values[k], v) for k, v in r.trial.values.items())
        ):
            continue
        res = _compare(r.cells[metric.column], o.cells[metric.column], False)
        if res is not None:
            pairs.append((r.trial.trial_id, o.trial.trial_id, res))
    if not pairs:
        return None
    s, t = a.study, other.study
    confound = (
        f"`{s.name}` trains on {training_images(s):,} images and {_validation_text(s)}; `{t.name}` trains on "
        f"{training_images(t):,} images and {_validation_text(t)}. A difference mixes the two: more training "
        "images raise test accuracy, and early stopping that watches the test set picks the stopping epoch on "
        "the very images it is scored on."
    )
    return StudyContrast(
        t.name,
        metric,
        _family(pairs),
        confound,
        _verdicts_on(a, theirs, {p[0] for p in pairs}),
        (training_images(s), training_images(t)),
    )


def _verdicts_on(a: Analysis, theirs: dict, matched: set[str]) -> tuple[OtherRuns, ...]:
    """Each counted verdict of `a` that names one configuration, placed on this study's runs and on the
    other study's runs of the same configuration (`theirs`, by trial id; only the `matched` ones, whose
    design values are the same), each at one value's 95%."""
    out = []
    for v in a.verdicts:
        if not is_counted(v) or not v.trial_id or v.placement is None or v.trial_id not in matched:
            continue
        mine, other = a.row(v.trial_id).cells.get(v.metric), theirs[v.trial_id].cells.get(v.metric)
        if mine is None or other is None or mine.n < 2 or other.n < 2:
            continue
        here, there = (_state_on(a.study, v, cell) for cell in (mine, other))
        out.append(OtherRuns(v, here, there, other.n, other.summary.mean))
    return tuple(out)


def _state_on(study: Study, v: Verdict, cell: Cell) -> str:
    """The state of a verdict's published number placed against `cell`'s values (one value's 95%)."""
    metric = metric_of(v.metric)
    values = list(cell.values.values())
    placed = stats.place_published(
        v.published, values, CONFIDENCE, metric.interval_scale, _margin(study, metric), v.placement.rounded
    )
    return placed.state


def describe_seeds(seeds: Sequence[int]) -> str:
    """0, 1, 2, 3, 7 -> '0-3, 7'."""
    seeds = sorted(set(int(s) for s in seeds))
    parts, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ", ".join(parts) if parts else "none"


# The per-epoch history that shows how a final metric developed; test metrics only where validation is the test set.
HISTORY_OF = {"final_val_accuracy": "val_accuracy", "final_val_loss": "val_loss"}
HISTORY_OF_TEST = {"test_accuracy": "val_accuracy", "test_loss": "val_loss"}


def carried_forward(history: Sequence[float], length: int) -> list[float]:
    """A run's per-epoch values up to `length` epochs, an early-stopped run's last value carried forward (it
    stopped with that model: leaving it out would average the late epochs over the runs that kept improving)."""
    values = [float(v) for v in history]
    last = next((v for v in reversed(values) if math.isfinite(v)), math.nan)
    return values + [last] * (length - len(values))


def epoch_means(histories: Sequence[Sequence[float]]) -> list[tuple[float, int]]:
    """Mean over runs of each epoch's value, early-stopped runs carried forward at their last value, with the
    number of runs that trained that epoch (a NaN, a diverged run's value, counts for nothing)."""
    longest = max((len(h) for h in histories), default=0)
    padded = [carried_forward(h, longest) for h in histories]
    out = []
    for epoch in range(longest):
        values = [p[epoch] for p in padded if math.isfinite(p[epoch])]
        trained = sum(1 for h in histories if len(h) > epoch and math.isfinite(float(h[epoch])))
        if values:
            out.append((math.fsum(values) / len(values), trained))
    return out


def training_length_hint(
    published: float, means: Sequence[tuple[float, int]], higher_is_better: bool
) -> tuple[int, str]:
    """(closest epoch, reading) for a published final value against the seeds' per-epoch means.

    A published value that the seeds' curve passes through before its end looks like our runs after fewer
    epochs: training length (fewer epochs, an earlier stop, a slower start) is the likely reason. One that
    is better than every epoch's mean, or closest at the end, points to a difference in setup instead."""
    if not means:
        return 0, ""
    values = [m for m, _ in means]
    epoch = int(np.argmin([abs(v - published) for v in values])) + 1
    better_than_all = published > max(values) if higher_is_better else published < min(values)
    if better_than_all:
        return epoch, (
            "better than the seeds' mean at every epoch: a difference in setup (data, model, optimizer "
            "or framework numerics), not in training length, is the likely reason"
        )
    if epoch == len(values):
        return epoch, "closest to the seeds' last epoch: a difference in setup is the likely reason"
    return epoch, (
        "the published run looks like ours after fewer epochs: a shorter or slower training (fewer "
        "epochs, an earlier stop, a slower start) is the likely reason"
    )
