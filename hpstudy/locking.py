"""One writer per study store: an OS file lock on the store folder that dies with its process.

`fcntl.flock` locks belong to the open file description, so the kernel releases them when the holder
exits for any reason (kill -9 included): no stale lock can survive its process. The holder writes its
pid into the lock file so a second process can say who holds it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hpstudy.errors import LockedError, OutputError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per store is then the user's responsibility
    fcntl = None


def holder(directory: Path) -> str:
    """What the lock file says about its holder (its pid), or '?' when it cannot be read."""
    try:
        return (Path(directory) / LOCK_NAME).read_text().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def store_lock(
    directory: Path, wait: bool = False, on_wait: Callable[[str], None] | None = None, announce: bool = True
) -> Iterator[None]:
    """Hold the lock of a study's store folder for the duration of the block.

    wait=False: LockedError (naming the holder's pid) when another process holds it; wait=True: block
    until it is free, calling on_wait(pid) once first. announce=False: the lock file is left as it is (a
    holder that only reads writes nothing); `announce_holder` writes the pid once it is going to write.
    """
    directory = Path(directory)
    if fcntl is None:
        yield
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(
            f"cannot create the lock file in {directory}: {exc.strerror}. Nothing was run or written."
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = holder(directory)
            if not wait:
                raise LockedError(
                    f"another hpstudy process (pid {pid}) is running this study into {directory}. Wait for it "
                    "to finish, or pass --wait to start when it does; its runs will then not be computed twice."
                ) from None
            if on_wait is not None:
                on_wait(pid)
            while True:  # blocking flock would not wake up on Ctrl-C in every Python; poll instead
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.2)
        if announce:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock (the kernel does the same when the process dies)


def announce_holder(directory: Path) -> None:
    """Write this process's pid into the lock file of a store whose lock it holds (taken with
    announce=False), so that a second process can name it."""
    if fcntl is None:
        return
    try:
        (Path(directory) / LOCK_NAME).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise OutputError(
            f"cannot write the lock file in {directory}: {exc.strerror}. Nothing was run or written."
        ) from exc
