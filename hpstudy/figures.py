"""The report's figures: one paper style, Okabe-Ito colours, each figure as PDF, SVG and PNG.

Figures are chosen by the study's design and factors, not by its name:
- ``configurations``: grid designs (up to 40 configurations): final validation accuracy and loss per
  configuration with 95% CI bars, published values as open diamonds (the grid paper's scatter plots);
- ``by_<factor>``: grid designs with a factor of at most 4 levels (learning rate when there is one) and the
  other factors' combinations as bars: training time, test accuracy, test loss with CI error bars;
- ``<metric>_vs_<factor>``: any numeric factor with 3 or more levels (a sweep): the primary metric
  against it (log axis for learning rates), one panel per activation (or other categorical factor), one
  line per flavour (or the remaining factors) with a 95% CI band, published values as stars;
- random designs: ``best_so_far`` (best score vs trial index, mean and CI over seeds),
  ``score_vs_hyperparameters`` (each trial's mean and CI against each sampled hyperparameter) and
  ``learning_curves`` (train and validation accuracy and loss per epoch of the best trial, 95% CI bands).

Files are byte-identical for the same inputs: fixed SVG hash salt, no dates or software versions in the
metadata, Figure objects only (no pyplot state), every figure closed after saving.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib as mpl
import numpy as np
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from scipy import stats as sstats

from hpstudy.analysis import (
    CONFIDENCE,
    METRIC,
    Analysis,
    Cell,
    Metric,
    Row,
    factor_levels,
    format_value,
    trial_label,
    _published_value,
    _same,
)

FORMATS = ("pdf", "svg", "png")
# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency. Yellow last (pale on white).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), "-", "--")
PUBLISHED_STYLE = {"marker": "*", "s": 70, "edgecolors": "black", "linewidths": 0.6, "zorder": 5}
PUBLISHED_LABEL = "published (one run)"
WIDTH = 7.0  # inches: a full text width
CHANCE = 15.0  # percent: a sweep line never above this is a failed (diverged) configuration
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.5,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "svg.hashsalt": "hpstudy",
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
    "path.simplify": True,
}
METADATA = {
    "pdf": {"Creator": "hpstudy report", "Producer": "hpstudy report", "CreationDate": None, "ModDate": None},
    "svg": {"Creator": "hpstudy report", "Date": None},
    "png": {"Software": None},
}


def save(fig: Figure, directory: Path, stem: str) -> None:
    """Write stem.png, stem.pdf and stem.svg without dates or versions in their metadata.

    The constrained layout is solved once, while the PNG is drawn; the other formats reuse it (the
    layout works in points, so it is the same at every resolution) instead of solving it again.
    """
    for i, ext in enumerate(("png", "pdf", "svg")):
        fig.savefig(directory / f"{stem}.{ext}", format=ext, metadata=METADATA[ext])
        if i == 0:
            fig.set_layout_engine("none")
    fig.clear()


def _half(cell: Cell) -> float:
    return cell.half_width if cell.summary is not None else math.nan


def _mean(cell: Cell) -> float:
    return cell.summary.mean if cell.summary is not None else math.nan


def _numeric(values: Sequence) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_axis(factor: str, levels: Sequence) -> bool:
    return _numeric(levels) and min(levels) > 0 and (factor == "learning_rate" or max(levels) / min(levels) >= 100)


def _log_x(ax) -> None:
    """A log x axis labelled 0.001, 0.01, ... (plain numbers read better than powers, and draw faster)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _at_chance(metric: Metric, values: np.ndarray) -> np.ndarray:
    """Which values (display units) are accuracies at chance level: failed, diverged configurations."""
    return np.isfinite(values) & (values <= CHANCE) if metric.kind == "acc" else np.zeros(values.shape, bool)


def _fit_ylim(ax, values: np.ndarray) -> None:
    """y limits around these values with a margin (the rest is clipped)."""
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        pad = max(hi - lo, 0.5) * 0.1
        ax.set_ylim(lo - pad, hi + pad)


def _axis_label(factor: str) -> str:
    from hpstudy.analysis import FACTOR_LABELS

    return FACTOR_LABELS.get(factor, factor)


def _short(factor: str) -> str:
    return {"learning_rate": "lr", "batch_size": "batch"}.get(factor, factor)


def _value_metrics(a: Analysis, wanted: Sequence[str]) -> list[Metric]:
    present = {m.column for m in a.metrics}
    return [METRIC[c] for c in wanted if c in present]


def _legend_below(fig: Figure, handles: list, labels: list, ncols: int | None = None) -> None:
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols or min(len(labels), 5))


# ----------------------------------------------------------------------------------------------
# Grid: configurations (forest plot) and grouped bars
# ----------------------------------------------------------------------------------------------


def _forest_metrics(a: Analysis) -> list[Metric]:
    return _value_metrics(a, ("final_val_accuracy", "final_val_loss")) or _value_metrics(a, ("test_accuracy", "test_loss"))


def fig_configurations(a: Analysis) -> Figure | None:
    metrics = _forest_metrics(a)
    if not metrics:
        return None
    rows = list(a.rows)
    n = len(rows)
    y = np.arange(n)[::-1]
    fig = Figure(figsize=(WIDTH, max(2.4, 0.26 * n + 1.3)), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    eb = pub_handle = None
    for ax, m in zip(axes, metrics):
        means = np.array([m.scale(_mean(r.cells[m.column])) for r in rows])
        halves = np.array([m.scale(_half(r.cells[m.column])) for r in rows])
        eb = ax.errorbar(means, y, xerr=halves, fmt="o", color=OKABE_ITO[0], ecolor=OKABE_ITO[0], elinewidth=1.1,
                         markersize=4, zorder=3)
        pub = [(m.scale(r.published[m.column]), yy) for r, yy in zip(rows, y) if m.column in r.published]
        if pub:
            pub_handle = ax.scatter([p[0] for p in pub], [p[1] for p in pub], marker="D", s=22, facecolors="white",
                                    edgecolors=OKABE_ITO[1], linewidths=1.1, zorder=4)
        ax.set_xlabel(m.label)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_locator(MaxNLocator(5))
    axes[0].set_yticks(y, [trial_label(r.trial, a.factors) for r in rows])
    axes[0].set_ylim(-0.6, n - 0.4)
    handles, labels = [eb], ["mean and 95% CI over seeds"]
    if pub_handle is not None:
        handles.append(pub_handle)
        labels.append(PUBLISHED_LABEL)
    _legend_below(fig, handles, labels)
    return fig


def _bar_factor(a: Analysis) -> str | None:
    if a.study.design_kind != "grid" or len(a.factors) < 1:
        return None
    candidates = [f for f in a.factors if 2 <= len(factor_levels(a.study, f)) <= 4]
    if not candidates:
        return None
    return "learning_rate" if "learning_rate" in candidates else candidates[0]


def fig_grouped_bars(a: Analysis, factor: str) -> Figure | None:
    metrics = _value_metrics(a, ("seconds", "test_accuracy", "test_loss"))
    levels = factor_levels(a.study, factor)
    others = [f for f in a.factors if f != factor]
    series: list[tuple] = []
    for r in a.rows:
        key = tuple(r.trial.values.get(f) for f in others)
        if not any(all(_same(x, y) for x, y in zip(key, s)) for s in series):
            series.append(key)
    if not metrics or len(series) > 8:
        return None
    cell_of: dict[tuple[int, int], Row] = {}
    for r in a.rows:
        li = next((i for i, lv in enumerate(levels) if _same(lv, r.trial.values.get(factor))), None)
        si = next(i for i, s in enumerate(series) if all(_same(x, y) for x, y in zip(s, (r.trial.values.get(f) for f in others))))
        if li is not None:
            cell_of[(li, si)] = r
    k = len(series)
    width = 0.8 / k
    fig = Figure(figsize=(WIDTH, 2.7), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    handles, labels = [], []
    pub_handle = None
    x = np.arange(len(levels))
    for ax, m in zip(axes, metrics):
        lows, highs = [], []
        for si, s in enumerate(series):
            offs = x - 0.4 + width * (si + 0.5)
            rows = [cell_of.get((li, si)) for li in range(len(levels))]
            means = np.array([m.scale(_mean(r.cells[m.column])) if r else math.nan for r in rows])
            halves = np.array([m.scale(_half(r.cells[m.column])) if r else math.nan for r in rows])
            bars = ax.bar(offs, means, width * 0.92, yerr=halves, color=OKABE_ITO[si % len(OKABE_ITO)],
                          error_kw={"elinewidth": 0.9, "ecolor": "black", "capsize": 2}, zorder=2)
            pubs = [(o, m.scale(r.published[m.column])) for o, r in zip(offs, rows) if r and m.column in r.published]
            if pubs:
                pub_handle = ax.scatter([p[0] for p in pubs], [p[1] for p in pubs], marker="D", s=16,
                                        facecolors="white", edgecolors="black", linewidths=0.9, zorder=4)
            lows += list(np.nan_to_num(means - np.nan_to_num(halves), nan=np.inf)) + [p[1] for p in pubs]
            highs += list(np.nan_to_num(means + np.nan_to_num(halves), nan=-np.inf)) + [p[1] for p in pubs]
            if ax is axes[0]:
                handles.append(bars)
                labels.append(", ".join(f"{_short(f)} {format_value(f, v)}" for f, v in zip(others, s)) or m.label)
        if m.kind == "acc":  # accuracies differ by tenths of a percent: zoom in rather than start at 0
            lo, hi = min(lows), max(highs)
            if math.isfinite(lo) and math.isfinite(hi):
                pad = max(hi - lo, 0.05) * 0.15
                ax.set_ylim(lo - pad, hi + pad)
        ax.set_xticks(x, [format_value(factor, v) for v in levels])
        ax.set_xlabel(_axis_label(factor))
        ax.set_ylabel(m.label)
        ax.grid(axis="x", visible=False)
    if pub_handle is not None:
        handles.append(pub_handle)
        labels.append(PUBLISHED_LABEL)
    _legend_below(fig, handles, labels, ncols=min(len(labels), 3))
    return fig


# ----------------------------------------------------------------------------------------------
# Sweeps: metric against a numeric factor, panels by activation, lines by flavour
# ----------------------------------------------------------------------------------------------


def _sweep_factors(a: Analysis) -> list[str]:
    if a.study.design_kind == "random":
        return []
    return [f for f in a.factors if _numeric(factor_levels(a.study, f)) and len(factor_levels(a.study, f)) >= 3]


def fig_sweep(a: Analysis, x_factor: str, metric: Metric) -> Figure | None:
    rows = [r for r in a.rows if x_factor in r.trial.values]
    cats = [f for f in a.factors if f != x_factor and all(isinstance(r.trial.values.get(f, ""), str) for r in rows)]
    panel = "activation" if "activation" in cats else (cats[0] if cats else None)
    line_factors = [f for f in a.factors if f not in (x_factor, panel) and any(f in r.trial.values for r in rows)]
    panels = factor_levels(a.study, panel) if panel else [None]
    lines: list[tuple] = []
    for r in rows:
        key = tuple(r.trial.values.get(f) for f in line_factors)
        if not any(all(_same(p, q) for p, q in zip(key, k)) for k in lines):
            lines.append(key)
    if not rows or len(lines) > len(OKABE_ITO):
        return None
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(WIDTH, 2.5 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    levels = factor_levels(a.study, x_factor)
    handles: dict[str, object] = {}
    has_published = False
    for ax, pv in zip(axes, panels):
        shown: list[float] = []
        failed: list[tuple[str, float]] = []
        for li, key in enumerate(lines):
            members = [r for r in rows if (panel is None or r.trial.values.get(panel) == pv)
                       and all(_same(r.trial.values.get(f), v) for f, v in zip(line_factors, key))]
            members.sort(key=lambda r: r.trial.values[x_factor])
            if not members:
                continue
            xs = np.array([float(r.trial.values[x_factor]) for r in members])
            cells = [r.cells[metric.column] for r in members]
            ys = np.array([metric.scale(_mean(c)) for c in cells])
            lo = np.array([metric.scale(c.summary.ci_low) if c.summary is not None and c.summary.n >= 2 else math.nan for c in cells])
            hi = np.array([metric.scale(c.summary.ci_high) if c.summary is not None and c.summary.n >= 2 else math.nan for c in cells])
            if metric.kind == "acc":  # a t interval over few, wildly different seeds can leave [0, 100]%
                lo, hi = np.clip(lo, 0.0, 100.0), np.clip(hi, 0.0, 100.0)
            color = OKABE_ITO[li % len(OKABE_ITO)]
            label = ", ".join(format_value(f, v) for f, v in zip(line_factors, key)) or metric.label
            (ln,) = ax.plot(xs, ys, color=color, marker=MARKERS[li % len(MARKERS)], linestyle=LINESTYLES[li % len(LINESTYLES)],
                            markersize=3.5, zorder=3)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, linewidth=0, zorder=2)
            handles.setdefault(label, ln)
            pubs = [(float(r.trial.values[x_factor]), metric.scale(r.published[metric.column]))
                    for r in members if metric.column in r.published]
            if pubs:
                ax.scatter([p[0] for p in pubs], [p[1] for p in pubs], color=color, **PUBLISHED_STYLE)
                has_published = True
            finite = ys[np.isfinite(ys)]
            if metric.kind == "acc" and finite.size and finite.max() <= CHANCE:
                failed.append((label, float(finite.mean())))
            else:
                shown += [*finite, *lo[np.isfinite(lo)], *hi[np.isfinite(hi)], *(p[1] for p in pubs)]
        if failed and shown:  # runs at chance level would squash every other line: note them instead
            _fit_ylim(ax, np.array(shown))
            ax.text(0.02, 0.02, "\n".join(f"{name}: {value:.1f}% (chance level), off scale" for name, value in failed),
                    transform=ax.transAxes, fontsize=6.5, va="bottom", ha="left", color="0.25")
        if _log_axis(x_factor, levels):
            _log_x(ax)
        if panel:
            ax.set_title(f"{_axis_label(panel)}: {pv}")
        ax.set_xlabel(_axis_label(x_factor))
        ax.set_ylabel(metric.label)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if has_published:  # one neutral legend entry for the stars, whatever their colour, after the lines
        handles[PUBLISHED_LABEL] = axes[0].scatter([], [], color="white", **PUBLISHED_STYLE)
    _legend_below(fig, list(handles.values()), list(handles), ncols=min(len(handles), 6))
    return fig


# ----------------------------------------------------------------------------------------------
# Learning curves, best-so-far, score vs hyperparameters
# ----------------------------------------------------------------------------------------------


def _t_band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean and t CI over the finite values of each column (NaN where fewer than 2)."""
    finite = np.isfinite(matrix)
    n = finite.sum(axis=0)
    safe = np.where(finite, matrix, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = safe.sum(axis=0) / n
        var = (np.where(finite, matrix - mean, 0.0) ** 2).sum(axis=0) / (n - 1)
        t = sstats.t.ppf(0.5 + CONFIDENCE / 2.0, np.maximum(n - 1, 1))
        half = np.where(n >= 2, t * np.sqrt(var / n), np.nan)
    mean = np.where(n >= 1, mean, np.nan)
    return mean, mean - half, mean + half


def _history(runs, column: str) -> np.ndarray:
    """runs x epochs matrix of a per-epoch history column, NaN after a run stopped."""
    seqs = [np.asarray(h, dtype=float) if h is not None else np.zeros(0) for h in runs[column]]
    width = max((len(s) for s in seqs), default=0)
    out = np.full((len(seqs), width), np.nan)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def best_row(a: Analysis) -> Row | None:
    """The configuration with the best mean primary metric (first in design order on ties)."""
    m = a.primary
    ranked = [r for r in a.rows if r.cells[m.column].n > 0]
    return max(ranked, key=lambda r: m.better * r.cells[m.column].summary.mean) if ranked else None


def fig_learning_curves(a: Analysis) -> Figure | None:
    best = best_row(a)
    if best is None:
        return None
    runs = a.runs[a.runs["trial_id"] == best.trial.trial_id]
    fig = Figure(figsize=(WIDTH, 2.6), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)[0]
    handles: dict[str, object] = {}
    lengths = np.array([int(e) for e in runs["epochs_run"]])
    counts = [int((lengths >= e).sum()) for e in range(1, int(lengths.max()) + 1)]
    for ax, (kind, scale, ylabel) in zip(axes, (("accuracy", 100.0, "accuracy (%)"), ("loss", 1.0, "loss"))):
        for i, split in enumerate(("train", "val")):
            mat = _history(runs, f"{split}_{kind}")
            if mat.size == 0 or not np.isfinite(mat).any():
                continue
            mean, lo, hi = _t_band(mat * scale)
            ep = np.arange(1, mat.shape[1] + 1)
            color = OKABE_ITO[i]
            (ln,) = ax.plot(ep, mean, color=color, linestyle=LINESTYLES[i], marker=MARKERS[i], markersize=3, zorder=3)
            ax.fill_between(ep, lo, hi, color=color, alpha=0.2, linewidth=0, zorder=2)
            handles.setdefault("training" if split == "train" else "validation", ln)
        ax.set_xlabel("epoch" if len(set(counts)) == 1 else "epoch (runs still training)")
        ax.set_ylabel(ylabel)
        if len(set(counts)) > 1 and len(counts) <= 15:
            ax.set_xticks(np.arange(1, len(counts) + 1), [f"{e}\n({c})" for e, c in enumerate(counts, 1)])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    name = trial_label(best.trial)
    if a.study.design_kind == "random":
        name = f"{best.trial.trial_id} ({name})"
    fig.suptitle(f"{name}: mean and 95% CI over {len(runs)} seeds", fontsize=8.5)
    _legend_below(fig, list(handles.values()), list(handles))
    return fig


def _score_matrix(a: Analysis) -> tuple[np.ndarray, list[Row]]:
    """seeds x trials of the primary metric, over the seeds every trial has (non-finite stays NaN)."""
    m = a.primary.column
    rows = list(a.rows)
    common = sorted(set.intersection(*(set(r.seeds) for r in rows))) if rows else []
    mat = np.full((len(common), len(rows)), np.nan)
    for j, r in enumerate(rows):
        vals = r.cells[m].values
        for i, s in enumerate(common):
            mat[i, j] = vals.get(s, np.nan)
    return mat, rows


def fig_best_so_far(a: Analysis) -> Figure | None:
    mat, rows = _score_matrix(a)
    if mat.size == 0:
        return None
    m = a.primary
    acc = np.fmax.accumulate(mat if m.better > 0 else -mat, axis=1)
    acc = acc if m.better > 0 else -acc
    mean, lo, hi = _t_band(m.scale(acc))
    x = np.arange(1, len(rows) + 1)
    fig = Figure(figsize=(WIDTH / 2 + 0.6, 2.8), layout="constrained")
    ax = fig.subplots()
    trial_means = np.array([m.scale(_mean(r.cells[m.column])) for r in rows])
    dots = ax.scatter(x, trial_means, s=9, color=OKABE_ITO[4], zorder=2)
    xs = np.append(x, len(rows) + 0.5)  # the last trial's step gets a width too
    (ln,) = ax.plot(xs, np.append(mean, mean[-1]), color=OKABE_ITO[0], drawstyle="steps-post", zorder=3)
    ax.fill_between(xs, np.append(lo, lo[-1]), np.append(hi, hi[-1]), color=OKABE_ITO[0], alpha=0.2,
                    linewidth=0, step="post", zorder=2)
    ax.set_xlim(0.5, len(rows) + 0.7)
    handles = {f"best so far (mean and 95% CI over {mat.shape[0]} seeds)": ln, "each trial's mean": dots}
    pubs = [v for v in a.verdicts if v.metric == m.column and v.placement is not None and "search" in v.against]
    if pubs:
        sc = ax.scatter([len(rows)] * len(pubs), [m.scale(v.published) for v in pubs], color="white", **PUBLISHED_STYLE)
        handles[PUBLISHED_LABEL.replace("one run", "best of its search")] = sc
    failed = _at_chance(m, trial_means)
    if failed.any():  # trials at chance level would flatten the curve: leave them off the scale, say so
        shown = np.concatenate([trial_means[~failed], mean, [m.scale(v.published) for v in pubs]])
        _fit_ylim(ax, shown[np.isfinite(shown)])
        ax.text(0.98, 0.02, f"{int(failed.sum())} trial(s) at chance level, off scale", transform=ax.transAxes,
                fontsize=6.5, ha="right", va="bottom", color="0.25")
    ax.set_xlabel("trial")
    ax.set_ylabel(m.label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_below(fig, list(handles.values()), list(handles), ncols=1)
    return fig


def _hyper_axes(a: Analysis) -> list[tuple[str, str, callable]]:
    """(name, label, value of a trial) for each sampled hyperparameter; hidden becomes depth and width."""
    out = []
    for f in a.factors:
        vals = [r.trial.values.get(f) for r in a.rows]
        if all(isinstance(v, (list, tuple)) for v in vals):
            out.append((f + ".depth", "hidden layers", lambda t, f=f: len(t.values[f])))
            out.append((f + ".units", "hidden units (total)", lambda t, f=f: sum(t.values[f])))
        elif _numeric(vals):
            out.append((f, _axis_label(f), lambda t, f=f: t.values[f]))
        else:
            out.append((f, _axis_label(f), lambda t, f=f: str(t.values[f])))
    return out


def fig_score_vs_hyper(a: Analysis) -> Figure | None:
    axes_spec = _hyper_axes(a)
    if not axes_spec:
        return None
    m = a.primary
    rows = list(a.rows)
    best = best_row(a)
    ncols = min(len(axes_spec), 4)
    nrows = math.ceil(len(axes_spec) / ncols)
    fig = Figure(figsize=(WIDTH, 2.3 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    ys = np.array([m.scale(_mean(r.cells[m.column])) for r in rows])
    halves = np.array([m.scale(_half(r.cells[m.column])) for r in rows])
    pub_points = []
    for p in a.study.published:
        if m.column in p and p.get("where"):
            pub_points.append((p["where"], m.scale(_published_value(m, p[m.column])[0])))
    handles: dict[str, object] = {}
    for ax, (name, label, get) in zip(axes, axes_spec):
        xs = [get(r.trial) for r in rows]
        discrete = not _numeric(xs) or len(set(xs)) <= 6
        cats = sorted(set(xs), key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v))) if discrete else []
        xv = np.array([cats.index(v) for v in xs], dtype=float) if discrete else np.array(xs, dtype=float)
        if discrete:  # spread the trials sharing a level so that their intervals do not overlap
            for level in range(len(cats)):
                idx = np.flatnonzero(xv == level)
                if idx.size > 1:
                    xv[idx] += np.linspace(-0.3, 0.3, idx.size)
        categorical = discrete
        is_best = np.array([r is best for r in rows])
        eb = ax.errorbar(xv[~is_best], ys[~is_best], yerr=halves[~is_best], fmt="o", color=OKABE_ITO[0],
                         markersize=3, elinewidth=0.8, alpha=0.85, zorder=3)
        handles.setdefault("trial: mean and 95% CI", eb)
        if is_best.any():
            bb = ax.errorbar(xv[is_best], ys[is_best], yerr=halves[is_best], fmt="s", color=OKABE_ITO[1],
                             markersize=4.5, elinewidth=1.1, zorder=4)
            handles.setdefault(f"best trial ({best.trial.trial_id})", bb)
        base = name.split(".")[0]
        for where, value in pub_points:
            if base in where:
                v = where[base]
                px = (len(v) if name.endswith(".depth") else sum(v)) if isinstance(v, (list, tuple)) else v
                if categorical:
                    if not any(_same(px, c) for c in cats):
                        continue
                    px = next(i for i, c in enumerate(cats) if _same(px, c))
                handles.setdefault("published best configuration (one search)",
                                   ax.scatter([px], [value], color="white", **PUBLISHED_STYLE))
        if categorical:
            ax.set_xticks(range(len(cats)), [format_value(base, c) for c in cats])
            ax.grid(axis="x", visible=False)
        elif _log_axis(name, list(xv)):
            _log_x(ax)
        ax.set_xlabel(label)
    for ax in axes[len(axes_spec):]:
        ax.set_visible(False)
    for i in range(nrows):
        axes[i * ncols].set_ylabel(m.label)
    failed = _at_chance(m, ys)
    if failed.any():
        shown = np.concatenate([ys[~failed], [v for _, v in pub_points]])
        _fit_ylim(axes[0], shown[np.isfinite(shown)])
        axes[0].text(0.02, 0.02, f"{int(failed.sum())} trial(s) at chance level, off scale", transform=axes[0].transAxes,
                     fontsize=6.5, ha="left", va="bottom", color="0.25")
    _legend_below(fig, list(handles.values()), list(handles), ncols=min(len(handles), 3))
    return fig


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def plan(a: Analysis) -> list[tuple[str, str, callable]]:
    """(file stem, caption, builder) of every figure the study's design calls for, in report order."""
    out: list[tuple[str, str, callable]] = []
    n_seeds = len(set(a.runs["seed"]))
    ci = f"mean and 95% CI over {n_seeds} seeds"
    if a.study.design_kind == "grid" and len(a.rows) <= 40:
        what = " and ".join(m.label.replace(" (%)", "") for m in _forest_metrics(a))
        out.append(("configurations", f"{what[0].upper()}{what[1:]} per configuration ({ci}); "
                    "open diamonds: the paper's single runs.", fig_configurations))
    bar = _bar_factor(a)
    if bar:
        out.append((f"by_{bar}", f"Training time per run, test accuracy and test loss by {_axis_label(bar)} "
                    f"({ci}; accuracy axis does not start at 0); diamonds: the paper's single runs.",
                    lambda a, f=bar: fig_grouped_bars(a, f)))
    for f in _sweep_factors(a):
        clipped = " clipped to 0-100%" if a.primary.kind == "acc" else ""
        out.append((f"{a.primary.column}_vs_{f}", f"{a.primary.label} against {_axis_label(f)} ({ci}, band: CI{clipped}); "
                    "stars: the paper's values.", lambda a, f=f: fig_sweep(a, f, a.primary)))
    if a.study.design_kind == "random":
        out.append(("best_so_far", f"Highest {a.primary.label} found so far, after each trial ({ci}); dots: each trial's mean; "
                    "star: the paper's search result.", fig_best_so_far))
        out.append(("score_vs_hyperparameters", f"{a.primary.label} of each trial ({ci}) against each sampled "
                    "hyperparameter; square: the best trial; star: the paper's best configuration.", fig_score_vs_hyper))
    best = best_row(a)
    if best is not None and a.study.design_kind == "random":
        out.append(("learning_curves", f"Learning curves of the best configuration by {a.primary.label}, "
                    f"{trial_label(best.trial)} (mean and 95% CI band over seeds; runs stopped early leave the "
                    "later epochs' means).", fig_learning_curves))
    return out


def make_figures(a: Analysis, directory: Path) -> list[tuple[str, str]]:
    """Draw and save every figure of the analysis into `directory`; return (stem, caption) of each."""
    made = []
    with mpl.rc_context(STYLE):
        for stem, caption, build in plan(a):
            fig = build(a)
            if fig is None:
                continue
            save(fig, directory, stem)
            made.append((stem, caption))
    return made
