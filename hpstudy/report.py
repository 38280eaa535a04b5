"""`hpstudy report`: statistics, tables and figures of a study's stored runs, written to reports/<study>/.

The report is a pure function of the stored runs and the study file: the same store gives byte-identical
files (no timestamps, no absolute paths, deterministic ordering everywhere). Everything is computed in
memory first; only when that succeeded is anything written.

API (what the CLI and the benchmark call):
- ``load_runs(study, results, seeds=None)`` -> the study's stored runs (StoreError if there are none);
- ``analyze(study, runs)`` -> an :class:`Analysis` (per-trial summaries, published verdicts, comparisons);
- ``write_report(study, results, out, seeds=None)`` -> the report folder, after writing README.md,
  table.csv, table.md, table.tex and figures/*.{pdf,svg,png};
- ``synthetic_records(study, seeds)`` -> fake but schema-valid run records for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hpstudy import stats, store
from hpstudy.config import run_id
from hpstudy.errors import StoreError
from hpstudy.study import Study, Trial, matches, same_value

CONFIDENCE = 0.95
POWER = 0.8
ALPHA = 0.05
# Where `hpstudy report` writes by default: beside the (git-ignored) results, never over the shipped
# reports in reports/ (those are made with an explicit --out reports).
DEFAULT_OUT = "results/_reports"
MAX_FACTOR_COMPARISONS = 60


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


METRICS: tuple[Metric, ...] = (
    Metric("test_accuracy", "test acc. (%)", "acc", +1),
    Metric("test_loss", "test loss", "loss", -1),
    Metric("final_val_accuracy", "final val. acc. (%)", "acc", +1),
    Metric("final_val_loss", "final val. loss", "loss", -1),
    Metric("best_val_accuracy", "best val. acc. (%)", "acc", +1),
    Metric("epochs_run", "epochs run", "count", 0),
    Metric("seconds", "seconds / run", "time", -1),
)
METRIC = {m.column: m for m in METRICS}
# Published metrics that may be placed against the seeds, besides the table's.
EXTRA_METRICS = {
    "final_train_accuracy": Metric("final_train_accuracy", "final train acc. (%)", "acc", +1),
    "final_train_loss": Metric("final_train_loss", "final train loss", "loss", -1),
}
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
    "study_sha256", "trial_id", "run_id", "seed", *store.HISTORY_FIELDS, "epochs_run",
    *(m.column for m in METRICS if m.column != "epochs_run"), "chunk_width", "group_id", "compile_seconds",
    "dataset_fingerprint", "environment",
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


def _read_store(directory: Path) -> pd.DataFrame:
    """The report's columns of store.read_runs, reading every part in one pass (much faster over hundreds
    of parts). Any failure falls back to store.read_runs, which reads part by part and names a bad part.
    """
    parts = store.live_parts(directory)
    if not parts:
        return store.read_runs(directory)
    try:
        import pyarrow.parquet as pq

        runs = pq.read_table([str(p) for p in parts], columns=list(COLUMNS)).to_pandas()
    except Exception:  # noqa: BLE001 - any failure: the part-by-part reader reports it properly
        return store.read_runs(directory)
    runs = runs.drop_duplicates("run_id")
    return runs.sort_values(["trial_id", "seed"], kind="stable").reset_index(drop=True)


def load_runs(study: Study, results: str | os.PathLike, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """The stored runs of `study` whose configuration the study file still describes, sorted.

    Only runs whose run id is (trial configuration, seed) of the current study file are kept, so runs
    stored under an older version of a trial's configuration never mix in. `seeds` filters; None keeps
    every stored seed. No runs at all is a StoreError naming the folder and the command that makes them.
    """
    directory = store.study_dir(results, study.name)
    runs = _read_store(directory)
    how = f"hpstudy run {study.name} --results {results}"
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
    return keep


# ----------------------------------------------------------------------------------------------
# Analysis
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """One metric of one trial: the finite values by seed and their summary."""

    values: dict[int, float]  # seed -> value (finite only)
    n_nonfinite: int
    summary: stats.Summary | None  # None when no finite value

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def half_width(self) -> float:
        s = self.summary
        return (s.ci_high - s.ci_low) / 2.0 if s is not None and s.n >= 2 else math.nan


@dataclasses.dataclass(frozen=True)
class Row:
    """One trial: its runs' seeds, one Cell per metric, and the published values that name it alone."""

    trial: Trial
    seeds: tuple[int, ...]
    cells: dict[str, Cell]
    published: dict[str, float]
    boot: tuple[float, float]  # bootstrap CI of the primary metric's mean


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



@dataclasses.dataclass(frozen=True)
class Comparison:
    """Paired comparison a - b on common seeds, with its Holm-adjusted p within its family."""

    a: str
    b: str
    result: stats.Paired
    holm_p: float


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

    def row(self, trial_id: str) -> Row:
        return next(r for r in self.rows if r.trial.trial_id == trial_id)


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


def format_value(factor: str, value: Any) -> str:
    """A design value as text: 0.001, 32, 416x288."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def trial_label(trial: Trial, factors: Sequence[str] | None = None, sep: str = ", ") -> str:
    """Short label of a trial from its design values ('lr 0.001, batch 32')."""
    short = {"learning_rate": "lr", "batch_size": "batch", "hidden": "hidden"}
    keys = factors if factors is not None else list(trial.values)
    parts = [f"{short.get(k, k)} {format_value(k, trial.values[k])}" for k in keys if k in trial.values]
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


def _cell(values: dict[int, float]) -> Cell:
    finite = {s: v for s, v in values.items() if math.isfinite(v)}
    summary = stats.summarize(list(finite.values()), CONFIDENCE) if finite else None
    return Cell(finite, len(values) - len(finite), summary)


def _values(runs: pd.DataFrame, column: str) -> dict[int, float]:
    if column not in runs.columns:
        return {}
    return {int(s): float(v) if v is not None else math.nan for s, v in zip(runs["seed"], runs[column])}


def _selected_per_seed(group: Sequence[Trial], by_id: dict, objective: Metric) -> dict[int, Trial]:
    """Per seed that every trial of the group has: the trial that is best on the study's objective."""
    cells = [(t, by_id[t.trial_id].cells[objective.column]) for t in group if t.trial_id in by_id]
    if len(cells) < len(group) or not cells:
        return {}
    seeds = sorted(set.intersection(*(set(c.values) for _, c in cells)))
    sign = objective.better or 1
    return {s: max(cells, key=lambda tc: sign * tc[1].values[s])[0] for s in seeds}


def _argmax_note(study: Study, selected: dict[int, Trial], factors: Sequence[str]) -> str:
    """Where our per-seed best lies: 'our best per seed: learning rate 0.1 (2 seeds), learning rate 1 (1 seed)'."""
    counts: Counter = Counter()
    order: list[str] = []
    for trial in selected.values():
        if study.design_kind == "random":
            text = f"{trial.trial_id} ({trial_label(trial)})"
        else:
            text = ", ".join(f"{FACTOR_LABELS.get(f, f)} {format_value(f, trial.values.get(f, getattr(trial.config, f, None)))}"
                             for f in factors)
        if text not in counts:
            order.append(text)
        counts[text] += 1
    parts = [f"{t} ({counts[t]} seed{'s' if counts[t] > 1 else ''})" for t in sorted(order, key=lambda t: (-counts[t], order.index(t)))]
    return f"our best per seed: {', '.join(parts)}" if parts else ""


def _verdicts(study: Study, rows: Sequence[Row], objective: Metric) -> list[Verdict]:
    """Every published number against the seeds.

    - `where` names one trial: that trial's runs;
    - `best_over` lists factors the paper maximised over: per seed, the trial that is best on the study's
      objective among those sharing the rest of `where` (the paper's number is the best of one run per
      configuration, so that is what it is compared with), and that trial's value of the metric;
    - `where` names several trials: likewise among them;
    - a random search whose reported configuration was not sampled: likewise among all its trials (the
      search's outcome: its test accuracy is the test accuracy of the trial it selected).
    """
    by_id = {r.trial.trial_id: r for r in rows}
    out = []
    for p in study.published:
        where = dict(p.get("where", {}))
        best_over = [f for f in p.get("best_over", []) if isinstance(f, str)]
        where_text = ", ".join(f"{k} = {format_value(k, v)}" for k, v in where.items()) or "(any)"
        source = str(p.get("source", ""))
        exact = matching_trials(study, where)
        if best_over:
            group = matching_trials(study, {k: v for k, v in where.items() if k not in best_over})
            against = (f"best over {', '.join(FACTOR_LABELS.get(f, f) for f in best_over)} per seed "
                       f"({len(group)} configurations)")
        elif len(exact) > 1:
            group, against = exact, f"best of {len(exact)} configurations per seed"
        elif not exact and study.design_kind == "random":
            group, against = list(study.trials), "best trial per seed (the search's outcome)"
        else:
            group, against = exact, ""
        if study.design_kind == "random" and len(group) == len(study.trials) > 1:
            against = "best trial per seed (the search's outcome)"
        first = True
        for key in [m.column for m in METRICS] + list(EXTRA_METRICS):
            if key not in p:
                continue
            metric = metric_of(key)
            value, note = _published_value(metric, p[key])
            notes = [note] if note else []
            if first and p.get("note"):
                notes.append(f"study file: {p['note']}")
            first = False
            if key == "seconds":
                notes.append("depends on the hardware")
            if not exact and study.design_kind == "random":
                notes.append("the published configuration is not among the sampled trials")
            if not group:
                out.append(Verdict(source, where_text, key, value, "no stored configuration matches", 0, None,
                                   "; ".join(notes)))
                continue
            if len(group) == 1:
                cell = by_id[group[0].trial_id].cells.get(key) if group[0].trial_id in by_id else None
                vals = dict(cell.values) if cell is not None else {}
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
                    if key != objective.column:
                        notes.append(f"each seed's best configuration chosen by {objective.label}")
            placement = stats.place_published(value, list(vals.values()), CONFIDENCE) if vals else None
            out.append(Verdict(source, where_text, key, value, against, len(vals), placement,
                               "; ".join(n for n in notes if n), group[0].trial_id if len(group) == 1 else ""))
    return out


def _paired(a: Cell, b: Cell) -> stats.Paired | None:
    common = sorted(set(a.values) & set(b.values))
    if len(common) < 2:
        return None
    return stats.paired_comparison([a.values[s] for s in common], [b.values[s] for s in common], CONFIDENCE)


def _family(pairs: list[tuple[str, str, stats.Paired]]) -> tuple[Comparison, ...]:
    if not pairs:
        return ()
    adjusted = stats.holm([p.t_pvalue for _, _, p in pairs])
    return tuple(Comparison(a, b, p, float(h)) for (a, b, p), h in zip(pairs, adjusted))


def _categorical(study: Study, factors: Sequence[str]) -> list[str]:
    return [f for f in factors if all(isinstance(t.values.get(f, ""), str) for t in study.trials)]


def _best_vs_rest(study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str]) -> tuple[Comparison, ...]:
    """Within each combination of categorical factors: its best configuration against each other one."""
    groups: dict[tuple, list[Row]] = {}
    cats = _categorical(study, factors)
    for r in rows:
        groups.setdefault(tuple(str(r.trial.values.get(c)) for c in cats), []).append(r)
    pairs = []
    for members in groups.values():
        ranked = [r for r in members if r.cells[primary.column].n >= 2]
        if len(ranked) < 2:
            continue
        best = max(ranked, key=lambda r: primary.better * r.cells[primary.column].summary.mean)
        for r in ranked:
            if r is best:
                continue
            res = _paired(best.cells[primary.column], r.cells[primary.column])
            if res is not None:
                pairs.append((best.trial.trial_id, r.trial.trial_id, res))
    return _family(pairs)


def _factor_effects(study: Study, rows: Sequence[Row], primary: Metric, factors: Sequence[str]) -> tuple[tuple[Comparison, ...], str]:
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
                res = _paired(partner.cells[primary.column], r.cells[primary.column])
                if res is not None:
                    pairs.append((partner.trial.trial_id, r.trial.trial_id, res))
    if len(pairs) > MAX_FACTOR_COMPARISONS:
        return (), (f"{len(pairs)} one-factor comparisons exceed the {MAX_FACTOR_COMPARISONS} shown; "
                    "the best-against-the-others family above covers the main question; every number is in table.csv.")
    return _family(pairs), ""


def _numeric_levels(levels: Sequence) -> bool:
    return bool(levels) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)


def _key(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_key(x) for x in v)
    if isinstance(v, float):
        return round(v, 12)
    return v


def _add_seeds(rows: Sequence[Row], primary: Metric) -> str:
    """The "add seeds?" decision for the two best configurations on the primary metric."""
    ranked = sorted(
        (r for r in rows if r.cells[primary.column].n >= 2),
        key=lambda r: -primary.better * r.cells[primary.column].summary.mean,
    )
    if len(ranked) < 2:
        return "Add seeds? Not decidable: fewer than two configurations have at least 2 seeds."
    a, b = ranked[0], ranked[1]
    ca, cb = a.cells[primary.column], b.cells[primary.column]
    common = sorted(set(ca.values) & set(cb.values))
    head = (f"Add seeds? The two best configurations on {primary.label}, {trial_label(a.trial)} "
            f"({_fmt(primary, ca.summary.mean)}) and {trial_label(b.trial)} ({_fmt(primary, cb.summary.mean)})")
    if len(common) < 2:
        return head + " share fewer than 2 seeds; run both on the same seeds first."
    d = np.array([ca.values[s] - cb.values[s] for s in common])
    diff, sd = float(d.mean()), float(d.std(ddof=1))
    if diff == 0:
        return head + f" have the same mean over {len(common)} common seeds: no number of seeds separates them."
    if sd == 0:
        return head + f" differ by the same amount on every one of {len(common)} common seeds: no more seeds are needed."
    try:
        need = stats.seeds_needed(diff, sd, POWER, ALPHA, paired=True)
    except ValueError:
        return (head + f" differ by {_fmt_diff(primary, diff)} (sd of paired differences {_fmt_diff(primary, sd)}): "
                "more than 100,000 seeds would be needed to resolve it; the difference is negligible.")
    if need <= len(common):
        verdict = "no, the seeds already resolve it"
    elif need > max(10 * len(common), 50):
        verdict = "not worth it; for practical purposes the two are tied"
    else:
        verdict = f"yes, about {need - len(common)} more (run with --seeds 0:{need})"
    return (head + f" differ by {_fmt_diff(primary, diff)} on {len(common)} common seeds (sd of paired "
            f"differences {_fmt_diff(primary, sd)}). A paired t-test resolves that difference with "
            f"{int(POWER * 100)}% power at alpha {ALPHA} with {need} seeds: {verdict}.")


def _fmt(metric: Metric, value: float) -> str:
    return f"{metric.scale(value):.2f}%" if metric.kind == "acc" else f"{value:.4g}"


def _fmt_diff(metric: Metric, value: float) -> str:
    return f"{metric.scale(value):.3g} pp" if metric.kind == "acc" else f"{value:.3g}"


def analyze(study: Study, runs: pd.DataFrame) -> Analysis:
    """Every number the report shows, computed from the runs (pure; writes nothing)."""
    primary = _primary(study)
    factors = design_factors(study)
    groups = {tid: g for tid, g in runs.groupby("trial_id", sort=False)}
    rows = []
    published_single: dict[str, dict[str, float]] = {}
    for p in study.published:
        trials = matching_trials(study, p.get("where", {}))
        if len(trials) == 1:
            for key in METRIC:
                if key in p:
                    published_single.setdefault(trials[0].trial_id, {})[key] = _published_value(METRIC[key], p[key])[0]
    for t in study.trials:
        g = groups.get(t.trial_id, runs.iloc[0:0])
        cells = {m.column: _cell(_values(g, m.column)) for m in METRICS}
        pc = cells[primary.column]
        boot = (stats.bootstrap_ci(list(pc.values.values()), CONFIDENCE, n_resamples=2000, seed=0)
                if pc.n >= 2 else (math.nan, math.nan))
        rows.append(Row(t, tuple(sorted(int(s) for s in g["seed"])), cells, published_single.get(t.trial_id, {}), boot))
    if study.design_kind != "random":  # factor by factor, each in its design order (sweeps list the swept factor first)
        levels = {f: factor_levels(study, f) for f in factors}

        def position(row: Row) -> tuple:
            return tuple(
                next((i for i, lv in enumerate(levels[f]) if _same(lv, row.trial.values[f])), len(levels[f]))
                if f in row.trial.values else len(levels[f])
                for f in factors
            )

        rows.sort(key=position)
    metrics = tuple(m for m in METRICS if any(r.cells[m.column].n > 0 for r in rows))
    if primary not in metrics:
        primary = next((m for m in metrics if m.kind == "acc"), primary)
    effects, note = _factor_effects(study, rows, primary, factors)
    return Analysis(
        study=study,
        runs=runs,
        rows=tuple(rows),
        metrics=metrics,
        primary=primary,
        factors=factors,
        verdicts=tuple(_verdicts(study, rows, primary)),
        best_vs_rest=_best_vs_rest(study, rows, primary, factors),
        factor_effects=effects,
        factor_note=note,
        add_seeds=_add_seeds(rows, primary),
    )


# ----------------------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------------------


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


def _environment_lines(runs: pd.DataFrame) -> list[str]:
    envs = Counter(str(e) for e in runs["environment"])
    lines = []
    for text, count in sorted(envs.items(), key=lambda kv: (-kv[1], kv[0])):
        try:
            env = json.loads(text)
        except (TypeError, ValueError):
            env = {}
        packages = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        prefix = f"- {count} runs: " if len(envs) > 1 else "- "
        lines.append(
            f"{prefix}Python {env.get('python', '?')}; {packages or 'package versions not recorded'}; "
            f"{env.get('backend', '?')} backend, device {env.get('device_kind', '?')} x{env.get('device_count', '?')}; "
            f"CPU {env.get('cpu_model', '?')} (ISA {', '.join(env.get('isa', [])) or 'none recorded'}); "
            f"XLA_FLAGS {env.get('xla_flags') or '(unset)'}; x64 {env.get('x64', '?')}; {env.get('platform', '?')}"
        )
    return lines


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(x: float, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _verdict_table(a: Analysis) -> list[str]:
    if not a.verdicts:
        return ["The study file records no published numbers."]
    lines = [
        "| source | configuration | metric | published | seeds: mean (sd) | 95% prediction interval | z | percentile | n | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    inside = total = timed = 0
    previous = None
    for v in a.verdicts:
        m = metric_of(v.metric)
        pub = f"{m.scale(v.published):.2f}" if m.kind == "acc" else f"{v.published:.4g}"
        p = v.placement
        if p is None:
            verdict = v.against if v.against.startswith("no stored") else ("not placed" if v.note else "no runs")
            cells = ["n/a"] * 4
        else:
            sc = m.scale
            spread = f"{sc(p.mean):.2f} ({_num(sc(p.std), '.2g')})" if m.kind == "acc" else f"{p.mean:.4g} ({_num(p.std, '.2g')})"
            pi = "n/a"
            if math.isfinite(p.pi_low):
                pi = (f"[{sc(p.pi_low):.2f}, {sc(p.pi_high):.2f}]" if m.kind == "acc"
                      else f"[{p.pi_low:.4g}, {p.pi_high:.4g}]")
            if p.verdict == "too few seeds":
                verdict = "too few seeds"
            else:
                verdict = ("**inside**" if p.inside else "**outside**") + f" ({p.verdict})"
                if m.kind == "time":
                    timed += 1
                else:
                    total += 1
                    inside += p.inside
            cells = [spread, pi, _num(p.z, "+.2f"), f"{p.percentile:.1f}"]
        notes = [x for x in (v.note,) if x]
        if v.against and v.n:
            notes.insert(0, f"against the {v.against}")
        if notes:
            verdict += "; " + "; ".join(notes)
        same = previous == (v.source, v.where)
        previous = (v.source, v.where)
        lines.append(
            f"| {'' if same else _md_escape(v.source)} | {'' if same else _md_escape(v.where)} | {m.label} | {pub} | "
            + " | ".join(cells) + f" | {v.n} | {_md_escape(verdict)} |"
        )
    lines += ["", f"**{inside} of {total}** published accuracies and losses fall inside the seeds' 95% prediction "
              "interval for one new run (Student t with n - 1 degrees of freedom): a value outside it is unlikely "
              "to be one more run of the same configuration. z is (published - mean) / sd; the percentile is the "
              "published value's rank among the seeds' values."
              + (f" The {timed} training times are listed for reference only: they depend on the hardware." if timed else "")]
    return lines


# The per-epoch history that shows how a final metric developed; test metrics only where validation is the test set.
HISTORY_OF = {"final_val_accuracy": "val_accuracy", "final_val_loss": "val_loss"}
HISTORY_OF_TEST = {"test_accuracy": "val_accuracy", "test_loss": "val_loss"}


def epoch_means(histories: Sequence[Sequence[float]]) -> list[tuple[float, int]]:
    """Mean over runs of each epoch's value, among the runs that trained that epoch, with their count."""
    longest = max((len(h) for h in histories), default=0)
    out = []
    for epoch in range(longest):
        values = [float(h[epoch]) for h in histories if len(h) > epoch and math.isfinite(float(h[epoch]))]
        if values:
            out.append((float(np.mean(values)), len(values)))
    return out


def training_length_hint(published: float, means: Sequence[tuple[float, int]], higher_is_better: bool) -> tuple[int, str]:
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
        return epoch, ("better than the seeds' mean at every epoch: a difference in setup (data, model, optimizer "
                       "or framework numerics), not in training length, is the likely reason")
    if epoch == len(values):
        return epoch, "closest to the seeds' last epoch: a difference in setup is the likely reason"
    return epoch, ("the published run looks like ours after fewer epochs: a shorter or slower training (fewer "
                   "epochs, an earlier stop, a slower start) is the likely reason")


def _outside_reasons(a: Analysis) -> list[str]:
    """For the published accuracies and losses outside the prediction interval, where the seeds' mean
    learning curve meets them, and the likely reason that suggests (a hypothesis to check, not a proof)."""
    mapping = dict(HISTORY_OF)
    if str(a.study.meta.get("validation", "test")) == "test":
        mapping.update(HISTORY_OF_TEST)
    rows: dict[tuple[str, str], list[tuple[str, str]]] = {}
    seen = set()
    for v in a.verdicts:
        p = v.placement
        if p is None or p.inside or p.verdict == "too few seeds" or not v.trial_id or v.metric not in mapping:
            continue
        column = mapping[v.metric]
        runs = a.runs[a.runs["trial_id"] == v.trial_id]
        if column not in runs or runs.empty or (v.source, v.where, column, v.published) in seen:
            continue  # a final validation value equal to the test value it duplicates says nothing new
        seen.add((v.source, v.where, column, v.published))
        means = epoch_means([list(h) for h in runs[column]])
        m = metric_of(v.metric)
        epoch, reading = training_length_hint(v.published, means, m.better > 0)
        if not reading:
            continue
        fmt = (lambda x: f"{m.scale(x):.2f}") if m.kind == "acc" else (lambda x: f"{x:.4g}")
        fact = (f"{m.label} published {fmt(v.published)}, seeds {fmt(p.mean)} at the end and "
                f"{fmt(means[epoch - 1][0])} after epoch {epoch} of {len(means)}")
        rows.setdefault((v.source, v.where), []).append((fact, reading))
    if not rows:
        return []
    lines = ["### Outside the prediction interval: likely reasons", "",
             "Where each published accuracy or loss outside the interval meets the seeds' mean learning curve "
             "(validation metrics per epoch; test metrics too where the validation set is the test set), and "
             "what that suggests. Read from the data: a hypothesis to check, not a proof.", ""]
    for (source, where), items in rows.items():
        readings = list(dict.fromkeys(r for _, r in items))
        if len(readings) == 1:
            text = "; ".join(f for f, _ in items) + f". {readings[0][0].upper() + readings[0][1:]}."
        else:
            text = "; ".join(f"{f} ({r})" for f, r in items) + "."
        lines.append(f"- {_md_escape(source)} ({_md_escape(where)}): {_md_escape(text)}")
    return lines + [""]


def _comparison_table(a: Analysis, comps: Sequence[Comparison]) -> list[str]:
    m = a.primary
    lines = [
        f"| a | b | common seeds | mean a - b ({'pp' if m.kind == 'acc' else m.label}) | 95% CI | paired t p | Holm p | Wilcoxon p | P(a > b) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in comps:
        r = c.result
        sc = m.scale
        lines.append(
            f"| {_md_escape(trial_label(a.row(c.a).trial))} | {_md_escape(trial_label(a.row(c.b).trial))} | {r.n} | "
            f"{sc(r.mean_diff):+.3f} | [{_num(sc(r.ci_low), '+.3f')}, {_num(sc(r.ci_high), '+.3f')}] | "
            f"{_num(r.t_pvalue, '.3g')} | {_num(c.holm_p, '.3g')}{' *' if c.holm_p < ALPHA else ''} | "
            f"{_num(r.wilcoxon_pvalue, '.3g')} | {r.prob_improvement:.2f} |"
        )
    if len(comps) > 12:
        lines = ["<details><summary>" + f"{len(comps)} comparisons" + "</summary>", "", *lines, "", "</details>"]
    return lines


def readme(a: Analysis, table_md: str, figures: Sequence[tuple[str, str]], results_arg: str) -> str:
    """The report's README.md text."""
    s, runs, meta = a.study, a.runs, a.study.meta
    seeds = sorted({int(x) for x in runs["seed"]})
    counts = Counter(r.cells[a.primary.column].n + r.cells[a.primary.column].n_nonfinite for r in a.rows)
    lines = [f"# {meta.get('title', s.name)}", ""]
    if meta.get("authors"):
        lines.append(f"Authors: {', '.join(meta['authors'])}" + (f" ({meta['year']})" if meta.get("year") else "") + ".")
    if meta.get("citation"):
        lines.append(f"Citation: {meta['citation']}")
    for key in ("doi", "url"):
        if meta.get(key):
            lines.append(f"{key.upper()}: {meta[key]}")
    lines += ["", f"Study `{s.name}` ({s.design_kind} design, {len(s.trials)} configurations), study file "
              f"`{s.path.name}` (sha256 `{s.sha256[:16]}`)." + (f" {meta['description']}" if meta.get("description") else ""), ""]
    lines += ["## Runs", ""]
    if len(counts) == 1:
        per = f"{next(iter(counts))} seeds for each of the {len(a.rows)} configurations"
    else:
        per = "; ".join(f"{n} seeds for {c} configuration{'s' if c > 1 else ''}" for n, c in sorted(counts.items(), reverse=True))
    lines.append(f"- Runs: {len(runs)}; seeds {describe_seeds(seeds)} ({per}).")
    validation = str(meta.get("validation", "test"))
    lines.append("- Validation data: " + {
        "test": "the test set (as Keras' validation_data=(x_test, y_test)): validation metrics are test metrics.",
        "none": "none (no validation metrics).",
    }.get(validation, f"the last {validation.partition(':')[2]} training images, held out from training."))
    ignored = runs.attrs.get("ignored", 0)
    if ignored:
        lines.append(f"- {ignored} other stored runs (other seeds, or configurations the study file no longer describes) are not used.")
    shas = sorted(set(str(x) for x in runs["study_sha256"]))
    if shas != [s.sha256]:
        lines.append(f"- Runs were stored under study file versions {', '.join(f'`{x[:16]}`' for x in shas)}; "
                     "their configurations are the current file's (matched by run id).")
    fps = Counter(str(x) for x in runs["dataset_fingerprint"])
    lines.append("- Dataset fingerprint: " + "; ".join(f"`{k}`" + (f" ({c} runs)" if len(fps) > 1 else "")
                                                       for k, c in sorted(fps.items())))
    widths = Counter(int(w) for w in runs["chunk_width"])
    lines.append("- Chunk widths (runs trained together in one vmapped program; part of a result's identity): "
                 + ", ".join(f"{w} ({c} runs)" for w, c in sorted(widths.items())) + ".")
    compile_s = runs.drop_duplicates(["group_id", "chunk_width", "compile_seconds"])["compile_seconds"].sum()
    lines.append(f"- Training time: {float(runs['seconds'].sum()):.1f} s over all runs (a run's seconds are its "
                 f"chunk's wall time divided by the chunk's runs), plus {float(compile_s):.1f} s compiling.")
    lines.append("- Environment:")
    lines += ["  " + e for e in _environment_lines(runs)]
    lines += ["", "## Assumptions", ""]
    if s.assumptions:
        lines += ["| setting | value | why |", "|---|---|---|"]
        lines += [f"| `{_md_escape(x.get('key', ''))}` | {_md_escape(x.get('value', ''))} | {_md_escape(x.get('why', ''))} |"
                  for x in s.assumptions]
    else:
        lines.append("The study file records no assumptions.")
    lines += ["", "## Results", "",
              f"Mean over seeds ± half-width of the 95% confidence interval of the mean (Student t); bold: best in "
              f"its column; \"pub.\" is the paper's single-run value; n/a: one seed, no interval. Also as "
              f"[table.csv](table.csv) (every number, with standard deviations, prediction intervals and a "
              f"bootstrap CI of {a.primary.label}) and [table.tex](table.tex) (booktabs).", "", table_md.rstrip(), ""]
    lines += ["## Published numbers against the seeds", ""] + _verdict_table(a) + [""] + _outside_reasons(a)
    lines += ["## Comparisons", "", f"On {a.primary.label}, paired on common seeds (differences a - b), Holm-corrected "
              "within each family (on the paired t-test p); * marks Holm p < 0.05. P(a > b) is the probability "
              "that a run of a beats a run of b.", ""]
    if a.best_vs_rest:
        lines += ["### Best configuration against the others", ""] + _comparison_table(a, a.best_vs_rest) + [""]
    if a.factor_effects:
        lines += ["### One factor at a time", "", "Pairs of configurations that differ in one factor only "
                  "(a: the later level; numeric factors compare neighbouring levels)." , ""] + _comparison_table(a, a.factor_effects) + [""]
    if a.factor_note:
        lines += [a.factor_note, ""]
    if not a.best_vs_rest and not a.factor_effects:
        lines += ["No comparison possible: configurations need at least 2 common seeds.", ""]
    lines += [a.add_seeds, ""]
    lines += ["## Figures", ""]
    for stem, caption in figures:
        lines += [f"![{_md_escape(caption)}](figures/{stem}.png)", "",
                  f"{caption} ([PDF](figures/{stem}.pdf), [SVG](figures/{stem}.svg))", ""]
    lines += ["## Regenerate", "", "```", f"hpstudy report {s.name} --results {results_arg}", "```", "",
              "The same stored runs give byte-identical files.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _display_path(path: str | os.PathLike) -> str:
    """The path as given, made relative to the working directory when it lies under it."""
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return p.as_posix()
    return p.as_posix()


def write_report(
    study: Study, results: str | os.PathLike, out: str | os.PathLike = DEFAULT_OUT, seeds: Sequence[int] | None = None
) -> Path:
    """Write OUT/<study>/ (README, tables, figures) from the stored runs and return that folder.

    The output folder is checked before any work; the report is built beside the old one and swapped in
    (hpstudy/outputs.py), and only files an earlier report wrote are ever replaced or removed.
    """
    from hpstudy import figures, outputs, tables

    store.validate(store.study_dir(results, study.name), study.name)  # foreign, mistyped or conflicting parts
    runs = load_runs(study, results, seeds)
    store.check_writable(Path(out), "output")  # before the analysis and the figures, the slow part
    a = analyze(study, runs)

    def build(folder: Path) -> None:
        frame = tables.table_frame(a)
        texts = {
            "table.csv": tables.to_csv(frame),
            "table.md": tables.to_markdown(a),
            "table.tex": tables.to_latex(a),
        }
        fig_dir = folder / "figures"
        fig_dir.mkdir()
        made = figures.make_figures(a, fig_dir)
        texts["README.md"] = readme(a, texts["table.md"], made, _display_path(results))
        for name, text in texts.items():
            (folder / name).write_text(text, encoding="utf-8", newline="\n")

    return outputs.publish(Path(out), study.name, build)


# ----------------------------------------------------------------------------------------------
# Synthetic runs (tests and benchmarks; no training)
# ----------------------------------------------------------------------------------------------

_FAKE_ENV = {
    "python": "3.11.2",
    "packages": {"flax": "0.12.8", "hpstudy": "0.1.0", "jax": "0.10.2", "jaxlib": "0.10.2", "numpy": "2.4.6", "optax": "0.2.8"},
    "xla_flags": "",
    "x64": False,
    "platform": "Linux-synthetic",
    "cpu_model": "Synthetic CPU",
    "isa": ["avx2", "fma"],
    "backend": "cpu",
    "device_kind": "cpu",
    "device_count": 1,
}


def _fake_lr_optimum(config) -> float:
    if config.optimizer.startswith("adam"):
        return 1e-3
    if config.loss == "sigmoid_quadratic":
        return 1.0
    return 0.02 if config.momentum > 0 else 0.1


def synthetic_records(study: Study, seeds: Sequence[int], seed: int = 0) -> list[dict]:
    """Fake but schema-valid records (store.to_record of a made-up RunResult) for every (trial, seed).

    Accuracy falls off with the distance of the learning rate from a flavour-dependent optimum, with
    dropout and with small batches' noise; every run has its own noise drawn from its run id. Nielsen's
    flavour with ReLU "fails" (NaN loss, chance accuracy) as it did in the paper.
    """
    from hpstudy.runs import RunResult

    records = []
    for t in study.trials:
        c = t.config
        trial_rng = np.random.default_rng([seed, int(hashlib.sha256(t.trial_id.encode()).hexdigest()[:8], 16)])
        trial_shift = trial_rng.normal(0, 0.002)
        failed = c.flavour == "nielsen" and c.activation == "relu"
        for s in seeds:
            spec_id = run_id(c, s)
            rng = np.random.default_rng([seed, int(spec_id[:8], 16)])
            dist = abs(math.log10(c.learning_rate / _fake_lr_optimum(c)))
            acc = 0.978 - 0.01 * dist**2 - 0.02 * c.dropout - (0.006 if c.activation == "sigmoid" else 0.0)
            acc += 0.001 * math.log2(max(sum(c.hidden), 1) / 128) + trial_shift + rng.normal(0, 0.0025)
            acc = float(min(max(acc, 0.1), 0.995))
            epochs = c.epochs if c.early_stopping is None else int(rng.integers(max(1, c.epochs - 3), c.epochs + 1))
            e = np.arange(1, epochs + 1)
            rise = 1 - np.exp(-1.3 * e)
            val_acc = acc - (1 - rise) * 0.08 + rng.normal(0, 0.001, epochs)
            train_acc = val_acc + 0.004 * e / epochs
            val_loss = 0.08 + (1 - val_acc) * 2.2 + rng.normal(0, 0.003, epochs)
            train_loss = val_loss - 0.02 * e / epochs
            if failed:
                val_acc = train_acc = np.full(epochs, 0.098)
                val_loss = train_loss = np.full(epochs, math.nan)
            history = {
                "train_loss": [float(x) for x in train_loss],
                "train_accuracy": [float(x) for x in np.clip(train_acc, 0, 1)],
                "val_loss": [float(x) for x in val_loss],
                "val_accuracy": [float(x) for x in np.clip(val_acc, 0, 1)],
            }
            result = RunResult(
                spec=_spec(c, s, t.trial_id),
                history=history,
                epochs_run=epochs,
                best_epoch=int(np.argmax(history["val_accuracy"])) + 1,
                test_loss=float(history["val_loss"][-1]),
                test_accuracy=float(history["val_accuracy"][-1]),
                param_sha256=hashlib.sha256(f"{spec_id}|params".encode()).hexdigest(),
                chunk_width=8 if max(c.hidden) <= 128 else 4,
                group_id=c.group_id(),
                seconds=float(60000 / c.batch_size * 2e-4 * c.epochs * (1 + 0.05 * rng.random())),
                compile_seconds=1.5,
            )
            records.append(store.to_record(result, study.name, study.sha256, "synthetic-mnist-fingerprint", _FAKE_ENV))
    return records


def _spec(config, seed: int, trial_id: str):
    from hpstudy.runs import RunSpec

    return RunSpec(config, int(seed), trial_id)


class _CallableModule(type(sys)):
    """This module, callable as hpstudy.api.report: importing hpstudy.report rebinds the package's
    `report` attribute to this module, and `hpstudy.report(study)` must keep working after that."""

    def __call__(self, *args, **kwargs):
        from hpstudy.api import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
