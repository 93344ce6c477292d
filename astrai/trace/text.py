"""The text version of the video: one line per event, with the state it leaves behind."""

from __future__ import annotations

from collections.abc import Iterator

from astrai.trace.format import Trace

# Events that change which pages are where: their lines show mask, refs and page tables.
_PAGE_KINDS = {"alloc", "free", "share", "cache", "evict", "retire", "preempt", "copy"}


def mask_bits(mask: int, n_pages: int) -> str:
    """Free bits with page 0 first, the order frames are drawn in: '1' = free."""
    return "".join("1" if mask >> i & 1 else "0" for i in range(n_pages))


def describe(ev: dict) -> str:
    """What happened, in words, from the event's own fields."""
    kind = ev["kind"]
    if kind == "phase":
        return ""
    if kind == "arrive":
        said = f" {ev['prompt_text']!r}" if ev.get("prompt_text") is not None else ""
        samples = f", samples {', '.join(ev['samples'])}" if ev.get("samples") else ""
        return (f"{ev['task']}: prompt {ev['prompt_len']} tokens{said}, "
                f"up to {ev['max_new_tokens']} new{samples}")
    if kind == "fork":
        return (f"{ev['task']} (sample {ev['sample']}) forks from {ev['parent']}: shares pages "
                f"{ev['pages']} ({ev['n_tokens']} tokens)")
    if kind == "copy":
        return (f"{ev['task']} (sample {ev['sample']}): slots 0..{ev['slots'] - 1} of page "
                f"{ev['source']} (still held by {ev['refs']}) copied to page {ev['page']} "
                f"-> {ev['task']}[{ev['logical']}]")
    if kind == "admit":
        hits = f", prefix hit {ev['hits']}" if ev["hits"] else ""
        return (f"{ev['task']}: {ev['n_tokens']} tokens need {ev['pages_needed']} pages{hits}, "
                f"allocates {ev['needed']} of {ev['available']} available")
    if kind == "grow":
        return (f"{ev['task']}: {ev['n_tokens']} tokens need {ev['pages_needed']} pages, "
                f"holds {ev['held']}")
    if kind == "wait":
        return f"{ev['task']} waits: needs {ev['needed']} pages, {ev['available']} available"
    if kind == "alloc":
        return f"page {ev['page']} -> {ev['task']}[{ev['logical']}]"
    if kind == "share":
        how = "revived from cache" if ev["revived"] else "shared"
        return f"page {ev['page']} -> {ev['task']}[{ev['logical']}] ({how})"
    if kind == "free":
        return f"page {ev['page']} of {ev['task']}: refs -> {ev['refs']}"
    if kind in ("cache", "evict"):
        return f"page {ev['page']}"
    if kind == "record":
        return f"{ev['task']}: prefix pages {ev['pages']}"
    if kind == "write":
        parts = []
        for row in ev["rows"]:
            runs = " ".join(f"p{p}[{s}:{s + n}]" for p, s, n in row["runs"])
            parts.append(f"{row['task']} pos {row['start']}..{row['start'] + row['n'] - 1} {runs}")
        return "; ".join(parts)
    if kind == "gather":
        return f"len {ev['total_len']}: " + "; ".join(
            f"{row['task']} pages {row['pages']}" for row in ev["rows"]
        )
    if kind == "tokens":
        text = ev.get("text", {})
        return " ".join(f"{name}:{tok}" + (f" {text[name]!r}" if name in text else "")
                        for name, tok in ev["tokens"].items())
    if kind == "finish":
        return f"{ev['task']}: {ev['n_output']} tokens generated"
    return ev.get("task", "")


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
        line = f"{ev['step']:5d} {ev['phase']:8s} {ev['kind']:8s} {describe(ev)}"
        if ev["kind"] in _PAGE_KINDS or (ev["kind"] == "phase" and ev["phase"] == "init"):
            line = f"{line:<60s} {state_line(ev['state'], n_pages)}"
        yield line.rstrip()
    said = trace.events[-1]["state"].get("output_text", {}) if trace.events else {}
    for name, tokens in trace.outputs.items():
        yield f"output {name}: {tokens}"
        if name in said:
            yield f"output {name} as text: {said[name]!r}"
