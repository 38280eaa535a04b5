"""Resource guards (runs and time estimated before starting; huge inputs refused at once; workers capped)
and the smaller answers: --version, did-you-mean for study names and keys, a data folder that is a file,
duplicate published entries."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpstudy import api, budget, cli, runner, store
from hpstudy import data as hdata
from hpstudy.errors import DataError, StudyError, TooBigError
from hpstudy.reporting.build import synthetic_records
from hpstudy.study import closest, load_study

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "studies" / "naragundkar2024_grid.toml"


class Reached(Exception):
    """Raised by a stand-in for the runner: the guards let the run through."""


@pytest.fixture
def reached(monkeypatch):
    """Replace the runner with a stand-in recording its arguments instead of training."""
    calls: list[dict] = []

    def stand_in(study, seeds, load_data, results, **kwargs):
        calls.append({"study": study, "seeds": seeds, **kwargs})
        raise Reached

    monkeypatch.setattr(runner, "run_study", stand_in)
    return calls


def test_huge_seed_count_is_refused_at_once(tmp_path, capsys):
    start = time.perf_counter()
    code = cli.main(["run", str(GRID), "--seeds", "99999999999", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == TooBigError.exit_code == 9
    assert "799,999,999,992 runs" in err and "at most 1,000,000 runs" in err
    assert time.perf_counter() - start < 5 and list(tmp_path.iterdir()) == []


def test_grid_of_a_million_trials_is_refused_at_once(write_study, tmp_path):
    levels = ", ".join(str(0.001 * k) for k in range(1, 101))
    path = write_study(
        f"learning_rate = [{levels}]\nbatch_size = [{', '.join(str(b) for b in range(1, 101))}]\n"
        f"dropout = [{', '.join(str(d / 1000) for d in range(100))}]"
    )
    start = time.perf_counter()
    with pytest.raises(StudyError, match=r"at most 100,000 trials \(these levels cross to 1,000,000\)"):
        load_study(path)
    assert time.perf_counter() - start < 5


def test_random_design_of_1e8_trials_is_refused_at_once(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[study]\nname = "r"\n[design]\nkind = "random"\ntrials = 100000000\n'
        '[design.space]\nlearning_rate = { type = "float", low = 0.001, high = 0.1, log = true }\n'
    )
    start = time.perf_counter()
    with pytest.raises(
        StudyError,
        match="design.trials = 100000000 is invalid; expected an integer number of trials >= 1 "
        r"\(and at most 100,000\)",
    ):
        load_study(path)
    assert time.perf_counter() - start < 5


def test_large_run_needs_yes_and_is_refused_without_a_terminal(tmp_path, capsys, reached):
    code = cli.main(["run", str(GRID), "--seeds", "2000", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == TooBigError.exit_code and "16,000 runs, about" in err and "--yes" in err and not reached
    assert not (tmp_path / "r").exists()
    with pytest.raises(Reached):
        cli.main(["run", str(GRID), "--seeds", "2000", "--results", str(tmp_path / "r"), "--yes"])
    assert reached[0]["seeds"] == range(2000)


def test_api_asks_confirm_and_respects_the_answer(tmp_path, reached):
    asked: list[str] = []
    with pytest.raises(TooBigError):
        api.run(GRID, 2000, tmp_path, confirm=lambda what: asked.append(what) or False)
    assert len(asked) == 1 and "naragundkar2024_grid: 16,000 runs" in asked[0]
    with pytest.raises(Reached):
        api.run(GRID, 2000, tmp_path, confirm=lambda what: True)


def test_small_run_needs_no_confirmation(tmp_path, reached):
    with pytest.raises(Reached):
        api.run(GRID, 5, tmp_path)


def test_estimate_uses_the_study_s_measured_speed(tmp_path):
    study = load_study(GRID)
    records = synthetic_records(study, range(2))
    store.write_chunk(store.study_dir(tmp_path, study.name), records)
    seeds, todo, estimate = api.plan(study, "2:4", tmp_path, workers=2)
    assert len(todo) == 16 and estimate.measured
    runs = store.read_runs(store.study_dir(tmp_path, study.name))
    rate = budget.measured_rate(runs)
    expected = sum(budget.work(s.config) for s in todo) / (rate * 2)
    assert estimate.seconds == pytest.approx(expected)
    _, _, fresh = api.plan(study, "2:4", tmp_path / "empty", workers=2)
    assert not fresh.measured and fresh.rate == budget.RATE_PER_CORE


def test_default_rate_is_the_shipped_runs_median():
    """budget.RATE_PER_CORE is what its docstring says: the median rate over all runs of the shipped studies
    (rounded to two digits), so it is re-measured whenever they are re-made."""
    import pandas as pd

    studies = sorted(p.stem for p in (ROOT / "studies").glob("*.toml"))
    runs = pd.concat([store.read_runs(ROOT / "reports" / "_runs" / name) for name in studies])
    assert len(runs) == 662
    assert budget.RATE_PER_CORE == float(f"{budget.measured_rate(runs):.1e}")


def test_workers_beyond_the_usable_cores_are_capped_with_a_warning(tmp_path, capsys, reached):
    from hpstudy.training.parallel import usable_cores

    with pytest.raises(Reached):
        cli.main(["run", str(GRID), "--seeds", "1", "--workers", "1000", "--results", str(tmp_path)])
    cores = len(usable_cores())
    assert reached[0]["workers"] == cores
    assert f"--workers 1000 is more than the {cores} usable cores; using {cores}" in capsys.readouterr().err


def test_version():
    out = subprocess.run([sys.executable, "-m", "hpstudy.cli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().startswith("hpstudy 0.")


def test_study_name_typo_gets_did_you_mean(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = cli.main(["run", "naragundkar2024_grd"])
    assert code == 2 and "Did you mean 'naragundkar2024_grid'?" in capsys.readouterr().err


def test_data_dir_that_is_a_file_says_so(tmp_path, capsys, write_study):
    afile = tmp_path / "mnist.gz"
    afile.write_bytes(b"x")
    with pytest.raises(DataError, match="--data-dir .*mnist.gz is a file, not a folder"):
        hdata.load_mnist(afile, download=False)
    code = cli.main(["run", str(write_study()), "--data-dir", str(afile), "--results", str(tmp_path / "r")])
    assert code == DataError.exit_code == 3 and "is a file, not a folder" in capsys.readouterr().err


def test_duplicate_published_entries_are_rejected(write_study):
    entry = "\n[[published]]\nwhere = {{ learning_rate = 0.01, dropout = 0.2 }}\ntest_accuracy = {}\n"
    path = write_study()
    path.write_text(path.read_text() + entry.format(0.97) + entry.format(0.96))
    with pytest.raises(
        StudyError,
        match=r"published\[1\].*one entry per configuration and metric; published\[0\] already gives test_accuracy",
    ):
        load_study(path)
    path.write_text(path.read_text().replace("test_accuracy = 0.96", "test_loss = 0.1"))
    load_study(path)  # another metric of the same configuration is fine


def test_space_typo_prefers_the_fewest_edits(tmp_path):
    assert closest("lgo", {"type", "low", "high", "step", "log", "values"}) == "log"
    path = tmp_path / "s.toml"
    path.write_text(
        '[study]\nname = "s"\n[design]\nkind = "random"\ntrials = 2\n'
        '[design.space]\nlearning_rate = { type = "float", low = 0.001, high = 0.1, lgo = true }\n'
    )
    with pytest.raises(StudyError, match="Did you mean 'log'\\?"):
        load_study(path)
