"""Safe on real work: names cannot climb out of their folders, outputs are checked before training and
fail cleanly after, foreign or conflicting store parts are refused, one writer per store, Ctrl-C.

Each bad input is checked for its error class (through the exit code the CLI gives it), its message,
and that nothing stored changed.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpstudy import api, cli, store
from hpstudy import data as hdata
from hpstudy.errors import Interrupted, LockedError, OutputError, StoreError, StudyError
from hpstudy.locking import store_lock
from hpstudy.reporting.build import synthetic_records, write_report
from hpstudy.runner import run_study
from hpstudy.study import load_study
from tests.conftest import synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "studies" / "naragundkar2024_grid.toml"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of one CLI call."""
    code = cli.main(argv)
    return code, capsys.readouterr().err


@pytest.fixture
def synthetic(monkeypatch):
    """`hpstudy run` trains on the small synthetic dataset instead of loading MNIST."""
    monkeypatch.setattr(hdata, "load_dataset", lambda *a, **k: synthetic_dataset())


@pytest.fixture
def stored_grid(tmp_path) -> tuple[Path, Path]:
    """A results folder holding synthetic runs of the grid study (3 seeds, parts of 8 runs)."""
    results = tmp_path / "results"
    study = load_study(GRID)
    records = synthetic_records(study, range(3))
    directory = store.study_dir(results, study.name)
    for i in range(0, len(records), 8):
        store.write_chunk(directory, records[i : i + 8])
    return results, directory


# ---- 1. names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "../up", "a/b", ".hidden", "x" * 101, "spaced name"])
def test_unsafe_study_names_are_refused_and_nothing_is_written(write_study, tmp_path, capsys, name):
    path = write_study(**{'name = "small"': f"name = {name!r}".replace("'", '"')})
    (tmp_path / "README.md").write_text("mine")
    before = snapshot(tmp_path)
    for argv in (
        ["run", str(path), "--results", str(tmp_path / "results")],
        ["report", str(path), "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")],
    ):
        code, err = run_cli(argv, capsys)
        assert code == StudyError.exit_code == 2
        assert "study.name" in err and "starting with a letter or digit" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_store_refuses_a_folder_name_that_climbs(tmp_path):
    with pytest.raises(StoreError):
        store.study_dir(tmp_path, "..")


def test_report_touches_nothing_outside_its_own_folder(stored_grid, tmp_path):
    results, _ = stored_grid
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("the user's")
    (out / "figures").mkdir()
    (out / "figures" / "mine.png").write_bytes(b"png")
    target = write_report(load_study(GRID), results, out)
    assert target == out / "naragundkar2024_grid"
    assert (out / "README.md").read_text() == "the user's"
    assert (out / "figures" / "mine.png").read_bytes() == b"png"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "figures", "naragundkar2024_grid"]


# ---- 2. outputs checked before training, failures after it are one line -----------------------------------


def test_results_folder_that_is_a_file_fails_before_any_data_or_training(write_study, tmp_path, capsys):
    path = write_study()
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    # --data-dir points at nothing: had the data been loaded first, this would be a DataError (exit 3).
    code, err = run_cli(
        ["run", str(path), "--results", str(blocker), "--data-dir", str(tmp_path / "none"), "--no-download"], capsys
    )
    assert code == OutputError.exit_code == 7
    assert "a file is in the way" in err and str(blocker) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_too_long_results_path_fails_before_training(write_study, tmp_path, capsys):
    code, err = run_cli(["run", str(write_study()), "--results", str(tmp_path / ("r" * 300)), "--no-download"], capsys)
    assert code == OutputError.exit_code and "too long" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.toml"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_results_folder_fails_before_training(write_study, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = run_cli(["run", str(write_study()), "--results", str(locked), "--no-download"], capsys)
    assert code == OutputError.exit_code and "permission denied" in err


def test_disk_full_while_storing_is_one_line_and_leaves_no_partial_part(
    write_study, tmp_path, monkeypatch, synthetic, capsys
):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.pq, "write_table", full)
    code, err = run_cli(
        ["run", str(write_study()), "--seeds", "1", "--workers", "1", "--results", str(tmp_path / "results")], capsys
    )
    assert code == OutputError.exit_code and "no space left" in err and "run the same command again" in err
    assert "Traceback" not in err
    directory = tmp_path / "results" / "small"
    assert [p.name for p in directory.iterdir() if p.name != ".lock"] == []


def test_report_out_that_is_a_file_fails_before_analysis(stored_grid, tmp_path, capsys):
    results, _ = stored_grid
    blocker = tmp_path / "out"
    blocker.write_text("x")
    code, err = run_cli(["report", str(GRID), "--results", str(results), "--out", str(blocker)], capsys)
    assert code == OutputError.exit_code and "a file is in the way" in err and blocker.read_text() == "x"


def test_report_failing_mid_write_keeps_the_old_report(stored_grid, tmp_path, monkeypatch, capsys):
    from hpstudy.reporting import figures

    results, _ = stored_grid
    out = tmp_path / "out"
    write_report(load_study(GRID), results, out)
    before = snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(figures, "save", full)
    code, err = run_cli(["report", str(GRID), "--results", str(results), "--out", str(out), "--seeds", "2"], capsys)
    assert code == OutputError.exit_code and "no space left" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before  # the old report, whole; no staging folder left behind


# ---- 3. foreign, mistyped and conflicting parts -----------------------------------------------------------


def test_conflicting_duplicate_run_is_refused_naming_both_parts(stored_grid, tmp_path, capsys):
    results, directory = stored_grid
    first = sorted(directory.glob("part-*.parquet"))[0]
    rows = pq.read_table(first).to_pylist()[:1]
    rows[0]["test_accuracy"] = 0.5
    forged = directory / "part-forged.parquet"
    pq.write_table(pa.Table.from_pylist(rows), forged)
    before = snapshot(tmp_path)
    code, err = run_cli(["report", str(GRID), "--results", str(results), "--out", str(tmp_path / "out")], capsys)
    assert code == StoreError.exit_code == 4
    assert str(first) in err and str(forged) in err and "test_accuracy (" in err and "0.5" in err
    with pytest.raises(StoreError, match="stored twice with different results"):
        store.stored_ids(directory)  # what `run` reads: it refuses too
    assert snapshot(tmp_path) == before


def test_identical_duplicate_is_one_run(stored_grid, tmp_path):
    results, directory = stored_grid
    first = sorted(directory.glob("part-*.parquet"))[0]
    (directory / "part-copy.parquet").write_bytes(first.read_bytes())
    assert len(store.read_runs(directory)) == 8 * 3
    assert len(api.results(GRID, results)) == 8 * 3


def test_part_of_another_study_is_refused(stored_grid, tmp_path, capsys):
    results, directory = stored_grid
    rows = pq.read_table(sorted(directory.glob("part-*.parquet"))[0]).to_pylist()
    for r in rows:
        r["study"] = "other_study"
        r["run_id"] = "f" + r["run_id"][1:]
    pq.write_table(pa.Table.from_pylist(rows), directory / "part-foreign.parquet")
    code, err = run_cli(["report", str(GRID), "--results", str(results), "--out", str(tmp_path / "out")], capsys)
    assert code == 4 and "part-foreign.parquet" in err and "'other_study'" in err
    assert not (tmp_path / "out").exists()


def test_part_with_another_schema_is_refused(stored_grid, tmp_path, capsys):
    results, directory = stored_grid
    pq.write_table(pa.table({"run_id": ["x"], "accuracy": [0.9]}), directory / "part-alien.parquet")
    code, err = run_cli(["report", str(GRID), "--results", str(results), "--out", str(tmp_path / "out")], capsys)
    assert code == 4 and "part-alien.parquet" in err and "not an hpstudy part" in err and "study" in err
    assert "Traceback" not in err


def test_list_keeps_going_past_a_corrupt_store(stored_grid, tmp_path, capsys):
    results, directory = stored_grid
    (directory / "part-broken.parquet").write_bytes(b"not parquet")
    code = cli.main(["list", "--studies", str(ROOT / "studies"), "--results", str(results)])
    captured = capsys.readouterr()
    assert code == 4
    lines = {line.split()[0]: line for line in captured.out.splitlines()[1:]}
    assert "CORRUPT" in lines["naragundkar2024_grid"]
    assert len(lines) == len(list((ROOT / "studies").glob("*.toml")))  # every other study still listed
    assert "part-broken.parquet" in captured.err


# ---- 4. one process per store --------------------------------------------------------------------------------

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


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_is_refused_naming_the_holder(write_study, tmp_path, synthetic, capsys):
    directory = tmp_path / "results" / "small"
    proc = _holder(directory)
    try:
        code, err = run_cli(
            ["run", str(write_study()), "--seeds", "1", "--workers", "1", "--results", str(tmp_path / "results")],
            capsys,
        )
        assert code == LockedError.exit_code == 8
        assert f"pid {proc.pid}" in err and "--wait" in err
        assert not list(directory.glob("part-*.parquet"))
    finally:
        proc.kill()
        proc.wait()


def test_waiting_run_starts_when_the_holder_is_killed(write_study, tmp_path):
    directory = tmp_path / "results" / "small"
    proc = _holder(directory)
    waited: list[str] = []
    outcome: dict = {}

    def second():
        outcome["report"] = run_study(
            load_study(write_study()),
            range(1),
            synthetic_dataset,
            tmp_path / "results",
            progress=False,
            wait=True,
            on_wait=waited.append,
        )

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and waited == [str(proc.pid)] and not list(directory.glob("part-*.parquet"))
    proc.send_signal(signal.SIGKILL)  # kill -9 while holding: the kernel drops the lock with the process
    proc.wait()
    thread.join(300)
    assert outcome["report"].computed == 4 and len(store.read_runs(directory)) == 4


def test_no_stale_lock_survives_kill_9(tmp_path):
    directory = tmp_path / "store"
    proc = _holder(directory)
    with pytest.raises(LockedError):
        with store_lock(directory):
            pass
    proc.kill()
    proc.wait()
    with store_lock(directory):  # at once, without waiting
        assert (directory / ".lock").read_text().strip() == str(os.getpid())


# ---- 6. Ctrl-C ---------------------------------------------------------------------------------------

INTERRUPTED_RUN = textwrap.dedent(
    """
    import sys
    from hpstudy import cli, data
    from tests.conftest import synthetic_dataset
    data.load_dataset = lambda *a, **k: synthetic_dataset()
    sys.exit(cli.main(["run", sys.argv[1], "--seeds", "12", "--workers", sys.argv[3], "--results", sys.argv[2]]))
    """
)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_says_what_is_stored_and_how_to_resume(write_study, tmp_path, workers):
    path = write_study()
    results = tmp_path / "results"
    directory = results / "small"
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_RUN, str(path), str(results), workers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not list(directory.glob("part-*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: to the whole process group
    out, err = proc.communicate(timeout=120)
    stored = len(store.read_runs(directory))
    assert proc.returncode == Interrupted.exit_code == 130, err
    assert "Traceback" not in err
    assert f"interrupted. {stored} runs of small are stored in {directory}" in err
    assert "run the same command again" in err
    assert 0 < stored < 48, "the interrupt must land mid-study for this test to mean anything"
