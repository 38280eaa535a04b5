"""The report's tables: one row per configuration, as CSV (every number), Markdown and LaTeX (booktabs).

Markdown and LaTeX show mean ± the half-width of the 95% t confidence interval of the mean, the paper's
published single-run value beside each metric it reports, and the best mean of each column in bold
(highest accuracy, lowest loss and time; epochs have no better direction). One seed: "n/a" for the
interval. Runs with a non-finite value (a diverged loss) are left out of that metric, and marked.
"""

from __future__ import annotations

import io
import math
import pandas as pd

from hpstudy.analysis import FACTOR_LABELS, Analysis, Cell, Metric, describe_seeds, format_value

DECIMALS = {"acc": 2, "loss": 4, "time": 2, "count": 1}
DAGGER_NOTE = "some runs gave a non-finite value (diverged) and are left out of that mean"


def _show_trial_id(a: Analysis) -> bool:
    return a.study.design_kind == "random" or not a.factors


def _published_metrics(a: Analysis) -> set[str]:
    return {k for r in a.rows for k in r.published}


def _best(a: Analysis, metric: Metric) -> float | None:
    """The best mean of a column (None when the metric has no better direction or no values)."""
    means = [r.cells[metric.column].summary.mean for r in a.rows if r.cells[metric.column].n > 0]
    if metric.better == 0 or not means:
        return None
    return max(means) if metric.better > 0 else min(means)


def _ci_text(metric: Metric, cell: Cell, pm: str) -> tuple[str, str]:
    """(mean text, '± half' text) of a cell in display units; ('', '') without finite values."""
    if cell.summary is None:
        return "", ""
    d = DECIMALS[metric.kind]
    mean = f"{metric.scale(cell.summary.mean):.{d}f}"
    half = cell.half_width
    return mean, (f"{pm}{metric.scale(half):.{d}f}" if math.isfinite(half) else f"{pm}n/a")


def _published_text(metric: Metric, value: float | None) -> str:
    if value is None:
        return ""
    return f"{metric.scale(value):.{DECIMALS[metric.kind]}f}"


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------


def table_frame(a: Analysis) -> pd.DataFrame:
    """Every number of the table, one row per configuration, raw units (accuracies as fractions)."""
    records = []
    nan = math.nan
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
            two = s is not None and s.n >= 2
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
        records.append(rec)
    return pd.DataFrame.from_records(records)


def to_csv(frame: pd.DataFrame) -> str:
    """CSV text: 12 significant digits, empty cells for n/a, '\\n' line ends."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n", float_format="%.12g")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Markdown and LaTeX
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


def _cell_text(r, m: Metric, best: float | None, style: str) -> str:
    c = r.cells[m.column]
    if c.summary is None:
        return "NaN" if c.n_nonfinite else ("–" if style == "md" else "--")
    pm = " ± " if style == "md" else r" $\pm$ "
    mean, half = _ci_text(m, c, pm)
    text = mean + half
    if best is not None and c.summary.mean == best:
        text = f"**{text}**" if style == "md" else rf"\textbf{{{text}}}"
    if c.n_nonfinite:
        text += "†" if style == "md" else r"$^\dagger$"
    return text


def _body_rows(a: Analysis, keys: list[str], cols, style: str, key_text) -> tuple[list[list[str]], bool]:
    """Every row's cells (keys, n, then each metric and its published value) in one style, and whether any
    cell averages over fewer runs than it has (non-finite values: the dagger note)."""
    bests = {m.column: _best(a, m) for m, _ in cols}
    rows, dagger = [], False
    for r in a.rows:
        cells = [key_text(r, k) for k in keys] + [str(len(r.seeds))]
        for m, has_pub in cols:
            cells.append(_cell_text(r, m, bests[m.column], style))
            dagger |= r.cells[m.column].n_nonfinite > 0
            if has_pub:
                cells.append(_published_text(m, r.published.get(m.column)))
        rows.append(cells)
    return rows, dagger


def to_markdown(a: Analysis) -> str:
    """The table as GitHub Markdown (plus its notes)."""
    keys, cols = _layout(a)
    header = [FACTOR_LABELS.get(k, "configuration" if k == "trial_id" else k) for k in keys] + ["n"]
    align = ["---"] * len(keys) + ["---:"]
    for m, has_pub in cols:
        header.append(m.label)
        align.append("---:")
        if has_pub:
            header.append("pub.")
            align.append("---:")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    rows, dagger = _body_rows(a, keys, cols, "md", _key_text)
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    if dagger:
        lines += ["", f"† {DAGGER_NOTE}; NaN: every run did."]
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def tex_escape(text: str) -> str:
    """Text safe in LaTeX."""
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def _tex_key(r, key: str) -> str:
    v = r.trial.values.get(key)
    if isinstance(v, (list, tuple)):
        return "$" + r"\times".join(str(x) for x in v) + "$"
    return tex_escape(_key_text(r, key))


def to_latex(a: Analysis) -> str:
    """The table as a booktabs tabular (needs \\usepackage{booktabs})."""
    keys, cols = _layout(a)
    spec = "l" * len(keys) + "r" + "".join("rr" if p else "r" for _, p in cols)
    top: list[str] = [""] * len(keys) + [""]
    sub: list[str] = [tex_escape(FACTOR_LABELS.get(k, "configuration" if k == "trial_id" else k)) for k in keys] + ["$n$"]
    rules = []
    col = len(keys) + 2  # 1-based index of the next column
    for m, has_pub in cols:
        label = tex_escape(m.label)
        if has_pub:
            top.append(rf"\multicolumn{{2}}{{c}}{{{label}}}")
            sub += ["ours", "pub."]
            rules.append(rf"\cmidrule(lr){{{col}-{col + 1}}}")
            col += 2
        else:
            top.append(label)
            sub.append("")
            col += 1
    lines = [
        f"% {a.study.name}: mean $\\pm$ half-width of the 95% t confidence interval over seeds; bold: best in",
        "% its column; pub.: the paper's single-run value. Generated by `hpstudy report`; needs \\usepackage{booktabs}.",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(top) + r" \\",
    ]
    if rules:
        lines.append(" ".join(rules))
    lines += [" & ".join(sub) + r" \\", r"\midrule"]
    rows, dagger = _body_rows(a, keys, cols, "tex", _tex_key)
    lines += [" & ".join(cells) + r" \\" for cells in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if dagger:
        lines.append(f"% $^\\dagger$ {DAGGER_NOTE}; NaN: every run did.")
    return "\n".join(lines) + "\n"
