"""The text version of the video: one line per event, with the state it leaves behind."""

from __future__ import annotations

from collections.abc import Iterator

from astrai.inference.phases import StepPhase
from astrai.trace.events import Event, Phase
from astrai.trace.format import Trace


def mask_bits(mask: int, n_pages: int) -> str:
    """Free bits with page 0 first, the order frames are drawn in: '1' = free."""
    return "".join("1" if mask >> i & 1 else "0" for i in range(n_pages))


def describe(ev: Event) -> str:
    """What happened, in words, from the event's own fields."""
    return ev.summary()


def state_line(state: dict, n_pages: int) -> str:
    tables = " ".join(
        f"{name}={table}/{state['lengths'][name]}" for name, table in state["page_tables"].items()
    )
    cached = f" cached={state['cached']}" if state["cached"] else ""
    refs = ",".join(str(r) for r in state["refs"])
    return f"free={mask_bits(state['free_mask'], n_pages)} refs=[{refs}]{cached} {tables}"


def printable(line: str) -> str:
    """The line with every control character (newline, escape, ...) shown escaped: whatever a
    file named, it can neither forge a line nor send codes to the terminal."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def format_trace(trace: Trace) -> Iterator[str]:
    for line in _lines(trace):
        yield printable(line)


def _lines(trace: Trace) -> Iterator[str]:
    geo, wl = trace.geometry, trace.workload
    n_pages = geo["n_pages"]
    yield (
        f"workload {wl['name']}: {n_pages} pages x {geo['page_size']} slots, "
        f"{geo['n_layers']} layers, {geo['n_kv_heads']} KV heads x {geo['head_dim']}, "
        f"{geo['dtype']} on {geo['device']}"
    )
    yield "free bits are printed page 0 first (1 = free); tables are name=[pages]/length"
    for ev in trace.events:
        line = f"{ev.step:5d} {ev.phase:8s} {ev.kind:8s} {describe(ev)}"
        if ev.moves_pages or (isinstance(ev, Phase) and ev.phase == StepPhase.INIT):
            line = f"{line:<60s} {state_line(ev.state, n_pages)}"
        yield line.rstrip()
    said = trace.events[-1].state.get("output_text", {}) if trace.events else {}
    for name, tokens in trace.outputs.items():
        yield f"output {name}: {tokens}"
        if name in said:
            yield f"output {name} as text: {said[name]!r}"
