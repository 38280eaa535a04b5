"""The holdout study's report places each verdict again on the runs of the study it compares with
(compare_with: the grid study, which trains on more images): the training-set-size sensitivity, with the
confound (the grid study also stops early on the test set) stated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hpstudy.reporting import readme, stats
from hpstudy.reporting.analysis import CONFIDENCE, _margin, analyze, load_runs, metric_of
from hpstudy.reporting.build import contrast_for
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "reports" / "_runs"


@pytest.fixture(scope="module")
def holdout():
    study = load_study(ROOT / "studies" / "naragundkar2024_grid_holdout.toml")
    if not (RUNS / study.name).is_dir() or not (RUNS / "naragundkar2024_grid").is_dir():
        pytest.skip("no shipped runs of the grid and holdout studies")
    a = analyze(study, load_runs(study, RUNS))
    return dataclasses.replace(a, contrast=contrast_for(study, RUNS, a))


def test_each_verdict_is_placed_on_the_grid_study_s_runs(holdout):
    a = holdout
    c = a.contrast
    assert c.other == "naragundkar2024_grid" and c.training_images == (50_000, 60_000)
    grid = load_study(ROOT / "studies" / "naragundkar2024_grid.toml")
    theirs = load_runs(grid, RUNS)
    assert len(c.verdicts) == 16  # 8 configurations x (test accuracy, test loss)
    for x in c.verdicts:
        v, m = x.verdict, metric_of(x.verdict.metric)
        values = theirs.loc[theirs["trial_id"] == v.trial_id, v.metric].tolist()
        assert x.n == len(values) == 10 and x.mean == pytest.approx(sum(values) / len(values))
        expected = stats.place_published(
            v.published, values, CONFIDENCE, m.interval_scale, _margin(a.study, m), v.placement.rounded
        )
        assert x.there == expected.state
        mine = list(a.row(v.trial_id).cells[v.metric].values.values())
        here = stats.place_published(
            v.published, mine, CONFIDENCE, m.interval_scale, _margin(a.study, m), v.placement.rounded
        )
        assert x.here == here.state


def test_the_readme_states_the_sensitivity_and_its_confound(holdout):
    text = "\n".join(readme._section_sensitivity(holdout))
    c = holdout.contrast
    assert "### Sensitivity of the verdicts to the training-set size" in text
    assert "60,000 training images instead of 50,000" in text
    assert "validates (and stops early) on the test set" in text  # the confound
    moved = [x for x in c.verdicts if x.here != x.there]
    assert f"{len(moved)} of 16 verdicts would change" in text
    assert text.count("on `naragundkar2024_grid`'s 10 runs") == len(moved)
    same = 16 - len(moved)
    if same:
        assert f"- {same} other verdict{'s' if same > 1 else ''} would be the same" in text


def test_no_section_without_a_study_to_compare_with(holdout):
    assert "training-set size" not in "\n".join(
        readme._section_sensitivity(dataclasses.replace(holdout, contrast=None))
    )
