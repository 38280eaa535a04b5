"""Design values that are (name, value) pairs (optimizer_args, schedule_args) print as name=value in the
tables and labels, not as Python tuples."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpstudy.reporting import tables
from hpstudy.reporting.analysis import analyze, format_value, load_runs, trial_label
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
PAIRS = (("decay", 0.9), ("eps", 1e-08), ("eps_in_sqrt", False))


def test_pairs_print_as_name_equals_value():
    assert format_value("optimizer_args", PAIRS) == "decay=0.9, eps=1e-08, eps_in_sqrt=false"
    assert format_value("optimizer_args", ()) == ""
    assert format_value("schedule_args", (("boundaries", (10, 20)),)) == "boundaries=(10, 20)"
    assert format_value("hidden", (416, 288)) == "416x288"  # a tuple of numbers is not pairs


def test_shipped_keras_tables_print_optimizer_args_as_pairs():
    study = load_study(ROOT / "studies" / "keras2017_mnist_mlp.toml")
    if not (ROOT / "reports" / "_runs" / study.name).is_dir():
        pytest.skip("no shipped runs of keras2017_mnist_mlp")
    a = analyze(study, load_runs(study, ROOT / "reports" / "_runs"))
    csv = tables.to_csv(tables.table_frame(a))
    md, tex = tables.to_markdown(a), tables.to_latex(a)
    assert '"decay=0.9, eps=1e-08, eps_in_sqrt=false"' in csv
    assert "| optax:rmsprop | decay=0.9, eps=1e-08, eps_in_sqrt=false |" in md
    assert r"decay=0.9, eps=1e-08, eps\_in\_sqrt=false" in tex
    for text in (csv, md, tex):
        assert "('decay'" not in text and "('eps'" not in text
    labels = [trial_label(r.trial, a.factors) for r in a.rows]
    assert "optimizer optax:rmsprop, optimizer_args (decay=0.9, eps=1e-08, eps_in_sqrt=false)" in labels
