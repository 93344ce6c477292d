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
torch and Python versions, and for a named model (astrai.models) its identity: the stamp of its
converted folder, every file's sha256 (a model converted again into other bytes records again).
Any change there is another key, so a trace from another engine, workload or model is never
served. A workload with a checkpoint folder given as a path is never kept: its weights are files
the key does not read.

A kept file proves it is its key's recording: it carries the fields its key is the digest of
(`recording`, beside the trace's own fields), and its writer keeps the sha256 of the whole file
beside it (`.NAME.sha256`). On read the digest must match the file, the fields must equal the
request's, the trace must pass the checked loader (`astrai.trace.format`), its workload and
engine digests must be the key's, and it must hold code lines and captures exactly when the
request asks for them; anything else (a damaged, edited, foreign or stale file, or one filed
under another key) is recorded again and replaced, never served. Files are written whole to a
temporary file and renamed, the digest last; a lock per key makes a second process wait for the
first one's recording instead of repeating it, for at most LOCK_WAIT seconds (a holder stopped
or hung is named by its pid in a TraceStoreBusy). Traces handed out are shared by every caller:
read them, never change them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

import astrai
from astrai.errors import TraceFormatError, TraceStoreBusy, WorkloadError
from astrai.files import Output, read_text
from astrai.models import is_name
from astrai.models.store import identity
from astrai.trace import source
from astrai.trace.format import MAX_TRACE_BYTES, VERSION, Trace, parse_json
from astrai.trace.record import record
from astrai.workload import MAX_STEPS, Workload, load_workload

try:
    import fcntl
except ImportError:  # pragma: no cover - no advisory locks here: at worst a run twice
    fcntl = None

_PACKAGE = Path(astrai.__file__).resolve().parent
ENV = "ASTRAI_TRACE_CACHE"
# A recording takes seconds (the largest shipped workload about 5 s, on a real model about a
# minute): a lock held ten minutes belongs to a process that is stopped or hung.
LOCK_WAIT = 600.0

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


def key_of(wl: Workload, device: str | None, lines: bool, capture: bool) -> str:
    """The digest that names one recording: equal keys, equal traces."""
    what = fields_of(wl, device, lines, capture)
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def fields_of(wl: Workload, device: str | None, lines: bool, capture: bool) -> dict:
    """Everything one recording depends on, as JSON holds it: its key is their digest, and its
    file carries them (`recording`) to be compared on read. The step limit is not among them:
    a run that finished is the same run under any limit it fits (`_within` checks that), so a
    comparison's second run is recorded once whichever limit asks for it."""
    what = {
        "format": VERSION,
        "workload": wl.to_json(),
        "device": device or wl.device,
        "lines": bool(lines),
        "capture": bool(capture),
        "engine": source.digests(),
        "code": code_digest(),
        "torch": torch.__version__,
        "python": list(sys.version_info[:2]),
    }
    if wl.checkpoint is not None:  # a named model (a path is never kept: see recorded)
        what["model"] = identity(wl.checkpoint)
    return json.loads(json.dumps(what))  # tuples as lists: equal to what a file gives back


def recorded(workload: Workload | str, device: str | None = None, lines: bool = True,
             capture: bool = False, max_steps: int = MAX_STEPS) -> Trace:
    """`record(...)`, made once: from this process's memo, else the folder, else recorded now
    (and kept in both). Errors (a run over max_steps, a bad workload) are never kept."""
    wl = load_workload(workload) if isinstance(workload, str) else workload
    if wl.checkpoint is not None and not is_name(wl.checkpoint):  # files the key cannot read
        return record(wl, device=device, lines=lines, capture=capture, max_steps=max_steps)
    fields = fields_of(wl, device, lines, capture)
    key = key_of(wl, device, lines, capture)
    trace = _memo.get(key)
    if trace is not None:
        return _within(trace, wl, max_steps)
    folder = directory()
    if folder is None:
        trace = record(wl, device=device, lines=lines, capture=capture, max_steps=max_steps)
    else:
        path = folder / f"{_stem(wl.name)}-{key[:32]}.json"
        with _locked(path):  # another process recording this key: wait for its file
            trace = _read(path, fields)
            if trace is not None:
                _within(trace, wl, max_steps)
            else:
                trace = record(wl, device=device, lines=lines, capture=capture,
                               max_steps=max_steps)
                _write(path, trace, fields)
    _memo[key] = trace
    return trace


def _within(trace: Trace, wl: Workload, max_steps: int) -> Trace:
    """The kept run, refused as `record` would refuse it if it took more than max_steps."""
    if trace.events and trace.events[-1].step + 1 > max_steps:
        raise WorkloadError(f"workload {wl.name!r} not done after {max_steps} steps")
    return trace


def forget() -> None:
    """Empty this process's memo (the files stay): the next call reads the folder."""
    _memo.clear()


def _stem(name: str) -> str:
    """The workload's name as a file name's start, for whoever lists the folder."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "workload"


def _digest_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def _read(path: Path, fields: dict) -> Trace | None:
    """The kept trace if it proves to be this recording (see the module's doc); None if it is
    missing, damaged, edited, or another recording's."""
    if not path.is_file():
        return None
    try:
        text = read_text(path, TraceFormatError, MAX_TRACE_BYTES)
        kept = read_text(_digest_path(path), TraceFormatError, 200).strip()
        if hashlib.sha256(text.encode()).hexdigest() != kept:
            return None  # not the file its writer wrote
        data = parse_json(text, str(path))
        if not isinstance(data, dict) or data.get("recording") != fields:
            return None  # filed under another key
        trace = Trace.from_json(data, str(path))
    except TraceFormatError:
        return None
    if trace.workload != fields["workload"] or trace.source != fields["engine"]:
        return None
    if any(ev.code or ev.returned for ev in trace.events) != fields["lines"] \
            or bool(trace.captures) != fields["capture"]:
        return None  # its content is not what the key asks for
    return trace


def _write(path: Path, trace: Trace, fields: dict) -> None:
    """Whole or not at all (astrai.files.Output: a temporary file beside it, renamed over it),
    the trace with the fields of its key, then the file's digest: a file without its digest is
    recorded again. A folder that cannot be written only costs the next process a recording."""
    text = json.dumps({**trace.to_json(), "recording": fields}, separators=(",", ":"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Output(path, OSError).write(text)
        Output(_digest_path(path), OSError).write(hashlib.sha256(text.encode()).hexdigest())
    except OSError:
        pass


@contextlib.contextmanager
def _locked(path: Path):
    """Hold the key's lock file (a second process waits here until the first is done, for at
    most LOCK_WAIT seconds). The holder writes its pid in it, for whoever waits."""
    if fcntl is None:
        yield
        return
    lock = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a folder we cannot write: no lock, and _write will not keep it either
        yield
        return
    try:
        _acquire(fd, path)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # only the name in a waiter's message is lost
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _acquire(fd: int, path: Path) -> None:
    """The lock on fd, waited for at most LOCK_WAIT seconds; then TraceStoreBusy naming the
    holder."""
    deadline = time.monotonic() + LOCK_WAIT
    pause = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            raise TraceStoreBusy(
                f"{path}: {_holder(fd)} has held this recording's lock for more than "
                f"{LOCK_WAIT:g} s; let it finish or end it, or set {ENV}=off")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _holder(fd: int) -> str:
    """The lock's holder as its pid file names it, and whether it is stopped."""
    try:
        pid = int(os.pread(fd, 24, 0).decode().strip())
    except (OSError, ValueError):
        return "another process"
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # the state follows the name in parentheses
            state = f.read(4096).rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        state = b""
    return f"process {pid}" + (" (stopped)" if state in (b"T", b"t") else "")
