"""Writing a folder of outputs (a report) safely: built beside the old one, then swapped in file by file.

Only files this code wrote are ever replaced or removed: a manifest (MANIFEST) lists each file it wrote
with its SHA-256, and a file is replaced or removed only when it is listed there and still holds the
bytes written then. Anything else in the way (a user's README.md, an edited table, a symbolic link) is
refused, naming it, unless `force`, which first moves it to a dated backup folder beside the report.
The manifest itself is untrusted input (it is tracked in git with shipped reports): an entry that is not
a plain relative path inside the report folder is ignored with a warning, and no symbolic link is
followed out of the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from hpstudy.errors import OutputError
from hpstudy.store import check_writable, why

MANIFEST = ".hpstudy-files.json"
# The runs a report was made from (`hpstudy verify REPORT` checks that every one is still stored).
RUN_LIST = ".hpstudy-runs.json"
# What every report writes at its top level (files, and a folder): checked before the slow part of a report.
REPORT_FILES = ("README.md", "table.csv", "table.md", "table.tex", ".hpstudy-runs.json")
REPORT_FOLDERS = ("figures",)


def _sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _warn(text: str) -> None:
    """A warning on stderr, one line."""
    print(f"hpstudy: warning: {text}", file=sys.stderr)


def safe_relative(entry: object) -> str | None:
    """`entry` as a plain relative POSIX path (no '..', '.', empty or absolute parts), else None."""
    if not isinstance(entry, str) or not entry or "\\" in entry or "\x00" in entry:
        return None
    path = PurePosixPath(entry)
    if path.is_absolute() or path.as_posix() != entry or any(part in ("", ".", "..") for part in path.parts):
        return None
    return entry


def _inside(target: Path, rel: str) -> bool:
    """Whether every folder on the way from `target` to `rel` is a real folder (no symbolic link)."""
    folder = target
    for part in PurePosixPath(rel).parts[:-1]:
        folder = folder / part
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                return False
        except FileNotFoundError:
            return True  # nothing there: nothing to follow
    return True


def _old_manifest(target: Path, warn: Callable[[str], None]) -> dict[str, str]:
    """The files the last report in `target` wrote, {relative path: sha256}; unsafe entries dropped, with a warning."""
    path = target / MANIFEST
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            warn(f"{path} is a symbolic link, not a list this code wrote; ignored (no earlier file is removed).")
            return {}
        listed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(listed, dict):
        return {}
    kept = {}
    for entry, digest in sorted(listed.items(), key=lambda kv: str(kv[0])):
        rel = safe_relative(entry)
        if rel is None or rel == MANIFEST or not isinstance(digest, str):
            warn(f"{path} lists {entry!r}, which is not a plain relative path inside {target}; ignored (not removed).")
            continue
        kept[rel] = digest
    return kept


def _ours(target: Path, rel: str, old: dict[str, str]) -> bool:
    """Whether target/rel is a regular file the last report wrote and nobody changed since."""
    path = target / rel
    if rel not in old or not _inside(target, rel):
        return False
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and _sha256(path) == old[rel]
    except OSError:
        return False


def _lexists(path: Path) -> bool:
    """Whether anything (a symbolic link included, even a broken one) is at `path`."""
    try:
        os.lstat(path)
        return True
    except FileNotFoundError:
        return False


def obstacles(target: Path, rels: Iterable[str], old: dict[str, str], folders: Iterable[str] = ()) -> list[str]:
    """What stands where the files `rels` (and the folders `folders`) are to be written and was not written
    by this code: a file or link at a file's place, or anything but a real folder where a folder is needed."""
    found: dict[str, None] = {}
    for rel in [*rels, *(f"{folder}/-" for folder in folders)]:  # a folder: as the parent of a file
        parts = PurePosixPath(rel).parts
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            try:
                mode = os.lstat(target / folder).st_mode
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(mode):
                if not _ours(target, folder, old):
                    found[folder] = None
                break
        else:
            if not rel.endswith("/-") and _lexists(target / rel) and not _ours(target, rel, old):
                found[rel] = None
    return list(found)


def check_target(
    out: Path,
    name: str,
    rels: Iterable[str] = REPORT_FILES,
    force: bool = False,
    folders: Iterable[str] = REPORT_FOLDERS,
) -> None:
    """Refuse (OutputError) a report folder that is a symbolic link, or, without `force`, one where
    files it did not write stand in the way of `rels` and `folders`; nothing is written."""
    target = Path(out) / name
    if _lexists(target) and stat.S_ISLNK(os.lstat(target).st_mode):
        raise OutputError(
            f"the report folder {target} is a symbolic link (to {os.readlink(target)}); a report is written only "
            "into a real folder, so that nothing outside it is touched. Remove the link, or pass another --out."
        )
    for folder in (target, Path(out)):  # --out given the results folder, or a study's store
        if folder.is_dir() and any(folder.glob("part-*.parquet")):
            raise OutputError(
                f"{folder} holds stored runs (part-*.parquet): it is a results store, not a place for "
                "reports. Pass another --out (reports go to OUT/<study>/)."
            )
    if force or not target.is_dir():
        return
    foreign = obstacles(target, rels, _old_manifest(target, lambda _: None), folders)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise OutputError(
            f"{target} holds files this report did not write (or that were changed since): {shown}. Nothing was "
            "written. Pass another --out, or --force to move them to a dated backup folder beside the report first."
        )


def _backup(target: Path, rels: list[str]) -> Path:
    """Move target/rel for each rel into a new dated folder beside `target`; that folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup = target.parent / f"{target.name}.backup-{stamp}"
    n = 1
    while _lexists(backup):
        n += 1
        backup = target.parent / f"{target.name}.backup-{stamp}-{n}"
    for rel in rels:
        (backup / rel).parent.mkdir(parents=True, exist_ok=True)
        os.rename(target / rel, backup / rel)  # the link itself, not what it points at
    return backup


def _replace_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file would be, not mkstemp's owner-only
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def publish(
    out: Path, name: str, build: Callable[[Path], None], force: bool = False, warn: Callable[[str], None] = _warn
) -> Path:
    """Let `build` write a fresh folder beside out/<name>, then move its files into out/<name>.

    Each file lands by an atomic rename, so a reader sees the old file or the new one, never a partial
    one; files of the old version that the new one no longer has are removed only if this code wrote
    them. A file this code did not write is never replaced: OutputError naming it, unless `force`, which
    moves it to out/<name>.backup-<UTC time>/ first. A failure to write is an OutputError, and leaves the
    old files as they were until the swap.
    """
    out = Path(out)
    check_writable(out, "output")
    check_target(out, name, force=force)
    target = out / name
    staging = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.new-"))
        build(staging)
        new_files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        written = {rel: _sha256(staging / rel) for rel in new_files}
        check_target(out, name, new_files, force, folders=())  # again, with the files actually made
        old = _old_manifest(target, warn)
        foreign = obstacles(target, new_files, old) if target.is_dir() else []
        if foreign:  # only with force (check_target refused otherwise)
            warn(f"moved {len(foreign)} file(s) this report did not write to {_backup(target, foreign)}.")
        target.mkdir(parents=True, exist_ok=True)
        for rel in new_files:
            _clear_way(target, rel)
            os.replace(staging / rel, target / rel)
        for rel in sorted(old):
            if rel not in written and _ours(target, rel, old):
                (target / rel).unlink()
        _replace_atomically(target / MANIFEST, json.dumps(written, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write the report into {target}: {why(exc)}.") from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _clear_way(target: Path, rel: str) -> None:
    """Create the folders of target/rel, removing a file of an earlier report where a folder now goes
    (obstacles() has proved that whatever stands there was written by this code, or moved it aside)."""
    folder = target
    for part in PurePosixPath(rel).parts[:-1]:
        folder = folder / part
        if _lexists(folder) and not stat.S_ISDIR(os.lstat(folder).st_mode):
            folder.unlink()
        folder.mkdir(exist_ok=True)


def run_list_text(study: str, run_ids: Iterable[str]) -> str:
    """The text of a report's run list: the study and the sorted ids of the runs it was made from."""
    return json.dumps({"study": study, "runs": sorted(set(run_ids))}, indent=1) + "\n"


def read_run_list(folder: Path) -> list[str] | None:
    """The run ids a report folder records, or None when it records none (made before run lists were);
    OutputError for a list that does not parse."""
    path = Path(folder) / RUN_LIST
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OutputError(
            f"{path} cannot be read ({exc}); regenerate the report (hpstudy report) to restore it."
        ) from exc
    runs = listed.get("runs") if isinstance(listed, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise OutputError(
            f'{path} is not a run list (expected {{"study": ..., "runs": [run ids]}}); regenerate '
            "the report (hpstudy report) to restore it."
        )
    return runs
