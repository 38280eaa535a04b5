"""The results store: one Parquet part file per finished chunk under results/<study>/, written atomically.

A store is the set of its live parts (`live_parts`): every part-*.parquet file, except while a compaction
(hpstudy/storeops.py) is committed but not finished; then its journal, compaction.json, says which parts
it replaced and which it added, so a reader sees every run exactly once at any point of a compaction, and
after a crash at any point.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hpstudy.errors import OutputError, StoreError
from hpstudy.runs import HISTORY_FIELDS, RunResult

# The same rule as a study file's name (hpstudy/study.py): a name can never climb out of --results.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}")
# Columns every part must hold, with their Arrow type kinds; a part without them is not one of ours.
REQUIRED_COLUMNS = {
    "study": pa.types.is_string,
    "run_id": pa.types.is_string,
    "trial_id": pa.types.is_string,
    "seed": pa.types.is_integer,
    "config": pa.types.is_string,
    "test_accuracy": pa.types.is_floating,
    "test_loss": pa.types.is_floating,
    "param_sha256": pa.types.is_string,
    "dataset_fingerprint": pa.types.is_string,
}
# What two copies of one run must agree on: everything a run's bits determine. Timings, chunk and
# environment text may differ between two honest copies (another process, another day).
RESULT_FIELDS = (
    "study",
    "trial_id",
    "seed",
    "config",
    "param_sha256",
    "test_accuracy",
    "test_loss",
    "epochs_run",
    "best_epoch",
    "final_train_loss",
    "final_train_accuracy",
    "final_val_loss",
    "final_val_accuracy",
    "best_val_accuracy",
    "dataset_fingerprint",
)

# Test-set predictions of a run (docs/design.md): the predicted class of every test image, one uint8 each,
# and one bit per image saying whether it was right (np.packbits order). Absent from runs stored before
# predictions were kept, and from parts not backfilled by `hpstudy verify --add-predictions`.
PREDICTION_COLUMNS = ("test_predictions", "test_correct")


def study_dir(results: str | os.PathLike, study: str) -> Path:
    """Where a study's runs are stored (a name that is not a plain folder name is refused)."""
    if not _SAFE_NAME.fullmatch(study):
        raise StoreError(
            f"study name {study!r} cannot name a folder under {results}; use letters, digits, '_', '-' or '.'."
        )
    return Path(results) / study


def check_writable(directory: Path, what: str = "results") -> None:
    """Prove that `directory` can be created and written, without creating it; OutputError says why not.

    Checked: no file stands where a folder is needed, every new folder name fits the file system, and
    a file can be created (and is removed again) in the nearest folder that exists.
    """
    directory = Path(directory)
    try:
        for p in (directory, *directory.parents):  # exists() reads a link loop as "missing": stat says why
            try:
                os.stat(p)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise
        existing = next(p for p in (directory, *directory.parents) if p.exists() or p == Path(p.anchor))
        if not existing.is_dir():
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        limit = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        for name in directory.relative_to(existing).parts if existing != directory else ():
            if len(os.fsencode(name)) > limit:
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name)
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".hpstudy-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(directory) else ""
        raise OutputError(
            f"cannot write the {what} folder {directory}{where}: {_why(exc)}. Nothing was run or written."
        ) from exc


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (Arrow's and Thrift's span several)."""
    return " ".join(str(exc).split())


def why(exc: OSError) -> str:
    """A short reason for a failed write (for messages of modules that write beside the store)."""
    return _why(exc)


def _why(exc: OSError) -> str:
    """A short reason for a failed write, with the fix where there is an obvious one."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device (free some space, or pass another folder)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (pass a folder you can write, e.g. --results DIR or --out DIR)"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file is in the way where a folder is needed (move it, or pass another folder)"
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long for the file system"
    if exc.errno == errno.ELOOP:
        return "symbolic links on the path point at each other in a loop (fix the links, or pass another folder)"
    return exc.strerror or str(exc)


def to_record(result: RunResult, study: str, study_sha256: str, dataset_fingerprint: str, env: dict) -> dict:
    """One flat row for one run."""
    config = result.spec.config
    hist = result.history
    val_acc = hist["val_accuracy"]
    record = {
        "study": study,
        "study_sha256": study_sha256,
        "trial_id": result.spec.trial_id,
        "run_id": result.spec.run_id,
        "seed": result.spec.seed,
        "config": config.canonical(),
        **{f"hp.{k}": (json.dumps(v) if isinstance(v, list) else v) for k, v in config.as_flat_dict().items()},
        **{name: hist[name] for name in HISTORY_FIELDS},
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "final_train_loss": hist["train_loss"][-1],
        "final_train_accuracy": hist["train_accuracy"][-1],
        "final_val_loss": hist["val_loss"][-1],
        "final_val_accuracy": val_acc[-1],
        "best_val_accuracy": max(val_acc) if val_acc else float("nan"),
        "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy,
        "param_sha256": result.param_sha256,
        "chunk_width": result.chunk_width,
        "group_id": result.group_id,
        "seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
        "dataset_fingerprint": dataset_fingerprint,
        "environment": json.dumps(env, sort_keys=True),
    }
    if result.test_predictions is not None:
        record.update(test_predictions=result.test_predictions, test_correct=result.test_correct)
    return record


def part_name(run_ids) -> str:
    """A part's file name: the hash of the run ids it holds."""
    return f"part-{hashlib.sha256('|'.join(sorted(run_ids)).encode()).hexdigest()[:20]}.parquet"


def write_chunk(directory: Path, records: list[dict]) -> Path:
    """Write records as one part file: temp file in the same folder, fsync, atomic rename.

    A failed write (disk full, permissions changed) leaves no partial file and is an OutputError.
    """
    return write_table(pa.Table.from_pylist(records), Path(directory) / part_name(r["run_id"] for r in records))


def write_table(table: pa.Table, target: Path) -> Path:
    """Write a table to `target` atomically: temp file in the same folder, fsync, rename; OutputError if not."""
    directory = target.parent
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(directory)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".part-{_HOST}-{os.getpid()}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(
            f"cannot store {table.num_rows} finished runs in {directory}: {_why(exc)}. Runs stored before "
            "are intact; fix this and run the same command again to compute only what is missing."
        ) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return target


# A part's temporary file names its writer (host and pid), so that a later writer can prove it dead and
# remove what a kill -9 left; a temporary of another host (a shared file system) is never touched.
_HOST = socket.gethostname().replace("-", "_") or "host"
_TMP_NAME = re.compile(r"\.part-(?P<host>[^-]*)-(?P<pid>\d+)-[^/]*\.tmp")


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_dead_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary part files in `directory` whose writer, on this host, is gone; the ones removed.
    A temporary is never read as a part, so this only frees space (one listing of the folder: auto-compaction
    keeps it short)."""
    directory = Path(directory)
    removed = []
    for path in directory.glob(".part-*.tmp"):
        match = _TMP_NAME.fullmatch(path.name)
        if match and match["host"] == _HOST and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


JOURNAL = "compaction.json"  # a compaction's commit record (see hpstudy/storeops.py)
PENDING = ".pending"  # suffix of a compacted part written but not yet renamed into place


def fsync_dir(directory: Path) -> None:
    """Make renames and removals in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_journal(directory: Path) -> dict | None:
    """The compaction journal of a store, or None; a journal that does not parse is an error naming it."""
    path = Path(directory) / JOURNAL
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:  # a link loop, a folder of that name, no permission
        raise StoreError(f"the store {directory} cannot be read ({path}: {_why(exc)}).") from exc
    try:
        journal = json.loads(text)
        return {
            "generation": int(journal["generation"]),
            "add": list(journal["add"]),
            "remove": list(journal["remove"]),
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            f"compaction journal {path} is not valid ({exc}); it is written atomically, so it "
            "was not written by hpstudy. Restore it or move the store aside."
        ) from exc


def _live_names(directory: Path, journal: dict | None) -> list[Path]:
    """The live parts given a listing of `directory` and its journal (see `live_parts`)."""
    names = {p.name for p in directory.glob("part-*.parquet")}
    if journal is None:
        return [directory / n for n in sorted(names)]
    names = (names - set(journal["remove"])) | set(journal["add"])
    paths = []
    for name in sorted(names):
        path = directory / name
        # an added part is at its final name once renamed, before that at its pending name
        paths.append(path if name not in journal["add"] or path.exists() else directory / (name + PENDING))
    return paths


def live_parts(directory: str | os.PathLike) -> list[Path]:
    """The part files that hold the store's runs, each run in exactly one, whatever point a compaction
    reached or crashed at. The journal is read before and after listing the folder and the listing is
    repeated if a compaction moved on in between (its generation only grows)."""
    directory = Path(directory)
    for _ in range(100):
        before = read_journal(directory)
        paths = _live_names(directory, before)
        if read_journal(directory) == before:
            return paths
        time.sleep(0.01)
    raise StoreError(f"{directory} kept changing while being listed (a compaction running?); try again.")


def parts_signature(directory: str | os.PathLike) -> tuple:
    """What a store's live parts are, without reading them (names, sizes, modification times): equal
    before and after, no part was added, replaced or removed in between."""
    out = []
    for part in live_parts(directory):
        try:
            st = part.stat()
            out.append((part.name, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:  # removed by a finishing compaction: the signature differs anyway
            out.append((part.name, -1, -1))
    return tuple(out)


def read_parts(directory: Path, read: Callable[[Path], object]) -> list:
    """`read` applied to every live part; a part removed meanwhile by a finishing compaction restarts the
    listing; a part that does not read is an error naming it."""
    for _ in range(100):
        tables = []
        try:
            for part in live_parts(directory):
                try:
                    tables.append(read(part))
                except FileNotFoundError:
                    raise
                except (pa.ArrowException, OSError) as exc:
                    raise StoreError(
                        f"results part {part} cannot be read ({one_line(exc)}). It was not written by a finished chunk "
                        "of hpstudy; move it aside to recompute its runs, nothing else is touched."
                    ) from exc
            return tables
        except FileNotFoundError:
            time.sleep(0.01)
    raise StoreError(f"{directory} kept changing while being read (a compaction running?); try again.")


def _parts(directory: Path) -> list[Path]:
    """The store's live parts (see `live_parts`)."""
    return live_parts(directory)


def _check_part(part: Path, study: str | None, columns: list[str] | None) -> pd.DataFrame:
    """Read one part (all columns, or `columns`), checking its schema and that it belongs to `study`."""
    try:
        schema = pq.read_schema(part)
        missing = [
            c for c, ok in REQUIRED_COLUMNS.items() if schema.get_field_index(c) < 0 or not ok(schema.field(c).type)
        ]
        if missing:
            raise StoreError(
                f"results part {part} is not an hpstudy part: it lacks (or mistypes) the columns "
                f"{', '.join(missing)}. Move it out of {part.parent}; nothing else was read."
            )
        wanted = (
            None
            if columns is None
            else [c for c in dict.fromkeys([*columns, "study"]) if schema.get_field_index(c) >= 0]
        )
        frame = pq.read_table(part, columns=wanted).to_pandas()
    except FileNotFoundError:
        raise  # removed by a compaction finishing meanwhile: read_runs lists the store again
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(
            f"results part {part} cannot be read ({one_line(exc)}). It was not written by a finished chunk "
            "of hpstudy; move it aside to recompute its runs, nothing else is touched."
        ) from exc
    if study is not None:
        foreign = sorted(set(frame["study"]) - {study})
        if foreign:
            raise StoreError(
                f"results part {part} holds runs of study {foreign[0]!r}, not {study!r}: it was copied into the "
                f"wrong folder. Move it to the folder of study {foreign[0]!r} (or aside); nothing was read."
            )
    return frame


def _same(a, b) -> bool:
    """Equal stored values, NaN equal to NaN (a diverged run's loss)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _plain(value):
    """A NumPy scalar as the Python value it holds (for messages)."""
    return value.item() if hasattr(value, "item") else value


def check_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop identical copies of a run; StoreError naming both parts and the fields where two copies differ."""
    dup = frame[frame.duplicated("run_id", keep=False)]
    for run_id, copies in dup.groupby("run_id", sort=True):
        first = copies.iloc[0]
        for _, other in copies.iloc[1:].iterrows():
            fields = [f for f in RESULT_FIELDS if f in copies.columns and not _same(first[f], other[f])]
            if fields:
                detail = ", ".join(f"{f} ({_plain(first[f])!r} vs {_plain(other[f])!r})" for f in fields[:4])
                raise StoreError(
                    f"run {run_id} is stored twice with different results: {first['_part']} and "
                    f"{other['_part']} differ in {detail}. One of them was not made by this study's runs "
                    "(edited, or copied from elsewhere); move the wrong part aside. Nothing was read."
                )
    return frame.drop_duplicates("run_id")


def _read_all(parts: list[Path], study: str, columns: list[str] | None) -> pd.DataFrame | None:
    """Every part in one pass (fast over thousands of parts), with each row's part; None when any part
    might be at fault (unreadable, mistyped, missing columns, another study): the caller then reads part
    by part, which names the part."""
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset([str(p) for p in parts], format="parquet")  # schema of the first part
        names = set(dataset.schema.names)
        if columns is None:
            wanted = dataset.schema.names
        else:
            wanted = [c for c in dict.fromkeys([*columns, *REQUIRED_COLUMNS]) if c in names]
        fragments = list(dataset.get_fragments())
        if any(not set(wanted) <= set(f.physical_schema.names) for f in fragments):
            return None  # parts of different columns: read part by part (the dataset would fill in nulls)
        table = dataset.to_table(columns=wanted)  # rows in part order
        counts = [fragment.metadata.num_rows for fragment in fragments]
    except (pa.ArrowException, OSError):
        return None
    if not set(REQUIRED_COLUMNS) <= set(table.column_names) or any(
        table.column(c).null_count for c in REQUIRED_COLUMNS
    ):
        return None
    if not all(ok(table.schema.field(c).type) for c, ok in REQUIRED_COLUMNS.items()):
        return None
    frame = table.to_pandas()
    if set(frame["study"]) != {study}:
        return None
    frame["_part"] = np.repeat([str(p) for p in parts], counts)
    return frame


def read_columns(directory: Path, columns: list[str]) -> pd.DataFrame:
    """These columns of every live part, read in one pass (much faster over hundreds of parts), one row per
    run, sorted by trial and seed. Any failure falls back to read_runs, which reads part by part, checks
    every part and names a bad one."""
    parts = live_parts(directory)
    if not parts:
        return read_runs(directory)
    try:
        import pyarrow.parquet as pq

        runs = pq.read_table([str(p) for p in parts], columns=list(columns)).to_pandas()
    except Exception:  # noqa: BLE001 - any failure: the part-by-part reader reports it properly
        return read_runs(directory)
    runs = runs.drop_duplicates("run_id")
    return runs.sort_values(["trial_id", "seed"], kind="stable").reset_index(drop=True)


def read_runs(directory: Path, study: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """All stored runs of a study (empty frame if none), every part checked: its schema, that it holds
    only runs of `study` (default: the folder's name), and that no run is stored twice with different
    results. A part that fails is a StoreError naming it. `columns`: only these (those that exist)."""
    directory = Path(directory)
    for _ in range(100):
        try:
            return _read_runs(directory, directory.name if study is None else study, columns)
        except FileNotFoundError:  # a part went away under a finishing compaction: list again
            time.sleep(0.01)
    raise StoreError(f"{directory} kept changing while being read (a compaction running?); try again.")


def _read_runs(directory: Path, study: str, columns: list[str] | None) -> pd.DataFrame:
    """read_runs over one listing of the live parts."""
    parts = _parts(directory)
    if not parts:
        return pd.DataFrame(columns=["run_id"])
    compare = None if columns is None else list(dict.fromkeys([*columns, "run_id", "trial_id", "seed", *RESULT_FIELDS]))
    runs = _read_all(parts, study, compare)
    if runs is None:
        frames = []
        for part in parts:
            frame = _check_part(part, study, compare)
            frame["_part"] = str(part)
            frames.append(frame)
        runs = pd.concat(frames, ignore_index=True)
    runs = check_duplicates(runs).drop(columns="_part")
    runs = runs.sort_values(["trial_id", "seed"], kind="stable").reset_index(drop=True)
    return runs if columns is None else runs[[c for c in dict.fromkeys(columns) if c in runs.columns]]


def stored_ids(directory: Path, study: str | None = None) -> set[str]:
    """Run ids already in the store (every part checked as read_runs does)."""
    runs = read_runs(directory, study, columns=["run_id", "trial_id", "seed"])
    return set(runs["run_id"])


def validate(directory: Path, study: str | None = None) -> int:
    """Check every part of a store as read_runs does, without keeping the runs; the number of runs."""
    return len(read_runs(directory, study, columns=["run_id"]))


# What `hpstudy run` needs of every stored run when it returns no frame: which runs are stored, and where.
RUN_COLUMNS = ("run_id", "trial_id", "seed", "environment")


class Contents:
    """One read of a store (`read_contents`) and the runs this process stored after it (`add`): while this
    process holds the store's lock, what a fresh read with the same columns would return."""

    def __init__(self, directory: Path, runs: pd.DataFrame, columns: list[str] | None = None):
        self.directory = Path(directory)
        self.columns = columns  # the columns read (None: all)
        self._runs = runs  # one row per run, sorted by trial and seed, as read_runs returns them
        self._added: list[dict] = []  # records stored since, not yet in _runs

    @classmethod
    def empty(cls, directory: Path, columns=RUN_COLUMNS) -> Contents:
        """A store that holds no runs (a folder not made yet: nothing to read)."""
        wanted = None if columns is None else list(dict.fromkeys([*columns, *RUN_COLUMNS]))
        return cls(directory, pd.DataFrame(columns=["run_id"]), wanted)

    @property
    def runs(self) -> pd.DataFrame:
        """The stored runs: those read and those added, one row per run, sorted by trial and seed."""
        if self._added:
            new = pa.Table.from_pylist(self._added).to_pandas()  # as a read of their parts converts them
            if self.columns is not None:
                new = new[[c for c in self.columns if c in new.columns]]
            runs = new if not len(self._runs) else pd.concat([self._runs, new], ignore_index=True)
            runs = runs.drop_duplicates("run_id").sort_values(["trial_id", "seed"], kind="stable")
            self._runs, self._added = runs.reset_index(drop=True), []
        return self._runs

    @property
    def ids(self) -> set[str]:
        """The ids of the stored runs."""
        return set(self._runs["run_id"]) | {r["run_id"] for r in self._added}

    def environments(self) -> dict[str, int]:
        """Each distinct environment fingerprint (JSON text) of the stored runs, with how many carry it."""
        counts: dict[str, int] = {}
        for text in [*(self._runs["environment"] if len(self._runs) else ()), *(r["environment"] for r in self._added)]:
            counts[text] = counts.get(text, 0) + 1
        return counts

    def add(self, records: list[dict]) -> None:
        """Count in the records of runs this process has just stored (store.write_chunk); a run already
        held is kept once."""
        self._added.extend(records)


def read_contents(directory: Path, study: str | None = None, columns=RUN_COLUMNS) -> Contents:
    """The runs in a store, read once with every part checked as read_runs checks it, with each run's
    environment record: what `hpstudy run` plans, checks and returns from (hpstudy/runner.py). columns:
    only these (with run_id, trial_id, seed and environment); None: every column. A store that does not
    exist holds no runs."""
    directory = Path(directory)
    wanted = None if columns is None else list(dict.fromkeys([*columns, *RUN_COLUMNS]))
    if not directory.is_dir():
        return Contents.empty(directory, columns)
    runs = read_runs(directory, study, wanted)
    if len(runs) and ("environment" not in runs.columns or runs["environment"].isna().any()):
        for part in live_parts(directory):
            if pq.read_schema(part).get_field_index("environment") < 0:
                raise StoreError(f"results part {part} has no environment column; move it aside to recompute its runs.")
        raise StoreError(f"{directory} holds runs without an environment record; move their parts aside.")
    return Contents(directory, runs, wanted)


def stored_environments(directory: Path) -> dict[str, int]:
    """Each distinct environment fingerprint (JSON text) in the store, with how many runs carry it."""
    counts: dict[str, int] = {}

    def read(part: Path) -> list:
        try:
            return pq.read_table(part, columns=["environment"]).column("environment").to_pylist()
        except KeyError as exc:
            raise StoreError(
                f"results part {part} has no environment column ({exc}); move it aside to recompute its runs."
            ) from exc

    for column in read_parts(Path(directory), read):
        for text in column:
            counts[text] = counts.get(text, 0) + 1
    return counts
