"""The recorder's states share what did not change, read exactly as full copies would."""

from __future__ import annotations

import json

import pytest

from astrai.trace import Trace, record
from astrai.trace.recorder import Recorder
from astrai.workload import build, load_workload, parse_workload, run_workload


def full_state(rec: Recorder) -> dict:
    """Every key built in full from the live cache and scheduler, as the recorder once did."""
    cache, sched = rec.cache, rec.scheduler
    holders = [t for t in sched.tasks.values() if t.page_table]
    return {
        "free_mask": cache.free_mask,
        "refs": list(cache.refs),
        "cached": list(cache.cached_pages),
        "page_tables": {t.name: list(t.page_table) for t in holders},
        "lengths": {t.name: t.length for t in holders},
        "filled": [bin(bits).count("1") for bits in rec._written],
        "status": {t.name: t.status.value for t in sched.tasks.values()},
        "queue": [t.name for t in sched.waiting],
        "outputs": {t.name: len(t.output) for t in sched.tasks.values()},
        "output_text": dict(rec.text.text) if rec.text is not None else {},
    }


class Checking(Recorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.full = []

    def _emit(self, kind, **fields):
        super()._emit(kind, **fields)
        self.full.append(full_state(self))


def many(n: int, arrive_per_step: int = 2, every: int = 1) -> dict:
    return {
        "name": f"many{n}",
        "cache": {"n_pages": 6, "page_size": 4},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
                  "d_ff": 16},
        "scheduler": {"max_batch": 3},
        "prefixes": {"sys": 4},
        "request": [{"name": f"r{i}", "prompt_len": 5 + i % 7, "max_new_tokens": 2 + i % 5,
                     "arrival": i // arrive_per_step * every,
                     **({"prefix": "sys"} if i % 3 else {})}
                    for i in range(n)],
    }


def as_plain(state: dict) -> dict:
    # items() in order: the order scenes and the text trace iterate them in.
    return {k: list(v.items()) if hasattr(v, "items") else v for k, v in state.items()}


@pytest.mark.parametrize("source", ["prefix", "preemption", many(30)])
def test_every_shared_state_reads_as_the_full_state(source):
    wl = load_workload(source) if isinstance(source, str) else parse_workload(source)
    cache, _, scheduler = build(wl)
    with Checking(cache, scheduler, lines=False) as rec:
        run_workload(wl, scheduler)
    assert len(rec.events) == len(rec.full) > 50
    for ev, full in zip(rec.events, rec.full):
        state = ev.state
        assert as_plain(state) == as_plain(full)
        assert state == full  # the mappings compare equal to plain dicts too
        for key in ("status", "outputs"):
            assert len(state[key]) == len(full[key])
            assert all(state[key].get(n) == v for n, v in full[key].items())
            assert state[key].get("nobody") is None and "nobody" not in state[key]


def test_states_survive_a_json_round_trip():
    trace = record(parse_workload(many(12)), lines=False)
    data = json.loads(json.dumps(trace.to_json()))
    back = Trace.from_json(data)
    assert [ev.state for ev in back.events] == [ev.state for ev in trace.events]
    assert back.to_json() == trace.to_json()


def _stored(trace) -> int:
    """Values the states hold, counting each shared object once."""
    seen, total = set(), 0
    for ev in trace.events:
        for value in ev.state.values():
            for obj in (value, getattr(value, "_live", None)):
                if obj is not None and not isinstance(obj, int) and id(obj) not in seen:
                    seen.add(id(obj))
                    total += len(obj) if not hasattr(obj, "_live") else 1
    return total


def test_memory_grows_with_what_changes_not_tasks_times_events():
    """Requests keep arriving (one every 3 steps) and leaving, so the queue stays short: what
    changes per event is then bounded, and so must be what each event adds. (A queue that
    only grows is itself what changes: each new queue is a new list.)"""
    small = record(parse_workload(many(30, 1, 3)), lines=False)
    big = record(parse_workload(many(120, 1, 3)), lines=False)
    ratio_events = len(big.events) / len(small.events)
    ratio_stored = _stored(big) / _stored(small)
    # Full copies of the per-task maps would grow with tasks x events (about 16x here):
    # shared ones grow like the events (about 4x).
    assert 3 < ratio_events < 5
    assert ratio_stored < 1.3 * ratio_events
