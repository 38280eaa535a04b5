"""One `hpstudy run` reads its study's store once, under the store's lock, through store.read_contents; the
runs to compute, the check of numeric environments and the frame it returns come from that read and the
records it stores after it (hpstudy/runner.py: StoreSession)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from hpstudy import api, cli, store
from hpstudy import data as hdata
from hpstudy.errors import LockedError, StoreError
from hpstudy.locking import store_lock
from hpstudy.reporting.synthetic import synthetic_records
from hpstudy.runner import run_study
from hpstudy.study import load_study
from tests.conftest import synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
# Every function of store.py that reads the runs of a store (its parts' contents).
READERS = ("read_contents", "read_runs", "read_columns", "stored_ids", "stored_environments", "validate", "read_parts")


class Reads:
    """The outermost calls of store.py's readers: (function, whether this process held the store's lock)."""

    def __init__(self):
        self.calls: list[tuple[str, bool]] = []
        self.depth = 0


def _lock_held(directory: Path) -> bool:
    """Whether the store's lock is held (by anyone): a lock taken on a new open file description is refused.
    (No lock file: nobody holds it, and none is made.)"""
    if not (directory / ".lock").exists():
        return False
    try:
        with store_lock(directory, wait=False, announce=False):
            return False
    except LockedError:
        return True


def _snapshot(directory: Path) -> dict:
    """Every file of a store folder (the lock file too) with its modification time and bytes."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir()}


@pytest.fixture
def reads(monkeypatch) -> Reads:
    seen = Reads()
    for name in READERS:
        real = getattr(store, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            if seen.depth == 0:
                directory = Path(args[0])
                seen.calls.append((_name, directory.is_dir() and _lock_held(directory)))
            seen.depth += 1
            try:
                return _real(*args, **kwargs)
            finally:
                seen.depth -= 1

        monkeypatch.setattr(store, name, functools.wraps(real)(counting))
    return seen


def _no_data(*args, **kwargs):
    raise AssertionError("the data was loaded")


def _runs(path: Path, results: Path, seeds: int) -> pd.DataFrame:
    """A fresh read of the runs of `path` over `seeds`, as `api.run` returns them (outside the count)."""
    study = load_study(path)
    wanted = {spec.run_id for spec in study.runs(range(seeds))}
    runs = store.read_runs(store.study_dir(results, study.name), study.name)
    return runs[runs["run_id"].isin(wanted)].reset_index(drop=True)


def test_each_run_reads_the_store_once_under_its_lock(write_study, tmp_path, monkeypatch, reads, capsys):
    """A new store (nothing to read), one holding some of the runs, one holding all: at most one read
    each, under the lock; the frame returned is the one a fresh read gives afterwards; a fully stored
    study writes nothing, not even its pid into the lock file."""
    path, results = write_study(), tmp_path / "results"
    monkeypatch.setattr(hdata, "load_dataset", lambda *a, **k: synthetic_dataset())
    argv = ["run", str(path), "--workers", "1", "--results", str(results)]

    assert cli.main([*argv, "--seeds", "1"]) == 0
    assert reads.calls == []  # no folder: nothing stored, and nobody stored anything before the lock was taken
    assert "0 were already stored, 4 computed" in capsys.readouterr().out

    reads.calls.clear()
    (results / "small" / ".lock").write_text("999999\n")  # a holder that has gone
    frame = api.run(path, 2, results, workers=1, progress=False)
    assert reads.calls == [("read_contents", True)]
    assert (results / "small" / ".lock").read_text() == f"{os.getpid()}\n"  # named as the writer
    assert (frame.attrs["run"]["already_stored"], frame.attrs["run"]["computed"]) == (4, 4)
    pd.testing.assert_frame_equal(frame, _runs(path, results, 2))
    assert frame["trial_id"].value_counts().tolist() == [2, 2, 2, 2]

    reads.calls.clear()
    monkeypatch.setattr(hdata, "load_dataset", _no_data)  # a fully stored study needs no data
    before = _snapshot(results / "small")
    assert cli.main([*argv, "--seeds", "2"]) == 0
    assert reads.calls == [("read_contents", True)]
    assert _snapshot(results / "small") == before
    out = capsys.readouterr().out
    assert "8 were already stored, 0 computed" in out and "runs" in out
    assert [line.split()[1] for line in out.splitlines()[3:]] == ["2"] * 4  # the summary: 2 runs per trial


def test_a_fully_stored_study_needs_neither_the_lock_nor_the_data(write_study, tmp_path, monkeypatch, reads):
    """Another process holds the lock: a study whose runs are all stored is answered from one read
    without waiting for it; one with runs missing is refused (without --wait) after that one read."""
    path, results = write_study(), tmp_path / "results"
    study = load_study(path)
    directory = store.study_dir(results, study.name)
    store.write_chunk(directory, synthetic_records(study, range(2)))
    monkeypatch.setattr(hdata, "load_dataset", _no_data)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        frame = api.run(path, 2, results, workers=1, progress=False)
        assert time.perf_counter() - start < 30 and len(frame) == 8 and frame.attrs["run"]["computed"] == 0
        assert reads.calls == [("read_contents", True)]  # the other process's lock
        reads.calls.clear()
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            api.run(path, 3, results, workers=1, progress=False)
        assert [name for name, _ in reads.calls] == ["read_contents"]
    finally:
        holder.kill()
        holder.wait()


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hpstudy.locking import store_lock
    with store_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_mixed_environments_are_refused_after_one_read_before_any_data(write_study, tmp_path, reads):
    path = write_study()
    study = load_study(path)
    directory = store.study_dir(tmp_path, study.name)
    store.write_chunk(directory, synthetic_records(study, range(1)))  # made in another (made-up) environment
    with pytest.raises(StoreError, match="another numeric environment"):
        run_study(study, range(2), _no_data, tmp_path, progress=False)
    # Made by copying parts, no process ever locked this store: it is read without making a lock file.
    assert reads.calls == [("read_contents", False)] and not (directory / ".lock").exists()


def test_a_fully_stored_store_nobody_locked_is_read_once_and_left_untouched(write_study, tmp_path, reads):
    """Stores such as reports/_runs/<study> (parts only): a run finds every run stored, and the folder
    stays as it was (no lock file made)."""
    path = write_study()
    study = load_study(path)
    directory = store.study_dir(tmp_path, study.name)
    store.write_chunk(directory, synthetic_records(study, range(2)))
    before = _snapshot(directory)
    report = run_study(study, range(2), _no_data, tmp_path, progress=False)
    assert (report.already_stored, report.computed) == (8, 0) and len(report.stored.runs) == 8
    assert reads.calls == [("read_contents", False)] and _snapshot(directory) == before


def test_a_wait_during_which_nothing_was_stored_needs_no_second_read(write_study, tmp_path, reads):
    """The store's parts are compared (names, sizes, times) once the lock is had: unchanged, the read made
    while waiting holds, and is the only one."""
    path = write_study()
    study = load_study(path)
    directory = store.study_dir(tmp_path / "results", study.name)
    store.write_chunk(directory, synthetic_records(study, range(1)))
    waited = threading.Event()
    outcome: dict = {}
    with store_lock(directory):
        thread = threading.Thread(
            target=lambda: outcome.update(
                report=run_study(
                    study,
                    range(2),
                    synthetic_dataset,
                    tmp_path / "results",
                    progress=False,
                    allow_mixed=True,
                    wait=True,
                    on_wait=lambda pid: waited.set(),
                )
            )
        )
        thread.start()
        assert waited.wait(120)
    thread.join(600)
    assert (outcome["report"].already_stored, outcome["report"].computed) == (4, 4)
    assert reads.calls == [("read_contents", True)]  # read while the other holder had the lock


def test_runs_stored_while_waiting_are_not_computed_again(write_study, tmp_path, reads):
    """A run waiting for the lock reads the store again once it has it (the only case of two reads): what
    the holder stored meanwhile is not computed again."""
    path = write_study()
    study = load_study(path)
    directory = store.study_dir(tmp_path / "results", study.name)
    store.write_chunk(directory, synthetic_records(study, range(1)))
    waited = threading.Event()
    outcome: dict = {}
    with store_lock(directory):  # another open file description: the run's own attempt is refused
        thread = threading.Thread(
            target=lambda: outcome.update(
                report=run_study(
                    study,
                    range(3),
                    synthetic_dataset,
                    tmp_path / "results",
                    progress=False,
                    allow_mixed=True,
                    wait=True,
                    on_wait=lambda pid: waited.set(),
                )
            )
        )
        thread.start()
        assert waited.wait(120)
        store.write_chunk(directory, synthetic_records(study, range(1, 2)))  # the holder stores seed 1
        assert reads.calls[:1] == [("read_contents", True)]  # the first read: without this run holding it
    thread.join(600)
    report = outcome["report"]
    assert (report.total, report.already_stored, report.computed) == (12, 8, 4)
    assert reads.calls == [("read_contents", True)] * 2
    assert len(store.read_runs(directory)) == 12
