"""Recorded runs: what the cache and scheduler did, event by event, as data scenes replay."""

from astrai.trace.events import EVENTS, Event
from astrai.trace.format import VERSION, Trace, load_trace, save_trace
from astrai.trace.record import record
from astrai.trace.store import recorded

__all__ = ["EVENTS", "VERSION", "Event", "Trace", "load_trace", "record", "recorded",
           "save_trace"]
