"""The rough edges a hostile user and a fault injector found: each bad input gets one line, its own exit
code (docs/errors.md), and nothing stored changes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hpstudy import api, cli, store, storeops
from hpstudy import data as hdata
from hpstudy.errors import DataError, EngineError, OutputError, StoreError, StudyError, TooBigError
from hpstudy.reporting.build import synthetic_records, write_report
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "studies" / "naragundkar2024_grid.toml"
NAME = "naragundkar2024_grid"


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, hidden ones too (a lock file is not stored data)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != ".lock"
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of one CLI call, checked to be at most one error line and no traceback."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("hpstudy: error:")]) == (code != 0), err
    return code, err


def one_figure(monkeypatch) -> None:
    """Reports with one small figure instead of the full set: these tests are not about figures."""
    from hpstudy.reporting import figures

    def make(a, directory: Path) -> list[tuple[str, str]]:
        (directory / "by_learning_rate.png").write_bytes(b"a figure")
        return [("by_learning_rate", "Test accuracy by learning rate.")]

    monkeypatch.setattr(figures, "make_figures", make)


def grid_store(results: Path, seeds=range(2), environment: dict | None = None) -> Path:
    """Synthetic runs of the grid study in results/<study>, parts of 8 runs; `environment` edits their record."""
    study = load_study(GRID)
    records = synthetic_records(study, seeds)
    if environment:
        for r in records:
            r["environment"] = json.dumps({**json.loads(r["environment"]), **environment}, sort_keys=True)
    directory = store.study_dir(results, study.name)
    for i in range(0, len(records), 8):
        store.write_chunk(directory, records[i : i + 8])
    return directory


# ---- merge, compact and the store's temporaries ---------------------------------------------------------------


def test_merge_refuses_stores_of_different_numeric_environments(tmp_path, capsys):
    a = grid_store(tmp_path / "a", environment={"numerics": "portable"})
    b = grid_store(tmp_path / "b", range(2, 3), environment={"numerics": "native"})
    before = snapshot(tmp_path)
    code, err = run_cli(["merge", tmp_path / "m" / NAME, a, b], capsys)
    assert code == StoreError.exit_code == 4
    assert "different numeric environments" in err and "numerics: 'portable' vs 'native'" in err
    assert "--allow-mixed" in err and str(b) in err
    assert snapshot(tmp_path) == before and not (tmp_path / "m").exists()
    code, err = run_cli(["merge", tmp_path / "m" / NAME, a], capsys)  # one environment: merged
    assert code == 0
    code, err = run_cli(["merge", tmp_path / "m" / NAME, b], capsys)  # OUT's own runs count too
    assert code == 4 and "different numeric environments" in err
    code, err = run_cli(["merge", tmp_path / "m" / NAME, b, "--allow-mixed"], capsys)
    assert code == 0, err
    assert len(store.read_runs(tmp_path / "m" / NAME)) == 8 * 3


def _read_only(monkeypatch, tmp_path: Path, folder: Path) -> None:
    """Make `folder` unwritable: by its mode where that binds (not root), else by failing every open for writing."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return
    real = open

    def refusing(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wa+x") and str(folder) in str(file):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(storeops, "open", refusing, raising=False)


def test_compact_on_an_unwritable_store_is_one_line(tmp_path, capsys, monkeypatch):
    directory = grid_store(tmp_path / "r")
    before = snapshot(tmp_path)
    _read_only(monkeypatch, tmp_path, directory)
    try:
        code, err = run_cli(["compact", directory], capsys)
    finally:
        directory.chmod(0o755)
    assert code == OutputError.exit_code == 7
    assert f"cannot compact {directory}: it cannot be written here" in err
    assert snapshot(tmp_path) == before


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hpstudy import store
    def hang(table, fh):
        fh.write(b"half a part")
        fh.flush()
        print("writing", flush=True)
        time.sleep(600)
    store.pq.write_table = hang
    store.write_table(store.pa.table({"run_id": ["x"]}), Path(sys.argv[1]) / "part-x.parquet")
    """
)


def test_a_temporary_left_by_kill_9_is_removed_by_the_next_writer(tmp_path, capsys):
    directory = grid_store(tmp_path / "r")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(directory.glob(".part-*.tmp"))
    assert len(left) == 1 and f"-{proc.pid}-" in left[0].name
    # a writer alive, and one on another host (a shared file system): never proved dead, never touched
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        host = socket.gethostname().replace("-", "_")
        alive = directory / f".part-{host}-{sleeper.pid}-abc.tmp"
        other = directory / f".part-otherhost-{proc.pid}-abc.tmp"
        alive.write_bytes(b"x")
        other.write_bytes(b"x")
        parts = snapshot(directory)
        code, err = run_cli(["compact", directory], capsys)  # the next writer
        assert code == 0, err
        assert not left[0].exists() and alive.exists() and other.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert len(store.read_runs(directory)) == 16 and len(parts) > 2


def test_a_corrupt_part_is_one_line(tmp_path, capsys):
    directory = grid_store(tmp_path / "r")
    # Parquet's magic at both ends around a footer that does not parse: Thrift's message spans lines
    (directory / "part-corrupt.parquet").write_bytes(b"PAR1" + b"\x15\x00" * 40 + (80).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(StoreError) as caught:
        store.read_runs(directory)
    assert "\n" not in str(caught.value) and "part-corrupt.parquet" in str(caught.value)
    code, err = run_cli(["report", GRID, "--results", tmp_path / "r", "--out", tmp_path / "out"], capsys)
    assert code == 4 and len(err.strip().splitlines()) == 1 and "part-corrupt.parquet" in err


# ---- verify ------------------------------------------------------------------------------------------------


def test_verify_of_a_report_whose_run_is_gone_fails_before_training(write_study, tmp_path, monkeypatch, capsys):
    one_figure(monkeypatch)
    study = load_study(write_study())
    runs = tmp_path / "reports" / "_runs"
    directory = store.study_dir(runs, study.name)
    records = synthetic_records(study, range(2))
    store.write_chunk(directory, records[:4])
    store.write_chunk(directory, records[4:])
    target = write_report(study, runs, tmp_path / "reports")
    listed = json.loads((target / ".hpstudy-runs.json").read_text())
    assert listed == {"study": "small", "runs": sorted(r["run_id"] for r in records)}
    sorted(directory.glob("part-*.parquet"))[0].unlink()
    before = snapshot(tmp_path)
    code, err = run_cli(["verify", target, "--sample", "1"], capsys)
    assert code == StoreError.exit_code
    assert f"was made from 8 runs, and 4 of them are not in {directory}" in err and "nothing was trained" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content", [b"garbage\n", b"\xff\xfe\x00garbage", b""])
def test_verify_refuses_a_lock_file_that_is_not_one(tmp_path, capsys, content):
    directory = grid_store(tmp_path / "r")
    (tmp_path / "garbage.lock").write_bytes(content)
    code, err = run_cli(["verify", directory, "--lock", tmp_path / "garbage.lock"], capsys)
    assert code == StudyError.exit_code and f"--lock {tmp_path / 'garbage.lock'}" in err
    code, err = run_cli(["verify", directory, "--lock", tmp_path / "none.lock"], capsys)
    assert code == 2 and "is not a file" in err


# ---- study files and arguments -----------------------------------------------------------------------------


def test_a_folder_named_like_a_study_does_not_hide_its_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "grid.toml").write_bytes(GRID.read_bytes())
    (tmp_path / "grid").mkdir()  # say, results of the study kept beside it
    assert api.resolve_study_path("grid") == Path("studies/grid.toml")
    code, err = run_cli(["show", "grid", "--results", tmp_path / "r"], capsys)
    assert code == 0, err
    (tmp_path / "other").mkdir()
    code, err = run_cli(["show", "other"], capsys)
    assert code == 2 and "other is a folder, not a study file" in err and "NAME.toml" in err


@pytest.mark.parametrize(
    "metric, value, expected",
    [
        ("test_accuracy", "9716", "an accuracy as a fraction (0.9716) or a percentage (97.16), at most 100"),
        ("best_val_accuracy", "100.5", "at most 100"),
        ("test_loss", "1e300", "a number of at most 1,000,000"),
        ("seconds", "1e12", "a number of at most 1,000,000"),
    ],
)
def test_impossible_published_values_are_refused(write_study, tmp_path, capsys, metric, value, expected):
    path = write_study()
    path.write_text(
        path.read_text() + f"\n[[published]]\nwhere = {{ learning_rate = 0.01, dropout = 0.2 }}\n{metric} = {value}\n"
    )
    code, err = run_cli(["show", path], capsys)
    assert code == StudyError.exit_code and f"published[0].{metric} = " in err and expected in err


@pytest.mark.parametrize("value", ["0.9716", "97.16", "100", "0"])
def test_possible_published_accuracies_are_accepted(write_study, value):
    path = write_study()
    path.write_text(
        path.read_text() + f"\n[[published]]\nwhere = {{ learning_rate = 0.01, dropout = 0.2 }}\n"
        f"test_accuracy = {value}\ntest_loss = 2.5\nseconds = 3600\n"
    )
    assert load_study(path).published[0]["test_accuracy"] == float(value)


def test_report_of_a_missing_smoke_test_suggests_the_command_that_makes_it(tmp_path, capsys):
    code, err = run_cli(
        [
            "report",
            GRID,
            "--max-epochs",
            "3",
            "--dataset",
            "fashion_mnist",
            "--results",
            tmp_path / "r",
            "--out",
            tmp_path / "out",
        ],
        capsys,
    )
    assert code == 4
    assert f"(hpstudy run {NAME} --dataset fashion_mnist --max-epochs 3 --results {tmp_path / 'r'})" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "seeds, code",
    [
        ("0:18446744073709551616", 2),
        ("18446744073709551616", 2),
        ("9223372036854775807:9223372036854775809", 2),
        ("5:9223372036854775808", TooBigError.exit_code),
        ("1" * 5000, 2),
    ],
)
def test_overflowing_seeds_are_one_line(tmp_path, capsys, seeds, code):
    got, err = run_cli(["run", GRID, "--seeds", seeds, "--results", tmp_path / "r"], capsys)
    assert got == code and "seed" in err
    assert not (tmp_path / "r").exists()


def test_a_network_too_big_for_memory_is_refused_before_the_data(write_study, tmp_path, capsys):
    path = write_study(**{"hidden = [32, 32]": "hidden = [100000000]"})
    code, err = run_cli(["run", path, "--results", tmp_path / "r", "--data-dir", tmp_path / "none"], capsys)
    assert code == TooBigError.exit_code == 9
    assert "hidden = [100000000] has 79,500,000,010 parameters" in err and "GiB of memory" in err
    assert not (tmp_path / "r").exists()


def test_shard_with_a_negative_index_gets_the_shard_message(tmp_path, capsys):
    code, err = run_cli(["run", GRID, "--shard", "-1/3", "--results", tmp_path / "r"], capsys)
    assert code == 2 and "--shard '-1/3' is invalid: expected I/N with integers 0 <= I < N" in err


def test_scheduler_that_is_not_an_address(write_study, tmp_path, capsys):
    pytest.importorskip("distributed", reason="needs the dask extra")
    code, err = run_cli(["run", write_study(), "--scheduler", "notaurl", "--results", tmp_path / "r"], capsys)
    assert code == EngineError.exit_code and "Dask scheduler at 'notaurl'" in err and "tcp://HOST:8786" in err


def test_results_through_a_symlink_loop(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, err = run_cli(["run", GRID, "--results", tmp_path / "a" / "x"], capsys)
    assert code == OutputError.exit_code and "in a loop" in err
    code, err = run_cli(["report", GRID, "--results", tmp_path / "a" / "x", "--out", tmp_path / "out"], capsys)
    assert code == StoreError.exit_code and "in a loop" in err


def test_cache_dir_that_cannot_be_expanded(write_study, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPSTUDY_CACHE_DIR", "~no_such_user_hpstudy/jax")
    code, err = run_cli(["run", write_study(), "--results", tmp_path / "r"], capsys)
    assert code == OutputError.exit_code and "HPSTUDY_CACHE_DIR='~no_such_user_hpstudy/jax' cannot be expanded" in err


def test_list_of_a_missing_studies_folder_fails(tmp_path, capsys):
    code, err = run_cli(["list", "--studies", tmp_path / "nonexistent"], capsys)
    assert code == 2 and "is not a folder" in err


def test_empty_results_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv in (["run", GRID, "--results", ""], ["report", GRID, "--results", ""], ["report", GRID, "--out", ""]):
        code, err = run_cli(argv, capsys)
        assert code == 2 and "'' (--" in err
    assert list(tmp_path.iterdir()) == []


# ---- data ----------------------------------------------------------------------------------------------------


def test_explicit_data_dir_wins_or_fails(write_study, tmp_path, monkeypatch, capsys):
    env, given = tmp_path / "env", tmp_path / "given"
    env.mkdir()
    given.mkdir()
    monkeypatch.setenv(hdata.ENV_DATA_DIR, str(env))  # would be used if --data-dir fell back
    code, err = run_cli(["run", write_study(), "--data-dir", tmp_path / "typo", "--results", tmp_path / "r"], capsys)
    assert code == DataError.exit_code and f"--data-dir {tmp_path / 'typo'} does not exist" in err
    dirs = hdata.candidate_dirs(given)
    assert dirs[:2] == [given, given / "mnist"] and env not in dirs and env / "mnist" not in dirs
    assert hdata.candidate_dirs(None)[:2] == [env, env / "mnist"]


def _fake_known_files(monkeypatch, folder: Path) -> dict[str, bytes]:
    """Small stand-ins for MNIST's four files, registered as MNIST's checksums for this test."""
    contents = {name: f"mnist {name}".encode() for name in hdata.MNIST_FILES}
    for name, content in contents.items():
        monkeypatch.setitem(hdata.MNIST_FILES, name, hashlib.sha256(content).hexdigest())
    folder.mkdir()
    return contents


def test_mnist_given_for_fashion_mnist_is_not_called_corrupt(write_study, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mnist_files"
    for name, content in _fake_known_files(monkeypatch, folder).items():
        (folder / name).write_bytes(content)
    study = write_study()
    before = snapshot(tmp_path)
    code, err = run_cli(
        [
            "run",
            study,
            "--dataset",
            "fashion_mnist",
            "--data-dir",
            folder,
            "--no-download",
            "--results",
            tmp_path / "r",
        ],
        capsys,
    )
    assert code == DataError.exit_code
    assert (
        f"{folder} holds MNIST, not Fashion-MNIST. Keep it, and pass --data-dir with a folder holding the "
        "Fashion-MNIST files instead" in err
    )
    assert "Delete" not in err and "corrupt" not in err
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("r/")} == before


def test_swapped_label_files_are_named_as_swapped(tmp_path, monkeypatch):
    folder = tmp_path / "mnist_files"
    contents = _fake_known_files(monkeypatch, folder)
    for name, content in contents.items():
        swapped = {
            "train-labels-idx1-ubyte.gz": "t10k-labels-idx1-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz": "train-labels-idx1-ubyte.gz",
        }.get(name, name)
        (folder / swapped).write_bytes(content)
    with pytest.raises(DataError) as caught:
        hdata.load_dataset("mnist", folder, download=False)
    message = str(caught.value)
    assert "the files were renamed or swapped" in message and "Delete" not in message


def test_an_unreadable_data_file_is_one_line(write_study, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in hdata.MNIST_FILES:
        (folder / name).write_bytes(b"x")
    real = open

    def unreadable(file, *args, **kwargs):
        if str(file).startswith(str(folder)):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(hdata, "open", unreadable, raising=False)  # as chmod 000 does (root reads anyway)
    code, err = run_cli(
        ["run", write_study(), "--data-dir", folder, "--no-download", "--results", tmp_path / "r"], capsys
    )
    assert code == DataError.exit_code and "cannot be read (Permission denied)" in err


# ---- the Python API names its parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"workers": "2"}, "workers='2'"),
        ({"workers": 0}, "workers=0"),
        ({"shard": [0, 2]}, "shard=[0, 2]"),
        ({"shard": (2, 2)}, "--shard '2/2'"),
        ({"results": ""}, "results=''"),
        ({"yes": "no"}, "yes='no'"),
        ({"seeds": 2.5}, "seeds=2.5"),
        ({"data_dir": 3}, "data_dir=3"),
    ],
)
def test_api_run_validates_its_arguments(write_study, tmp_path, monkeypatch, kwargs, named):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudyError) as caught:
        api.run(write_study(), **{"results": tmp_path / "r", **kwargs})
    assert named in str(caught.value)
    assert not (tmp_path / "r").exists()


def test_api_none_means_the_default(write_study, tmp_path, monkeypatch):
    one_figure(monkeypatch)
    path = write_study()
    monkeypatch.chdir(tmp_path)
    study = load_study(path)
    store.write_chunk(store.study_dir(tmp_path / "results", study.name), synthetic_records(study, range(1)))
    assert api.report(path, results=None, out=None) == Path("results/_reports/small")
    assert len(api.results(path, results=None)) == 4
    assert api._shard((1, 2)) == storeops.Shard(1, 2) and api._shard(None) is None


def test_an_unforeseen_os_error_is_one_line(monkeypatch, tmp_path, capsys):
    def too_long(*args, **kwargs):
        raise OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300)

    monkeypatch.setattr(api, "variant", too_long)
    code, err = run_cli(["show", GRID], capsys)
    assert code == OutputError.exit_code and "the path is too long for the file system" in err


@pytest.mark.parametrize(
    "argv",
    [["list", "--studies", "x" * 300], ["new", "mine", "--file", "x" * 300], ["verify", ".", "--lock", "x" * 300]],
)
def test_names_too_long_for_the_file_system(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(argv, capsys)
    assert code in (2, 7) and ("not a" in err or "too long" in err)
    assert list(tmp_path.iterdir()) == []


def test_verify_of_a_shipped_report_missing_one_run(tmp_path, capsys):
    import shutil

    shutil.copytree(ROOT / "reports" / NAME, tmp_path / "reports" / NAME)
    shutil.copytree(ROOT / "reports" / "_runs" / NAME, tmp_path / "reports" / "_runs" / NAME)
    part = sorted((tmp_path / "reports" / "_runs" / NAME).glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    gone = table.column("run_id")[0].as_py()
    pq.write_table(table.slice(1), part)  # one run of the report is no longer stored
    code, err = run_cli(["verify", tmp_path / "reports" / NAME, "--sample", "1"], capsys)
    assert code == StoreError.exit_code and "and 1 of them are not in" in err and gone in err
