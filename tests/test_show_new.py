"""`hpstudy show STUDY` (trials, runs per seed, stored runs, estimated time) and `hpstudy new NAME`
(a commented template that validates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpstudy import budget, cli, store
from hpstudy.errors import OutputError, StudyError
from hpstudy.reporting.build import synthetic_records
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "studies" / "naragundkar2024_grid.toml"


def test_show_lists_trials_stored_runs_and_estimate(tmp_path, capsys):
    study = load_study(GRID)
    store.write_chunk(store.study_dir(tmp_path, study.name), synthetic_records(study, range(2)))
    assert cli.main(["show", str(GRID), "--results", str(tmp_path), "--seeds", "4", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "grid, 8 trials = 8 runs per seed; default seeds 5" in out
    assert f"16 runs in {tmp_path / study.name} (seeds 0-1)" in out
    runs = store.read_runs(store.study_dir(tmp_path, study.name))
    todo = [s.config for s in study.runs(range(2, 4))]
    seconds = sum(budget.work(c) for c in todo) / (budget.measured_rate(runs) * 2)
    assert (
        f"seeds 0-3: 16 of 32 runs missing, about {budget.duration(seconds)} with 2 worker(s) (rate measured on this study)"
        in out
    )
    for t in study.trials:  # one line per trial, with its learning rate, batch size and dropout
        assert any(all(str(t.values[k]) in line for k in ("batch_size", "dropout")) for line in out.splitlines())
    assert len([line for line in out.splitlines() if line.startswith("    ") and line.split()[0].isdigit()]) == 8


def test_show_random_design_names_its_trials(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["show", "vallepalli2024_search", "--results", "/nonexistent/results"]) == 0
    out = capsys.readouterr().out
    n = len(load_study(ROOT / "studies" / "vallepalli2024_search.toml").trials)  # the study file's budget
    assert (
        f"random, {n} trials" in out
        and "trial-000" in out
        and f"trial-{n - 1:03d}" in out
        and "stored      none" in out
    )


def test_show_writes_optimizer_arguments_as_the_study_file_does(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["show", "chollet2017_first_network", "--results", "/nonexistent/results"]) == 0
    out = capsys.readouterr().out
    assert "decay=0.9, eps=1e-08, eps_in_sqrt=false" in out and "('decay'" not in out


def test_new_writes_a_template_that_validates_and_never_overwrites(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["new", "my_study"]) == 0
    path = tmp_path / "studies" / "my_study.toml"
    study = load_study(path)
    assert study.name == "my_study" and len(study.trials) == 8 and study.assumptions
    text = path.read_text()
    assert text.count("#") > 10  # commented
    path.write_text(text + "# my edits\n")
    assert cli.main(["new", "my_study"]) == OutputError.exit_code
    assert path.read_text().endswith("# my edits\n")
    assert cli.main(["new", ".."]) == StudyError.exit_code
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["show", "my_study"]) == 0


def test_new_offers_a_template_per_flavour_each_validating(tmp_path):
    from hpstudy.study import FLAVOUR_DEFAULTS
    from hpstudy.template import FLAVOURS, new_study

    assert set(FLAVOURS) == set(FLAVOUR_DEFAULTS)
    for flavour in FLAVOURS:
        assert cli.main(["new", f"s_{flavour}", "--flavour", flavour, "--file", str(tmp_path / f"{flavour}.toml")]) == 0
        path = tmp_path / f"{flavour}.toml"
        study = load_study(path)
        assert len(study.trials) == 8 and {t.config.flavour for t in study.trials} == {flavour}
        # the commented [[published]] example names a trial of the design once uncommented
        text = path.read_text().replace("# [[published]]", "[[published]]").replace("# where", "where")
        path.write_text(text.replace("# test_accuracy", "test_accuracy").replace("# source", "source"))
        assert len(load_study(path).published) == 1
    with pytest.raises(StudyError, match="--flavour 'caffe' is invalid"):
        new_study("x", tmp_path / "x.toml", flavour="caffe")
    assert not (tmp_path / "x.toml").exists()
