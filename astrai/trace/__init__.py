"""Recorded runs: what the cache and scheduler did, event by event, as data scenes replay."""

from astrai.trace.events import EVENTS, Event
from astrai.trace.format import VERSION, Trace, load_trace, save_trace
from astrai.trace.record import record

__all__ = ["EVENTS", "VERSION", "Event", "Trace", "load_trace", "record", "save_trace"]
