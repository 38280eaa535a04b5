"""Stored evaluation values replaced by re-made ones (`hpstudy verify --amend-evaluation REASON`).

Only ever from a retraining through verify's path that found the run's training unchanged, bit for bit
(its id, parameter hash, epochs, best epoch, training losses and accuracies, chunk width, group), and
differences only in what evaluation gives (hpstudy/verify.py decides; this module only writes). Such a
difference is not a new result: the same parameters, evaluated again by code that evaluates differently
(the engine's per-lane evaluation made evaluation values independent of a run's slot in its chunk).

Every replaced value is written down first, in the store's `amendments.jsonl` (one JSON object per
amendment: when, the reason given, the code's version, and per run the old and the new value of every
field that changed), so that the store itself says which of its values were re-made and why. Then each
part that holds an amended run is rewritten with only those values changed and renamed over the old one
atomically; a reader sees the old part or the new one. The log is written before the parts, so that a
crash in between leaves a log that names more than was changed, never a change the log does not name.
Verify amends chunk by chunk as its retraining goes (one log entry each), so that an interrupted pass keeps
what it re-made; a second pass finds those runs equal and amends the rest.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hpstudy import store, storeops
from hpstudy.errors import StoreError

# What evaluation gives: the only fields an amendment may change.
EVALUATION_FIELDS = (
    "val_loss",
    "val_accuracy",
    "final_val_loss",
    "final_val_accuracy",
    "best_val_accuracy",
    "test_loss",
    "test_accuracy",
    *store.PREDICTION_COLUMNS,
)
LOG_NAME = "amendments.jsonl"


@dataclasses.dataclass
class Amended:
    """What amending one store did."""

    directory: Path
    parts_written: list[Path] = dataclasses.field(default_factory=list)
    run_ids: list[str] = dataclasses.field(default_factory=list)
    values: int = 0  # fields replaced, over all runs

    @property
    def runs(self) -> int:
        return len(self.run_ids)


def code_version() -> str:
    """hpstudy's version, and the git commit of its source where it runs from a checkout (for the log)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("hpstudy")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version} (git {commit}{', with uncommitted changes' if dirty else ''})"


def _plain(value):
    """A JSON-able form of a stored value; floats by repr so that the log keeps every bit."""
    if isinstance(value, bytes):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float):
        return repr(value) if not math.isnan(value) else "nan"
    return value


def _changes(old: dict, new: dict) -> dict:
    """{field: {"old": ..., "new": ...}} for the evaluation fields that differ (histories: only the epochs
    that differ, by index)."""
    out = {}
    for field, value in new.items():
        before = old[field]
        if isinstance(value, list):
            epochs = [i for i, (a, b) in enumerate(zip(before, value)) if repr(float(a)) != repr(float(b))]
            out[field] = {
                "epochs": epochs,
                "old": [_plain(before[i]) for i in epochs],
                "new": [_plain(value[i]) for i in epochs],
            }
        else:
            out[field] = {"old": _plain(before), "new": _plain(value)}
    return out


def _append_log(directory: Path, entry: dict) -> None:
    """Append one line to the store's amendment log, atomically (the whole file rewritten and renamed)."""
    path = directory / LOG_NAME
    text = path.read_text() if path.exists() else ""
    _write_log(directory, text + json.dumps(entry, sort_keys=True) + "\n")


def carry_logs(out: str | os.PathLike, sources) -> int:
    """Append to OUT's amendment log every amendment of the `sources` stores it does not hold yet (storeops.merge:
    the merged runs carry the amended values, so the merged store must name them too); how many were added.
    Running it again adds nothing."""
    out = Path(out)
    held = {json.dumps(entry, sort_keys=True) for entry in read_log(out)}
    new = []
    for source in sources:
        for entry in read_log(source):
            line = json.dumps(entry, sort_keys=True)
            if line not in held:
                held.add(line)
                new.append(line)
    if new:
        path = out / LOG_NAME
        text = path.read_text() if path.exists() else ""
        _write_log(out, text + "".join(line + "\n" for line in new))
    return len(new)


def _write_log(directory: Path, text: str) -> None:
    """The store's amendment log, written to a temporary file and renamed over the old one."""
    path = directory / LOG_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".amendments-", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a log like any file the user writes (mkstemp makes it private)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_log(directory: str | os.PathLike) -> list[dict]:
    """The store's amendments, oldest first ([] when it has none)."""
    path = Path(directory) / LOG_NAME
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not an amendment log (one JSON object per line): {exc}") from exc


def _with_values(table: pa.Table, new: dict[str, dict]) -> pa.Table:
    """The part's table with the amended runs' evaluation values replaced, every other value as it was."""
    ids = table.column("run_id").to_pylist()
    fields = sorted({f for values in new.values() for f in values})
    for name in fields:
        if name not in table.column_names:
            raise StoreError(f"a part lacks the column {name!r} that an amendment would change; nothing written")
        column = table.column(name)
        values = column.to_pylist()
        values = [new[rid][name] if rid in new and name in new[rid] else v for rid, v in zip(ids, values)]
        table = table.set_column(table.column_names.index(name), name, pa.array(values, column.type))
    return table


def amend_store(
    directory: Path,
    old: dict[str, dict],
    new: dict[str, dict],
    reason: str,
    version: str,
    so_far: Amended | None = None,
) -> Amended:
    """Replace the evaluation values `new` ({run_id: {field: value}}) of the store's runs; `old` holds the
    stored values they replace (for the log). Holds the store's run lock and its compaction lock. `so_far`:
    what earlier calls of the same pass amended in this store (verify calls this once per chunk), extended."""
    directory = Path(directory)
    amended = so_far if so_far is not None else Amended(directory)
    bad = sorted({f for values in new.values() for f in values} - set(EVALUATION_FIELDS))
    if bad:
        raise StoreError(f"an amendment may change only evaluation values, not {', '.join(bad)}; nothing written")
    if not new:
        return amended
    with storeops.rewriting_parts(directory):
        parts = {}
        for part in store.live_parts(directory):
            ids = set(pq.read_table(part, columns=["run_id"]).column("run_id").to_pylist())
            if ids & set(new):
                parts[part] = ids
        missing = set(new) - set().union(*parts.values()) if parts else set(new)
        if missing:
            raise StoreError(f"{directory} no longer holds runs {', '.join(sorted(missing))[:200]}; nothing written")
        _append_log(
            directory,
            {
                "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "reason": reason,
                "hpstudy": version,
                "runs": {rid: _changes(old[rid], new[rid]) for rid in sorted(new)},
            },
        )
        for part in sorted(parts):
            store.write_table(_with_values(pq.read_table(part), new), part)
            if part not in amended.parts_written:
                amended.parts_written.append(part)
        store.fsync_dir(directory)
    amended.run_ids = sorted({*amended.run_ids, *new})
    amended.values += sum(len(v) for v in new.values())
    return amended
