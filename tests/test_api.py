"""The Python API: load, run, results, summarize, plots, report; `import hpstudy` stays light; the CLI
is a layer over the same functions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import hpstudy
from hpstudy import api, cli
from hpstudy import data as hdata
from hpstudy.errors import StudyError
from tests.conftest import synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_import_hpstudy_does_not_import_jax():
    code = "import sys, hpstudy; print(sorted(m for m in ('jax', 'jaxlib', 'flax', 'optax', 'pandas', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_load_study_by_name_path_or_study(monkeypatch):
    monkeypatch.chdir(ROOT)
    by_name = hpstudy.load_study("naragundkar2024_grid")
    by_path = hpstudy.load_study(ROOT / "studies" / "naragundkar2024_grid.toml")
    assert by_name.name == by_path.name == "naragundkar2024_grid" and len(by_name.trials) == 8
    assert hpstudy.load_study(by_name) is by_name
    with pytest.raises(StudyError, match="Did you mean 'naragundkar2024_grid'"):
        hpstudy.load_study("naragundkar2024_gird")


def test_run_results_summarize_plots_report(write_study, tmp_path, monkeypatch):
    import matplotlib.figure

    monkeypatch.setattr(hdata, "load_dataset", lambda *a, **k: synthetic_dataset())
    study = hpstudy.load_study(write_study())
    results = tmp_path / "results"
    runs = hpstudy.run(study, seeds=2, results=results, workers=1, progress=False)
    assert isinstance(runs, pd.DataFrame) and len(runs) == 8 and set(runs["seed"]) == {0, 1}
    assert runs.attrs["run"]["computed"] == 8
    again = hpstudy.run(study, seeds="1:3", results=results, workers=1, progress=False)
    assert again.attrs["run"]["already_stored"] == 4 and again.attrs["run"]["computed"] == 4
    stored = hpstudy.results(study, results=results)
    assert len(stored) == 12
    assert len(hpstudy.results(study, results=results, seeds=2)) == 8
    table = hpstudy.summarize(study, results=results)
    assert len(table) == 4 and (table["n"] == 3).all()
    means = stored.groupby("trial_id")["test_accuracy"].mean()
    mean_column = next(c for c in table.columns if c.startswith("test_accuracy") and "mean" in c)
    assert table.set_index("trial_id")[mean_column].to_dict() == pytest.approx(means.to_dict())
    figs = hpstudy.plots(study, results=results)
    assert figs and all(isinstance(f, matplotlib.figure.Figure) for f in figs.values())
    folder = hpstudy.report(study, results=results, out=tmp_path / "out")
    assert folder == tmp_path / "out" / "small" and (folder / "README.md").is_file()
    from hpstudy.reporting import build  # importing the report side leaves the package's `report` function alone

    assert (
        build.write_report
        and callable(hpstudy.report)
        and hpstudy.report(study, results=results, out=tmp_path / "out2").is_dir()
    )


def test_cli_run_is_the_api(monkeypatch, capsys):
    seen = {}

    def fake_run(study, seeds, results, **kwargs):
        seen.update(study=study, seeds=seeds, results=results, **kwargs)
        frame = pd.DataFrame({"trial_id": ["t"], "test_accuracy": [0.9]})
        frame.attrs["run"] = {
            "study": "s",
            "trials": 1,
            "seeds": range(1),
            "total": 1,
            "already_stored": 1,
            "computed": 0,
            "seconds": 0.0,
            "directory": Path("results/s"),
        }
        return frame

    monkeypatch.setattr(api, "run", fake_run)
    assert cli.main(["run", "x.toml", "--seeds", "3", "--workers", "1", "--yes", "--wait"]) == 0
    assert seen["study"] == "x.toml" and seen["seeds"] == "3" and seen["workers"] == 1 and seen["yes"] and seen["wait"]
    assert "1 were already stored" in capsys.readouterr().out
