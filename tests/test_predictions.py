"""Test-set predictions: stored with every new run, deterministic, independent of the chunk, consistent with
the stored accuracy; added to older runs only through `hpstudy verify --add-predictions`, which writes
nothing for a run it did not reproduce; stores without them still load."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpstudy import store
from hpstudy import verify as V
from hpstudy.predictions import consistent
from hpstudy.reporting.testset_stats import unpack_correct
from hpstudy.study import load_study
from hpstudy.training import engine
from tests.conftest import run_hashes, synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
# One epoch at a small learning rate leaves the synthetic runs short of 100%: some predictions are wrong.
HARD = {"epochs = 3": "epochs = 1"}
FACTORS_HARD = "learning_rate = [0.0003, 0.001]\nbatch_size = [64]\ndropout = [0.0, 0.2]"


def synthetic_for(runs):
    """verify's dataset maker, for the synthetic test data."""
    return {("mnist", "test"): synthetic_dataset()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A store of 8 runs (4 trials x 2 seeds) trained once for this module, with predictions."""
    from tests.conftest import SMALL_STUDY

    folder = tmp_path_factory.mktemp("predictions")
    text = SMALL_STUDY.format(factors=FACTORS_HARD)
    for old, new in HARD.items():
        text = text.replace(old, new)
    (folder / "small.toml").write_text(text)
    run_hashes(folder / "small.toml", range(2), folder / "results")
    return folder / "results" / "small"


@pytest.fixture
def stored(trained, tmp_path) -> Path:
    """A copy of the trained store that a test may change."""
    return Path(shutil.copytree(trained, tmp_path / "results" / "small"))


def test_new_runs_store_one_byte_per_test_image_consistent_with_their_accuracy(stored):
    runs = store.read_runs(stored)
    labels = synthetic_dataset().test.labels
    assert len(runs) == 8
    accuracies = set()
    for _, run in runs.iterrows():
        predicted = np.frombuffer(run["test_predictions"], np.uint8)
        correct = unpack_correct(run["test_correct"], len(labels))
        assert predicted.shape == labels.shape and predicted.max() <= 9
        assert (correct == (predicted == labels)).all()
        assert consistent(run["test_correct"], len(labels), run["test_accuracy"])
        accuracies.add(run["test_accuracy"])
    assert min(accuracies) < 1.0 and len(accuracies) > 1  # wrong predictions exist, and differ between runs


def predictions_by_width(width: int, specs) -> dict:
    """{run_id: (param hash, predictions)} of `specs` trained in chunks of `width` in this process."""
    device = engine.device_data(synthetic_dataset())
    out = {}
    engine.execute(
        specs,
        lambda _: device,
        lambda rs: out.update({r.spec.run_id: (r.param_sha256, r.test_predictions) for r in rs}),
        width_rule=lambda config: width,
    )
    return out


def test_predictions_and_bits_do_not_depend_on_the_chunk(write_study):
    study = load_study(write_study(FACTORS_HARD, **HARD))
    specs = study.runs(range(2))
    crowd = predictions_by_width(3, specs)  # 8 runs through refilled chunks of 3
    assert len(crowd) == 8 and len({p for _, p in crowd.values()}) > 1
    # the chunk width is part of a run's identity (docs/design.md); the chunk's company is not
    for spec in (specs[0], specs[5]):
        assert predictions_by_width(3, [spec]) == {spec.run_id: crowd[spec.run_id]}


def test_verify_compares_stored_predictions(stored):
    victim = min(store.read_runs(stored)["run_id"])
    for part in stored.glob("part-*.parquet"):
        rows = pq.read_table(part).to_pylist()
        for row in rows:
            if row["run_id"] == victim:
                flipped = bytearray(row["test_predictions"])
                flipped[0] = (flipped[0] + 1) % 10
                row["test_predictions"] = bytes(flipped)
        pq.write_table(pa.Table.from_pylist(rows), part)
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None)
    assert [(m.run_id, m.field) for m in outcome.mismatches] == [(victim, "test_predictions")]


def strip_predictions(directory: Path) -> dict[str, pa.Table]:
    """Remove the prediction columns from every part, as a store made before they existed; the parts before."""
    before = {}
    for part in directory.glob("part-*.parquet"):
        table = pq.read_table(part)
        before[part.name] = table
        pq.write_table(table.drop_columns(list(store.PREDICTION_COLUMNS)), part)
    return before


def test_old_store_without_predictions_loads_and_verifies(stored):
    strip_predictions(stored)
    runs = store.read_runs(stored)
    assert len(runs) == 8 and not set(store.PREDICTION_COLUMNS) & set(runs.columns)
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None)
    assert outcome.ok and outcome.added == []
    assert all("test_predictions" not in pq.read_schema(p).names for p in stored.glob("part-*.parquet"))


def test_add_predictions_restores_them_exactly_and_changes_nothing_else(stored):
    before = strip_predictions(stored)
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, add_predictions=True)
    assert outcome.ok
    (added,) = outcome.added
    assert (added.runs_added, added.already, added.left) == (8, 0, [])
    for part in stored.glob("part-*.parquet"):
        after = pq.read_table(part)
        assert after.equals(before[part.name])  # every column, the added ones included, as a new run stores them
    again = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, add_predictions=True)
    assert again.added[0].runs_added == 0 and again.added[0].already == 8


def test_add_predictions_writes_nothing_for_a_run_that_does_not_reproduce(stored):
    strip_predictions(stored)
    parts = sorted(stored.glob("part-*.parquet"))
    victim_part = parts[0]
    table = pq.read_table(victim_part)
    victim = table.column("run_id")[0].as_py()
    rows = table.to_pylist()
    rows[0]["test_loss"] = rows[0]["test_loss"] + 1e-6
    pq.write_table(pa.Table.from_pylist(rows), victim_part)
    tampered = victim_part.read_bytes()
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, add_predictions=True)
    assert not outcome.ok and [m.run_id for m in outcome.mismatches] == [victim]
    assert victim_part.read_bytes() == tampered  # its part is left exactly as it was
    (added,) = outcome.added
    assert victim in added.left and added.runs_added == 8 - table.num_rows
    assert all("test_predictions" in pq.read_schema(p).names for p in parts[1:])


def test_add_predictions_fills_a_compacted_part_holding_runs_with_and_without(stored):
    from hpstudy import storeops

    complete = store.read_runs(stored).set_index("run_id")
    parts = sorted(stored.glob("part-*.parquet"))
    pq.write_table(pq.read_table(parts[0]).drop_columns(list(store.PREDICTION_COLUMNS)), parts[0])
    stripped = set(pq.read_table(parts[0]).column("run_id").to_pylist())
    storeops.compact(stored)
    (part,) = store.live_parts(stored)
    assert pq.read_table(part).column("test_predictions").null_count == len(stripped)
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, add_predictions=True)
    assert outcome.ok and (outcome.added[0].runs_added, outcome.added[0].already) == (len(stripped), 8 - len(stripped))
    after = store.read_runs(stored).set_index("run_id")
    for column in store.PREDICTION_COLUMNS:
        assert after[column].to_dict() == complete[column].to_dict()


@pytest.mark.parametrize("old_first", [True, False])
def test_merging_a_copy_without_predictions_keeps_the_one_with(stored, tmp_path, old_first):
    from hpstudy import storeops

    complete = store.read_runs(stored).set_index("run_id")
    old = Path(shutil.copytree(stored, tmp_path / "old" / "small"))
    strip_predictions(old)
    sources = [old, stored] if old_first else [stored, old]
    report = storeops.merge(tmp_path / "merged" / "small", sources)
    assert (report.runs, report.duplicates) == (8, 8)
    merged = store.read_runs(report.directory).set_index("run_id")
    for column in store.PREDICTION_COLUMNS:
        assert merged[column].to_dict() == complete[column].to_dict()


SHIPPED_WITH_PREDICTIONS = {"naragundkar2024_grid": 80, "naragundkar2024_grid_holdout": 40}  # studies: runs


@pytest.mark.parametrize("name", sorted(SHIPPED_WITH_PREDICTIONS))
def test_shipped_runs_have_predictions_consistent_with_their_accuracy(name):
    runs = store.read_runs(ROOT / "reports" / "_runs" / name)
    assert len(runs) == SHIPPED_WITH_PREDICTIONS[name]
    for _, run in runs.iterrows():
        assert len(run["test_predictions"]) == 10_000
        assert consistent(run["test_correct"], 10_000, run["test_accuracy"])
