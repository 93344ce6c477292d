"""One process at a time parses a text's SVG.

manim turns a `Text` into mobjects by writing a modified copy of its SVG as "<hash>_.svg" in the
shared text folder, parsing that copy and deleting it. Two processes drawing the same text for
the first time (parts of the promo rendered side by side, two test workers) write, read and
delete the same copy: one of them reads a file half written or finds it gone (FileNotFoundError,
a render that stops). Holding a lock on the folder around the parse (milliseconds, once per
text and process: manim keeps what it parsed) puts them one after the other.
"""

from __future__ import annotations

import contextlib
import os

from manim.mobject.svg.svg_mobject import SVGMobject

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: nothing to share the folder with safely
    fcntl = None

_parse = SVGMobject.generate_mobject


@contextlib.contextmanager
def _folder_lock(folder: str):
    try:
        fd = os.open(os.path.join(folder, ".parse.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a folder we cannot write: manim's own write fails next, and says so
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _locked_parse(self):
    if fcntl is None:
        return _parse(self)
    with _folder_lock(os.path.dirname(os.path.abspath(self.get_file_path()))):
        return _parse(self)


SVGMobject.generate_mobject = _locked_parse
