"""The report's tables: one row per configuration, as CSV (every number), Markdown and LaTeX (booktabs).

Markdown shows each metric's mean over seeds with its 95% confidence interval of the mean, computed where
the metric cannot leave its range (accuracies on the logit scale, losses on the log scale: see
stats.summarize), and the paper's published value beside each metric it reports. Bold marks the best
configuration of a family only where it beats every other of that family significantly after Holm's
correction (analysis.Analysis.significant_best). One seed: "n/a" for the interval. Runs with a non-finite
value (a diverged loss) are left out of that metric, and marked.

LaTeX is a float a paper can \\input: \\caption, \\label, booktabs, the columns a paper prints (the
primary metric with its interval and the published value; the CSV keeps everything), one number format
per metric. Studies with many configurations and a numeric factor of a few levels are pivoted on it.
"""

from __future__ import annotations

import io
import math

import pandas as pd

from hpstudy.reporting.analysis import (
    FACTOR_LABELS,
    Analysis,
    Cell,
    Metric,
    describe_seeds,
    factor_levels,
    format_value,
    is_pairs,
)

DECIMALS = {"acc": 2, "loss": 3, "time": 2, "count": 1}
DAGGER_NOTE = "some runs gave a non-finite value (diverged) and are left out of that mean"
PIVOT_ROWS = 24  # more configurations than this, and a numeric factor of 3-8 levels: LaTeX pivots on it


def _show_trial_id(a: Analysis) -> bool:
    return a.study.design_kind == "random" or not a.factors


def _published_metrics(a: Analysis) -> set[str]:
    return {k for r in a.rows for k in r.published}


def _num(metric: Metric, value: float) -> str:
    return f"{metric.scale(value):.{DECIMALS[metric.kind]}f}"


def _interval_text(metric: Metric, cell: Cell) -> str:
    """'[lo, hi]' of a cell's CI in display units, or 'n/a' with fewer than 2 seeds."""
    if not cell.has_interval:
        return "n/a"
    if cell.summary.std == 0:
        return f"(all {cell.n} seeds equal)"  # a zero-width interval would claim a certainty no test gives
    return f"[{_num(metric, cell.summary.ci_low)}, {_num(metric, cell.summary.ci_high)}]"


def _best_over_text(a: Analysis) -> str:
    """The factors the paper's published values were maximised over, for the table's note."""
    over = sorted({f for r in a.rows for fs in r.published_best_over.values() for f in fs})
    return ", ".join(FACTOR_LABELS.get(f, f) + "s" for f in over)


def _published_text(a: Analysis, r, metric: Metric, style: str) -> str:
    value = r.published.get(metric.column)
    if value is None:
        return ""
    mark = ""
    if metric.column in r.published_best_over:
        mark = "‡" if style == "md" else r"$^\ddagger$"
    return _num(metric, value) + mark


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------


def table_frame(a: Analysis) -> pd.DataFrame:
    """Every number of the table, one row per configuration, raw units (accuracies as fractions)."""
    records = []
    nan = math.nan
    timing = {t.trial_id: t for t in a.timing}
    for r in a.rows:
        rec: dict = {"trial_id": r.trial.trial_id}
        for f in a.factors:
            v = r.trial.values.get(f)
            rec[f] = format_value(f, v) if isinstance(v, (list, tuple)) else v
        rec["n"] = len(r.seeds)
        rec["seeds"] = describe_seeds(r.seeds)
        for m in a.metrics:
            c = r.cells[m.column]
            s = c.summary
            two = c.has_interval
            rec[f"{m.column}_n"] = c.n
            rec[f"{m.column}_mean"] = s.mean if s is not None else nan
            rec[f"{m.column}_std"] = s.std if two else nan
            rec[f"{m.column}_ci_low"] = s.ci_low if two else nan
            rec[f"{m.column}_ci_high"] = s.ci_high if two else nan
            rec[f"{m.column}_pi_low"] = s.pi_low if two else nan
            rec[f"{m.column}_pi_high"] = s.pi_high if two else nan
            if m.column == a.primary.column:
                rec[f"{m.column}_bootstrap_low"], rec[f"{m.column}_bootstrap_high"] = r.boot
            rec[f"published_{m.column}"] = r.published.get(m.column, nan)
            if m.column in r.published_best_over:
                rec[f"published_{m.column}_best_over"] = " ".join(r.published_best_over[m.column])
        t = timing.get(r.trial.trial_id)
        rec["seconds_per_run_median"] = t.seconds_per_run if t else nan
        rec["chunk_width"] = t.chunk_width if t else nan
        rec["model_steps_per_s_median"] = t.model_steps_per_s if t else nan
        records.append(rec)
    return pd.DataFrame.from_records(records)


def to_csv(frame: pd.DataFrame) -> str:
    """CSV text: 10 significant digits, empty cells for n/a, '\\n' line ends."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _layout(a: Analysis) -> tuple[list[str], list[tuple[Metric, bool]]]:
    """Key columns (trial id and/or factors) and (metric, has a published column) pairs."""
    keys = (["trial_id"] if _show_trial_id(a) else []) + list(a.factors)
    pub = _published_metrics(a)
    return keys, [(m, m.column in pub) for m in a.metrics]


def _key_text(r, key: str) -> str:
    if key == "trial_id":
        return r.trial.trial_id
    return format_value(key, r.trial.values.get(key, "")) if key in r.trial.values else ""


def _cell_text(a: Analysis, r, m: Metric, style: str) -> str:
    c = r.cells[m.column]
    if c.summary is None:
        return "NaN" if c.n_nonfinite else ("–" if style == "md" else "--")
    text = f"{_num(m, c.summary.mean)} {_interval_text(m, c)}"
    if m.column == a.primary.column and r.trial.trial_id in a.significant_best:
        text = f"**{text}**" if style == "md" else rf"\textbf{{{text}}}"
    if c.n_nonfinite:
        text += "†" if style == "md" else r"$^\dagger$"
    return text


def to_markdown(a: Analysis) -> str:
    """The table as GitHub Markdown (plus its notes)."""
    keys, cols = _layout(a)
    header = [FACTOR_LABELS.get(k, "configuration" if k == "trial_id" else k) for k in keys] + ["n"]
    align = ["---"] * len(keys) + ["---:"]
    for m, has_pub in cols:
        header.append(f"{m.label} [95% CI]")
        align.append("---:")
        if has_pub:
            header.append("pub.")
            align.append("---:")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    dagger = False
    for r in a.rows:
        cells = [_key_text(r, k) for k in keys] + [str(len(r.seeds))]
        for m, has_pub in cols:
            cells.append(_cell_text(a, r, m, "md"))
            dagger |= r.cells[m.column].n_nonfinite > 0
            if has_pub:
                cells.append(_published_text(a, r, m, "md"))
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if any(r.published_best_over for r in a.rows):
        notes.append(
            f"‡ the paper's best over {_best_over_text(a)} (one run each), printed at the configuration "
            "where the paper found it: a maximum, beside this configuration's mean."
        )
    if dagger:
        notes.append(f"† {DAGGER_NOTE}; NaN: every run did.")
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# LaTeX
# ----------------------------------------------------------------------------------------------

_TEX_ESCAPE = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def tex_escape(text: str) -> str:
    """Text safe in LaTeX."""
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def _tex_key(r, key: str) -> str:
    v = r.trial.values.get(key)
    if isinstance(v, (list, tuple)) and not is_pairs(v):
        return "$" + r"\times".join(str(x) for x in v) + "$"
    return tex_escape(_key_text(r, key))


def _pivot_factor(a: Analysis) -> str | None:
    """The numeric factor a long table is pivoted on (3-8 levels), or None to print one row per configuration."""
    if len(a.rows) <= PIVOT_ROWS or a.study.design_kind == "random":
        return None
    for f in reversed(a.factors):
        levels = factor_levels(a.study, f)
        if 3 <= len(levels) <= 8 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
            return f
    return None


def _tex_metrics(a: Analysis) -> list[Metric]:
    """The columns a paper prints: the primary metric, and test accuracy beside it when that differs."""
    out = [a.primary]
    test = next((m for m in a.metrics if m.column == "test_accuracy"), None)
    if test is not None and test is not a.primary:
        out.append(test)
    return out


def _tex_caption(a: Analysis, pivot: str | None) -> str:
    m = a.primary
    n = sorted({len(r.seeds) for r in a.rows})
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}--{n[-1]}"
    title = a.study.meta.get("title", a.study.name)
    text = f"{tex_escape(title)}: re-run over {seeds} seeds per configuration. "
    if pivot:
        text += (
            f"Mean {tex_escape(m.label.replace(' (%)', ''))} (\\%) over seeds by {tex_escape(FACTOR_LABELS.get(pivot, pivot))}, "
            "with the standard deviation over seeds in parentheses; "
            "95\\% intervals and every other metric are in table.csv. "
        )
    else:
        text += (
            "Mean over seeds and 95\\% confidence interval of the mean (logit scale for accuracies, so that it "
            "stays within 0--100\\%). "
        )
    if _published_metrics(a):
        text += (
            "Pub. (at): the paper's value and the " + tex_escape(FACTOR_LABELS.get(pivot, pivot)) + " it was found at. "
            if pivot
            else "Pub.: the paper's single-run value. "
        )
    if any(r.published_best_over for r in a.rows):
        text += f"$^\\ddagger$The paper's best over {tex_escape(_best_over_text(a))} (one run each), a maximum. "
    if a.significant_best:
        text += "Bold: better than every other configuration of its group (Holm-corrected, $p < 0.05$). "
    return text.strip()


def _tex_float(a: Analysis, spec: str, head: list[str], body: list[str], pivot: str | None) -> str:
    """The table* float around a tabular: fits one- and two-column articles (booktabs, \\small)."""
    # A table wider than the text is scaled to its width (never an overfull box), in one- and two-column
    # articles alike: the tabular is set in box 0, measured, then placed as it is or scaled down.
    lines = [
        f"% {a.study.name}: generated by `hpstudy report` from the stored runs; needs \\usepackage{{booktabs}} and "
        "\\usepackage{graphicx}.",
        r"\begin{table*}[tbp]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",
        rf"\caption{{{_tex_caption(a, pivot)}}}",
        rf"\label{{tab:{tex_escape(a.study.name).replace(chr(92) + '_', '-')}}}",
        r"\setbox0=\hbox{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        *head,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}%",
        r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\box0}\else\box0\fi",
        r"\end{table*}",
    ]
    return "\n".join(lines) + "\n"


def to_latex(a: Analysis) -> str:
    """The table as a LaTeX float (booktabs), ready to \\input into a one- or two-column article."""
    pivot = _pivot_factor(a)
    keys = [k for k in ((["trial_id"] if _show_trial_id(a) else []) + list(a.factors)) if k != pivot]
    key_head = [tex_escape(FACTOR_LABELS.get(k, "configuration" if k == "trial_id" else k)) for k in keys]
    m = a.primary
    if pivot:
        levels = factor_levels(a.study, pivot)
        has_pub = any(m.column in r.published for r in a.rows)
        spec = "l" * len(keys) + "r" * len(levels) + ("r" if has_pub else "")
        head = [
            " & ".join(
                [""] * len(keys)
                + [rf"\multicolumn{{{len(levels)}}}{{c}}{{{tex_escape(FACTOR_LABELS.get(pivot, pivot))}}}"]
                + ([""] if has_pub else [])
            )
            + r" \\",
            rf"\cmidrule(lr){{{len(keys) + 1}-{len(keys) + len(levels)}}}",
            " & ".join(
                key_head + [tex_escape(format_value(pivot, v)) for v in levels] + (["pub. (at)"] if has_pub else [])
            )
            + r" \\",
        ]
        body, seen = [], []
        for r in a.rows:
            key = tuple(_tex_key(r, k) for k in keys)
            if key in seen:
                continue
            seen.append(key)
            cells = list(key)
            for v in levels:
                match = next(
                    (
                        x
                        for x in a.rows
                        if tuple(_tex_key(x, k) for k in keys) == key
                        and pivot in x.trial.values
                        and x.trial.values[pivot] == v
                    ),
                    None,
                )
                cell = match.cells[m.column] if match is not None else None
                text = "--" if cell is None or cell.summary is None else _num(m, cell.summary.mean)
                if cell is not None and cell.has_interval:  # the spread over seeds, so no mean stands alone
                    text += rf"\,{{\scriptsize({m.scale(cell.summary.std):.{DECIMALS[m.kind]}f})}}"
                if match is not None and match.trial.trial_id in a.significant_best:
                    text = rf"\textbf{{{text}}}"
                cells.append(text)
            if has_pub:
                found = [x for x in a.rows if tuple(_tex_key(x, k) for k in keys) == key and m.column in x.published]
                cells.append(
                    "; ".join(
                        f"{_published_text(a, x, m, 'tex')} ({tex_escape(format_value(pivot, x.trial.values.get(pivot)))})"
                        for x in found
                    )
                )
            body.append(" & ".join(cells) + r" \\")
        return _tex_float(a, spec, head, body, pivot)
    metrics = _tex_metrics(a)
    pub = _published_metrics(a)
    spec = "l" * len(keys) + "r"
    top = [""] * len(keys) + [""]
    sub = key_head + ["$n$"]
    rules = []
    col = len(keys) + 2
    for mm in metrics:
        width = 3 if mm.column in pub else 2
        spec += "r" * width
        top.append(rf"\multicolumn{{{width}}}{{c}}{{{tex_escape(mm.label)}}}")
        sub += ["mean", "95\\% CI"] + (["pub."] if mm.column in pub else [])
        rules.append(rf"\cmidrule(lr){{{col}-{col + width - 1}}}")
        col += width
    head = [" & ".join(top) + r" \\", " ".join(rules), " & ".join(sub) + r" \\"]
    body = []
    for r in a.rows:
        cells = [_tex_key(r, k) for k in keys] + [str(len(r.seeds))]
        for mm in metrics:
            c = r.cells[mm.column]
            if c.summary is None:
                cells += ["NaN" if c.n_nonfinite else "--", ""]
            else:
                mean = _num(mm, c.summary.mean)
                if mm.column == m.column and r.trial.trial_id in a.significant_best:
                    mean = rf"\textbf{{{mean}}}"
                cells += [mean + (r"$^\dagger$" if c.n_nonfinite else ""), _interval_text(mm, c)]
            if mm.column in pub:
                cells.append(_published_text(a, r, mm, "tex"))
        body.append(" & ".join(cells) + r" \\")
    return _tex_float(a, spec, head, body, None)
