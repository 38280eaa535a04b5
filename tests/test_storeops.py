"""Job-array shards, merging stores and compacting a store (hpstudy/storeops.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from hpstudy import cli, store, storeops
from hpstudy.errors import StoreError, StudyError
from hpstudy.reporting.analysis import COLUMNS
from hpstudy.reporting.build import synthetic_records
from hpstudy.runner import run_study
from hpstudy.study import load_study
from tests.conftest import FACTORS_PERMUTED, synthetic_dataset

GRID = Path("studies/naragundkar2024_grid.toml")
G = "naragundkar2024_grid"  # a store folder is named after its study
VALUE_COLUMNS_EXCLUDED = list(storeops.TIMING_COLUMNS)


def canonical(runs: pd.DataFrame) -> pd.DataFrame:
    """A store's runs in a fixed row and column order, for exact comparison."""
    return runs.sort_values("run_id").reset_index(drop=True)[sorted(runs.columns)]


def rows_in_parts(directory: Path) -> int:
    """Rows over the store's live parts: a run seen twice counts twice (the readers' dedup is not relied on)."""
    return sum(store.read_parts(directory, lambda part: pq.read_table(part, columns=["run_id"]).num_rows))


def synthetic_store(directory: Path, seeds: int = 10, per_part: int = 3) -> pd.DataFrame:
    """A store of fake but schema-valid grid runs in many small parts, as a run writes them; its runs."""
    records = synthetic_records(load_study(GRID), range(seeds))
    for i in range(0, len(records), per_part):
        store.write_chunk(directory, records[i : i + per_part])
    return canonical(store.read_runs(directory))


# ---- shards and merge --------------------------------------------------------------------------------


def test_shards_partition_runs_by_identity_whatever_the_trial_order(write_study):
    runs = load_study(write_study()).runs(range(30))
    permuted = load_study(write_study(FACTORS_PERMUTED, name="permuted.toml")).runs(range(30))
    shards = [storeops.Shard(i, 3) for i in range(3)]

    def partition(specs):
        return [{s.run_id for s in specs if shard.holds(s.run_id)} for shard in shards]

    parts = partition(runs)
    assert sum(len(p) for p in parts) == len(runs) == 120
    assert set().union(*parts) == {s.run_id for s in runs}
    assert all(len(p) > 20 for p in parts)  # the hash spreads runs over every shard
    assert partition(permuted) == parts


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1", "a/b", "1/0", "1/3/4"])
def test_bad_shard_is_a_clear_error(text):
    with pytest.raises(StudyError, match="expected I/N with integers 0 <= I < N"):
        storeops.parse_shard(text)


def test_three_shards_merged_equal_one_unsharded_run(write_study, tmp_path, capsys):
    study = load_study(write_study())
    seeds = range(3)
    whole = run_study(study, seeds, synthetic_dataset, tmp_path / "whole", progress=False)
    shard_dirs = []
    for i in range(3):
        report = run_study(
            study, seeds, synthetic_dataset, tmp_path / f"shard{i}", progress=False, shard=storeops.Shard(i, 3)
        )
        assert 0 < report.computed < 12
        shard_dirs.append(report.directory)
    assert sum(len(store.stored_ids(d)) for d in shard_dirs) == 12
    out = tmp_path / "merged" / study.name
    assert cli.main(["merge", str(out), *map(str, shard_dirs)]) == 0
    assert "12 runs; 12 written, 0 identical copies taken once" in capsys.readouterr().out
    merged = canonical(store.read_runs(out)).drop(columns=VALUE_COLUMNS_EXCLUDED)
    unsharded = canonical(store.read_runs(whole.directory)).drop(columns=VALUE_COLUMNS_EXCLUDED)
    assert len(merged) == 12
    assert dict(zip(merged["run_id"], merged["param_sha256"])) == dict(
        zip(unsharded["run_id"], unsharded["param_sha256"])
    )
    pd.testing.assert_frame_equal(merged, unsharded)
    # merging again adds nothing; the shards' stores themselves are untouched
    assert cli.main(["merge", str(out), *map(str, shard_dirs)]) == 0
    assert "12 runs; 0 written, 12 identical copies taken once" in capsys.readouterr().out


def test_identical_duplicates_are_taken_once(tmp_path):
    runs = synthetic_store(tmp_path / "a" / G)
    shutil.copytree(tmp_path / "a" / G, tmp_path / "b" / G)
    report = storeops.merge(tmp_path / "out" / G, [tmp_path / "a" / G, tmp_path / "b" / G])
    assert (report.runs, report.written, report.duplicates) == (80, 80, 80)
    pd.testing.assert_frame_equal(canonical(store.read_runs(tmp_path / "out" / G)), runs)


def test_run_twice_with_different_values_is_refused_naming_both_parts(tmp_path, capsys):
    synthetic_store(tmp_path / "a" / G)
    part = store.live_parts(tmp_path / "a" / G)[0]
    changed = pd.read_parquet(part)
    changed.loc[0, "test_accuracy"] = 0.5
    (tmp_path / "b" / G).mkdir(parents=True)
    changed.iloc[:1].to_parquet(tmp_path / "b" / G / "part-changed.parquet")
    out = tmp_path / "out" / G
    assert cli.main(["merge", str(out), str(tmp_path / "a" / G), str(tmp_path / "b" / G)]) == StoreError.exit_code
    err = capsys.readouterr().err
    assert str(part) in err and str(tmp_path / "b" / G / "part-changed.parquet") in err
    assert "differing in test_accuracy." in err and changed.loc[0, "run_id"] in err
    assert not out.exists()  # nothing written


def test_merge_refuses_other_studies_and_missing_stores(tmp_path):
    synthetic_store(tmp_path / "a" / G)
    records = synthetic_records(load_study(Path("studies/fabrizio2021_lr.toml")), range(1))
    store.write_chunk(tmp_path / "b" / "fabrizio2021_lr", records[:4])
    with pytest.raises(StoreError, match="runs of different studies"):
        storeops.merge(tmp_path / "out" / G, [tmp_path / "a" / G, tmp_path / "b" / "fabrizio2021_lr"])
    with pytest.raises(StoreError, match="does not exist"):
        storeops.merge(tmp_path / "out" / G, [tmp_path / "nowhere"])
    with pytest.raises(StoreError, match=rf"holds the stores {G}: pass"):
        storeops.merge(tmp_path / "out" / G, [tmp_path / "a"])
    with pytest.raises(StoreError, match=rf"OUT .*other must be named after the study: .*/{G}"):
        storeops.merge(tmp_path / "other", [tmp_path / "a" / G])
    assert not (tmp_path / "out").exists() and not (tmp_path / "other").exists()


# ---- compaction ----------------------------------------------------------------------------------------


class Crash(Exception):
    """A simulated crash at one step of a compaction."""


def compaction_steps(tmp_path: Path) -> list[str]:
    """Every checkpoint a full compaction of the test store passes, in order."""
    steps: list[str] = []
    synthetic_store(tmp_path / "steps" / G)
    storeops.compact(tmp_path / "steps" / G, runs_per_part=30, checkpoint=steps.append)
    return steps


def test_compaction_keeps_every_value_and_leaves_few_parts(tmp_path, capsys):
    runs = synthetic_store(tmp_path / "s" / G)
    assert len(store.live_parts(tmp_path / "s" / G)) == 27
    assert cli.main(["compact", str(tmp_path / "s" / G), "--runs-per-part", "30"]) == 0
    assert "80 runs in 3 parts (were 27)" in capsys.readouterr().out
    assert len(list((tmp_path / "s" / G).glob("part-*"))) == 3
    pd.testing.assert_frame_equal(canonical(store.read_runs(tmp_path / "s" / G)), runs)
    fast = canonical(store.read_columns(tmp_path / "s" / G, list(COLUMNS)))
    pd.testing.assert_frame_equal(fast, runs[fast.columns])
    # a compact store is left as it is
    assert storeops.compact(tmp_path / "s" / G, runs_per_part=30).parts_after == 3


def test_compacting_again_rewrites_only_the_small_parts(tmp_path):
    directory = tmp_path / "s" / G
    synthetic_store(directory)
    storeops.compact(directory, runs_per_part=30)
    large = {p.name: p.stat().st_mtime_ns for p in store.live_parts(directory)}
    records = synthetic_records(load_study(GRID), range(10, 12))
    for i in range(0, len(records), 2):
        store.write_chunk(directory, records[i : i + 2])
    runs = canonical(store.read_runs(directory))
    report = storeops.compact(directory, runs_per_part=30)
    assert (report.runs, report.parts_before, report.parts_after) == (96, 3 + 8, 3 + 1)
    after = {p.name: p.stat().st_mtime_ns for p in store.live_parts(directory)}
    assert {n: after[n] for n in large} == large  # parts of 30, 30 and 20 runs (at least half full) untouched
    pd.testing.assert_frame_equal(canonical(store.read_runs(directory)), runs)


def test_a_run_that_writes_many_parts_compacts_its_store(write_study, tmp_path, monkeypatch):
    monkeypatch.setattr(storeops, "AUTO_COMPACT_PARTS", 2)
    study = load_study(write_study())
    report = run_study(study, range(2), synthetic_dataset, tmp_path, progress=False)
    assert report.computed == 8
    assert len(store.live_parts(report.directory)) == 1 and len(store.read_runs(report.directory)) == 8


def test_crash_at_every_step_of_a_compaction_loses_nothing(tmp_path):
    steps = compaction_steps(tmp_path)
    assert steps[:3] == ["pending:0", "pending:1", "pending:2"] and "commit" in steps and steps[-1] == "closed"
    assert any(s.startswith("rename:") for s in steps) and any(s.startswith("remove:") for s in steps)
    for step in steps:
        directory = tmp_path / step.replace(":", "_") / G
        runs = synthetic_store(directory)
        ids = set(runs["run_id"])

        def crash(at, step=step):
            if at == step:
                raise Crash(step)

        with pytest.raises(Crash):
            storeops.compact(directory, runs_per_part=30, checkpoint=crash)
        # the crashed store reads as before: every run exactly once, every value the same
        pd.testing.assert_frame_equal(canonical(store.read_runs(directory)), runs, obj=f"after a crash at {step}")
        assert store.stored_ids(directory) == ids and rows_in_parts(directory) == len(ids), step
        report_runs = store.read_columns(directory, list(COLUMNS))
        assert sorted(report_runs["run_id"]) == sorted(ids), step
        # the next compaction finishes (or redoes) the work
        storeops.compact(directory, runs_per_part=30)
        pd.testing.assert_frame_equal(canonical(store.read_runs(directory)), runs, obj=f"recovered from {step}")
        assert len(store.live_parts(directory)) == 3
        assert not list(directory.glob("*.pending")) and not list(directory.glob(".part-*"))


def test_parts_a_run_writes_during_a_compaction_are_kept(tmp_path):
    directory = tmp_path / "s" / G
    synthetic_store(directory)
    extra = synthetic_records(load_study(GRID), range(10, 11))

    def run_writes(step):
        if step in ("pending:0", "commit", "rename:0", "remove:0"):  # a run's chunk lands mid-compaction
            store.write_chunk(directory, [extra.pop()])

    storeops.compact(directory, runs_per_part=30, checkpoint=run_writes)
    assert len(extra) == 8 - 4  # four chunks written, one at each step above
    assert len(store.stored_ids(directory)) == rows_in_parts(directory) == 84
    assert len(store.live_parts(directory)) == 3 + 4


def test_bad_shard_on_the_command_line_exits_with_the_argument_error(capsys):
    assert cli.main(["run", "naragundkar2024_grid", "--shard", "3/3"]) == StudyError.exit_code
    assert "--shard '3/3' is invalid" in capsys.readouterr().err


def test_readers_see_every_run_once_while_compacting(tmp_path):
    """A reader in another thread, listing and reading over and over during compactions, always gets the
    store's runs exactly once."""
    directory = tmp_path / "s" / G
    ids = set(synthetic_store(directory, seeds=20, per_part=2)["run_id"])  # 160 runs
    seen, errors, done = [], [], threading.Event()

    def reader():
        while not done.is_set():
            try:
                seen.append(rows_in_parts(directory) == len(ids) and store.stored_ids(directory) == ids)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for per_part in (7, 40, 100):  # each compaction rewrites every part (all under half full)
            storeops.compact(directory, runs_per_part=per_part)
    finally:
        done.set()
        thread.join()
    assert not errors, errors
    assert seen and all(seen)
    assert len(store.live_parts(directory)) == 2


KILLED_COMPACTION = textwrap.dedent(
    """
    import sys, time
    from hpstudy import storeops

    def pause(step):
        if step == sys.argv[2]:
            print(step, flush=True)
            time.sleep(60)

    storeops.compact(sys.argv[1], runs_per_part=30, checkpoint=pause)
    """
)


@pytest.mark.parametrize("step", ["pending:1", "commit", "rename:1", "remove:5"])
def test_sigkill_mid_compaction_loses_nothing(tmp_path, step):
    directory = tmp_path / "s" / G
    runs = synthetic_store(directory)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_COMPACTION, str(directory), step], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == step  # the compaction has reached the step
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -9
    pd.testing.assert_frame_equal(canonical(store.read_runs(directory)), runs)
    assert rows_in_parts(directory) == len(runs)
    storeops.compact(directory, runs_per_part=30)
    pd.testing.assert_frame_equal(canonical(store.read_runs(directory)), runs)
    assert len(store.live_parts(directory)) == 3
