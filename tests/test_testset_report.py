"""The report's test-set subsection: intervals where every compared run stores predictions, McNemar for
single runs, and a plain statement where runs have none (old stores report as before)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpstudy import store
from hpstudy.reporting import testset_report, testset_stats
from hpstudy.reporting.analysis import trial_label
from hpstudy.reporting.build import analyze, load_runs, synthetic_records, write_report
from hpstudy.study import load_study
from tests.test_methods import LR_STUDY

N_IMAGES = 1000


def with_predictions(records: list[dict], keep=lambda record: True) -> list[dict]:
    """Records given made-up predictions whose correctness agrees with their stored test accuracy."""
    labels = np.arange(N_IMAGES) % 10
    for r in records:
        if not keep(r):
            continue
        rng = np.random.default_rng(int(r["run_id"][:8], 16))
        correct = np.zeros(N_IMAGES, bool)
        correct[rng.permutation(N_IMAGES)[: round(r["test_accuracy"] * N_IMAGES)]] = True
        predicted = np.where(correct, labels, (labels + 1) % 10).astype(np.uint8)
        r["test_accuracy"] = float(np.float32(correct.sum()) / np.float32(N_IMAGES))
        r.update(test_predictions=predicted.tobytes(), test_correct=np.packbits(correct).tobytes())
    return records


def report(tmp: Path, seeds, predictions=True, keep=lambda record: True, whole: bool = False) -> str:
    """The toy learning-rate study's README over synthetic runs, with or without stored predictions: the
    whole report (whole=True, figures included: slow) or only its test-set subsection, as the report's two
    hooks make it."""
    path = tmp / "toy_lr.toml"
    path.write_text(LR_STUDY.format(published="", extra=""))
    study = load_study(path)
    records = synthetic_records(study, seeds)
    if predictions:
        records = with_predictions(records, keep)
    results = tmp / "results"
    store.write_chunk(store.study_dir(results, study.name), records)
    if whole:
        return (write_report(study, results, tmp / "out") / "README.md").read_text()
    runs = testset_report.attach(load_runs(study, results), store.study_dir(results, study.name))
    return "\n".join(testset_report.section(analyze(study, runs), trial_label) + ["## next"])


def subsection(readme: str) -> list[str]:
    """The lines of the test-set subsection."""
    lines = readme.splitlines()
    start = lines.index("### Including the test set's sampling error")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("#"))
    return lines[start:end]


def test_runs_with_predictions_get_two_level_intervals_in_the_written_report(tmp_path):
    text = subsection(report(tmp_path, range(10), whole=True))
    rows = [line for line in text if line.startswith("| lr")]
    assert "30 of 30 runs store their test-set predictions" in " ".join(text)
    assert rows, "each compared pair gets a row"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        seeds_only = [float(x) for x in cells[4].strip("[]").split(",")]
        both = [float(x) for x in cells[5].strip("[]").split(",")]
        # the test set's sampling error widens the interval
        assert both[1] - both[0] > seeds_only[1] - seeds_only[0]
        assert len(cells) == 6  # ten runs a side: no McNemar column


def test_interval_printed_is_the_bootstrap_of_the_stored_bits(tmp_path):
    readme = report(tmp_path, range(10))
    runs = store.read_runs(tmp_path / "results" / "toy_lr")
    by_trial = {
        t: np.stack([testset_stats.unpack_correct(b, N_IMAGES) for b in g.sort_values("seed")["test_correct"]])
        for t, g in runs.groupby("trial_id")
    }
    row = next(line for line in subsection(readme) if line.startswith("| lr"))
    first, second = [c.strip() for c in row.strip("|").split("|")][:2]
    label = {"lr 0.001": "learning_rate=0.001", "lr 0.01": "learning_rate=0.01", "lr 0.1": "learning_rate=0.1"}
    ci = testset_stats.paired_bootstrap(by_trial[label[first]], by_trial[label[second]])
    assert f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]" in row


def test_single_runs_get_mcnemar_and_no_interval(tmp_path):
    readme = report(tmp_path, range(1))
    rows = [line for line in subsection(readme) if line.startswith("| lr")]
    runs = store.read_runs(tmp_path / "results" / "toy_lr")
    assert len(rows) == 2  # the best run against each of the two others
    best = runs.loc[runs["test_accuracy"].idxmax()]
    bits = {r["trial_id"]: testset_stats.unpack_correct(r["test_correct"], N_IMAGES) for _, r in runs.iterrows()}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4:6] == ["n/a", "n/a"]
        other = next(t for t in bits if t != best["trial_id"] and cells[1] == "lr " + t.split("=")[1])
        m = testset_stats.mcnemar(bits[best["trial_id"]], bits[other])
        assert cells[6] == f"{m.pvalue:.2g} ({m.only_a} vs {m.only_b})"


def test_too_few_runs_for_an_interval_print_no_table(tmp_path):
    text = subsection(report(tmp_path, range(3)))
    assert not [line for line in text if line.startswith("|")]
    assert any("no interval is given" in line for line in text)


def test_old_store_without_predictions_says_no_comparison_includes_the_test_set(tmp_path):
    text = " ".join(subsection(report(tmp_path, range(3), predictions=False)))
    assert "do not store their test-set predictions" in text and "no comparison" in text


def test_pairs_with_a_run_lacking_predictions_are_left_out(tmp_path):
    text = subsection(report(tmp_path, range(10), keep=lambda r: r["trial_id"] != "learning_rate=0.1"))
    assert "20 of 30 runs" in " ".join(text)
    rows = [line for line in text if line.startswith("| lr")]
    assert rows and all("lr 0.1 |" not in row for row in rows)
