"""Reading and writing the files a user names, with one-line named errors instead of tracebacks.

A path may name a directory, a FIFO (reading one blocks forever), a device, a huge or binary
file: each is refused before anything is read or allocated.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

MAX_FILE_BYTES = 256 * 1024 * 1024  # the largest workload or trace file read


def require_file(path: str | Path, error: type[Exception],
                 max_bytes: int | None = None) -> os.stat_result:
    """`error` unless path is a regular file (of at most max_bytes): never a directory, FIFO
    (reading one blocks forever) or device (/dev/zero never ends)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: does not exist") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise error(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is not a regular file (a FIFO, socket or device)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size} bytes, more than the {max_bytes} this reads")
    return st


def read_text(path: str | Path, error: type[Exception], max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most max_bytes; else `error` saying what is wrong."""
    path = Path(path)
    require_file(path, error, max_bytes)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open does not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise error(f"{path}: is not a regular file")
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise error(f"{path}: more than the {max_bytes} bytes this reads")
    if b"\0" in data:
        raise error(f"{path}: is a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None


class Output:
    """A file to write at the end of a run, checked before the run starts.

    The text (or bytes) goes to a temporary file beside the target, made only when the run is
    done, and replaces the target once written whole (`replacing`), so a failed write (a full
    device) leaves no half file behind, and a run killed outright (kill -9) leaves no temporary
    file. The file gets the usual mode: the target's own if it exists, else 0666 less the umask."""

    def __init__(self, path: str | Path, error: type[Exception]):
        self.path, self.error = Path(path), error
        if not str(path).strip():
            raise error("no output file named")
        check_replaceable(self.path, error)
        parent = self.path.parent
        if not parent.is_dir():
            raise error(f"{self.path}: directory {parent} does not exist")
        try:  # can a file be made there? made and removed at once: nothing waits on disk
            fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.",
                                         suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise error(f"{self.path}: cannot write there ({e.strerror or e})") from None

    def write(self, data: str | bytes) -> None:
        """Write text (as UTF-8) or bytes, whole or not at all."""
        write_text(self.path, data, self.error)


def check_replaceable(path: str | Path, error: type[Exception]) -> None:
    """`error` unless `path` is missing or a regular file: a file written over a symbolic link
    would land in whatever it points to (or drop the link someone made), and a directory,
    FIFO or device is never replaced by a file."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise error(f"{path}: cannot be checked ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISLNK(st.st_mode):
        raise error(f"{path}: is a symbolic link: not replacing it")
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is not a regular file: not replacing it")


@contextlib.contextmanager
def replacing(path: str | Path, error: type[Exception], suffix: str = ".tmp"
              ) -> Iterator[Path]:
    """A new temporary file beside `path` (its name unique, ending in `suffix`: a writer that
    picks its format by suffix needs `path`'s own) for the block to write; it replaces `path`
    when the block ends, and is removed if the block raises. Only a missing or regular file
    is ever replaced (`check_replaceable`, checked before and again just before the rename)."""
    path = Path(path)
    check_replaceable(path, error)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                    suffix=suffix)
    except OSError as e:
        raise error(f"{path}: cannot write there ({e.strerror or e})") from None
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, _mode_for(path))
        finally:
            os.close(fd)
        yield tmp
        check_replaceable(path, error)
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise error(f"{path}: writing failed ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)  # ours: made by mkstemp above, gone once renamed


def write_text(path: str | Path, text: str | bytes, error: type[Exception]) -> None:
    """`text` (UTF-8) or bytes as the whole of `path`, through `replacing`: whole or not at all."""
    with replacing(path, error) as tmp:
        try:
            if isinstance(text, str):
                tmp.write_text(text, encoding="utf-8")
            else:
                tmp.write_bytes(text)
        except OSError as e:
            raise error(f"{path}: writing failed ({e.strerror or e})") from None


def _mode_for(path: Path) -> int:
    """An existing file keeps its mode; a new one gets 0666 less the umask (mkstemp's 0600
    would make every output private)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
