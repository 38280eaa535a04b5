"""Verdicts on the shipped runs (reports/_runs): what the referee's second reading found, checked on the data.

Each test failed on the code before issue 17: a wide prediction interval counted as "reproduced", the search
summary named a configuration the search never ran, ties were broken silently, and "outside" ignored how many
published values were tested.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpstudy.reporting import readme
from hpstudy.reporting.analysis import analyze, counted, load_runs
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "reports" / "_runs"


def _analysis(name: str):
    study = load_study(ROOT / "studies" / f"{name}.toml")
    if not (RUNS / name).is_dir():
        pytest.skip(f"no shipped runs of {name}")
    return analyze(study, load_runs(study, RUNS))


def test_a_wide_interval_is_consistent_not_reproduced():
    a = _analysis("fabrizio2021_batch")
    nielsen = [v for v in counted(a.verdicts) if "Nielsen" in v.where]
    assert {round(v.published, 4) for v in nielsen} == {0.8881, 0.7941}
    for v in nielsen:
        assert v.placement.pi_high - v.placement.pi_low > 0.5  # the interval shows nothing
        assert v.placement.state == "consistent", v.where
    text = "\n".join(readme._verdict_table(a))
    assert text.count("**consistent, but the seeds cannot tell**") >= 2


def test_small_sentences_the_referee_listed():
    """Defect 9 (part): the 'every number is in table.csv' sentence, the timing warning, table.tex without any
    uncertainty for 3-seed studies, and zero-width intervals for seeds that are all equal."""
    from hpstudy.reporting import tables

    a = _analysis("fabrizio2021_batch")
    assert len(a.best_sets) == 9 and all(1 <= len(b.may_be_best) <= b.size for b in a.best_sets)
    assert "Hsu's multiple comparisons with the best" in "\n".join(readme._mcb_lines(a))
    assert "every number is in table.csv" not in a.factor_note and "none is shown or tested" in a.factor_note
    assert "\\scriptsize(" in tables.to_latex(a) and "standard deviation over seeds" in tables.to_latex(a)
    equal = [r for r in a.rows if r.cells[a.primary.column].n >= 2 and r.cells[a.primary.column].summary.std == 0]
    md = tables.to_markdown(a)
    assert not equal or "(all 3 seeds equal)" in md
    assert "neither is a comparison of speed" in "\n".join(readme._section_timing(a))


def test_search_result_is_compared_with_the_search_best_and_called_selected():
    a = _analysis("vallepalli2024_search")
    summary = readme._section_summary(a)[0]
    best = a.runs.groupby("trial_id")["best_val_accuracy"].mean().idxmax()
    assert best == "trial-002"
    assert "at hidden = 416x288" not in summary  # the published configuration is not among the trials
    assert f"the search's best trial, {best}" in summary and "biased upwards" in summary


def test_ties_for_a_seeds_best_are_broken_by_a_stated_rule_and_reported():
    """The shipped runs of vallepalli2024_best hold no tie since their re-make in portable-v2 (the portable runs
    tied at seed 2), so one is made on a copy of them: seed 2's runner-up gets its best's score."""
    study = load_study(ROOT / "studies" / "vallepalli2024_best.toml")
    runs = load_runs(study, RUNS)
    at_2 = runs["seed"] == 2
    best = runs.loc[at_2, "best_val_accuracy"].max()
    runner_up = runs.loc[at_2 & (runs["best_val_accuracy"] < best), "best_val_accuracy"].idxmax()
    runs.loc[runner_up, "best_val_accuracy"] = best
    a = analyze(study, runs)
    pivot = a.runs.pivot(index="seed", columns="trial_id", values="best_val_accuracy")
    tied = [int(s) for s, row in pivot.iterrows() if (row == row.max()).sum() > 1]
    assert tied == [2]
    for v in counted(a.verdicts):
        assert len(v.ties) == 1 and v.ties[0].startswith("seed 2: ") and "first in the design's order" in v.ties[0]
    assert "ties: seed 2" in "\n".join(readme._verdict_table(a))
    untouched = _analysis("vallepalli2024_best")
    assert all(not v.ties for v in counted(untouched.verdicts))


def test_outside_is_corrected_for_the_number_of_published_values():
    a = _analysis("naragundkar2024_grid")
    family = counted(a.verdicts)
    assert len(family) == 16
    for v in family:
        assert v.holm_p >= v.placement.p_outside
        assert (v.placement.state == "outside") == (v.holm_p < 0.05)
    text = "\n".join(readme._verdict_table(a))
    assert "about 0.8 of them outside by chance alone" in text


def test_interaction_gives_simple_effects_and_terms_are_holm_corrected_on_the_logit_scale():
    """Defect 4: 'batch size +0.46 pp' hides +0.02 at lr 0.001 and +0.89 at lr 0.01."""
    a = _analysis("naragundkar2024_grid")
    assert all(e.holm_p >= e.t_pvalue for e in a.effects)
    batch = {s.level: s.effect for s in a.simple_effects if s.factor == "batch_size" and s.within == "learning_rate"}
    assert set(batch) == {0.001, 0.01}
    assert abs(batch[0.001].estimate) < 0.002 and batch[0.01].estimate > 0.005  # in fractions: pp / 100
    summary = readme._section_summary(a)[0]
    assert "Batch size interacts, so its effect is given within each level" in summary
    assert "batch size (+0.46 pp)" not in summary


def test_holdout_is_compared_with_the_grid_and_states_the_confound():
    import dataclasses

    from hpstudy.reporting.build import contrast_for

    a = _analysis("naragundkar2024_grid_holdout")
    c = contrast_for(a.study, RUNS, a)
    assert c is not None and c.other == "naragundkar2024_grid" and len(c.comparisons) == 8
    assert "50,000 images" in c.confound and "60,000 images" in c.confound
    text = "\n".join(readme._section_contrast(dataclasses.replace(a, contrast=c)))
    assert "## Against `naragundkar2024_grid`" in text


def test_verdicts_show_their_sensitivity_to_training_length():
    a = _analysis("naragundkar2024_grid")
    v = next(v for v in counted(a.verdicts) if v.metric == "test_accuracy" and v.placement.state == "outside")
    assert len(v.by_epoch) >= 2 and len(set(v.by_epoch)) > 1
    assert "### Sensitivity of the verdicts to training length" in "\n".join(readme._section_sensitivity(a))


def test_docs_studies_epochs_agree_with_the_study_files():
    """Defect 9: docs/studies.md said 10 and 30 epochs where the study files say 5 and 20."""
    import re

    doc = (ROOT / "docs" / "studies.md").read_text(encoding="utf-8")
    checked = 0
    for line in doc.splitlines():
        found = re.match(r"\| `([a-z0-9_]+)\.toml` \|", line)
        if not found or not (ROOT / "studies" / f"{found.group(1)}.toml").is_file():
            continue
        stated = {int(n) for n in re.findall(r"(\d+) epochs", line)}
        if stated:
            epochs = {t.config.epochs for t in load_study(ROOT / "studies" / f"{found.group(1)}.toml").trials}
            assert stated <= epochs, (found.group(1), stated, epochs)
            checked += 1
    assert checked >= 4


def test_published_training_metrics_are_placed_against_each_seeds_value():
    """The notebook of chollet2017_first_network prints its last epoch's training loss and accuracy; they are
    placed against each seed's final training metrics (once reported as 'no runs': no per-seed cell)."""
    a = _analysis("chollet2017_first_network")
    by_metric = {v.metric: v for v in a.verdicts}
    for column in ("final_train_accuracy", "final_train_loss", "test_accuracy"):
        v = by_metric[column]
        assert v.n == 10 and v.placement is not None, column
        seeds = a.runs[column].astype(float)
        assert v.placement.mean == pytest.approx(seeds.mean(), rel=1e-9)
    assert "no runs" not in "\n".join(readme._verdict_table(a))
