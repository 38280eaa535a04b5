"""Every report's table.tex compiles with pdflatex in a one-column and a two-column article, without an
overfull box or an oversized float. Skips, saying why, where pdflatex (TeX Live) is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hpstudy import store
from hpstudy.reporting import tables
from hpstudy.reporting.build import analyze, load_runs, synthetic_records
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted((ROOT / "studies").glob("*.toml"))
SHIPPED_RUNS = ROOT / "reports" / "_runs"
PDFLATEX = shutil.which("pdflatex")
CLASSES = ("onecolumn", "twocolumn")
DOCUMENT = r"""\documentclass[{cls}]{{article}}
\usepackage{{booktabs}}
\usepackage{{graphicx}}
\begin{{document}}
Text before the table.
\input{{{table}}}
Text after the table, see Table~\ref{{{label}}}.
\end{{document}}
"""

needs_tex = pytest.mark.skipif(
    PDFLATEX is None,
    reason="pdflatex not found: install TeX Live (apt-get install texlive-latex-base texlive-latex-recommended)",
)


def compile_table(tex: str, folder: Path, cls: str) -> str:
    """Compile one table in an article of class option `cls`; return the log (asserting success)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.tex").write_text(tex, encoding="utf-8")
    label = tex.split(r"\label{", 1)[1].split("}", 1)[0]
    (folder / "doc.tex").write_text(DOCUMENT.format(cls=cls, table="table.tex", label=label), encoding="utf-8")
    proc = subprocess.run(
        [PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (folder / "doc.log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, f"pdflatex failed in {folder}:\n{proc.stdout[-3000:]}"
    return log


def assert_clean(log: str, what: str) -> None:
    for bad in ("Overfull \\hbox", "Overfull \\vbox", "Float too large", "Undefined control sequence"):
        assert bad not in log, f"{what}: '{bad}' in the LaTeX log"


@needs_tex
@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_table_of_every_study_compiles_in_one_and_two_columns(path, tmp_path):
    study = load_study(path)
    results = tmp_path / "results"
    store.write_chunk(store.study_dir(results, study.name), synthetic_records(study, range(3)))
    tex = tables.to_latex(analyze(study, load_runs(study, results)))
    for needle in (r"\begin{table*}", r"\caption{", r"\label{tab:", r"\toprule", r"\bottomrule"):
        assert needle in tex
    for cls in CLASSES:
        assert_clean(compile_table(tex, tmp_path / cls, cls), f"{path.name} ({cls})")


@needs_tex
@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_shipped_table_compiles_and_is_current(path, tmp_path):
    """Each shipped reports/<study>/table.tex compiles in both layouts, and is what this code makes from the
    shipped runs (reports/_runs) today."""
    study = load_study(path)
    shipped = ROOT / "reports" / study.name / "table.tex"
    if not any(store.study_dir(SHIPPED_RUNS, study.name).glob("part-*.parquet")):
        pytest.skip(f"no shipped runs of {study.name} in {SHIPPED_RUNS}")
    tex = shipped.read_text(encoding="utf-8")
    assert tex == tables.to_latex(analyze(study, load_runs(study, SHIPPED_RUNS))), f"{shipped} is stale"
    for cls in CLASSES:
        assert_clean(compile_table(tex, tmp_path / cls, cls), f"{shipped} ({cls})")


@needs_tex
def test_an_overfull_table_is_caught(tmp_path):
    """The check can fail: a tabular wider than the page, set without the report's scaling, is reported."""
    wide = (
        "\\begin{table*}\\caption{x}\\label{tab:x}\\begin{tabular}{"
        + "r" * 30
        + "}\n"
        + " & ".join(["123456.789"] * 30)
        + " \\\\\n\\end{tabular}\\end{table*}\n"
    )
    log = compile_table(wide, tmp_path, "twocolumn")
    with pytest.raises(AssertionError, match="Overfull"):
        assert_clean(log, "wide")
