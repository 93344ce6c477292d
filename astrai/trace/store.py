"""Recordings made once and shared: every run a scene or a comparison records, kept by what
decides it.

`recorded(...)` takes the same arguments as `record(...)` and returns the same trace, but a run
already recorded is not run again: it is kept in this process (a memo) and on disk, as a trace
file in `media/traces/` beside the package (when the package sits in a checkout with a `media/`
folder; `ASTRAI_TRACE_CACHE` names another folder, or `off`), so a later build and every other
render process read it instead. The key is a digest of everything the recording depends on:
the workload's content, the device, line tracing, capture, the step limit, the engine files'
digests (`astrai.trace.source.digests()`), the source of the whole `astrai` package (the model,
the recorder and the workload builder decide a trace too), the trace format's version and the
torch and Python versions. Any change there is another key, so a trace from another engine or
workload is never served. A workload with a checkpoint is never kept: its weights are files the
key does not read.

A kept file is read back through the checked loader (`load_trace`) and must carry the
workload and engine digests its key names; anything else (a damaged, foreign or stale file)
is recorded again and replaced. Files are written whole to a temporary file and renamed; a
lock per key makes a second process wait for the first one's recording instead of repeating
it. Traces handed out are shared by every caller: read them, never change them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

import astrai
from astrai.errors import TraceFormatError
from astrai.files import Output
from astrai.trace import source
from astrai.trace.format import VERSION, Trace, dumps, load_trace
from astrai.trace.record import record
from astrai.workload import MAX_STEPS, Workload, load_workload

try:
    import fcntl
except ImportError:  # pragma: no cover - no advisory locks here: at worst a run twice
    fcntl = None

_PACKAGE = Path(astrai.__file__).resolve().parent
ENV = "ASTRAI_TRACE_CACHE"

_memo: dict[str, Trace] = {}


def directory() -> Path | None:
    """Where kept traces live: $ASTRAI_TRACE_CACHE (`off`: nowhere), else media/traces/ of the
    checkout the package sits in; None when there is no such folder (an installed package)."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen.lower() in ("off", "0", "no", "false"):
        return None
    if chosen:
        return Path(chosen)
    media = _PACKAGE.parent / "media"
    return media / "traces" if media.is_dir() else None


@functools.cache
def code_digest() -> str:
    """sha256 of every module of the package, by name: the code a recording runs."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def key_of(wl: Workload, device: str | None, lines: bool, capture: bool,
           max_steps: int) -> str:
    """The digest that names one recording: equal keys, equal traces."""
    what = {
        "format": VERSION,
        "workload": wl.to_json(),
        "device": device or wl.device,
        "lines": bool(lines),
        "capture": bool(capture),
        "max_steps": max_steps,
        "engine": source.digests(),
        "code": code_digest(),
        "torch": torch.__version__,
        "python": list(sys.version_info[:2]),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def recorded(workload: Workload | str, device: str | None = None, lines: bool = True,
             capture: bool = False, max_steps: int = MAX_STEPS) -> Trace:
    """`record(...)`, made once: from this process's memo, else the folder, else recorded now
    (and kept in both). Errors (a run over max_steps, a bad workload) are never kept."""
    wl = load_workload(workload) if isinstance(workload, str) else workload
    if wl.checkpoint is not None:  # its weights are files the key does not read
        return record(wl, device=device, lines=lines, capture=capture, max_steps=max_steps)
    key = key_of(wl, device, lines, capture, max_steps)
    trace = _memo.get(key)
    if trace is not None:
        return trace
    folder = directory()
    if folder is None:
        trace = record(wl, device=device, lines=lines, capture=capture, max_steps=max_steps)
    else:
        path = folder / f"{_stem(wl.name)}-{key[:32]}.json"
        with _locked(path):  # another process recording this key: wait for its file
            trace = _read(path, wl)
            if trace is None:
                trace = record(wl, device=device, lines=lines, capture=capture,
                               max_steps=max_steps)
                _write(path, trace)
    _memo[key] = trace
    return trace


def forget() -> None:
    """Empty this process's memo (the files stay): the next call reads the folder."""
    _memo.clear()


def _stem(name: str) -> str:
    """The workload's name as a file name's start, for whoever lists the folder."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "workload"


def _read(path: Path, wl: Workload) -> Trace | None:
    """The kept trace, checked like any trace file; None if missing, damaged or not this run's
    (another workload, or recorded from other engine files)."""
    if not path.is_file():
        return None
    try:
        trace = load_trace(path)
    except TraceFormatError:
        return None
    if trace.workload != wl.to_json() or trace.source != source.digests():
        return None
    return trace


def _write(path: Path, trace: Trace) -> None:
    """Whole or not at all (astrai.files.Output: a temporary file beside it, renamed over it).
    A folder that cannot be written only costs the next process a recording."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Output(path, OSError).write(dumps(trace))
    except OSError:
        pass


@contextlib.contextmanager
def _locked(path: Path):
    """Hold the key's lock file (a second process blocks here until the first is done)."""
    if fcntl is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a folder we cannot write: no lock, and _write will not keep it either
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
