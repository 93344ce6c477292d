"""One build at a time per media folder: an exclusive flock on `<folder>/promo.lock`.

Two builds in one folder would render the same parts into the same files (manim deletes and
rewrites a part's partial movies as it goes). A second build therefore waits, saying which
process it waits for. The lock is the kernel's: it goes when every process holding the file
open has ended, a build killed with kill -9 included, so nothing is ever stuck behind a dead
build. The render server is handed the open file too (render.start_server), so renders a killed
build left running keep the folder until they end. The file holds the holder's pid while it
builds and is emptied on a clean release: a pid found in it by the next holder names a build
that was killed, whose lock that holder takes over (and says so).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from promo import Refused

NAME = "promo.lock"


class Busy(Refused):
    """Another build holds the folder, and this one was told not to wait (or not so long)."""


class LockError(Refused):
    """The lock file cannot be opened (a directory, a link, no permission)."""


@contextmanager
def held(folder: Path, log=print, wait: float | None = None, poll: float = 0.2
         ) -> Iterator[int]:
    """Hold `folder`'s build lock for the block; yields the lock's file descriptor (to hand to
    child processes that write into the folder). Waits for another holder (`wait` seconds at
    most: then Busy; None: as long as it takes), telling `log` whom it waits for once."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise LockError(f"cannot open the build lock {path}: {e.strerror}") from None
    try:
        if not _take(fd):
            holder = _holder(fd)
            who, them = (f"pid {holder}", "it") if holder else ("another process", "it")
            if holder and not _alive(holder):
                who, them = f"the renders that pid {holder} (killed) left running", "them"
            if wait is not None and wait <= 0:
                raise Busy(f"{folder} is being built by {who}")
            log(f"promo: {folder} is being built by {who}; waiting for {them} to finish")
            deadline = None if wait is None else time.monotonic() + wait
            while not _take(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise Busy(f"{folder} is still being built by {who} after {wait:g} s")
                time.sleep(poll)
        left = _holder(fd)
        if left and left != os.getpid():
            log(f"promo: taking over the build lock of pid {left}, which ended without "
                "releasing it (killed mid-build); its finished parts are kept")
        _write(fd, f"{os.getpid()}\n")
        try:
            yield fd
        finally:
            _write(fd, "")  # a clean release: the next holder finds no pid
    finally:
        os.close(fd)  # releases the lock unless a child still holds the file open


def _take(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> int | None:
    """The pid the lock file names (None: empty or not a pid)."""
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and 0 < int(text) <= 1 << 22 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("ascii"), 0)
