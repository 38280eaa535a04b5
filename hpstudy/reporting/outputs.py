"""Writing a folder of outputs (a report) safely: built beside the old one, then swapped in file by file.

Only files this code wrote are ever replaced or removed: a manifest (MANIFEST) lists each file it wrote
with its SHA-256, and a file that is no longer produced is removed only when it is listed there and still
holds the bytes written then. Files someone else put in the folder are never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from hpstudy.errors import OutputError
from hpstudy.store import check_writable, why

MANIFEST = ".hpstudy-files.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _old_manifest(target: Path) -> dict[str, str]:
    try:
        listed = json.loads((target / MANIFEST).read_text())
        return {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}
    except (OSError, ValueError):
        return {}


def _replace_atomically(path: Path, text: str) -> None:
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


def publish(out: Path, name: str, build: Callable[[Path], None]) -> Path:
    """Let `build` write a fresh folder beside out/<name>, then move its files into out/<name>.

    Each file lands by an atomic rename, so a reader sees the old file or the new one, never a partial
    one; files of the old version that the new one no longer has are removed only if this code wrote
    them. A failure to write is an OutputError, and leaves the old files as they were until the swap.
    """
    out = Path(out)
    check_writable(out, "output")
    target = out / name
    staging = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.new-"))
        build(staging)
        new_files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        written = {rel: _sha256(staging / rel) for rel in new_files}
        old = _old_manifest(target)
        target.mkdir(parents=True, exist_ok=True)
        for rel in new_files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target / rel)
        for rel, digest in sorted(old.items()):
            stale = target / rel
            if rel not in written and stale.is_file() and _sha256(stale) == digest:
                stale.unlink()
        _replace_atomically(target / MANIFEST, json.dumps(written, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write the report into {target}: {why(exc)}.") from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target
