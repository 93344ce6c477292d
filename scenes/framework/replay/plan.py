"""Planning: the trace's events grouped into beats (`plan_beats`), and the teaser's selection.

A beat is one `play()` (plus a hold to read). Every event but the init phase belongs to exactly
one beat, in trace order, so replaying all beats applies the whole trace:

  phase, grow           folded into the next beat (phase pills and step number move with it);
                        the first cleanup with nothing to free gets its own beat
  arrive, admit, wait   one beat each
  alloc, share          one beat each; an alloc in a decode step is a "grow" beat
  evict (+ its alloc)   one beat: the LRU cached page changes hands
  free (+ its cache)    one beat
  record, finish,       one beat each
  retire, preempt
  write, gather         prefill: one beat each; decode: write + gather + tokens of a step make
                        one "forward" beat
  tokens, copy          folded into the beat before it (a copy: into its page's alloc)
  fork                  folded into its first share
  runs of plain steps   decode steps with nothing but phase/write/gather/tokens: one "run" beat
                        for the whole run, captioned as compressed
  tail                  whatever is left after the last beat

Which kinds fold into a neighbouring beat and which are plain is said by each event class
(astrai.trace.events: `folds`, `plain`); a beat is named after its main event's kind, or is one
of the planner's own kinds (`OWN_KINDS`).

`teaser(beats, events)` gives the promo's short cut: one "montage" beat per run of beats that
move one task's pages one way (its allocs; its frees and retirement), every other beat folded
into the montage after it and named there as compressed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from astrai.inference.phases import StepPhase
from astrai.trace.events import (
    EVENTS,
    NEXT,
    PREVIOUS,
    Admit,
    Alloc,
    Cache,
    Event,
    Evict,
    Free,
    Gather,
    Phase,
    Preempt,
    Retire,
    Share,
    Tokens,
    Wait,
    Write,
)

# Each event kind says how it is grouped (astrai.trace.events: `plain`, `folds`).
PLAIN = tuple(c for c in EVENTS.values() if c.plain)
# never a beat of their own: they lead into the next one (fork: into its first share, until a
# scene gives it a beat of its own)
FOLDED = tuple(c for c in EVENTS.values() if c.folds == NEXT)
AFTER = tuple(c for c in EVENTS.values() if c.folds == PREVIOUS)  # into the beat before them

# The beat kinds the planner (and a scene's construction) makes of its own; every other beat is
# named after the kind of its main event.
GROW = "grow"  # an alloc in a decode step
FORWARD = "forward"  # a decode step's write, gather and tokens
RUN = "run"  # decode steps with nothing but phase/write/gather/tokens
CLEANUP_IDLE = "cleanup-idle"  # the first cleanup, with nothing to free
TAIL = "tail"  # whatever is left after the last beat
MONTAGE = "montage"  # the teaser's beats
CONSTRUCT = "construct"  # the cache's construction (Replay.construct_cache)
OWN_KINDS = (GROW, FORWARD, RUN, CLEANUP_IDLE, TAIL, MONTAGE, CONSTRUCT)


def beat_kind(kind: str | type[Event], where: str = "beat kinds") -> str:
    """The beat kind named by an event class or a string; ValueError if a string is neither
    an event kind nor one of OWN_KINDS (a registry checks its names with this at import)."""
    if isinstance(kind, type) and issubclass(kind, Event):
        return kind.kind
    if kind not in EVENTS and kind not in OWN_KINDS:
        raise ValueError(f"{where}: {kind!r} is neither an event kind ({', '.join(EVENTS)}) "
                         f"nor a beat kind of the planner's ({', '.join(OWN_KINDS)})")
    return kind


@dataclass
class BeatSpec:
    kind: str
    events: list[int]  # every event this beat applies, in trace order
    main: int | None = None  # the event the beat is about
    steps: tuple[int, int] | None = None  # first/last step of a compressed run
    first: bool = False  # first beat of its kind: hold longer, explain more
    skipped: list[str] = field(default_factory=list)  # teaser: the kinds of the beats folded in


def _repeat_waits(events: list[Event]) -> set[int]:
    """Wait events that say the same as the wait before them (same task, same numbers)."""
    same, last = set(), None
    for i, ev in enumerate(events):
        if isinstance(ev, Wait):
            key = (ev.task, ev.needed, ev.available)
            if key == last:
                same.add(i)
            last = key
        elif isinstance(ev, (Admit, Preempt)):
            last = None
    return same


def _is_plain(events: list[Event], idx: list[int], repeats: set[int] = frozenset()) -> bool:
    return all(
        (isinstance(events[i], PLAIN) or i in repeats)
        and (not isinstance(events[i], (Write, Gather)) or events[i].phase == StepPhase.DECODE)
        for i in idx
    )


def _runnable(events: list[Event], idx: list[int], repeats: set[int]) -> bool:
    return _is_plain(events, idx, repeats) and any(isinstance(events[i], Write) for i in idx)


def plan_beats(events: list[Event]) -> list[BeatSpec]:
    """Group the trace's events (all but the init phase) into beats; see the module doc."""
    groups: list[tuple[int, list[int]]] = []
    for i, ev in enumerate(events):
        if ev.phase == StepPhase.INIT:
            continue
        if groups and groups[-1][0] == ev.step:
            groups[-1][1].append(i)
        else:
            groups.append((ev.step, [i]))

    beats: list[BeatSpec] = []
    pending: list[int] = []
    cleanup_seen = False
    repeats = _repeat_waits(events)
    g = 0
    while g < len(groups):
        step, idx = groups[g]
        if _runnable(events, idx, repeats):
            run: list[int] = []
            first = last = step
            while g < len(groups) and _runnable(events, groups[g][1], repeats):
                run += groups[g][1]
                last = groups[g][0]
                g += 1
            beats.append(BeatSpec(RUN, pending + run, None, (first, last)))
            pending = []
            continue
        j = 0
        while j < len(idx):
            i = idx[j]
            ev = events[i]
            kind = ev.kind
            nxt = events[idx[j + 1]] if j + 1 < len(idx) else None
            if isinstance(ev, FOLDED):
                pending.append(i)
                if isinstance(ev, Phase) and ev.phase == StepPhase.CLEANUP and not cleanup_seen:
                    cleanup_seen = True
                    if isinstance(nxt, Phase):
                        beats.append(BeatSpec(CLEANUP_IDLE, pending, i))
                        pending = []
                j += 1
                continue
            if isinstance(ev, AFTER):
                if beats and not pending:
                    beats[-1].events.append(i)
                else:
                    pending.append(i)
                j += 1
                continue
            group = [i]
            if isinstance(ev, Write) and ev.phase == StepPhase.DECODE:
                kind = FORWARD
                while j + 1 < len(idx) and isinstance(events[idx[j + 1]], (Gather, Tokens)):
                    j += 1
                    group.append(idx[j])
            elif isinstance(ev, Free) and isinstance(nxt, Cache) and nxt.page == ev.page:
                j += 1
                group.append(idx[j])
            elif isinstance(ev, Evict) and isinstance(nxt, Alloc) and nxt.page == ev.page:
                j += 1
                group.append(idx[j])
            elif isinstance(ev, Alloc) and ev.phase == StepPhase.DECODE:
                kind = GROW
            beats.append(BeatSpec(kind, pending + group, i))
            pending = []
            j += 1
        g += 1
    if pending:
        beats.append(BeatSpec(TAIL, pending, None))
    _mark_first(beats)
    return beats


def _mark_first(beats: list[BeatSpec]) -> None:
    seen: set[str] = set()
    for b in beats:
        b.first = b.kind not in seen
        seen.add(b.kind)


# Teaser chunks: beats that bring pages to a task, or take them away.
FAMILY = {beat_kind(k, "plan.FAMILY"): family for k, family in (
    (Alloc, "in"), (GROW, "in"), (Share, "in"), (Evict, "in"),
    (Free, "out"), (Cache, "out"), (Retire, "out"), (Preempt, "out"))}


def task_of(spec: BeatSpec, events: list[Event]) -> str | None:
    """The task a beat is about: the first event from its main one on that names a task."""
    if spec.main is None:
        return None
    at = spec.events.index(spec.main)
    return next((task for i in spec.events[at:] if (task := getattr(events[i], "task", None))),
                None)


def never(spec: BeatSpec) -> bool:
    return False


def teaser(beats: list[BeatSpec], events: list[Event], keep=never) -> list[BeatSpec]:
    """The teaser's beats, in trace order, applying every event the full cut applies.

    Consecutive beats that move pages for one task in one direction (A's allocs; A's frees and
    its retirement) become one "montage" beat; every other beat (arrivals, writes, decode runs,
    ...) is folded into the montage after it - applied with it, and named in its caption as
    compressed. Beats `keep` accepts are played as in the full cut.
    """
    out: list[BeatSpec] = []
    folded: list[int] = []
    folded_kinds: list[str] = []
    current: tuple[str, str | None] | None = None  # (family, task) of the open montage

    def flush_into(spec: BeatSpec) -> None:
        spec.events[:0] = folded
        spec.skipped[:0] = folded_kinds
        folded.clear()
        folded_kinds.clear()

    for b in beats:
        family = FAMILY.get(b.kind)
        if keep(b) or b.kind == TAIL:
            spec = BeatSpec(b.kind, list(b.events), b.main, b.steps, b.first)
            flush_into(spec)
            out.append(spec)
            current = None
            continue
        if family is None:
            folded += b.events
            folded_kinds.append(b.kind)
            current = None
            continue
        key = (family, task_of(b, events))
        if current == key and not folded:
            out[-1].events += b.events
            out[-1].skipped.append(b.kind)
        else:
            spec = BeatSpec(MONTAGE, list(b.events), b.main, skipped=[b.kind])
            flush_into(spec)
            out.append(spec)
            current = key
    if folded:
        out.append(BeatSpec(TAIL, list(folded), None, skipped=list(folded_kinds)))
    for spec in out:
        steps = [events[i].step for i in spec.events]
        spec.steps = (min(steps), max(steps))
    _mark_first(out)
    return out
