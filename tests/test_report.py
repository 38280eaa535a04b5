"""Tests for `hpstudy report`: numbers against hpstudy.reporting.stats, byte-identical outputs, missing data.

Stores are built from synthetic records (hpstudy.report.synthetic_records, i.e. store.to_record of
made-up RunResults), so nothing is trained. Each design (grid, sweeps, random) is reported twice once
per module and the tests share those reports.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpstudy import cli, store
from hpstudy.reporting import stats
from hpstudy.reporting.build import (
    analyze,
    load_runs,
    matching_trials,
    synthetic_records,
    write_report,
)
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "studies" / "naragundkar2024_grid.toml"
SWEEPS = """
[study]
name = "toy_sweeps"
title = "Toy three-implementation sweep"
citation = "Toy, T. (2021). Three implementations."
validation = "test"
seeds = 3

[model]
hidden = [30]

[training]
batch_size = 10
epochs = 4

[design]
kind = "sweeps"
objective = "best_val_accuracy"

[design.factors]
flavour = ["keras", "sklearn", "nielsen"]
activation = ["sigmoid", "relu"]

[[design.sweeps]]
learning_rate = [0.001, 0.01, 0.1, 1.0]

[[published]]
where = { flavour = "keras", activation = "sigmoid", learning_rate = 0.1 }
best_val_accuracy = 0.9692
best_over = ["learning_rate"]
source = "text, best over the learning rates"

[[published]]
where = { flavour = "sklearn", activation = "sigmoid", learning_rate = 0.0100000001 }
best_val_accuracy = 96.5
source = "text, in percent"

[[published]]
where = { flavour = "keras", activation = "relu" }
best_val_accuracy = 0.9696
source = "best over the sweep"
"""
RANDOM = """
[study]
name = "toy_random"
title = "Toy random search"
validation = "holdout:10000"
seeds = 3

[model]
flavour = "keras"
activation = "relu"

[training]
epochs = 6

[training.early_stopping]
monitor = "val_accuracy"
patience = 1

[design]
kind = "random"
trials = 8
sampler_seed = 0

[design.space]
learning_rate = { type = "float", low = 1e-4, high = 1e-2, log = true }
batch_size = { type = "choice", values = [32, 64, 128] }
hidden_layers = { type = "int", low = 2, high = 3 }
units = { type = "int", low = 32, high = 512, step = 32 }

[[published]]
where = { hidden = [416, 288], learning_rate = 0.000112 }
best_over = ["hidden", "learning_rate", "batch_size"]
best_val_accuracy = 0.982
source = "abstract"
"""
SEEDS = range(3)
SINGLE = "activation=relu,flavour=sklearn,learning_rate=0.01"  # a sweeps configuration left with one seed


def _build(tmp: Path, study_path: Path, drop_to_one: str | None = None) -> Path:
    study = load_study(study_path)
    records = synthetic_records(study, SEEDS)
    if drop_to_one:
        records = [r for r in records if r["trial_id"] != drop_to_one or r["seed"] == 0]
    results = tmp / "results"
    directory = store.study_dir(results, study.name)
    for i in range(0, len(records), 8):
        store.write_chunk(directory, records[i : i + 8])
    return results


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """Each design reported twice into separate folders, from the same store."""
    tmp = tmp_path_factory.mktemp("reports")
    out = {}
    for name, text, drop in (("grid", None, None), ("sweeps", SWEEPS, SINGLE), ("random", RANDOM, None)):
        base = tmp / name
        base.mkdir()
        path = GRID if text is None else base / f"toy_{name}.toml"
        if text is not None:
            path.write_text(text)
        results = _build(base, path, drop)
        study = load_study(path)
        first = write_report(study, results, base / "first")
        second = write_report(study, results, base / "second")
        out[name] = {"study": study, "results": results, "first": first, "second": second}
    return out


@pytest.mark.parametrize("design", ["grid", "sweeps", "random"])
def test_report_is_byte_identical(reports, design):
    r = reports[design]
    first, second = _files(r["first"]), _files(r["second"])
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], f"{design}: {name} differs between two reports of the same runs"


def test_report_is_byte_identical_across_processes(reports, tmp_path):
    """A fresh process (another hash seed) writing over an existing report gives the same bytes."""
    r = reports["grid"]
    target = tmp_path / r["study"].name
    shutil.copytree(r["first"], target)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hpstudy.cli",
            "report",
            str(GRID),
            "--results",
            str(r["results"]),
            "--out",
            str(tmp_path),
        ],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    assert _files(target) == _files(r["first"])


@pytest.mark.parametrize("design", ["grid", "sweeps", "random"])
def test_report_files_and_no_timestamps(reports, design):
    files = _files(reports[design]["first"])
    for name in ("README.md", "table.csv", "table.md", "table.tex"):
        assert name in files
    stems = {Path(n).stem for n in files if n.startswith("figures/")}
    expected = {
        "grid": {"configurations", "by_learning_rate", "learning_curves"},
        "sweeps": {"best_val_accuracy_vs_learning_rate", "seeds", "learning_curves"},
        "random": {"best_so_far", "score_vs_hyperparameters", "learning_curves", "seeds"},
    }[design]
    assert stems == expected
    for stem in stems:
        for ext in ("pdf", "svg", "png"):
            data = files[f"figures/{stem}.{ext}"]
            assert len(data) > 1000
            assert b"CreationDate" not in data and b"ModDate" not in data
            assert b"<dc:date>" not in data
            assert b"Matplotlib version" not in data
    readme = files["README.md"].decode()
    for stem in stems:
        assert f"](figures/{stem}.png)" in readme


def _csv(report: Path) -> pd.DataFrame:
    return pd.read_csv(io.StringIO((report / "table.csv").read_text()))


SCALE = {
    "test_accuracy": "logit",
    "best_val_accuracy": "logit",
    "final_val_accuracy": "logit",
    "test_loss": "log",
    "final_val_loss": "log",
    "epochs_run": "linear",
}


@pytest.mark.parametrize("design", ["grid", "sweeps", "random"])
def test_table_numbers_match_stats(reports, design):
    r = reports[design]
    study = r["study"]
    runs = store.read_runs(store.study_dir(r["results"], study.name))
    table = _csv(r["first"]).set_index("trial_id")
    assert sorted(table.index) == sorted(t.trial_id for t in study.trials)
    for trial_id, group in runs.groupby("trial_id"):
        row = table.loc[trial_id]
        assert row["n"] == len(group)
        for metric in ("test_accuracy", "test_loss", "best_val_accuracy", "final_val_loss", "epochs_run"):
            if f"{metric}_mean" not in row:  # final validation metrics that repeat the test metrics are dropped
                assert study.validation == "test" and metric == "final_val_loss"
                continue
            values = group[metric].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if values.size == 0:
                assert math.isnan(row[f"{metric}_mean"])
                continue
            epochs = next(t for t in study.trials if t.trial_id == trial_id).config.epochs
            bounds = (1.0, float(epochs)) if metric == "epochs_run" else None  # a count stays in its range
            s = stats.summarize(values, scale=SCALE[metric], bounds=bounds)
            if metric == "epochs_run" and s.n >= 2:
                assert 1 <= row[f"{metric}_pi_low"] <= row[f"{metric}_pi_high"] <= epochs
            assert row[f"{metric}_n"] == s.n
            assert row[f"{metric}_mean"] == pytest.approx(s.mean, rel=1e-9, abs=1e-12)
            if s.n >= 2:
                assert row[f"{metric}_std"] == pytest.approx(s.std, rel=1e-9, abs=1e-12)
                assert row[f"{metric}_ci_low"] == pytest.approx(s.ci_low, rel=1e-9, abs=1e-12)
                assert row[f"{metric}_ci_high"] == pytest.approx(s.ci_high, rel=1e-9, abs=1e-12)
                assert row[f"{metric}_pi_high"] == pytest.approx(s.pi_high, rel=1e-9, abs=1e-12)
            else:
                assert math.isnan(row[f"{metric}_ci_low"]) and math.isnan(row[f"{metric}_std"])
        # training time: what was measured (median chunk wall time per run), never a per-run interval
        assert row["seconds_per_run_median"] == pytest.approx(float(np.median(group["seconds"])), rel=1e-9)
        assert "seconds_ci_low" not in row and "seconds_mean" not in row


def test_markdown_shows_mean_ci_published_and_bold_only_when_significant(reports):
    r = reports["grid"]
    study = r["study"]
    runs = load_runs(study, r["results"])
    a = analyze(study, runs)
    md = (r["first"] / "table.md").read_text()
    for row in a.rows:
        values = runs[runs["trial_id"] == row.trial.trial_id]["test_accuracy"].to_numpy()
        s = stats.summarize(values, scale="logit")
        cell = f"{100 * s.mean:.2f} [{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]"
        assert (f"**{cell}**" in md) == (row.trial.trial_id in a.significant_best)
        assert cell in md
    # every published test accuracy of the grid paper sits next to its configuration
    for p in study.published:
        assert f"{100 * p['test_accuracy']:.2f}" in md
    tex = (r["first"] / "table.tex").read_text()
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{tab:naragundkar2024-grid}"):
        assert needle in tex
    assert tex.count(r" \\") == 2 + len(study.trials)  # two header lines, one line per configuration
    assert "$\\pm$" not in tex


def test_verdicts_match_place_published_and_count_each_number_once(reports):
    r = reports["grid"]
    study = r["study"]
    runs = load_runs(study, r["results"])
    a = analyze(study, runs)
    readme = (r["first"] / "README.md").read_text()
    states = []
    for p in study.published:
        (trial,) = matching_trials(study, p["where"])
        for metric, scale in (("test_accuracy", "logit"), ("test_loss", "log")):
            values = runs[runs["trial_id"] == trial.trial_id][metric].to_numpy()
            margin = study.smallest_effect if metric == "test_accuracy" else None
            placement = stats.place_published(
                p[metric], values, scale=scale, margin=margin, rounded=stats.rounding_interval(p[metric])
            )
            verdict = next(v for v in a.verdicts if v.metric == metric and v.source == p["source"])
            _same_placement(verdict.placement, placement)
            states.append(verdict.placement.state)
            # the final validation value repeats the test value against the same seeds: merged, not counted again
            assert any(x.startswith("final val.") for x in verdict.also)
    assert not any(v.metric.startswith("final_val") for v in a.verdicts)
    total = len(states)
    assert (
        f"**{states.count('reproduced')} of {total}** distinct published accuracies and losses are reproduced" in readme
    )
    assert (
        readme.count("**reproduced**")
        + readme.count("**outside**")
        + readme.count("**consistent, but the seeds cannot tell**")
    ) == total


def _same_placement(got, expected):
    """The report's placement is place_published's, up to Holm's correction of 'outside' over the family."""
    for field in ("mean", "std", "pi_low", "pi_high", "p_outside", "n"):
        assert getattr(got, field) == pytest.approx(getattr(expected, field), nan_ok=True), field
    assert got.state == expected.state or (expected.state == "outside" and got.state == "consistent")


def test_sweeps_published_matching_percent_and_best_of_several(reports):
    r = reports["sweeps"]
    study = r["study"]
    runs = load_runs(study, r["results"])
    a = analyze(study, runs)
    by_source = {v.source: v for v in a.verdicts}
    # float-tolerant match, and a value given in percent is converted
    v = by_source["text, in percent"]
    assert v.published == pytest.approx(0.965) and "percent" in v.note and v.n == 3
    # a `where` naming several configurations is placed against the best of them per seed
    v = by_source["best over the sweep"]
    relu = [t.trial_id for t in study.trials if t.values["flavour"] == "keras" and t.values["activation"] == "relu"]
    pivot = runs[runs["trial_id"].isin(relu)].pivot(index="seed", columns="trial_id", values="best_val_accuracy")
    _same_placement(
        v.placement,
        stats.place_published(
            0.9696,
            pivot.max(axis=1).to_numpy(),
            scale="logit",
            margin=study.smallest_effect,
            rounded=stats.rounding_interval(0.9696),
        ),
    )
    # best_over: the paper's maximum over learning rates against our per-seed maximum over them
    v = by_source["text, best over the learning rates"]
    sig = [t.trial_id for t in study.trials if t.values["flavour"] == "keras" and t.values["activation"] == "sigmoid"]
    pivot = runs[runs["trial_id"].isin(sig)].pivot(index="seed", columns="trial_id", values="best_val_accuracy")
    _same_placement(
        v.placement,
        stats.place_published(
            0.9692,
            pivot.max(axis=1).to_numpy(),
            scale="logit",
            margin=study.smallest_effect,
            rounded=stats.rounding_interval(0.9692),
        ),
    )
    assert "best over learning rate" in v.against and "our best per seed: " in v.note
    # rows are listed flavour by flavour, activation by activation, learning rate ascending
    md_rows = (r["first"] / "table.md").read_text().splitlines()[2:]
    assert md_rows[0].startswith("| Keras | sigmoid | 0.001 |") and md_rows[3].startswith("| Keras | sigmoid | 1 |")
    # the maximum over learning rates is marked as one in the pub. column, and explained
    md = (r["first"] / "table.md").read_text()
    assert "96.92‡" in md and "‡ the paper's best over learning rates" in md


def test_single_seed_and_diverged_runs_are_shown_not_crashing(reports):
    r = reports["sweeps"]
    table = _csv(r["first"]).set_index("trial_id")
    row = table.loc[SINGLE]
    assert row["n"] == 1 and math.isnan(row["test_accuracy_ci_low"]) and math.isnan(row["test_accuracy_std"])
    md = (r["first"] / "table.md").read_text()
    assert " n/a |" in md
    # nielsen + relu "diverges" in the synthetic data (NaN loss): its loss is NaN, its accuracy is shown
    nielsen_relu = [line for line in md.splitlines() if line.startswith("| Nielsen | relu |")]
    assert nielsen_relu and all("| NaN |" in line for line in nielsen_relu)


def test_random_search_published_against_the_trial_the_study_file_selects(reports):
    """The study file scores a trial by its mean objective over seeds: the report compares the published
    search result with that trial's seeds (not with each seed's best trial)."""
    r = reports["random"]
    study = r["study"]
    runs = load_runs(study, r["results"])
    a = analyze(study, runs)
    (v,) = a.verdicts
    assert "search" in v.against and "not among the sampled trials" in v.note
    chosen = runs.groupby("trial_id")["best_val_accuracy"].mean().idxmax()
    assert v.trial_id == chosen and chosen in v.against
    values = runs[runs["trial_id"] == chosen]["best_val_accuracy"].to_numpy()
    _same_placement(
        v.placement,
        stats.place_published(
            0.982, values, scale="logit", margin=study.smallest_effect, rounded=stats.rounding_interval(0.982)
        ),
    )
    assert "biased upwards" in v.against and v.against_label.startswith(f"the search's best trial, {chosen}")


def test_seeds_filter_and_cli(reports, tmp_path, capsys):
    r = reports["grid"]
    out = tmp_path / "out"
    code = cli.main(["report", str(GRID), "--results", str(r["results"]), "--out", str(out), "--seeds", "2"])
    assert code == 0
    table = _csv(out / r["study"].name)
    assert (table["n"] == 2).all() and (table["seeds"] == "0-1").all()
    assert "report written to" in capsys.readouterr().out


def test_no_stored_runs_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "reports"
    code = cli.main(["report", str(GRID), "--results", str(tmp_path / "empty"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 4
    assert str(tmp_path / "empty" / "naragundkar2024_grid") in err and "hpstudy run naragundkar2024_grid" in err
    assert not out.exists()


def test_seeds_not_stored_is_a_clear_error(reports, tmp_path, capsys):
    out = tmp_path / "reports"
    code = cli.main(
        ["report", str(GRID), "--results", str(reports["grid"]["results"]), "--out", str(out), "--seeds", "10:12"]
    )
    assert code == 4 and "--seeds 10:12" in capsys.readouterr().err
    assert not out.exists()


def test_stale_figures_are_removed_other_files_kept(reports, tmp_path):
    """A figure an earlier report wrote (listed in the manifest, bytes unchanged) and no longer made is
    removed; files the report did not write, or that were edited since, are never touched."""
    import hashlib
    import json

    from hpstudy.reporting.outputs import MANIFEST

    r = reports["random"]
    target = tmp_path / r["study"].name
    shutil.copytree(r["first"], target)
    (target / "figures" / "old_figure.png").write_bytes(b"stale")
    (target / "figures" / "edited_figure.png").write_bytes(b"edited")
    (target / "figures" / "users_figure.png").write_bytes(b"mine")
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["figures/old_figure.png"] = hashlib.sha256(b"stale").hexdigest()
    manifest["figures/edited_figure.png"] = hashlib.sha256(b"as written").hexdigest()
    (target / MANIFEST).write_text(json.dumps(manifest))
    (target / "results").mkdir()
    (target / "results" / "keep.txt").write_text("shipped runs live here")
    write_report(r["study"], r["results"], tmp_path)
    assert not (target / "figures" / "old_figure.png").exists()
    assert (target / "figures" / "edited_figure.png").read_bytes() == b"edited"
    assert (target / "figures" / "users_figure.png").read_bytes() == b"mine"
    assert (target / "results" / "keep.txt").exists()
    assert "figures/old_figure.png" not in json.loads((target / MANIFEST).read_text())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_epoch_means_carry_early_stopped_runs_forward():
    """Defect 9: a late epoch's mean is not taken over the runs that kept improving only."""
    from hpstudy.reporting.build import epoch_means

    means = epoch_means([[0.9, 0.95, 0.97], [0.8, 0.9, float("nan")], [0.85]])
    assert [n for _, n in means] == [3, 2, 1]  # runs that trained each epoch; a NaN counts for nothing
    # epoch 2: 0.95, 0.9 and the stopped run's 0.85 carried forward; epoch 3: 0.97 and 0.85 (a NaN is left out)
    assert [m for m, _ in means] == pytest.approx([0.85, (0.95 + 0.9 + 0.85) / 3, (0.97 + 0.85) / 2])
    assert epoch_means([]) == []


def test_training_length_hint_reads_where_the_curve_meets_the_published_value():
    from hpstudy.reporting.build import training_length_hint

    curve = [(0.95, 10), (0.965, 10), (0.972, 10), (0.976, 10)]
    epoch, reading = training_length_hint(0.966, curve, higher_is_better=True)
    assert epoch == 2 and "fewer epochs" in reading
    epoch, reading = training_length_hint(0.99, curve, higher_is_better=True)  # beyond every epoch
    assert epoch == 4 and "setup" in reading and "not in training length" in reading
    epoch, reading = training_length_hint(0.9755, curve, higher_is_better=True)  # at the end, just below
    assert epoch == 4 and "last epoch" in reading
    losses = [(0.30, 5), (0.20, 5), (0.15, 5)]
    assert training_length_hint(0.10, losses, higher_is_better=False)[1].startswith("better than")
    assert training_length_hint(0.21, losses, higher_is_better=False)[0] == 2
