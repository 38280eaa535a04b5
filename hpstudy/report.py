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

The pieces live in their own modules: analysis.py (the model and every number), tables.py, figures.py,
readme.py (the README, section by section) and synthetic.py. This module only assembles and writes them;
every file a report writes is written by `write_report`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from hpstudy.analysis import (  # noqa: F401 - the report's public API, re-exported
    Analysis,
    analyze,
    describe_seeds,
    epoch_means,
    load_runs,
    matching_trials,
    training_length_hint,
)
from hpstudy.study import Study
from hpstudy.synthetic import synthetic_records  # noqa: F401 - re-exported for tests and benchmarks


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
    study: Study, results: str | os.PathLike, out: str | os.PathLike = "reports", seeds: Sequence[int] | None = None
) -> Path:
    """Write reports/<study>/ from the stored runs and return that folder.

    Figures no longer produced are removed from its figures/ folder; other files there are left alone.
    """
    from hpstudy import figures, readme, tables  # matplotlib loads only when a report is written

    runs = load_runs(study, results, seeds)
    a = analyze(study, runs)
    frame = tables.table_frame(a)
    texts = {
        "table.csv": tables.to_csv(frame),
        "table.md": tables.to_markdown(a),
        "table.tex": tables.to_latex(a),
    }
    target = Path(out) / study.name
    fig_dir = target / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    made = figures.make_figures(a, fig_dir)
    keep = {f"{stem}.{ext}" for stem, _ in made for ext in figures.FORMATS}
    for old in sorted(fig_dir.iterdir()):
        if old.suffix.lstrip(".") in figures.FORMATS and old.name not in keep:
            old.unlink()
    texts["README.md"] = readme.readme(a, texts["table.md"], made, _display_path(results))
    for name, text in texts.items():
        (target / name).write_text(text, encoding="utf-8", newline="\n")
    return target

