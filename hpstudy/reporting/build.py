"""`hpstudy report`'s builder: statistics, tables and figures of a study's stored runs, written to reports/<study>/.

The report is a pure function of the stored runs and the study file: the same store gives byte-identical
files (no timestamps, no absolute paths, deterministic ordering everywhere). Everything is computed in
memory first; only when that succeeded is anything written.

API (what the CLI and the benchmark call):
- ``load_runs(study, results, seeds=None)`` -> the study's stored runs (StoreError if there are none);
- ``analyze(study, runs)`` -> an :class:`Analysis` (per-trial summaries, published verdicts, comparisons);
- ``write_report(study, results, out, seeds=None)`` -> the report folder, after writing README.md,
  table.csv, table.md, table.tex, figures/*.{pdf,svg,png} and the list of the runs it was made from;
- ``synthetic_records(study, seeds)`` -> fake but schema-valid run records for tests and benchmarks.

The pieces live in their own modules: analysis.py (the model and every number), tables.py, figures.py,
readme.py (the README, section by section) and synthetic.py. This module only assembles and writes them;
every file a report writes is written by `write_report`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from hpstudy import store
from hpstudy.reporting.analysis import (  # noqa: F401 - the report's public API, re-exported
    Analysis,
    StudyContrast,
    analyze,
    contrast_studies,
    describe_seeds,
    epoch_means,
    load_runs,
    matching_trials,
    training_length_hint,
)
from hpstudy.reporting.synthetic import synthetic_records  # noqa: F401 - re-exported for tests and benchmarks
from hpstudy.study import Study, load_study

# Where `hpstudy report` writes by default: beside the (git-ignored) results, never over the shipped
# reports in reports/ (those are made with an explicit --out reports).
DEFAULT_OUT = "results/_reports"


def _display_path(path: str | os.PathLike) -> str:
    """The path as given, made relative to the working directory when it lies under it."""
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return p.as_posix()
    return p.as_posix()


def contrast_for(study: Study, results: str | os.PathLike, a: Analysis) -> StudyContrast | None:
    """The comparison with the study named by `compare_with`, from its stored runs in the same results
    folder (None when it names none, or none of its runs are stored there)."""
    name = study.meta.get("compare_with")
    if not name:
        return None
    path = study.path.parent / f"{name}.toml"
    if not path.is_file() or not store.study_dir(results, name).is_dir():
        return None
    other = load_study(path)
    return contrast_studies(a, analyze(other, load_runs(other, results)))


def write_report(
    study: Study,
    results: str | os.PathLike,
    out: str | os.PathLike = DEFAULT_OUT,
    seeds: Sequence[int] | None = None,
    force: bool = False,
) -> Path:
    """Write OUT/<study>/ (README, tables, figures) from the stored runs and return that folder.

    The output folder is checked before any work; the report is built beside the old one and swapped in
    (hpstudy/reporting/outputs.py), and only files an earlier report wrote are ever replaced or removed;
    anything else in the way is refused (OutputError), or with `force` moved to a dated backup first. Every file of
    a report is written inside `build`.
    """
    from hpstudy.reporting import figures, outputs, readme, tables  # matplotlib loads only when a report is written

    runs = load_runs(study, results, seeds, checked=True)  # one pass: every part checked as it is read
    from hpstudy.reporting import testset_report  # each run's test-set correctness, where stored

    runs = testset_report.attach(runs, store.study_dir(results, study.name))
    store.check_writable(Path(out), "output")  # before the analysis and the figures, the slow part
    outputs.check_target(Path(out), study.name, force=force)
    a = analyze(study, runs)
    a = dataclasses.replace(a, contrast=contrast_for(study, results, a))

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
        texts["README.md"] = readme.readme(a, texts["table.md"], made, _display_path(results))
        texts[outputs.RUN_LIST] = outputs.run_list_text(study.name, runs["run_id"])
        for name, text in texts.items():
            (folder / name).write_text(text, encoding="utf-8", newline="\n")

    return outputs.publish(Path(out), study.name, build, force=force)
