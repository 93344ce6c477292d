"""The beat kinds: one registry entry per kind - its timing, the engine anchors its code panel
may show (scenes/framework/anchors.py: a function, and the line that does what the beat
shows), and the function that animates it.

A new beat kind is one `@kind(...)` function here (and, if the planner should emit it, a rule
in `plan.py`); its name must be an event kind or one of `plan.OWN_KINDS` (else ValueError at
import); tests check that every kind the planner emits has an entry, and every anchor against
the engine source.

Every number a caption shows is a field of an event or of a recorded state, never worked out
here: the engine decided it, the trace says it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from astrai.inference.phases import StepPhase
from astrai.trace.events import (
    Alloc,
    Arrive,
    Cache,
    Event,
    Evict,
    Free,
    Gather,
    Grow,
    Preempt,
    Retire,
    Share,
    Wait,
    Write,
)
from astrai.trace.text import mask_bits
from scenes.framework import theme
from scenes.framework.anchors import Anchor, anchor
from scenes.framework.kit.said import quoted
from scenes.framework.replay.plan import MONTAGE, beat_kind

if TYPE_CHECKING:
    from scenes.framework.kit.anim import Beat
    from scenes.framework.replay.driver import Replay
    from scenes.framework.replay.plan import BeatSpec

# Stages inside a beat (fractions of its run time): words first, then the mask, then the frames,
# then the tables - the order the code changes them in.
W_TEXT, W_BITS, W_POOL, W_TABLES = (0.0, 0.35), (0.2, 0.6), (0.3, 0.75), (0.5, 1.0)


@dataclass(frozen=True)
class Kind:
    name: str
    timing: tuple[float, float, float]  # run_time, hold the first time, hold later
    code: tuple[Anchor, ...]  # the panels it may show
    animate: Callable[[Replay, BeatSpec], None]

    def panel(self, fn: str) -> Anchor:
        """The anchor of the panel showing engine function `fn`."""
        return next(c for c in self.code if c.fn == fn)


KINDS: dict[str, Kind] = {}


def kind(name: str | type[Event], timing: tuple[float, float, float], *code: Anchor):
    """Register the decorated function as the animation of beat kind `name` (an event kind or
    one of the planner's own: a misspelled name raises ValueError here, at import)."""
    name = beat_kind(name, "scenes.framework.replay.beats")

    def register(fn):
        KINDS[name] = Kind(name, timing, tuple(code), fn)
        return fn

    return register


# ---- helpers ---------------------------------------------------------------------------------


def find(ev: Event, fn: str, where=("code", "returned")) -> dict | None:
    """The engine frame named `fn` in the event's running stack or its finished calls."""
    for key in where:
        frames = getattr(ev, key)
        if key == "returned":
            frames = list(reversed(frames))  # the most recent call of that name
        for frame in frames:
            if frame["fn"] == fn:
                return frame
    return None


def _applied(r: Replay, spec: BeatSpec) -> tuple[Beat, Event, dict | None]:
    """A new beat with every event of spec applied in it; its main event, and the state shown
    before them (what an alloc or free is told against)."""
    beat = r.new_beat()
    prev = r.prev_state
    r.apply_all(spec, beat)
    return beat, r.events[spec.main], prev


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _runs(row: dict) -> str:
    return ", ".join(f"page {p} slots {s}-{s + n - 1}" if n > 1 else f"page {p} slot {s}"
                     for p, s, n in row["runs"])


def _last(r: Replay, spec: BeatSpec, kind_: type[Event]) -> Event | None:
    """The beat's last event of a kind (e.g. the grow event folded into an alloc beat)."""
    found = [r.events[i] for i in spec.events if isinstance(r.events[i], kind_)]
    return found[-1] if found else None


# ---- the kinds -------------------------------------------------------------------------------

# The engine lines the panels mark, by their names in scenes/framework/anchors.py.
STORE = anchor("store.shape")
CLEANUP = anchor("cleanup.find_finished")
SUBMIT = anchor("submit.enqueue")
FIT = anchor("fit.compare")
PAGES_FOR = anchor("pages_for.ceil")
TAKE = anchor("take.lowest_free")
GROW = anchor("grow.alloc")
SHARE = anchor("share.inc_ref")
EVICT = anchor("evict.pop_lru")
FREE = anchor("free.drop_ref")
RECORD = anchor("record.store_entry")
VIEW = anchor("view.init")
WRITE = anchor("view.write")
GATHER = anchor("gather.select")
FINISH = anchor("forward.finish")
RELEASE = anchor("cleanup.release")
PREEMPT = anchor("preempt.requeue")


@kind("construct", (1.0, 1.6, 1.6), STORE)
def construct(r: Replay, spec: BeatSpec) -> None:
    r.construct_cache()  # the construction beats live with the kit they build (driver)


@kind("cleanup-idle", (0.7, 1.4, 0.4), CLEANUP)
def cleanup_idle(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    r.say(beat, f"step {ev.step}, cleanup: free the pages of finished requests",
          "nothing has finished yet: no page to free")
    # _cleanup has returned by the event after this beat's (the next phase).
    nxt = spec.events[-1] + 1
    if nxt < len(r.events):
        r.show_code(spec, CLEANUP, nxt, where=("returned",))
    r.play(beat, *r.timing(spec))


@kind("arrive", (0.7, 1.2, 0.4), SUBMIT)
def arrive(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    text = r.plan.prompts.get(ev.task) if r.plan.text else None  # a chat: the user's words
    prompt = (f"prompt {quoted(text, 34)} = {ev.prompt_len} tokens" if text
              else f"prompt of {ev.prompt_len} tokens")
    r.say(beat, f"{ev.task} arrives: {prompt}, up to {ev.max_new_tokens} new",
          f"submit() queues it: waiting = {ev.state['queue']}")
    r.queue_line(_arrive_words(r, ev), once="arrive")  # later arrivals are on screen
    r.show_code(spec, SUBMIT, spec.main)
    r.play(beat, *r.timing(spec))


@kind("admit", (0.7, 1.3, 0.4), FIT, PAGES_FOR)
def admit(r: Replay, spec: BeatSpec) -> None:
    ev = r.events[spec.main]
    n, ps, total, hits = ev.n_tokens, r.page_size, ev.pages_needed, ev.hits
    if spec.first:
        beat = r.new_beat()
        r.apply_all(spec, beat)
        r.say(beat, f"refill: admit {ev.task} if the pool can hold its prompt",
              f"_fit: {ev.needed} page(s) to allocate, {ev.available} available "
              "(free, plus cached ones it does not revive)")
        r.show_code(spec, FIT, spec.main, where=("returned",))
        r.queue_line("First, the scheduler checks that its prompt fits in the pool.")
        r.play(beat, *r.scaled(0.7, 1.6))
        beat = r.new_beat()
    else:
        beat = r.new_beat()
        r.apply_all(spec, beat)
    hit_words = f"; prefix hit: pages {hits} are shared" if hits else ""
    r.say(beat, f"{ev.task}: pages_for({n}) = ceil({n} / {ps}) = {total} pages{hit_words}",
          f"to allocate: {ev.needed} of {ev.available} available")
    if spec.first or hits:
        r.queue_line(_admit_words(ev, ps))
    r.show_code(spec, PAGES_FOR, spec.main, where=("returned",))
    r.play(beat, *r.timing(spec))


@kind("wait", (0.8, 1.5, 0.6), FIT)
def wait(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    r.say(beat, f"{ev.task} waits: needs {ev.needed} pages, {ev.available} available",
          "the head of the queue waits; nobody skips ahead of it")
    r.queue_line(f"{ev.task} has to wait: it needs {_count(ev.needed, 'page')}, and "
            f"only {ev.available} {_are(ev.available)} free.")
    r.show_code(spec, FIT, spec.main)
    r.play(beat, *r.timing(spec))


def _arrive_words(r: Replay, ev: Event) -> str:
    """The first arrival, said: its chat message word for word when the prompt holds one."""
    asked = next((q.get("chat") for q in r.trace.workload.get("request", [])
                  if q.get("name") == ev.task), None)
    if isinstance(asked, str) and asked.strip() and asked in (ev.prompt_text or ""):
        return (f'Request {ev.task} arrives, asking "{" ".join(asked.split())}" With the chat '
                f"template around it, its prompt is {ev.prompt_len} tokens.")
    return f"Request {ev.task} arrives, with a prompt of {ev.prompt_len} tokens."


def _admit_words(ev: Event, ps: int) -> str:
    total, hits = ev.pages_needed, ev.hits
    words = f"{ev.n_tokens} tokens fill {_count(total, 'page')} of {ps}."
    if hits:
        words += (f" {_count(len(hits), 'page')} of them {_are(len(hits))} already in the "
                  f"cache, so only {ev.needed} {_are(ev.needed, 'needs', 'need')} a new one.")
    return words


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _are(n: int, one: str = "is", many: str = "are") -> str:
    return one if n == 1 else many


def _alloc_line(r: Replay, ev: Event, prev: dict | None) -> None:
    """What the narrator says of a page taken: how the allocator chose it the first time,
    that pages need not be side by side the first time they are not, else just the page."""
    page, task = ev.page, ev.task
    table = ev.state["page_tables"].get(task, [])
    before = table[ev.logical - 1] if 0 < ev.logical <= len(table) else None
    low = prev is not None and prev["free_mask"] and _lowest(prev["free_mask"]) == page
    if low and r.first("lowest"):
        r.queue_line(f"The allocator takes the lowest free page: page {page}. Its bit is cleared, "
                "and its count is set to one.")
    elif before is not None and abs(before - page) != 1 and r.first("scattered"):
        r.queue_line(f"{task} gets page {page}, far from page {before}. Pages need not sit side by "
                "side: the page table keeps their order.")
    elif not low and prev is not None and not prev["free_mask"]:
        r.queue_line(f"No page is free, so a cached one is given up: page {page}.")
    else:
        r.queue_line(f"{task} gets page {page}.", once=f"alloc {task} {ev.step}")


def _alloc_words(r: Replay, ev: Event, prev: dict | None) -> str:
    page = ev.page
    if prev is None:
        return f"refs[{page}] = 1"
    mask = prev["free_mask"]
    if mask and _lowest(mask) == page:
        bits = mask_bits(mask, r.n_pages)
        shown = f"free bits {bits}: " if r.n_pages <= 24 else ""
        return f"{shown}lowest set bit is page {page}; clear it, refs[{page}] = 1"
    if not mask:
        return f"no free bit: the least recently used cached page {page} is evicted"
    return f"page {page}; refs[{page}] = 1"


@kind("alloc", (1.0, 1.4, 0.3), TAKE)
def alloc(r: Replay, spec: BeatSpec) -> None:
    beat, ev, prev = _applied(r, spec)
    r.say(beat, f"alloc -> page {ev.page} for {ev.task}[{ev.logical}]",
          _alloc_words(r, ev, prev))
    _alloc_line(r, ev, prev)
    r.show_code(spec, TAKE, spec.main, where=("returned",))
    r.box(beat, ev.page, W_POOL)
    r.play(beat, *r.timing(spec))


@kind("grow", (1.1, 1.8, 0.6), GROW)
def grow(r: Replay, spec: BeatSpec) -> None:
    beat, ev, prev = _applied(r, spec)
    need = _last(r, spec, Grow)
    if need is None:  # a trace without grow events: say only what the alloc says
        r.say(beat, f"decode: alloc page {ev.page} for {ev.task}[{ev.logical}]",
              _alloc_words(r, ev, prev))
    else:
        low = prev is not None and prev["free_mask"] and _lowest(prev["free_mask"]) == ev.page
        r.say(beat, f"{need.task} is full: {need.n_tokens} tokens need "
                    f"pages_for({need.n_tokens}) = {need.pages_needed} > {need.held} "
                    f"pages: alloc page {ev.page}",
              f"{need.held} pages hold {need.capacity} tokens; "
              + (f"page {ev.page} is the lowest free bit" if low else
                 _alloc_words(r, ev, prev)))
        first, own = r.first("grow"), r.first(f"grow {need.task}")  # "again" only if it was
        if first:
            r.queue_line(f"At token {need.n_tokens}, "
                    f"{need.task}'s {_count(need.held, 'page')} of {need.capacity} "
                    f"slots {_are(need.held, 'is', 'are')} full, so it takes one more: "
                    f"page {ev.page}.")
        elif own:
            r.queue_line(f"{need.task}'s last page fills up too, so it takes page {ev.page}.")
        else:
            r.queue_line(f"{need.task} is full again, and takes page {ev.page}.")
    r.show_code(spec, GROW, spec.main)
    r.box(beat, ev.page, W_POOL)
    r.play(beat, *r.timing(spec))


@kind("share", (1.0, 1.5, 0.35), SHARE)
def share(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    refs = ev.state["refs"][ev.page]
    if ev.revived:
        words = (f"revive cached page {ev.page} for {ev.task}[{ev.logical}]",
                 f"a prefix hit on a cached page: out of the LRU, refs 0 -> {refs}")
    else:
        words = (f"share page {ev.page} with {ev.task}[{ev.logical}]",
                 f"a prefix hit: inc_ref, refs[{ev.page}] = {refs}; no K/V recomputed")
    r.say(beat, *words)
    if ev.revived:
        r.queue_line(f"Page {ev.page} was still cached, so {ev.task} brings it back "
                "instead of computing it again.")
    elif r.first("share"):
        r.queue_line(f"{ev.task}'s prompt starts with the same tokens, so it shares page "
                f"{ev.page}: {refs} requests now hold it, and nothing is computed twice.")
    else:
        r.queue_line(f"It shares page {ev.page} too.")
    r.show_code(spec, SHARE, spec.main)
    r.box(beat, ev.page, W_POOL)
    r.play(beat, *r.timing(spec))


@kind("evict", (1.1, 1.7, 0.5), EVICT)
def evict(r: Replay, spec: BeatSpec) -> None:
    beat, ev, prev = _applied(r, spec)
    taken = r.events[spec.events[-1]]
    lru = prev["cached"] if prev else []
    to = f" -> {taken.task}[{taken.logical}]" if isinstance(taken, Alloc) else ""
    r.say(beat, f"no free page: evict cached page {ev.page}{to}",
          f"cached pages, least recently used first: {lru}; the first one goes")
    r.queue_line(f"No page is free, so the cached page used longest ago, page {ev.page}, "
            "is given up.")
    at = spec.events[-1] if find(taken, EVICT.fn, ("returned",)) else spec.main
    r.show_code(spec, EVICT, at, where=("returned",))
    r.box(beat, ev.page, W_POOL, theme.CACHED)
    r.play(beat, *r.timing(spec))


@kind("free", (0.8, 1.3, 0.2), FREE)
def free(r: Replay, spec: BeatSpec) -> None:
    beat, ev, prev = _applied(r, spec)
    page, refs = ev.page, ev.refs
    was = prev["refs"][page] if prev else None
    cached = any(isinstance(r.events[i], Cache) for i in spec.events)
    if refs > 0:
        end = f"refs {was} -> {refs}: still in use"
    elif cached:
        end = "refs 0, but it holds a recorded prefix: kept, cached (LRU)"
    else:
        end = f"refs {was} -> 0: bit {page} set again, the page is free"
    r.say(beat, f"free page {page} of {ev.task}: {end}",
          f"_release drops {ev.task}'s pages last first; free() decrements refs[{page}]")
    if refs > 0:
        r.queue_line(f"{ev.task} lets go of page {page}, but another request still holds it.")
    elif cached:
        r.queue_line(f"Page {page} is let go, but kept: another prompt may start the same way.",
                once=f"cached {page}")
    elif r.first("free") and r.first(f"free {ev.task}"):
        r.queue_line(f"{ev.task} is done, so its pages go back to the pool. Page {page}'s "
                "count drops to zero, and its bit says free again.")
    else:
        r.queue_line(f"{ev.task} is done, and its pages go back too.", once=f"free {ev.task}")
    r.show_code(spec, FREE, spec.main)
    r.box(beat, page, W_POOL, theme.CACHED if cached else theme.ACCENT)
    r.play(beat, *r.timing(spec))


@kind("cache", (0.8, 1.3, 0.25), FREE)
def cache(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    r.say(beat, f"page {ev.page} stays cached (refs 0, recorded prefix)",
          f"cached, least recently used first: {ev.state['cached']}")
    r.queue_line(f"Page {ev.page} stays in the cache, for a prompt that starts the same way.",
            once=f"cached {ev.page}")
    r.show_code(spec, FREE, spec.main)
    r.box(beat, ev.page, W_POOL, theme.CACHED)
    r.play(beat, *r.timing(spec))


@kind("record", (0.7, 1.3, 0.35), RECORD)
def record(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    r.say(beat, f"record_prefix: {ev.task}'s full prompt pages {ev.pages} recorded",
          "each page's key chains the previous page's: a later prompt can share them")
    if r.first("record"):
        r.queue_line(f"{ev.task}'s full prompt pages are recorded, each under a key chained to "
                "the page before it, so a later prompt can find them.")
    r.show_code(spec, RECORD, spec.main)
    n = max(len(ev.pages), 1)
    for k, p in enumerate(ev.pages):
        r.box(beat, p, (0.2 + 0.5 * k / n, 0.7 + 0.3 * k / n), theme.CACHED)
    r.play(beat, *r.timing(spec))


@kind("write", (1.2, 1.5, 0.35), VIEW, WRITE)
def write(r: Replay, spec: BeatSpec) -> None:
    ev = r.events[spec.main]
    if spec.first:
        # The view this forward writes through: the write's own page table, and the length
        # the gather of the same step cuts to.
        gather = next((e for e in r.events[spec.main:] if isinstance(e, Gather)), None)
        beat = r.new_beat()
        r.apply_all(spec, beat, upto=spec.main)
        total = f", total_len={gather.total_len}" if gather else ""
        r.say(beat, f"CacheView(cache, page_table={ev.page_table}{total})",
              "one view per forward: the batch's page tables and length, shared by every layer")
        r.show_code(spec, VIEW, spec.main, where=("returned",))
        r.play(beat, *r.scaled(0.7, 1.8))
        rest = [i for i in spec.events if i >= spec.main]
    else:
        rest = spec.events
    beat = r.new_beat()
    for i in rest:
        r.apply(i, beat)
    rows = ev.rows
    # Each row's pages fill in the order the positions land in them.
    for row in rows:
        n = max(len(row["runs"]), 1)
        for k, (page, _, _) in enumerate(row["runs"]):
            t0 = W_POOL[0] + (1.0 - W_POOL[0]) * k / n
            beat.retime(r.pool.frames[page].bar, (t0, t0 + (1.0 - W_POOL[0]) / n))
    head = "; ".join(f"{row['task']} positions {row['start']}..{row['start'] + row['n'] - 1}"
                     for row in rows)
    r.say(beat, f"write K/V: {head}", "; ".join(f"{row['task']}: {_runs(row)}" for row in rows))
    names = " and ".join(row["task"] for row in rows)
    if r.first("write"):
        n = sum(row["n"] for row in rows)
        r.queue_line(f"Prefill writes the keys and values of all {n} prompt tokens into "
                f"{names}'s pages, in order, filling the last one only part way.")
    r.show_code(spec, WRITE, spec.main)
    r.play(beat, *r.timing(spec))


@kind("gather", (1.2, 1.5, 0.25), GATHER)
def gather(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    rows, total = ev.rows, ev.total_len
    order = "; ".join(f"{row['task']} reads pages {' -> '.join(map(str, row['pages']))}"
                      for row in rows)
    r.say(beat, f"gather(total_len={total}): {order}",
          f"whole pages in logical order (page-table order), cut to {total}: "
          f"K, V = {ev.shape}")
    r.show_code(spec, GATHER, spec.main)
    longest = max((len(row["pages"]) for row in rows), default=1)
    for row in rows:
        for k, p in enumerate(row["pages"]):
            t0 = 0.15 + 0.7 * k / longest
            r.box(beat, p, (t0, min(1.0, t0 + 0.7 / longest + 0.15)), r.palette.color(row["task"]))
    r.play(beat, *r.timing(spec))


@kind("forward", (0.9, 1.3, 0.25), WRITE)
def forward(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    gathered = _last(r, spec, Gather)
    parts = "; ".join(f"{row['task']} pos {row['start']} -> {_runs(row)}" for row in ev.rows)
    r.say(beat, f"decode step {ev.step}: one token per running request",
          f"write {parts}" + (f"; gather len {gathered.total_len}" if gathered else ""))
    r.queue_line("Now each step writes one new token a request, into the next slot of its last "
            "page.", once="decode")
    r.show_code(spec, WRITE, spec.main)
    r.play(beat, *r.timing(spec))


@kind("run", (1.4, 0.8, 0.5), WRITE)
def run(r: Replay, spec: BeatSpec) -> None:
    beat = r.new_beat()
    before = r.prev_state
    for i in spec.events:
        r.apply(i, beat, staged=False)
    a, b = spec.steps
    writes = [r.events[i] for i in spec.events if isinstance(r.events[i], Write)]
    names = sorted({row["task"] for w in writes for row in w.rows},
                   key=list(r.palette.names()).index)
    after = r.events[spec.events[-1]].state
    was = before["lengths"] if before else {}
    grew = ", ".join(f"{n} {was.get(n, '?')}->{after['lengths'].get(n, '?')}" for n in names)
    steps = f"decode steps {a}-{b} compressed" if b > a else f"decode step {a}"
    per_step = sorted({row["n"] for w in writes for row in w.rows})
    each = (f"{per_step[0]} token" if per_step == [1] else
            f"{'/'.join(map(str, per_step))} tokens")
    waits = [r.events[i] for i in spec.events if isinstance(r.events[i], Wait)]
    still = (f"; {waits[-1].task} still waits ({waits[-1].needed} pages needed, "
             f"{waits[-1].available} available)" if waits else "")
    r.say(beat, f"{steps}: {each} per request per step ({', '.join(names)})",
          f"lengths {grew}; no page allocated or freed{still}")
    last = max((i for i in spec.events if isinstance(r.events[i], Write)), default=None)
    if last is not None:
        r.show_code(spec, WRITE, last)
    r.play(beat, *r.timing(spec))


def _pages(evs: list[Event], kind_: type[Event]) -> str:
    return ", ".join(str(e.page) for e in evs if isinstance(e, kind_))


@kind("montage", (0.7, 0.45, 0.45), TAKE, GROW, SHARE, EVICT, FREE)
def montage(r: Replay, spec: BeatSpec) -> None:
    """Teaser only: one task's pages moving one way, with the beats before it folded in."""
    beat, main, _ = _applied(r, spec)
    evs = [r.events[i] for i in spec.events]
    task = next((t for e in evs[spec.events.index(spec.main):] if (t := getattr(e, "task", None))),
                "")
    arrived = next((e for e in evs if isinstance(e, Arrive) and e.task == task), None)
    grow_ev = _last(r, spec, Grow)
    came = f"{task} arrives ({arrived.prompt_len}-token prompt): " if arrived else ""
    if isinstance(main, Free):
        cached = {e.page for e in evs if isinstance(e, Cache)}
        frees = [e for e in evs if isinstance(e, Free)]
        parts = [(f"pages {', '.join(str(e.page) for e in group)} {words}")
                 for group, words in (
                     ([e for e in frees if e.refs == 0 and e.page not in cached], "freed"),
                     ([e for e in frees if e.page in cached], "kept cached"),
                     ([e for e in frees if e.refs > 0], "still shared")) if group]
        why = ("is preempted" if any(isinstance(e, Preempt) for e in evs) else
               "is done" if any(isinstance(e, Retire) for e in evs) else "lets go")
        caption = f"{task} {why}: {'; '.join(parts)}"
        code, at, where = FREE, spec.main, ("code",)
    elif isinstance(main, Share):
        shared = _pages(evs, Share)
        caption = f"{came}{task} shares prefix pages {shared}"
        if _pages(evs, Alloc):
            caption += f", allocates {_pages(evs, Alloc)}"
        code, at, where = SHARE, spec.main, ("code",)
    elif isinstance(main, Evict):
        caption = f"no free page: cached page {main.page} is evicted for {task}"
        code, at, where = EVICT, spec.events[-1], ("returned",)
        if find(r.events[at], code.fn, where) is None:
            at = spec.main
    elif main.phase == StepPhase.DECODE and grow_ev is not None:
        caption = (f"{task} is full ({grow_ev.n_tokens} tokens need "
                   f"{grow_ev.pages_needed} pages): alloc page {_pages(evs, Alloc)}")
        code, at, where = GROW, spec.main, ("code",)
    else:
        evicted = _pages(evs, Evict)
        caption = f"{came}{task} gets pages {_pages(evs, Alloc)}, " + (
            f"cached page {evicted} evicted when none was free" if evicted else
            "lowest free first")
        code, at, where = TAKE, spec.main, ("returned",)
    a, b = spec.steps
    steps = f"steps {a}-{b}" if b > a else f"step {a}"
    folded = sorted(set(spec.skipped) - {Alloc.kind, Free.kind, Share.kind})
    r.say(beat, caption, f"{steps} compressed into one beat"
          + (f" ({', '.join(folded)})" if folded else ""))
    r.show_code(MONTAGE, code, at, where=where)
    moved = [e.page for e in evs if isinstance(e, (Alloc, Share, Free, Evict))]
    for k, p in enumerate(dict.fromkeys(moved)):
        t0 = W_POOL[0] + 0.5 * k / max(len(moved), 1)
        r.box(beat, p, (t0, min(1.0, t0 + 0.45)))
    r.play(beat, *r.timing(spec))


@kind("finish", (0.6, 1.0, 0.35), FINISH)
def finish(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    r.say(beat, f"{ev.task} finished: {ev.n_output} tokens generated",
          "its pages are freed by the next step's cleanup")
    r.show_code(spec, FINISH, spec.main)
    r.play(beat, *r.timing(spec))


@kind("retire", (0.8, 1.0, 0.35), RELEASE)
def retire(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    r.say(beat, f"{ev.task} retired: its page table is gone",
          f"{ev.n_free} of {r.n_pages} pages free now")
    r.show_code(spec, RELEASE, spec.main)
    r.play(beat, *r.timing(spec))


@kind("preempt", (1.1, 2.0, 0.8), PREEMPT)
def preempt(r: Replay, spec: BeatSpec) -> None:
    beat, ev, _ = _applied(r, spec)
    r.say(beat, f"pool dry: preempt {ev.task} (the newest): pages freed, requeued",
          f"waiting = {ev.state['queue']}; its tokens are recomputed on readmission")
    r.queue_line(f"The pool has run dry, so the newest request, {ev.task}, is stopped: its "
            "pages go back, and it waits at the front of the queue.")
    r.show_code(spec, PREEMPT, spec.main)
    r.play(beat, *r.timing(spec))


@kind("tail", (0.5, 0.8, 0.8))
def tail(r: Replay, spec: BeatSpec) -> None:
    beat = r.new_beat()
    r.apply_all(spec, beat)
    st = r.events[spec.events[-1]].state
    outs = ", ".join(f"{n}: {k}" for n, k in st["outputs"].items())
    retired = [r.events[i] for i in range(spec.events[-1], -1, -1)
               if isinstance(r.events[i], Retire)]
    free_words = f"{retired[0].n_free} of {r.n_pages} pages free" if retired else "done"
    kept = f", {len(st['cached'])} cached" if st["cached"] else ""
    r.say(beat, f"all requests done: {free_words}{kept}", f"tokens generated - {outs}")
    r.queue_line("Every request is done." + (f" {retired[0].n_free} of the {r.n_pages} pages "
                                        "are free again." if retired else ""))
    r.play(beat, *r.timing(spec))
