"""The report's figures: one paper style, Okabe-Ito colours, each figure as PDF, SVG and PNG.

Figures are chosen by the study's design and factors, not by its name. Every figure that shows a mean over
seeds shows the seeds too, as points (or thin lines for learning curves), over any interval:
- ``configurations``: grid designs (up to 40 configurations): the primary accuracy and loss per configuration,
  each seed a point, mean and 95% CI, published values as open diamonds where the paper gives them;
- ``by_<factor>``: grid designs with a factor of 2-4 levels: test accuracy and loss against it, a dot plot
  (mean, CI, seeds) per combination of the other factors, on an axis that need not start at 0;
- ``<metric>_vs_<factor>``: a numeric factor with 3 or more levels: the primary metric against it, one panel
  per activation (shared y range), one line per implementation (Nielsen / scikit-learn / Keras), CI band and
  seeds; learning rates on a log axis, split at 1 into a linear part when the levels run from below 0.1 to 1-5;
- ``seeds``: every seed of every configuration (strip plot) where no ``configurations`` figure shows them;
- ``learning_curves``: validation accuracy per epoch with a 95% band and each seed's curve, for the best
  configurations (every configuration of small grids);
- random designs: ``best_so_far`` and ``score_vs_hyperparameters``.

Files are byte-identical for the same inputs: no dates or software versions in the metadata, Figure objects
only (no pyplot state), every figure closed after saving, and the SVG's ids (which matplotlib derives from
hashes of float coordinates, so that last-bit noise would change them) renumbered in order of appearance.
Log axes are drawn as linear axes of math.log10 positions, so that no vectorised transcendental function
(whose last bits may depend on the CPU's SIMD width) decides a coordinate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator
from scipy import stats as sstats

from hpstudy.reporting.analysis import (
    CONFIDENCE,
    FACTOR_LABELS,
    METRIC,
    Analysis,
    Cell,
    Metric,
    Row,
    _published_value,
    _same,
    factor_levels,
    format_value,
    trial_label,
)

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency. Yellow last (pale on white).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), "-", "--")
PUBLISHED_STYLE = {"marker": "*", "s": 70, "edgecolors": "black", "linewidths": 0.6, "zorder": 5}
PUBLISHED_LABEL = "published (one run)"


def _published_label(rows: Sequence[Row]) -> str:
    """The legend entry of published markers: one run, or the paper's maximum over some factors."""
    over = sorted({f for r in rows for fs in r.published_best_over.values() for f in fs})
    return (
        f"published (the paper's best over {', '.join(_axis_label(f) + 's' for f in over)})"
        if over
        else PUBLISHED_LABEL
    )


SEED_STYLE = {"s": 6, "alpha": 0.55, "linewidths": 0, "zorder": 2}
DENSE_POINTS = 5000  # past this many markers in one panel, PDF and SVG draw the markers as an embedded image


def _rasterize_dense(ax, points: int) -> None:
    """Past DENSE_POINTS markers, draw everything below zorder 3.5 (seeds, trial means and their intervals)
    as an image inside the PDF/SVG, keeping axes, text and the highlighted best trial vector: 100,000 vector
    dots make a 50 MB file that viewers and LaTeX choke on, and look the same at print resolution."""
    if points > DENSE_POINTS:
        ax.set_rasterization_zorder(3.5)


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
# The ids matplotlib's SVG writer makes from hashes: clip paths (p), markers (m), hatches (h), then 10 hex digits.
_SVG_HASH_ID = re.compile(r"\b([pmh])([0-9a-f]{10})\b")


def stable_svg_ids(text: str) -> str:
    """The SVG with its hash-derived ids renumbered in order of first appearance (p0000000001, ...).

    matplotlib names clip paths and markers by a hash of their float coordinates, so a last-bit difference
    that the printed coordinates do not show still changes the file. Renumbering keeps every reference
    consistent (ids and their '#id' uses are the same tokens) and depends only on the drawing order."""
    names: dict[str, str] = {}

    def rename(match: re.Match) -> str:
        token = match.group(0)
        if token not in names:
            names[token] = f"{match.group(1)}{len([n for n in names if n[0] == token[0]]) + 1:010d}"
        return names[token]

    ids = set(re.findall(r'id="([pmh][0-9a-f]{10})"', text))
    return _SVG_HASH_ID.sub(lambda m: rename(m) if m.group(0) in ids else m.group(0), text)


def save(fig: Figure, directory: Path, stem: str) -> None:
    """Write stem.png, stem.pdf and stem.svg without dates or versions in their metadata.

    The constrained layout is solved once, while the PNG is drawn; the other formats reuse it (the
    layout works in points, so it is the same at every resolution) instead of solving it again.
    """
    import io

    for i, ext in enumerate(("png", "pdf", "svg")):
        if ext == "svg":
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata=METADATA["svg"])
            (directory / f"{stem}.svg").write_text(stable_svg_ids(buf.getvalue()), encoding="utf-8", newline="\n")
        else:
            fig.savefig(directory / f"{stem}.{ext}", format=ext, metadata=METADATA[ext])
        if i == 0:
            fig.set_layout_engine("none")
    fig.clear()


def _mean(cell: Cell) -> float:
    return cell.summary.mean if cell.summary is not None else math.nan


def _yerr(metric: Metric, cells: Sequence[Cell | None]) -> np.ndarray:
    """2 x n asymmetric error bars (display units) from each cell's bounded CI; 0 where there is none."""
    out = np.zeros((2, len(cells)))
    for i, c in enumerate(cells):
        if c is not None and c.has_interval:
            m = metric.scale(c.summary.mean)
            out[0, i] = max(m - metric.scale(c.summary.ci_low), 0.0)
            out[1, i] = max(metric.scale(c.summary.ci_high) - m, 0.0)
    return out


def _numeric(values: Sequence) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_axis(factor: str, levels: Sequence) -> bool:
    return _numeric(levels) and min(levels) > 0 and (factor == "learning_rate" or max(levels) / min(levels) >= 100)


def _log_ticks(ax, values: Sequence[float]) -> None:
    """Ticks of an axis drawn at math.log10 positions: one per decade, labelled 0.001, 0.01, ..."""
    lo, hi = math.floor(math.log10(min(values)) + 1e-9), math.ceil(math.log10(max(values)) - 1e-9)
    ticks = list(range(lo, hi + 1))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([f"{10.0**t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


class Axis:
    """x positions of a numeric factor's levels: linear, log (math.log10), or split at 1: log below it, linear
    from it (one learning-rate unit as wide as one decade), so that learning rates 1-5 are as readable as
    0.001-0.1. The split axis is continuous at 1 (log10(1) = 0), where a dashed line marks the change."""

    def __init__(self, factor: str, levels: Sequence[float]):
        self.levels = sorted(float(v) for v in levels)
        low = [v for v in self.levels if v < 1.0]
        high = [v for v in self.levels if v >= 1.0]
        self.kind = "linear"
        if _log_axis(factor, self.levels):
            self.kind = "split" if len(low) >= 2 and len(high) >= 3 else "log"

    def __call__(self, x: float) -> float:
        x = float(x)
        if self.kind == "log" or (self.kind == "split" and x < 1.0):
            return math.log10(x)
        if self.kind == "split":
            return x - 1.0
        return x

    def apply(self, ax) -> None:
        """Ticks at the levels (split, log) and a dashed line where the split axis changes scale."""
        if self.kind == "linear":
            return
        if self.kind == "log":
            _log_ticks(ax, self.levels)
            return
        ax.xaxis.set_major_locator(FixedLocator([self(v) for v in self.levels]))
        ax.set_xticklabels([f"{v:g}" for v in self.levels])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvline(self(1.0), color="0.55", linewidth=0.7, linestyle=(0, (2, 2)), zorder=1)

    def note(self) -> str:
        if self.kind == "split":
            return "x axis: log scale below 1, linear from 1 (dashed line), one unit as wide as one decade"
        return "log x axis" if self.kind == "log" else ""


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
    return FACTOR_LABELS.get(factor, factor)


def _short(factor: str) -> str:
    return {"learning_rate": "lr", "batch_size": "batch"}.get(factor, factor)


def _value_metrics(a: Analysis, wanted: Sequence[str]) -> list[Metric]:
    present = {m.column for m in a.metrics}
    return [METRIC[c] for c in wanted if c in present]


def _legend_below(fig: Figure, handles: list, labels: list, ncols: int | None = None) -> None:
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols or min(len(labels), 5))


def _seed_values(metric: Metric, cell: Cell) -> list[float]:
    """A cell's seeds in display units, in seed order."""
    return [metric.scale(cell.values[s]) for s in sorted(cell.values)]


# ----------------------------------------------------------------------------------------------
# Per configuration: forest plot (grid designs) and seed strip plot (any design)
# ----------------------------------------------------------------------------------------------


def _forest_metrics(a: Analysis) -> list[Metric]:
    return _value_metrics(a, ("final_val_accuracy", "final_val_loss")) or _value_metrics(
        a, ("test_accuracy", "test_loss")
    )


def _has_published(a: Analysis, metrics: Sequence[Metric]) -> bool:
    return any(m.column in r.published for r in a.rows for m in metrics)


def _dot_rows(ax, a: Analysis, rows: Sequence[Row], m: Metric, y: np.ndarray) -> tuple:
    """Seeds as points, mean and CI as a dot with bars, along y (one row per configuration)."""
    sx, sy = [], []  # every seed of every row, drawn as one collection
    for r, yy in zip(rows, y):
        vals = _seed_values(m, r.cells[m.column])
        if vals:
            offs = np.linspace(-0.18, 0.18, len(vals)) if len(vals) > 1 else np.zeros(1)
            sx += vals
            sy += list(yy + offs)
    if sx:
        ax.scatter(sx, sy, color="0.2", **SEED_STYLE)
    means = np.array([m.scale(_mean(r.cells[m.column])) for r in rows])
    errs = _yerr(m, [r.cells[m.column] for r in rows])
    eb = ax.errorbar(
        means, y, xerr=errs, fmt="o", color=OKABE_ITO[0], ecolor=OKABE_ITO[0], elinewidth=1.1, markersize=3.5, zorder=3
    )
    seeds = ax.scatter([], [], color="0.2", **{**SEED_STYLE, "s": 10})
    return eb, seeds


def fig_configurations(a: Analysis) -> Figure | None:
    metrics = _forest_metrics(a)
    if not metrics:
        return None
    rows = list(a.rows)
    n = len(rows)
    y = np.arange(n)[::-1].astype(float)
    fig = Figure(figsize=(WIDTH, max(2.4, 0.3 * n + 1.3)), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    eb = seeds = pub_handle = None
    for ax, m in zip(axes, metrics):
        eb, seeds = _dot_rows(ax, a, rows, m, y)
        pub = [(m.scale(r.published[m.column]), yy) for r, yy in zip(rows, y) if m.column in r.published]
        if pub:
            pub_handle = ax.scatter(
                [p[0] for p in pub],
                [p[1] for p in pub],
                marker="D",
                s=22,
                facecolors="white",
                edgecolors=OKABE_ITO[1],
                linewidths=1.1,
                zorder=4,
            )
        ax.set_xlabel(m.label)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_locator(MaxNLocator(5))
    axes[0].set_yticks(y, [trial_label(r.trial, a.factors) for r in rows])
    axes[0].set_ylim(-0.6, n - 0.4)
    handles, labels = [eb, seeds], ["mean and 95% CI over seeds", "one seed"]
    if pub_handle is not None:
        handles.append(pub_handle)
        labels.append(_published_label(a.rows))
    _legend_below(fig, handles, labels)
    return fig


MAX_STRIP_ROWS = 80  # a row per configuration is 0.16 inch: 80 rows fill a page; beyond it, the best 80


def strip_rows(a: Analysis) -> list[Row]:
    """The configurations the seeds figure shows: every one with runs, or, past MAX_STRIP_ROWS, the
    MAX_STRIP_ROWS best by mean primary metric, best first (the table lists every configuration)."""
    m = a.primary
    rows = [r for r in a.rows if r.cells[m.column].n > 0]
    if len(rows) <= MAX_STRIP_ROWS:
        return rows
    ranked = sorted(rows, key=lambda r: -m.better * _mean(r.cells[m.column]))  # stable: ties keep table order
    return ranked[:MAX_STRIP_ROWS]


def fig_seeds(a: Analysis) -> Figure | None:
    """Every seed of each configuration (the best MAX_STRIP_ROWS) on the primary metric, mean and CI over them."""
    m = a.primary
    rows = strip_rows(a)
    if not rows:
        return None
    n = len(rows)
    y = np.arange(n)[::-1].astype(float)
    fig = Figure(figsize=(WIDTH * 0.75, max(2.4, 0.16 * n + 1.2)), layout="constrained")
    ax = fig.subplots()
    eb, seeds = _dot_rows(ax, a, rows, m, y)
    handles, labels = [eb, seeds], ["mean and 95% CI over seeds", "one seed"]
    pub = [(m.scale(r.published[m.column]), yy) for r, yy in zip(rows, y) if m.column in r.published]
    if pub:
        handles.append(
            ax.scatter(
                [p[0] for p in pub],
                [p[1] for p in pub],
                marker="D",
                s=18,
                facecolors="white",
                edgecolors=OKABE_ITO[1],
                linewidths=1.0,
                zorder=4,
            )
        )
        labels.append(_published_label(a.rows))
    labels_y = [
        f"{r.trial.trial_id} ({trial_label(r.trial)})"
        if a.study.design_kind == "random"
        else trial_label(r.trial, a.factors)
        for r in rows
    ]
    ax.set_yticks(y, labels_y, fontsize=6 if n > 30 else 7)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(m.label)
    ax.grid(axis="y", visible=False)
    _legend_below(fig, handles, labels, ncols=3)
    return fig


# ----------------------------------------------------------------------------------------------
# Grid: a factor of a few levels, dot plots (not bars: the accuracy axis does not start at 0)
# ----------------------------------------------------------------------------------------------


def _bar_factor(a: Analysis) -> str | None:
    if a.study.design_kind != "grid" or len(a.factors) < 1:
        return None
    candidates = [f for f in a.factors if 2 <= len(factor_levels(a.study, f)) <= 4]
    if not candidates:
        return None
    return "learning_rate" if "learning_rate" in candidates else candidates[0]


def fig_by_factor(a: Analysis, factor: str) -> Figure | None:
    metrics = _value_metrics(a, ("test_accuracy", "test_loss"))
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
        si = next(
            i
            for i, s in enumerate(series)
            if all(_same(x, y) for x, y in zip(s, (r.trial.values.get(f) for f in others)))
        )
        if li is not None:
            cell_of[(li, si)] = r
    k = len(series)
    width = 0.8 / k
    fig = Figure(figsize=(WIDTH, 2.9), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    handles, labels = [], []
    pub_handle = None
    x = np.arange(len(levels), dtype=float)
    for ax, m in zip(axes, metrics):
        for si, s in enumerate(series):
            offs = x - 0.4 + width * (si + 0.5)
            rows = [cell_of.get((li, si)) for li in range(len(levels))]
            color = OKABE_ITO[si % len(OKABE_ITO)]
            sx, sy = [], []
            for o, r in zip(offs, rows):
                if r is not None:
                    vals = _seed_values(m, r.cells[m.column])
                    sx += [float(o)] * len(vals)
                    sy += vals
            if sx:
                ax.scatter(sx, sy, color=color, **{**SEED_STYLE, "alpha": 0.4})
            means = np.array([m.scale(_mean(r.cells[m.column])) if r else math.nan for r in rows])
            errs = _yerr(m, [r.cells[m.column] if r else None for r in rows])
            eb = ax.errorbar(
                offs,
                means,
                yerr=errs,
                fmt=MARKERS[si % len(MARKERS)],
                color=color,
                markersize=4,
                elinewidth=1.0,
                capsize=2,
                zorder=3,
            )
            pubs = [(o, m.scale(r.published[m.column])) for o, r in zip(offs, rows) if r and m.column in r.published]
            if pubs:
                pub_handle = ax.scatter(
                    [p[0] for p in pubs],
                    [p[1] for p in pubs],
                    marker="D",
                    s=16,
                    facecolors="white",
                    edgecolors="black",
                    linewidths=0.9,
                    zorder=4,
                )
            if ax is axes[0]:
                handles.append(eb)
                labels.append(", ".join(f"{_short(f)} {format_value(f, v)}" for f, v in zip(others, s)) or m.label)
        ax.set_xticks(x, [format_value(factor, v) for v in levels])
        ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_xlabel(_axis_label(factor))
        ax.set_ylabel(m.label)
        ax.grid(axis="x", visible=False)
    if pub_handle is not None:
        handles.append(pub_handle)
        labels.append(_published_label(a.rows))
    handles.append(axes[0].scatter([], [], color="0.4", **{**SEED_STYLE, "s": 10}))
    labels.append("one seed")
    _legend_below(fig, handles, labels, ncols=min(len(labels), 3))
    return fig


# ----------------------------------------------------------------------------------------------
# Sweeps: metric against a numeric factor, panels by activation, lines by implementation
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
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    axis = Axis(x_factor, factor_levels(a.study, x_factor))
    handles: dict[str, object] = {}
    has_published = False
    shown: list[float] = []
    failed_by_panel: dict[int, list[tuple[str, float]]] = {}
    nl = max(len(lines), 1)
    for pi_, (ax, pv) in enumerate(zip(axes, panels)):
        failed: list[tuple[str, float]] = []
        for li, key in enumerate(lines):
            members = [
                r
                for r in rows
                if (panel is None or r.trial.values.get(panel) == pv)
                and all(_same(r.trial.values.get(f), v) for f, v in zip(line_factors, key))
            ]
            members.sort(key=lambda r: r.trial.values[x_factor])
            if not members:
                continue
            xs = np.array([axis(r.trial.values[x_factor]) for r in members])
            cells = [r.cells[metric.column] for r in members]
            ys = np.array([metric.scale(_mean(c)) for c in cells])
            lo = np.array([metric.scale(c.summary.ci_low) if c.has_interval else math.nan for c in cells])
            hi = np.array([metric.scale(c.summary.ci_high) if c.has_interval else math.nan for c in cells])
            color = OKABE_ITO[li % len(OKABE_ITO)]
            label = ", ".join(format_value(f, v) for f, v in zip(line_factors, key)) or metric.label
            (ln,) = ax.plot(
                xs,
                ys,
                color=color,
                marker=MARKERS[li % len(MARKERS)],
                linestyle=LINESTYLES[li % len(LINESTYLES)],
                markersize=3.5,
                zorder=3,
            )
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0, zorder=2)
            dodge = (li - (nl - 1) / 2.0) * 0.08  # seeds of different lines side by side, not on top of each other
            sx, sy = [], []
            for xx, c in zip(xs, cells):
                vals = _seed_values(metric, c)
                # spread a configuration's seeds a little, so that seeds with equal values do not hide each other
                spread = np.linspace(-0.025, 0.025, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
                sx += [float(xx + dodge + o) for o in spread]
                sy += vals
            if sx:
                ax.scatter(sx, sy, color=color, **{**SEED_STYLE, "s": 5, "alpha": 0.5})
            handles.setdefault(label, ln)
            pubs = [
                (axis(r.trial.values[x_factor]), metric.scale(r.published[metric.column]))
                for r in members
                if metric.column in r.published
            ]
            if pubs:
                ax.scatter([p[0] for p in pubs], [p[1] for p in pubs], color=color, **PUBLISHED_STYLE)
                has_published = True
            finite = ys[np.isfinite(ys)]
            if metric.kind == "acc" and finite.size and finite.max() <= CHANCE:
                failed.append((label, float(finite.mean())))
            else:
                seeds = [v for c in cells for v in _seed_values(metric, c)]
                shown += [*finite, *lo[np.isfinite(lo)], *hi[np.isfinite(hi)], *(p[1] for p in pubs), *seeds]
        failed_by_panel[pi_] = failed
        axis.apply(ax)
        if panel:
            ax.set_title(f"{_axis_label(panel)}: {format_value(panel, pv)}")
        ax.set_xlabel(_axis_label(x_factor))
    for i in range(nrows):
        axes[i * ncols].set_ylabel(metric.label)
    if any(failed_by_panel.values()) and shown:  # runs at chance level would squash every other line
        _fit_ylim(axes[0], np.array(shown))  # shared: every panel gets the same range
        for pi_, failed in failed_by_panel.items():
            if failed:
                axes[pi_].text(
                    0.02,
                    0.02,
                    "\n".join(f"{name}: {value:.1f}% (chance level), off scale" for name, value in failed),
                    transform=axes[pi_].transAxes,
                    fontsize=6.5,
                    va="bottom",
                    ha="left",
                    color="0.25",
                )
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    # the seeds are drawn in their line's colour: the legend says so, or shows that colour when there is one line
    seed_label = "one seed" if len(lines) == 1 else "one seed (in its line's colour)"
    handles[seed_label] = axes[0].scatter(
        [], [], color=OKABE_ITO[0] if len(lines) == 1 else "0.4", **{**SEED_STYLE, "s": 10}
    )
    if has_published:  # one neutral legend entry for the stars, whatever their colour, after the lines
        over = sorted({f for r in rows for f in r.published_best_over.get(metric.column, ())})
        label = (
            f"published (the paper's best over {', '.join(_axis_label(f) + 's' for f in over)})"
            if over
            else PUBLISHED_LABEL
        )
        handles[label] = axes[0].scatter([], [], color="white", **PUBLISHED_STYLE)
    _legend_below(fig, list(handles.values()), list(handles), ncols=min(len(handles), 6))
    return fig


# ----------------------------------------------------------------------------------------------
# Learning curves (every study)
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


def _carry_forward(matrix: np.ndarray) -> np.ndarray:
    """Each row's NaN tail (a run that stopped early) filled with its last finite value (analysis.carried_forward)."""
    out = matrix.copy()
    for row in out:
        finite = np.flatnonzero(np.isfinite(row))
        if finite.size:
            row[finite[-1] + 1 :] = row[finite[-1]]
    return out


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


MAX_CURVES = 9


def curve_rows(a: Analysis) -> list[Row]:
    """The configurations whose learning curves are drawn: all of a small study; else the best of each
    combination of categorical factors (each implementation and activation), or the best few overall."""
    m = a.primary
    ranked = [r for r in a.rows if r.cells[m.column].n > 0]
    if len(ranked) <= MAX_CURVES:
        return ranked
    cats = [f for f in a.factors if all(isinstance(r.trial.values.get(f, ""), str) for r in a.rows)]
    if cats:
        groups: dict[tuple, list[Row]] = {}
        for r in ranked:
            groups.setdefault(tuple(str(r.trial.values.get(c)) for c in cats), []).append(r)
        if len(groups) <= MAX_CURVES:
            return [max(g, key=lambda r: m.better * r.cells[m.column].summary.mean) for g in groups.values()]
    return sorted(ranked, key=lambda r: -m.better * r.cells[m.column].summary.mean)[:MAX_CURVES]


def fig_learning_curves(a: Analysis) -> Figure | None:
    """Validation (or training) accuracy per epoch: each seed's curve, mean and 95% band, per configuration."""
    rows = curve_rows(a)
    column = "val_accuracy" if str(a.study.validation) != "none" else "train_accuracy"
    if not rows:
        return None
    ncols = min(len(rows), 3)
    nrows = math.ceil(len(rows) / ncols)
    fig = Figure(figsize=(WIDTH, 1.9 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    handles: dict[str, object] = {}
    shown: list[float] = []
    for ax, r in zip(axes, rows):
        runs = a.runs[a.runs["trial_id"] == r.trial.trial_id]
        mat = _history(runs, column) * 100.0
        if mat.size == 0 or not np.isfinite(mat).any():
            ax.set_visible(False)
            continue
        ep = np.arange(1, mat.shape[1] + 1)
        for row in mat:
            ok = np.isfinite(row)
            sl = ax.plot(
                ep[ok], row[ok], color=OKABE_ITO[4], linewidth=0.6, marker="o", markersize=1.6, alpha=0.6, zorder=2
            )[0]
            handles.setdefault("one seed", sl)
        mean, lo, hi = _t_band(_carry_forward(mat))
        (ln,) = ax.plot(ep, mean, color=OKABE_ITO[0], linewidth=1.4, zorder=3)
        ax.fill_between(ep, lo, hi, color=OKABE_ITO[0], alpha=0.2, linewidth=0, zorder=1)
        handles.setdefault("mean and 95% CI over seeds", ln)
        pub = [
            v
            for v in a.verdicts
            if r.trial.trial_id in v.trials
            and v.placement is not None
            and v.metric
            in (
                ("final_val_accuracy", "best_val_accuracy", "test_accuracy")
                if str(a.study.validation) == "test"
                else ("final_val_accuracy", "best_val_accuracy")
            )
        ]
        if pub:
            handles.setdefault(
                "published",
                ax.axhline(pub[0].published * 100.0, color=OKABE_ITO[1], linewidth=0.9, linestyle="--", zorder=2),
            )
            shown.append(pub[0].published * 100.0)
        finite = mat[np.isfinite(mat)]
        if finite.size and finite.max() > CHANCE:
            shown += list(finite[finite > CHANCE])
        label = (
            trial_label(r.trial) if a.study.design_kind != "random" else f"{r.trial.trial_id} ({trial_label(r.trial)})"
        )
        ax.set_title(label, fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
    for i in range(nrows):
        axes[i * ncols].set_ylabel(("validation" if column.startswith("val") else "training") + " accuracy (%)")
    if shown:
        _fit_ylim(axes[0], np.array(shown))
    for ax in axes[len(rows) :]:
        ax.set_visible(False)
    _legend_below(fig, list(handles.values()), list(handles), ncols=3)
    return fig


def _best_so_far(a: Analysis, rows: Sequence[Row]) -> list[Row | None]:
    """After each trial, the trial the search would select so far: the best mean objective over seeds (how
    the study file scores trials, and the trial the published result is placed against)."""
    m = a.primary
    out, best = [], None
    for r in rows:
        c = r.cells[m.column]
        if c.summary is not None and (
            best is None or m.better * c.summary.mean > m.better * best.cells[m.column].summary.mean
        ):
            best = r
        out.append(best)
    return out


def fig_best_so_far(a: Analysis) -> Figure | None:
    rows = list(a.rows)
    m = a.primary
    chosen = _best_so_far(a, rows)
    if not rows or chosen[-1] is None:
        return None
    mean = np.array([m.scale(_mean(r.cells[m.column])) if r else math.nan for r in chosen])
    lo = np.array(
        [
            m.scale(r.cells[m.column].summary.ci_low) if r and r.cells[m.column].has_interval else math.nan
            for r in chosen
        ]
    )
    hi = np.array(
        [
            m.scale(r.cells[m.column].summary.ci_high) if r and r.cells[m.column].has_interval else math.nan
            for r in chosen
        ]
    )
    x = np.arange(len(rows))  # trial-000 at 0: the axis counts as the trial ids do
    fig = Figure(figsize=(WIDTH / 2 + 0.6, 2.9), layout="constrained")
    ax = fig.subplots()
    trial_means = np.array([m.scale(_mean(r.cells[m.column])) for r in rows])
    sx = [float(xx) for xx, r in zip(x, rows) for _ in r.cells[m.column].values]
    sy = [v for r in rows for v in _seed_values(m, r.cells[m.column])]
    if sx:
        ax.scatter(sx, sy, color="0.3", **{**SEED_STYLE, "s": 5})
    _rasterize_dense(ax, len(sx) + len(rows))
    dots = ax.scatter(x, trial_means, s=12, color=OKABE_ITO[4], zorder=3)
    xs = np.append(x, len(rows) - 0.5)  # the last trial's step gets a width too
    (ln,) = ax.plot(xs, np.append(mean, mean[-1]), color=OKABE_ITO[0], drawstyle="steps-post", zorder=4)
    ax.fill_between(
        xs,
        np.append(lo, lo[-1]),
        np.append(hi, hi[-1]),
        color=OKABE_ITO[0],
        alpha=0.2,
        linewidth=0,
        step="post",
        zorder=1,
    )
    ax.set_xlim(-0.5, len(rows) - 0.3)
    handles = {
        "best trial so far by mean over seeds (its mean and 95% CI)": ln,
        "each trial's mean": dots,
        "one seed": ax.scatter([], [], color="0.3", **{**SEED_STYLE, "s": 10}),
    }
    pubs = [v for v in a.verdicts if v.metric == m.column and v.placement is not None and "search" in v.against]
    if pubs:
        sc = ax.scatter(
            [len(rows) - 1] * len(pubs), [m.scale(v.published) for v in pubs], color="white", **PUBLISHED_STYLE
        )
        handles[PUBLISHED_LABEL.replace("one run", "best of its search")] = sc
    failed = _at_chance(m, trial_means)
    if failed.any():  # trials at chance level would flatten the curve: leave them off the scale, say so
        shown = np.concatenate([trial_means[~failed], mean, [m.scale(v.published) for v in pubs]])
        _fit_ylim(ax, shown[np.isfinite(shown)])
        ax.text(
            0.98,
            0.02,
            f"{int(failed.sum())} trial(s) at chance level, off scale",
            transform=ax.transAxes,
            fontsize=6.5,
            ha="right",
            va="bottom",
            color="0.25",
        )
    ax.set_xlabel("trial (the number in its id)")
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
    errs = _yerr(m, [r.cells[m.column] for r in rows])
    pub_points = []
    for p in a.study.published:
        if m.column in p and p.get("where"):
            pub_points.append((p["where"], m.scale(_published_value(m, p[m.column])[0])))
    handles: dict[str, object] = {}
    for ax, (name, label, get) in zip(axes, axes_spec):
        xs = [get(r.trial) for r in rows]
        discrete = not _numeric(xs) or len(set(xs)) <= 6
        cats = (
            sorted(
                set(xs), key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v))
            )
            if discrete
            else []
        )
        log = not discrete and _log_axis(name, xs)
        xv = (
            np.array([cats.index(v) for v in xs], dtype=float)
            if discrete
            else np.array([math.log10(v) for v in xs] if log else xs, dtype=float)
        )
        if discrete:  # spread the trials sharing a level so that their intervals do not overlap
            for level in range(len(cats)):
                idx = np.flatnonzero(xv == level)
                if idx.size > 1:
                    xv[idx] += np.linspace(-0.3, 0.3, idx.size)
        categorical = discrete
        sx = [float(x0) for x0, r in zip(xv, rows) for _ in r.cells[m.column].values]  # every seed behind its trial
        sy = [v for r in rows for v in _seed_values(m, r.cells[m.column])]
        if sx:
            ax.scatter(sx, sy, color="0.3", **{**SEED_STYLE, "s": 4})
        _rasterize_dense(ax, len(sx) + len(rows))
        is_best = np.array([r is best for r in rows])
        eb = ax.errorbar(
            xv[~is_best],
            ys[~is_best],
            yerr=errs[:, ~is_best],
            fmt="o",
            color=OKABE_ITO[0],
            markersize=3,
            elinewidth=0.8,
            alpha=0.85,
            zorder=3,
        )
        handles.setdefault("trial: mean and 95% CI", eb)
        if is_best.any():
            bb = ax.errorbar(
                xv[is_best],
                ys[is_best],
                yerr=errs[:, is_best],
                fmt="s",
                color=OKABE_ITO[1],
                markersize=4.5,
                elinewidth=1.1,
                zorder=4,
            )
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
                elif log:
                    px = math.log10(px)
                handles.setdefault(
                    "published best configuration (one search)",
                    ax.scatter([px], [value], color="white", **PUBLISHED_STYLE),
                )
        if categorical:
            ax.set_xticks(range(len(cats)), [format_value(base, c) for c in cats])
            ax.grid(axis="x", visible=False)
        elif log:
            _log_ticks(ax, [float(v) for v in xs])
        ax.set_xlabel(label)
    for ax in axes[len(axes_spec) :]:
        ax.set_visible(False)
    for i in range(nrows):
        axes[i * ncols].set_ylabel(m.label)
    failed = _at_chance(m, ys)
    if failed.any():
        shown = np.concatenate([ys[~failed], [v for _, v in pub_points]])
        _fit_ylim(axes[0], shown[np.isfinite(shown)])
        axes[0].text(
            0.02,
            0.02,
            f"{int(failed.sum())} trial(s) at chance level, off scale",
            transform=axes[0].transAxes,
            fontsize=6.5,
            ha="left",
            va="bottom",
            color="0.25",
        )
    _legend_below(fig, list(handles.values()), list(handles), ncols=min(len(handles), 3))
    return fig


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def plan(a: Analysis) -> list[tuple[str, str, callable]]:
    """(file stem, caption, builder) of every figure the study's design calls for, in report order."""
    out: list[tuple[str, str, callable]] = []
    n_seeds = sorted({len(r.seeds) for r in a.rows})
    seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}-{n_seeds[-1]}"
    ci = f"mean and 95% CI over {seeds} seeds, small dots the individual seeds"
    bounded = (
        " Intervals are computed on the logit scale for accuracies and the log scale for losses, so none "
        "leaves the possible range."
    )
    forest = a.study.design_kind == "grid" and len(a.rows) <= 40
    if forest:
        metrics = _forest_metrics(a)
        what = " and ".join(m.label.replace(" (%)", "") for m in metrics)
        pub = "; open diamonds: the paper's single runs" if _has_published(a, metrics) else ""
        out.append(
            (
                "configurations",
                f"{what[0].upper()}{what[1:]} per configuration: {ci}{pub}.{bounded}",
                fig_configurations,
            )
        )
    else:
        pub = "; open diamonds: the paper's values" if _has_published(a, [a.primary]) else ""
        shown, total = len(strip_rows(a)), sum(r.cells[a.primary.column].n > 0 for r in a.rows)
        which = (
            "every configuration"
            if shown == total
            else f"the {shown} best of the {total} configurations by mean {a.primary.label}, best first (table.csv lists every one)"
        )
        out.append(("seeds", f"{a.primary.label} of every seed of {which}: {ci}{pub}.{bounded}", fig_seeds))
    bar = _bar_factor(a)
    if bar:
        metrics = _value_metrics(a, ("test_accuracy", "test_loss"))
        pub = "; open diamonds: the paper's single runs" if _has_published(a, metrics) else ""
        out.append(
            (
                f"by_{bar}",
                f"Test accuracy and test loss by {_axis_label(bar)}, one marker per combination of "
                f"the other factors: {ci}{pub}. A dot plot: the accuracy axis does not start at 0.{bounded}",
                lambda a, f=bar: fig_by_factor(a, f),
            )
        )
    for f in _sweep_factors(a):
        note = Axis(f, factor_levels(a.study, f)).note()
        pub = "; stars: the paper's values" if _has_published(a, [a.primary]) else ""
        out.append(
            (
                f"{a.primary.column}_vs_{f}",
                f"{a.primary.label} against {_axis_label(f)}, one line per "
                f"{'implementation' if 'flavour' in a.factors else 'combination of the other factors'}: {ci}, the band "
                f"the CI{pub}. Every panel has the same y range" + (f"; {note}" if note else "") + f".{bounded}",
                lambda a, f=f: fig_sweep(a, f, a.primary),
            )
        )
    if a.study.design_kind == "random":
        out.append(
            (
                "best_so_far",
                f"The search's best trial so far, after each trial: the trial with the highest mean "
                f"{a.primary.label} over its {seeds} seeds, as the study file scores trials (line: its mean, band: its "
                "95% CI); dots: each trial's mean; small dots: the individual seeds; star: the paper's search result.",
                fig_best_so_far,
            )
        )
        out.append(
            (
                "score_vs_hyperparameters",
                f"{a.primary.label} of each trial (mean and 95% CI over {seeds} seeds, "
                "small dots the individual seeds) "
                "against each sampled hyperparameter; square: the best trial; star: the paper's best configuration.",
                fig_score_vs_hyper,
            )
        )
    rows = curve_rows(a)
    if rows:
        which = (
            "every configuration"
            if len(rows) == len(a.rows)
            else f"the best configuration by {a.primary.label} of each group"
            if len(rows) < len(a.rows)
            else ""
        )
        split = "validation" if str(a.study.validation) != "none" else "training"
        out.append(
            (
                "learning_curves",
                f"{split.capitalize()} accuracy per epoch, {which}: thin lines with dots are the "
                "individual seeds, the thick line and band their mean and 95% t CI (a run that stopped early is carried forward "
                "at its last value); dashed: the paper's value where one is published for that configuration.",
                fig_learning_curves,
            )
        )
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
