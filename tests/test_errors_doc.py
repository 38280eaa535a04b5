"""docs/errors.md is generated from the cases below, each run through the real command: the test fails
when the document and the code disagree. Regenerate it with

    HPSTUDY_WRITE_ERRORS_DOC=1 python -m pytest tests/test_errors_doc.py

Each case also checks its exit code and that nothing stored changed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpstudy import cli, errors, runner, store
from hpstudy import data as hdata
from hpstudy.reporting.build import synthetic_records
from hpstudy.study import load_study
from tests.conftest import FACTORS, SMALL_STUDY, synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"
GRID = ROOT / "studies" / "naragundkar2024_grid.toml"


@dataclasses.dataclass
class Case:
    section: str
    title: str
    setup: Callable[[Path], list[str]]  # prepares tmp, returns the argv
    code: int


def study_file(tmp: Path, *replace: tuple[str, str], extra: str = "") -> Path:
    text = SMALL_STUDY.format(factors=FACTORS)
    for old, new in replace:
        text = text.replace(old, new)
    path = tmp / "study.toml"
    path.write_text(text + extra)
    return path


def stored_grid(tmp: Path) -> Path:
    """Synthetic runs of the grid study in tmp/results; the study's folder."""
    study = load_study(GRID)
    directory = store.study_dir(tmp / "results", study.name)
    records = synthetic_records(study, range(2))
    for i in range(0, len(records), 8):
        store.write_chunk(directory, records[i : i + 8])
    return directory


def report_args(tmp: Path) -> list[str]:
    return ["report", str(GRID), "--results", str(tmp / "results"), "--out", str(tmp / "out")]


def _conflict(tmp: Path) -> list[str]:
    directory = stored_grid(tmp)
    rows = pq.read_table(sorted(directory.glob("part-*.parquet"))[0]).to_pylist()[:1]
    rows[0]["test_accuracy"] = 0.5
    pq.write_table(pa.Table.from_pylist(rows), directory / "part-edited.parquet")
    return report_args(tmp)


def _foreign(tmp: Path) -> list[str]:
    directory = stored_grid(tmp)
    rows = pq.read_table(sorted(directory.glob("part-*.parquet"))[0]).to_pylist()
    for r in rows:
        r["study"] = "another_study"
    pq.write_table(pa.Table.from_pylist(rows), directory / "part-copied.parquet")
    return report_args(tmp)


def _alien(tmp: Path) -> list[str]:
    directory = stored_grid(tmp)
    pq.write_table(pa.table({"run_id": ["x"], "accuracy": [0.9]}), directory / "part-alien.parquet")
    return report_args(tmp)


def _garbage(tmp: Path) -> list[str]:
    directory = stored_grid(tmp)
    (directory / "part-broken.parquet").write_bytes(b"not parquet")
    return ["list", "--studies", str(tmp / "studies"), "--results", str(tmp / "results")]


def _list_dir(tmp: Path) -> None:
    (tmp / "studies").mkdir()
    (tmp / "studies" / "naragundkar2024_grid.toml").write_bytes(GRID.read_bytes())


def _corrupt_data(tmp: Path) -> list[str]:
    folder = tmp / "data"
    folder.mkdir()
    for name in hdata.MNIST_FILES:
        (folder / name).write_bytes(b"not mnist")
    return ["run", str(study_file(tmp)), "--data-dir", str(folder), "--no-download", "--results", str(tmp / "results")]


def _data_file(tmp: Path) -> list[str]:
    (tmp / "mnist.gz").write_bytes(b"x")
    return ["run", str(study_file(tmp)), "--data-dir", str(tmp / "mnist.gz"), "--results", str(tmp / "results")]


def _npz_study(tmp: Path, **change) -> list[str]:
    """`run` of a study on tmp/own.npz: four small valid arrays, with `change` applied (None removes one)."""
    arrays = {
        "x_train": np.zeros((6, 8, 8), np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": np.zeros((3, 8, 8), np.uint8),
        "y_test": np.array([0, 1, 2]),
    }
    for name, value in change.items():
        arrays.pop(name) if value is None else arrays.__setitem__(name, value)
    np.savez(tmp / "own.npz", **arrays)
    return [
        "run",
        str(study_file(tmp, ('validation = "test"', 'validation = "test"\ndataset = "npz:own.npz"'))),
        "--results",
        str(tmp / "results"),
    ]


def _npz_unreadable(tmp: Path) -> list[str]:
    (tmp / "own.npz").write_bytes(b"not a zip file")
    return [
        "run",
        str(study_file(tmp, ('validation = "test"', 'validation = "test"\ndataset = "npz:own.npz"'))),
        "--results",
        str(tmp / "results"),
    ]


def _locked(tmp: Path) -> list[str]:
    hold = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from hpstudy.locking import store_lock
        with store_lock(Path(sys.argv[1])):
            print("locked", flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp / "results" / "small")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "locked"
    HOLDERS.append(proc)
    return ["run", str(study_file(tmp)), "--seeds", "1", "--workers", "1", "--results", str(tmp / "results")]


def _disk_full(tmp: Path) -> list[str]:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    PATCHES.append((store.pq, "write_table", full))
    return ["run", str(study_file(tmp)), "--seeds", "1", "--workers", "1", "--results", str(tmp / "results")]


def _ctrl_c(tmp: Path) -> list[str]:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    PATCHES.append((runner, "run_study", interrupted))
    return ["run", str(study_file(tmp)), "--seeds", "1", "--workers", "1", "--results", str(tmp / "results")]


def _report_disk_full(tmp: Path) -> list[str]:
    from hpstudy.reporting import figures

    stored_grid(tmp)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    PATCHES.append((figures, "save", full))
    return report_args(tmp)


def _existing_new(tmp: Path) -> list[str]:
    (tmp / "studies").mkdir()
    (tmp / "studies" / "mine.toml").write_text("# my study\n")
    return ["new", "mine", "--file", str(tmp / "studies" / "mine.toml")]


def _shard_store(tmp: Path, name: str) -> Path:
    """A copy of the grid's synthetic runs as the store of one shard job, RESULTS_name/<study>."""
    directory = stored_grid(tmp)
    target = tmp / f"results_{name}" / directory.name
    target.mkdir(parents=True)
    for part in directory.glob("part-*.parquet"):
        (target / part.name).write_bytes(part.read_bytes())
    return target


def _merge_conflict(tmp: Path) -> list[str]:
    a, b = _shard_store(tmp, "a"), _shard_store(tmp, "b")
    part = sorted(b.glob("part-*.parquet"))[0]
    rows = pq.read_table(part).to_pylist()
    rows[0]["test_accuracy"] = 0.5
    pq.write_table(pa.Table.from_pylist(rows), part)
    return ["merge", str(tmp / "merged" / a.name), str(a), str(b)]


def _merge_studies(tmp: Path) -> list[str]:
    a = _shard_store(tmp, "a")
    other = tmp / "other" / "small"
    other.mkdir(parents=True)
    store.write_chunk(other, synthetic_records(load_study(study_file(tmp)), range(1)))
    return ["merge", str(tmp / "merged" / a.name), str(a), str(other)]


def _unreachable(tmp: Path) -> list[str]:
    from hpstudy.training import distributed

    connect = distributed.connect
    PATCHES.append((distributed, "connect", lambda scheduler, timeout="30s": connect(scheduler, timeout="2s")))
    return ["run", str(study_file(tmp)), "--results", str(tmp / "results"), "--scheduler", "tcp://127.0.0.1:9"]


def _users_readme(tmp: Path) -> list[str]:
    stored_grid(tmp)
    (tmp / "out" / "naragundkar2024_grid").mkdir(parents=True)
    (tmp / "out" / "naragundkar2024_grid" / "README.md").write_text("my notes\n")
    return report_args(tmp)


def _report_symlink(tmp: Path) -> list[str]:
    stored_grid(tmp)
    (tmp / "elsewhere").mkdir()
    (tmp / "out").mkdir()
    (tmp / "out" / "naragundkar2024_grid").symlink_to(tmp / "elsewhere", target_is_directory=True)
    return report_args(tmp)


def _read_only_compact(tmp: Path) -> list[str]:
    from hpstudy import storeops

    directory = stored_grid(tmp)

    def read_only(directory):
        raise OSError(errno.EROFS, "Read-only file system", str(directory / ".compaction.lock"))

    PATCHES.append((storeops, "_compaction_lock", read_only))
    return ["compact", str(directory)]


def _link_loop(tmp: Path) -> list[str]:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")
    return ["run", str(study_file(tmp)), "--results", str(tmp / "a" / "results")]


def _unexpandable_cache(tmp: Path) -> list[str]:
    ENVIRON.append(("HPSTUDY_CACHE_DIR", "~nosuchuser/jax"))
    return ["run", str(study_file(tmp)), "--results", str(tmp / "results")]


def _unreadable_data(tmp: Path) -> list[str]:
    folder = tmp / "data"
    folder.mkdir()
    for name in hdata.MNIST_FILES:
        (folder / name).write_bytes(b"x")

    def unreadable(file, *args, **kwargs):  # as chmod 000 does (root reads anyway)
        raise PermissionError(errno.EACCES, "Permission denied", str(file))

    PATCHES.append((hdata, "open", unreadable))
    return ["run", str(study_file(tmp)), "--data-dir", str(folder), "--no-download", "--results", str(tmp / "results")]


def _merge_mixed(tmp: Path) -> list[str]:
    import json

    a, b = _shard_store(tmp, "a"), _shard_store(tmp, "b")
    for part in b.glob("part-*.parquet"):
        rows = pq.read_table(part).to_pylist()
        for r in rows:
            r["environment"] = json.dumps({**json.loads(r["environment"]), "numerics": "native"}, sort_keys=True)
        pq.write_table(pa.Table.from_pylist(rows), part)
    return ["merge", str(tmp / "merged" / a.name), str(a), str(b)]


def _report_runs_gone(tmp: Path) -> list[str]:
    from hpstudy.reporting.build import write_report

    study = load_study(study_file(tmp))
    directory = store.study_dir(tmp / "reports" / "_runs", study.name)
    records = synthetic_records(study, range(2))
    store.write_chunk(directory, records[:4])
    store.write_chunk(directory, records[4:])
    write_report(study, tmp / "reports" / "_runs", tmp / "reports")
    sorted(directory.glob("part-*.parquet"))[0].unlink()
    return ["verify", str(tmp / "reports" / "small")]


def _corrupt_footer(tmp: Path) -> list[str]:
    directory = stored_grid(tmp)
    (directory / "part-broken.parquet").write_bytes(b"PAR1" + b"\x15\x00" * 40 + (80).to_bytes(4, "little") + b"PAR1")
    return report_args(tmp)


def _not_a_lock(tmp: Path) -> list[str]:
    directory = stored_grid(tmp)
    (tmp / "garbage.lock").write_text("garbage\n")
    return ["verify", str(directory), "--lock", str(tmp / "garbage.lock")]


def _too_wide(tmp: Path) -> list[str]:
    from hpstudy import budget

    PATCHES.append((budget, "physical_memory", lambda: 16 * 2**30))  # the same answer on every machine
    return [
        "run",
        str(study_file(tmp, ("hidden = [32, 32]", "hidden = [100000000]"))),
        "--results",
        str(tmp / "results"),
    ]


HOLDERS: list[subprocess.Popen] = []
ENVIRON: list[tuple[str, str]] = []
PATCHES: list[tuple] = []
STUDY, DATA, STORE, OUTPUT, SIZE, STOP, SCALE = (
    "Study files and arguments",
    "Data",
    "The results store",
    "Output folders",
    "Size",
    "Stopping",
    "Job arrays and Dask",
)
RUN = ["run"]

CASES = [
    Case(
        STUDY,
        'A study name that would climb out of its folder (`name = ".."`)',
        lambda t: ["run", str(study_file(t, ('name = "small"', 'name = ".."'))), "--results", str(t / "results")],
        2,
    ),
    Case(
        STUDY,
        "A study name of 300 characters",
        lambda t: [
            "run",
            str(study_file(t, ('name = "small"', f'name = "{"s" * 300}"'))),
            "--results",
            str(t / "results"),
        ],
        2,
    ),
    Case(STUDY, "A study that does not exist (a typo of a shipped one)", lambda t: ["run", "naragundkar2024_grd"], 2),
    Case(
        STUDY,
        "A typo inside `design.space` (`lgo` for `log`)",
        lambda t: [
            "run",
            str(
                study_file(
                    t,
                    ('kind = "grid"', 'kind = "random"\ntrials = 2'),
                    ("[design.factors]", "[design.space]"),
                    (FACTORS, 'learning_rate = { type = "float", low = 0.001, high = 0.1, lgo = true }'),
                )
            ),
        ],
        2,
    ),
    Case(
        STUDY,
        "Two `[[published]]` entries for one configuration and metric",
        lambda t: [
            "run",
            str(
                study_file(
                    t,
                    extra="".join(
                        f"\n[[published]]\nwhere = {{ learning_rate = 0.01, dropout = 0.2 }}\ntest_accuracy = {v}\n"
                        for v in (0.97, 0.96)
                    ),
                )
            ),
        ],
        2,
    ),
    Case(
        STUDY,
        "A grid that crosses to a million trials",
        lambda t: [
            "run",
            str(
                study_file(
                    t,
                    (
                        FACTORS,
                        "learning_rate = [{}]\nbatch_size = [{}]\ndropout = [{}]".format(
                            ", ".join(str(0.001 * k) for k in range(1, 101)),
                            ", ".join(str(b) for b in range(1, 101)),
                            ", ".join(str(d / 1000) for d in range(100)),
                        ),
                    ),
                )
            ),
        ],
        2,
    ),
    Case(
        STUDY,
        "A random design of 10^8 trials",
        lambda t: [
            "run",
            str(
                study_file(
                    t,
                    ('kind = "grid"', 'kind = "random"\ntrials = 100000000'),
                    ("[design.factors]", "[design.space]"),
                    (FACTORS, 'learning_rate = { type = "float", low = 0.001, high = 0.1 }'),
                )
            ),
        ],
        2,
    ),
    Case(
        STUDY,
        "An unknown dataset",
        lambda t: ["run", str(study_file(t, ('validation = "test"', 'validation = "test"\ndataset = "cifar10"')))],
        2,
    ),
    Case(STUDY, "A batch size larger than the training set of a .npz dataset", _npz_study, 2),
    Case(
        STUDY,
        "An optimizer argument the optimizer does not take (`rhoo` for `rho`)",
        lambda t: [
            "run",
            str(
                study_file(
                    t, ('optimizer = "adam_keras"', 'optimizer = "keras:rmsprop"\noptimizer_args = { rhoo = 0.9 }')
                )
            ),
        ],
        2,
    ),
    Case(STUDY, "`--seeds 0`", lambda t: ["run", str(study_file(t)), "--seeds", "0"], 2),
    Case(
        STUDY,
        "`--seeds 0:18446744073709551616` (beyond a 64-bit seed)",
        lambda t: ["run", str(study_file(t)), "--seeds", "0:18446744073709551616"],
        2,
    ),
    Case(
        STUDY,
        "An impossible published accuracy (`test_accuracy = 9716`: neither a fraction nor a percentage)",
        lambda t: [
            "run",
            str(
                study_file(
                    t, extra="\n[[published]]\nwhere = { learning_rate = 0.01, dropout = 0.2 }\ntest_accuracy = 9716\n"
                )
            ),
        ],
        2,
    ),
    Case(
        STUDY,
        "A folder where a study file was expected (and no studies/NAME.toml)",
        lambda t: ((t / "small").mkdir(), ["run", str(t / "small")])[1],
        2,
    ),
    Case(
        STUDY,
        "`hpstudy list --studies` a folder that does not exist",
        lambda t: ["list", "--studies", str(t / "nonexistent")],
        2,
    ),
    Case(STUDY, "An empty `--results`", lambda t: ["run", str(study_file(t)), "--results", ""], 2),
    Case(STUDY, "`hpstudy verify --lock` a file that is not a lock file", _not_a_lock, 2),
    Case(DATA, "A data folder that is a file", _data_file, 3),
    Case(
        DATA,
        "A `--data-dir` that does not exist (never replaced by `$HPSTUDY_DATA_DIR`)",
        lambda t: ["run", str(study_file(t)), "--data-dir", str(t / "typo"), "--results", str(t / "results")],
        3,
    ),
    Case(DATA, "A dataset file that cannot be read", _unreadable_data, 3),
    Case(DATA, "Dataset files that are not the canonical ones", _corrupt_data, 3),
    Case(
        DATA,
        "Dataset files missing, downloads disabled",
        lambda t: ["run", str(study_file(t)), "--data-dir", str(t), "--no-download", "--results", str(t / "results")],
        3,
    ),
    Case(DATA, "A .npz file of your own arrays that is not a .npz file", _npz_unreadable, 3),
    Case(
        DATA,
        "A .npz file whose arrays have other names (`X_train`)",
        lambda t: _npz_study(t, x_train=None, X_train=np.zeros((6, 8, 8), np.uint8)),
        3,
    ),
    Case(
        DATA,
        "A .npz file whose training and test images differ in shape",
        lambda t: _npz_study(t, x_test=np.zeros((3, 8, 9), np.uint8)),
        3,
    ),
    Case(
        DATA,
        "A .npz file with a test label outside the training set's classes",
        lambda t: _npz_study(t, y_test=np.array([0, 1, 5])),
        3,
    ),
    Case(
        DATA, "A .npz file with fractional labels", lambda t: _npz_study(t, y_train=np.array([0, 1, 2, 0, 1.5, 2])), 3
    ),
    Case(DATA, "A .npz file with NaN pixels", lambda t: _npz_study(t, x_train=np.full((6, 8, 8), float("nan"))), 3),
    Case(
        DATA,
        "A .npz file whose pixels are floats in [0, 1]",
        lambda t: _npz_study(t, x_train=np.full((6, 8, 8), 0.5)),
        3,
    ),
    Case(
        DATA,
        "A tensorflow-datasets dataset that is not prepared",
        lambda t: [
            "run",
            str(study_file(t, ('validation = "test"', 'validation = "test"\ndataset = "tfds:fashion_mnist"'))),
            "--results",
            str(t / "results"),
        ],
        3,
    ),
    Case(
        STORE,
        "No stored runs to report",
        lambda t: ["report", str(GRID), "--results", str(t / "results"), "--out", str(t / "out")],
        4,
    ),
    Case(STORE, "A run stored twice with different results", _conflict, 4),
    Case(STORE, "A part of another study copied into the folder", _foreign, 4),
    Case(STORE, "A Parquet file of another format", _alien, 4),
    Case(
        STORE, "A part with a corrupt footer (Parquet's message spans lines; the answer does not)", _corrupt_footer, 4
    ),
    Case(
        STORE,
        "A smoke-test report before its runs (`report --max-epochs 3`)",
        lambda t: ["report", str(GRID), "--max-epochs", "3", "--results", str(t / "results"), "--out", str(t / "out")],
        4,
    ),
    Case(STORE, "`hpstudy verify` of a report whose runs are not all stored any more", _report_runs_gone, 4),
    Case(
        STORE,
        "A part that is not Parquet at all (`list` lists the other studies, marks this one)",
        lambda t: (_list_dir(t), _garbage(t))[1],
        4,
    ),
    Case(STORE, "Another `hpstudy run` of the same study is running", _locked, errors.LockedError.exit_code),
    Case(
        STORE,
        "New runs for a store made in another numeric environment",
        lambda t: (
            stored_grid(t),
            ["run", str(GRID), "--seeds", "3", "--workers", "2", "--results", str(t / "results")],
        )[1],
        4,
    ),
    Case(
        OUTPUT,
        "A results folder that is a file",
        lambda t: ((t / "results").write_text("x"), ["run", str(study_file(t)), "--results", str(t / "results")])[1],
        errors.OutputError.exit_code,
    ),
    Case(
        OUTPUT,
        "A results path too long for the file system",
        lambda t: ["run", str(study_file(t)), "--results", str(t / ("r" * 300))],
        errors.OutputError.exit_code,
    ),
    Case(OUTPUT, "A results path through a loop of symbolic links", _link_loop, errors.OutputError.exit_code),
    Case(OUTPUT, "`HPSTUDY_CACHE_DIR` that cannot be expanded", _unexpandable_cache, errors.OutputError.exit_code),
    Case(OUTPUT, "The disk fills up while runs are stored", _disk_full, errors.OutputError.exit_code),
    Case(
        OUTPUT,
        "A report folder (`--out`) that is a file",
        lambda t: (stored_grid(t), (t / "out").write_text("x"), report_args(t))[2],
        errors.OutputError.exit_code,
    ),
    Case(
        OUTPUT,
        "The disk fills up while a report is written (the old report stays whole)",
        _report_disk_full,
        errors.OutputError.exit_code,
    ),
    Case(
        OUTPUT,
        "A file of the user's where the report writes one (`OUT/<study>/README.md`)",
        _users_readme,
        errors.OutputError.exit_code,
    ),
    Case(OUTPUT, "A report folder that is a symbolic link", _report_symlink, errors.OutputError.exit_code),
    Case(
        OUTPUT,
        "A report sent into a results store (`--out RESULTS`)",
        lambda t: (stored_grid(t), ["report", str(GRID), "--results", str(t / "results"), "--out", str(t / "results")])[
            1
        ],
        errors.OutputError.exit_code,
    ),
    Case(OUTPUT, "`hpstudy compact` of a read-only store", _read_only_compact, errors.OutputError.exit_code),
    Case(OUTPUT, "`hpstudy new` over an existing file", _existing_new, errors.OutputError.exit_code),
    Case(
        SIZE,
        "`--seeds 99999999999`",
        lambda t: ["run", str(GRID), "--seeds", "99999999999", "--results", str(t / "results")],
        errors.TooBigError.exit_code,
    ),
    Case(
        SIZE,
        "A run of 16,000 runs without `--yes`, with no terminal to ask on",
        lambda t: ["run", str(GRID), "--seeds", "2000", "--workers", "1", "--results", str(t / "results")],
        errors.TooBigError.exit_code,
    ),
    Case(
        SIZE,
        "A network too big for the machine's memory (`hidden = [100000000]`; 16 GiB here)",
        _too_wide,
        errors.TooBigError.exit_code,
    ),
    Case(STOP, "Ctrl-C during `hpstudy run`", _ctrl_c, 130),
    Case(
        SCALE,
        "`--shard 3/3` (shards are numbered from 0, as SLURM array tasks are)",
        lambda t: ["run", str(GRID), "--shard", "3/3", "--results", str(t / "results")],
        2,
    ),
    Case(SCALE, "`--shard -1/3`", lambda t: ["run", str(GRID), "--shard", "-1/3", "--results", str(t / "results")], 2),
    Case(SCALE, "Merging stores made in different numeric environments", _merge_mixed, 4),
    Case(SCALE, "Merging shard stores that hold one run with different values", _merge_conflict, 4),
    Case(SCALE, "Merging the stores of two different studies", _merge_studies, 4),
    Case(
        SCALE,
        "A Dask scheduler that cannot be reached (the wait is 30 s; 2 s here)",
        _unreachable,
        errors.EngineError.exit_code,
    ),
    Case(
        SCALE,
        "A Dask scheduler address that is not one (`--scheduler notaurl`)",
        lambda t: ["run", str(study_file(t)), "--results", str(t / "results"), "--scheduler", "notaurl"],
        errors.EngineError.exit_code,
    ),
]


def _files(tmp: Path) -> dict[str, bytes]:
    """Stored files (a lock file is not stored data, nor are matplotlib's font cache and the like)."""
    return {
        p.relative_to(tmp).as_posix(): p.read_bytes()
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.name != ".lock" and not p.relative_to(tmp).as_posix().startswith("cache/")
    }


def _normalise(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "<tmp>").replace(str(ROOT), "<repo>")
    return re.sub(r"pid \d+", "pid <pid>", text)


def run_case(case: Case, tmp: Path, monkeypatch, capsys) -> tuple[str, str]:
    """(command, message) of one case, after checking its exit code and that nothing stored changed."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp / "tfds"))
    monkeypatch.delenv(hdata.ENV_DATA_DIR, raising=False)
    monkeypatch.setattr(hdata, "load_dataset", _synthetic_unless_checked(hdata.load_dataset))
    argv = case.setup(tmp)
    for target, name, value in PATCHES:
        monkeypatch.setattr(target, name, value, raising=False)
    PATCHES.clear()
    for name, value in ENVIRON:
        monkeypatch.setenv(name, value)
    ENVIRON.clear()
    before = _files(tmp)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    finally:
        for proc in HOLDERS:
            proc.kill()
            proc.wait()
        HOLDERS.clear()
    err = capsys.readouterr().err
    assert code == case.code, err
    assert "Traceback" not in err
    assert _files(tmp) == before, f"{case.title}: stored files changed"
    lines = [line for line in err.splitlines() if line.startswith("hpstudy: error:")]
    assert len(lines) == 1, err
    args = [_normalise(a, tmp) for a in argv]
    command = "hpstudy " + " ".join((a or "''") if len(a) < 60 else a[:25] + "..." + a[-20:] for a in args)
    return command, _normalise(lines[0], tmp)


def _synthetic_unless_checked(real):
    """Data loading as it is, except that a run which gets past every check trains on synthetic data."""

    def load(dataset, data_dir=None, validation="test", download=True):
        if data_dir is not None or dataset != "mnist":
            return real(dataset, data_dir, validation, download)
        return synthetic_dataset()

    return load


def render(rows: list[tuple[Case, str, str]]) -> str:
    out = [
        "# Every bad input, and the answer it gets",
        "",
        "Generated by `tests/test_errors_doc.py`, which runs each case through the `hpstudy` command and fails",
        "when this page and the code disagree (`HPSTUDY_WRITE_ERRORS_DOC=1` rewrites it). In every case the",
        "answer is one line on stderr, no traceback, nothing stored is changed, and the exit code says which",
        "kind of problem it was:",
        "",
        "| exit code | error | meaning |",
        "|---:|---|---|",
    ]
    for cls in sorted(
        (
            c
            for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.HpstudyError) and c is not errors.HpstudyError
        ),
        key=lambda c: c.exit_code,
    ):
        out.append(f"| {cls.exit_code} | `{cls.__name__}` | {cls.__doc__.strip()} |")
    section = None
    for case, command, message in rows:
        if case.section != section:
            section = case.section
            out += ["", f"## {section}"]
        out += ["", f"**{case.title}** (exit {case.code})", "", "```", f"$ {command}", message, "```"]
    return "\n".join(out) + "\n"


def test_errors_doc_matches_the_code(tmp_path_factory, monkeypatch, capsys):
    pytest.importorskip("tensorflow_datasets", reason="the tfds case's answer needs tensorflow-datasets installed")
    pytest.importorskip("distributed", reason="the Dask case's answer needs the dask extra installed")
    rows = []
    for i, case in enumerate(CASES):
        with monkeypatch.context() as mp:
            command, message = run_case(case, tmp_path_factory.mktemp(f"case{i}"), mp, capsys)
        rows.append((case, command, message))
    text = render(rows)
    if os.environ.get("HPSTUDY_WRITE_ERRORS_DOC"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/errors.md is out of date: HPSTUDY_WRITE_ERRORS_DOC=1 rewrites it"
