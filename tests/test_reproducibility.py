"""A run's bits depend only on its configuration, seed, data and environment: proven by parameter hashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hpstudy import store
from hpstudy.study import load_study
from hpstudy.training.engine import RunSpec, chunk_width
from tests.conftest import FACTORS_PERMUTED, run_hashes


def test_same_study_twice_gives_identical_hashes(write_study, tmp_path):
    path = write_study()
    first = run_hashes(path, range(2), tmp_path / "a")
    second = run_hashes(path, range(2), tmp_path / "b")
    assert len(first) == 8
    assert first == second


def test_seeds_in_one_call_equal_seeds_in_two_calls(write_study, tmp_path):
    path = write_study()
    together = run_hashes(path, range(10), tmp_path / "one")
    run_hashes(path, range(0, 5), tmp_path / "two")
    split = run_hashes(path, range(5, 10), tmp_path / "two")
    assert len(together) == 40
    assert together == split


def test_permuting_trials_and_grid_values_changes_no_bits(write_study, tmp_path):
    original = run_hashes(write_study(), range(3), tmp_path / "a")
    permuted = run_hashes(write_study(FACTORS_PERMUTED, name="permuted.toml"), range(3), tmp_path / "b")
    assert len(original) == 12
    assert original == permuted


def test_run_alone_in_padded_chunk_equals_run_among_full_chunks(write_study, tmp_path):
    crowd_path = write_study()
    study = load_study(crowd_path)
    assert chunk_width(study.trials[0].config) == 4
    crowd = run_hashes(crowd_path, range(6), tmp_path / "crowd")  # 24 runs: six full chunks of 4
    alone_path = write_study("learning_rate = [0.01]\nbatch_size = [64]\ndropout = [0.2]", name="alone.toml")
    alone = run_hashes(alone_path, range(3, 4), tmp_path / "alone")  # one run padded to a chunk of 4
    ((run_id, digest),) = alone.items()
    assert crowd[run_id] == digest


def test_worker_processes_give_the_bits_of_one_process(write_study, tmp_path):
    """Two single-core worker processes (`hpstudy run --workers 2`) train each run to the same bits as this
    process, pinned to one core, does; which worker trained which chunk does not matter."""
    from hpstudy.runner import run_study
    from hpstudy.training import parallel
    from tests.conftest import synthetic_dataset

    assert parallel.pinned(), "the test process trains on one core, as every hpstudy training process does"
    path = write_study()
    alone = run_hashes(path, range(3), tmp_path / "one")
    report = run_study(load_study(path), range(3), synthetic_dataset, tmp_path / "two", progress=False, workers=2)
    runs = store.read_runs(report.directory)
    assert report.computed == 12 and len(runs) == 12
    assert dict(zip(runs["run_id"], runs["param_sha256"])) == alone


def test_run_identity_does_not_depend_on_trial_id_or_position():
    config = load_study(Path("studies/naragundkar2024_grid.toml")).trials[0].config
    assert RunSpec(config, 3, "x").run_id == RunSpec(config, 3, "y").run_id
    assert RunSpec(config, 3).run_id != RunSpec(config, 4).run_id


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from hpstudy.runner import run_study
    from hpstudy.study import load_study
    from tests.conftest import synthetic_dataset
    run_study(load_study(sys.argv[1]), range(int(sys.argv[2])), synthetic_dataset, sys.argv[3], progress=False)
    """
)


def test_sigkill_mid_study_then_resume(write_study, tmp_path):
    path = write_study()
    results = tmp_path / "results"
    directory = store.study_dir(results, "small")
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(path), "12", str(results)], env=env)
    deadline = time.time() + 300
    while not list(directory.glob("part-*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    parts_before = {p.name: p.read_bytes() for p in directory.glob("part-*.parquet")}
    stored_before = store.read_runs(directory)  # the store reads after the kill
    assert 0 < len(stored_before) < 48, "the kill must land mid-study for this test to mean anything"
    resumed = run_hashes(path, range(12), results)
    for name, content in parts_before.items():
        assert (directory / name).read_bytes() == content  # finished chunks untouched
    assert len(resumed) == 48
    reference = run_hashes(path, range(12), tmp_path / "reference")
    assert resumed == reference


def test_rerun_of_complete_study_computes_nothing_and_writes_nothing(write_study, tmp_path):
    path = write_study()
    run_hashes(path, range(2), tmp_path)
    directory = store.study_dir(tmp_path, "small")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir()}
    report_hashes = run_hashes(path, range(2), tmp_path)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir()}
    assert before == after and len(report_hashes) == 8


def test_records_carry_identity_and_environment(write_study, tmp_path):
    path = write_study()
    run_hashes(path, range(1), tmp_path)
    runs = store.read_runs(store.study_dir(tmp_path, "small"))
    row = runs.iloc[0]
    assert row["study"] == "small" and len(row["study_sha256"]) == 64
    assert row["chunk_width"] == 4 and row["group_id"]
    assert 1 <= row["epochs_run"] <= 3 and len(row["val_loss"]) == row["epochs_run"]
    env = json.loads(row["environment"])
    assert env["packages"]["jax"] == "0.10.2" and "cpu_model" in env and "xla_flags" in env
    assert row["dataset_fingerprint"].startswith("synthetic")
