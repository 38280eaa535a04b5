"""`hpstudy verify --amend-evaluation REASON`: stored evaluation values replaced by re-made ones, only for
runs whose training reproduced bit for bit, every old and new value in the store's amendment log."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_STUDY, run_hashes, synthetic_dataset

from hpstudy import amend, cli, store
from hpstudy import verify as V
from hpstudy.errors import StoreError, StudyError

FACTORS_ONE = "learning_rate = [0.01]\nbatch_size = [64]\ndropout = [0.2]"
REASON = "per-lane evaluation: a test of the amendment path"


def synthetic_for(runs):
    """verify's dataset maker, for the synthetic test data."""
    return {("mnist", "test"): synthetic_dataset()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A store of 2 runs (1 trial x 2 seeds) trained once for this module, kept pristine."""
    folder = tmp_path_factory.mktemp("amend")
    (folder / "small.toml").write_text(SMALL_STUDY.format(factors=FACTORS_ONE))
    run_hashes(folder / "small.toml", range(2), folder / "results")
    return folder / "results" / "small"


@pytest.fixture
def stored(trained, tmp_path) -> Path:
    """A copy of the trained store in tmp_path/results/small, beside its study file tmp_path/small.toml."""
    (tmp_path / "small.toml").write_bytes((trained.parent.parent / "small.toml").read_bytes())
    copy = tmp_path / "results" / "small"
    copy.mkdir(parents=True)
    for part in trained.glob("part-*.parquet"):
        (copy / part.name).write_bytes(part.read_bytes())
    return copy


def rewrite_parts(directory: Path, change) -> None:
    """Apply `change(rows)` to every part in place (as old code's stored values would have it)."""
    for part in directory.glob("part-*.parquet"):
        table = pq.read_table(part)
        rows = table.to_pylist()
        change(rows)
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), part)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def nudge_evaluation(victim: str):
    """An edit of evaluation values only: 1 ulp in one epoch's val_loss and in the test loss."""

    def change(rows):
        for row in rows:
            if row["run_id"] == victim:
                row["val_loss"] = [row["val_loss"][0], row["val_loss"][1] * (1 + 2**-52)] + row["val_loss"][2:]
                row["test_loss"] = row["test_loss"] * (1 + 2**-52)

    return change


def test_evaluation_only_difference_is_amended_and_logged(stored):
    before = store.read_runs(stored).set_index("run_id")
    victim = min(before.index)
    rewrite_parts(stored, nudge_evaluation(victim))
    tampered = store.read_runs(stored).set_index("run_id")
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, amend_evaluation=REASON)
    assert outcome.ok and (outcome.checked, outcome.matched, outcome.amended_runs) == (2, 1, 1)
    assert sorted(m.field for m in outcome.mismatches) == ["test_loss", "val_loss"]
    after = store.read_runs(stored).set_index("run_id")
    # the re-made values are the original ones; every other value of every run is untouched
    for column in after.columns:
        for rid in after.index:
            a, b = after.at[rid, column], before.at[rid, column]
            assert repr(list(a) if hasattr(a, "__len__") and not isinstance(a, (str, bytes)) else a) == repr(
                list(b) if hasattr(b, "__len__") and not isinstance(b, (str, bytes)) else b
            ), (rid, column)
    (entry,) = amend.read_log(stored)
    assert entry["reason"] == REASON and set(entry["runs"]) == {victim}
    change = entry["runs"][victim]
    assert set(change) == {"val_loss", "test_loss"}
    assert change["val_loss"]["epochs"] == [1]
    assert change["val_loss"]["old"] == [repr(float(tampered.at[victim, "val_loss"][1]))]
    assert change["val_loss"]["new"] == [repr(float(before.at[victim, "val_loss"][1]))]
    assert change["test_loss"] == {
        "old": repr(float(tampered.at[victim, "test_loss"])),
        "new": repr(float(before.at[victim, "test_loss"])),
    }
    # and now the store verifies plainly
    again = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None)
    assert (again.checked, again.matched) == (2, 2)
    # the report says so, with the reason
    out = stored.parent.parent / "report"
    assert (
        cli.main(
            ["report", str(stored.parent.parent / "small.toml"), "--results", str(stored.parent), "--out", str(out)]
        )
        == 0
    )
    text = next(out.rglob("README.md")).read_text()
    assert "evaluation values (validation and test metrics, not the training) of 1 of these runs" in text
    assert REASON in text and "amendments.jsonl" in text


def test_a_training_difference_is_never_amended(stored):
    victim = min(store.read_runs(stored)["run_id"])

    def change(rows):
        nudge_evaluation(victim)(rows)
        for row in rows:
            if row["run_id"] == victim:
                row["train_loss"] = [row["train_loss"][0] * (1 + 2**-52)] + row["train_loss"][1:]

    rewrite_parts(stored, change)
    files = snapshot(stored)
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, amend_evaluation=REASON)
    assert not outcome.ok and outcome.amended == [] and (outcome.checked, outcome.matched) == (2, 1)
    assert snapshot(stored) == files  # nothing written, no log


def test_cli_amends_then_verifies(stored, monkeypatch, capsys):
    monkeypatch.setattr(V, "_datasets", lambda runs, data_dir: synthetic_for(runs))
    victim = min(store.read_runs(stored)["run_id"])
    rewrite_parts(stored, nudge_evaluation(victim))
    assert cli.main(["verify", str(stored), "--lock", str(V.LOCK_FILE), "--amend-evaluation", REASON]) == 0
    out = capsys.readouterr().out
    assert f"AMENDED run {victim} test_loss" in out and "evaluation values of 1 runs amended" in out
    assert cli.main(["verify", str(stored), "--lock", str(V.LOCK_FILE)]) == 0
    assert "2 of 2 runs match bit for bit" in capsys.readouterr().out


def test_an_interrupted_amendment_pass_keeps_the_chunks_it_finished(tmp_path, monkeypatch):
    """Two runs in two chunks (batch 32 and 64 are separate programs), both with an evaluation value nudged;
    the pass is interrupted after the first chunk. The first run is amended and logged, the second untouched;
    a second pass finds the first equal and amends the second; the report counts both under one reason."""
    from hpstudy import runner

    (tmp_path / "small.toml").write_text(
        SMALL_STUDY.format(factors="learning_rate = [0.01]\nbatch_size = [32, 64]\ndropout = [0.2]").replace(
            "seeds = 2", "seeds = 1"
        )
    )
    run_hashes(tmp_path / "small.toml", range(1), tmp_path / "results")
    directory = tmp_path / "results" / "small"
    before = store.read_runs(directory).set_index("run_id")
    assert len(before) == 2 and before["group_id"].nunique() == 2
    for victim in before.index:
        rewrite_parts(directory, nudge_evaluation(victim))
    real_train = runner.train

    def one_chunk_then_stop(specs, dataset, on_chunk, *args):
        done = []
        real_train(specs, dataset, lambda results: (on_chunk(results), done.append(1)), *args)
        if done:
            raise KeyboardInterrupt  # as Ctrl-C after the first group's chunk

    calls = []

    def interrupted(specs, dataset, on_chunk, *args):
        calls.append(1)
        if len(calls) == 1:
            return one_chunk_then_stop(specs[:1], dataset, on_chunk, *args)
        raise AssertionError("not reached")

    monkeypatch.setattr(runner, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        V.verify(directory, load_data=synthetic_for, progress=False, lock_path=None, amend_evaluation=REASON)
    (entry,) = amend.read_log(directory)
    first = next(iter(entry["runs"]))
    after = store.read_runs(directory).set_index("run_id")
    assert after.at[first, "test_loss"] == before.at[first, "test_loss"]  # re-made
    (second,) = set(before.index) - {first}
    assert after.at[second, "test_loss"] != before.at[second, "test_loss"]  # still the nudged value
    monkeypatch.setattr(runner, "train", real_train)
    outcome = V.verify(directory, load_data=synthetic_for, progress=False, lock_path=None, amend_evaluation=REASON)
    assert (outcome.checked, outcome.matched, outcome.amended_runs) == (2, 1, 1)
    assert [set(e["runs"]) for e in amend.read_log(directory)] == [{first}, {second}]
    assert V.verify(directory, load_data=synthetic_for, progress=False, lock_path=None).matched == 2
    from hpstudy.reporting.analysis import amendments_of

    assert [(reason, n) for _, reason, n in amendments_of(directory, set(before.index))] == [(REASON, 2)]


def test_merge_carries_the_amendment_log(stored, tmp_path):
    """A merged store holds the amended values, so it names the amendments too: `hpstudy merge` carries each
    source's log into OUT (once, however often the merge is run), and OUT's report shows the reason."""
    from hpstudy import storeops

    rewrite_parts(stored, nudge_evaluation(min(store.read_runs(stored)["run_id"])))
    V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, amend_evaluation=REASON)
    out = tmp_path / "merged" / "small"
    assert cli.main(["merge", str(out), str(stored)]) == 0
    assert amend.read_log(out) == amend.read_log(stored) and len(amend.read_log(out)) == 1
    storeops.merge(out, [stored])  # again: nothing new to write, nothing carried twice
    assert (out / amend.LOG_NAME).read_bytes() == (stored / amend.LOG_NAME).read_bytes()
    report = tmp_path / "report"
    assert (
        cli.main(
            ["report", str(stored.parent.parent / "small.toml"), "--results", str(out.parent), "--out", str(report)]
        )
        == 0
    )
    assert REASON in next(report.rglob("README.md")).read_text()


def test_amendment_needs_a_reason_and_a_recorded_environment(stored):
    with pytest.raises(StudyError, match="needs a reason"):
        V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, amend_evaluation=" ")

    def change(rows):
        for row in rows:
            env = json.loads(row["environment"])
            env["packages"]["optax"] = "0.0.1"
            row["environment"] = json.dumps(env, sort_keys=True)

    rewrite_parts(stored, change)
    files = snapshot(stored)
    with pytest.raises(StoreError, match="not amending"):
        V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None, amend_evaluation=REASON)
    assert snapshot(stored) == files


def test_amend_store_refuses_non_evaluation_fields(stored):
    rid = min(store.read_runs(stored)["run_id"])
    files = snapshot(stored)
    with pytest.raises(StoreError, match="only evaluation values, not param_sha256"):
        amend.amend_store(stored, {rid: {"param_sha256": "x"}}, {rid: {"param_sha256": "y"}}, REASON, "test")
    assert snapshot(stored) == files


def test_a_store_log_that_is_not_json_is_a_clear_error(stored):
    (stored / amend.LOG_NAME).write_text("not json\n")
    with pytest.raises(StoreError, match="amendments.jsonl is not an amendment log"):
        amend.read_log(stored)
