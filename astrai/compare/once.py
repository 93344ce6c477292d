"""A comparison's runs made once per process.

The closing card, a scene and its tests all ask for the same comparison of the same workload;
its paged runs come back from the trace store, but a contiguous or static run (not a trace) and
its timing would be run again by every caller. On the real model each such run takes seconds,
so the first result is kept, keyed by the workload's whole content and the call's arguments.
"""

from __future__ import annotations

import functools
import json

from astrai.workload import Workload

_done: dict[tuple, object] = {}


def once(fn):
    """`fn(wl, *args)` run once per process for each workload content and arguments."""

    @functools.wraps(fn)
    def run(wl: Workload, *args):
        key = (fn.__module__, fn.__qualname__, json.dumps(wl.to_json(), sort_keys=True), args)
        if key not in _done:
            _done[key] = fn(wl, *args)
        return _done[key]

    return run


def forget() -> None:
    """Drop every kept result (tests that count runs start from nothing)."""
    _done.clear()
