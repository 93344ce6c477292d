"""Scene 5 of the storyboard: preemption, told from its own real runs.

    manim -ql scenes/preemption.py PreemptionScene                  # the `preemption` workload
    ASTRAI_CUT=teaser manim -ql scenes/preemption.py PreemptionScene

The pool runs dry during decode. The scene replays the recorded run and stops where it matters,
with beats of its own drawn from the trace's fields:
- whose next token found no page, who is running (oldest first), and why the victim is the
  newest; its pages go back, it waits at the head of the queue, the others keep decoding;
- its readmission: its prompt plus the tokens it had generated, recomputed in one prefill of
  that length, and the next token it makes;
- the end card: its output next to the same request's on a pool big enough never to preempt
  (a second real run), token for token, and the cost in recomputed tokens and steps.
"""

from __future__ import annotations

from astrai.compare import preemption as preemption_compare
from scenes import theme
from scenes.kit.board import Board
from scenes.kit.endcard import figure_rows, token_rows
from scenes.kit.story_replay import StoryReplay
from scenes.story import StoryScene


class PreemptionStory:
    """The moments the scene's own beats show, found in the trace (no manim: tests read it)."""

    def __init__(self, trace):
        self.trace = trace
        ev = self.events = trace.events
        self.ps = trace.geometry["page_size"]
        self.preempt = next((i for i, e in enumerate(ev) if e["kind"] == "preempt"), None)
        self.frees: list[int] = []  # the victim's pages going back, in order
        self.readmit = self.prefill = self.next_tokens = None
        if self.preempt is None:
            return
        p = ev[self.preempt]
        victim = p["task"]
        j = self.preempt - 1
        while j >= 0 and ev[j]["kind"] in ("free", "cache", "release") \
                and ev[j].get("task", victim) == victim:
            j -= 1
        self.frees = [k for k in range(j + 1, self.preempt) if ev[k]["kind"] == "free"]
        self.readmit = next((k for k in range(self.preempt + 1, len(ev))
                             if ev[k]["kind"] == "admit" and ev[k]["task"] == victim), None)
        if self.readmit is not None:
            self.prefill = next((k for k in range(self.readmit, len(ev))
                                 if ev[k]["kind"] == "write" and ev[k]["phase"] == "prefill"
                                 and any(r["task"] == victim for r in ev[k]["rows"])), None)
            self.next_tokens = next((k for k in range(self.readmit, len(ev))
                                     if ev[k]["kind"] == "tokens" and victim in ev[k]["tokens"]),
                                    None)

    def running_before(self) -> list[tuple[str, int]]:
        """(task, step admitted) of the requests running when the victim was chosen, oldest
        first, read from admit/retire/preempt events before it."""
        running: dict[str, int] = {}
        first = self.frees[0] if self.frees else self.preempt
        for e in self.events[:first]:
            if e["kind"] == "admit":
                running[e["task"]] = e["step"]
            elif e["kind"] in ("retire", "preempt"):
                running.pop(e["task"], None)
        return list(running.items())

    def victim_row(self) -> dict | None:
        if self.prefill is None:
            return None
        victim = self.events[self.preempt]["task"]
        return next(r for r in self.events[self.prefill]["rows"] if r["task"] == victim)


class PreemptionScene(StoryScene):
    WORKLOAD = "preemption"
    TITLE = "Preemption"
    CHAPTER = "5. Preemption"
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("When the pool runs dry mid-decode the newest request is preempted and requeued, "
               "recomputes its prompt and generated tokens, and still ends token for token like "
               "a run that never preempts.")

    def story(self) -> None:
        trace = self.trace_of()
        self.comparison = preemption_compare.compare(trace=trace)
        st = self.facts = PreemptionStory(trace)
        teaser = self.teaser
        keep = self._key_beats(st)
        rp = self.replay = StoryReplay.steered(self, trace, keep)
        self.chapter("The pool runs dry")
        self._intro(rp)
        if st.preempt is not None and teaser and st.frees:
            # The teaser frees the victim's first page while the board says why it was chosen,
            # and lets the fast-forward say the requeue: the readmission beat tells the cost.
            first = st.frees[0]
            rp.hook_instead(first, lambda r, spec: self._victim_beat(r, first, spec.events))
        elif st.preempt is not None:
            rp.hook_before(st.frees[0] if st.frees else st.preempt, self._victim_beat)
        if st.preempt is not None and not teaser:
            rp.hook_instead(st.preempt, self._requeue_beat)
        if st.preempt is not None:
            if st.readmit is not None and teaser:  # the board alone says what the admit does
                rp.hook_instead(st.readmit,
                                lambda r, spec: self._recompute_beat(r, st.readmit, spec.events))
            elif st.readmit is not None:
                rp.hook_after(st.readmit, self._recompute_beat)
            if st.next_tokens is not None and not teaser:
                rp.hook_after(st.next_tokens, self._continue_beat)
        rp.run()
        self.chapter("Two real runs")
        self._end_card(rp)

    def _key_beats(self, st: PreemptionStory) -> set:
        """Main events of the beats the full cut plays; the rest are fast-forwarded."""
        keep, seen = set(), set()
        for i, e in enumerate(st.events):
            kind, task = e["kind"], e.get("task")
            if kind in ("arrive", "admit", "preempt") or i in st.frees:
                keep.add(i)
            elif kind in ("alloc", "finish", "retire") and (kind, task) not in seen:
                keep.add(i)
            elif kind == "write" and e["phase"] == "prefill" and (i == st.prefill
                                                                  or "prefill" not in seen):
                keep.add(i)
                seen.add("prefill")
            elif kind == "alloc" and e["phase"] == "decode" and st.preempt is not None \
                    and i > st.preempt and ("grow-after", task) not in seen:
                keep.add(i)  # the page the preemption made room for
                seen.add(("grow-after", task))
            seen.add((kind, task))
        return keep

    # ---- the scene's own beats ------------------------------------------------------------

    def _intro(self, rp: StoryReplay) -> None:
        req = self.facts.trace.workload["request"]
        g = rp.geo
        rp.tell(f"{len(req)} requests, one pool of {g['n_pages']} pages: they grow a page "
                   "at a time while they decode", "what happens when a token needs a page and "
                   "none is left?", run_time=0.5, hold=self.pick(2.2, 2.2))

    def _victim_beat(self, rp: StoryReplay, i: int, events: list[int] = ()) -> None:
        st = self.facts
        p = st.events[st.preempt]
        prev = st.events[i - 1]["state"]
        running = st.running_before()
        victim, needer = p["task"], p["needed_by"]
        # The board holds the state the choice was made on (before any page goes back), so say so.
        board = Board(rp.layout, "when the pool ran dry: running requests, oldest first")
        board.skip(0.1)
        for name, step in running:
            pages = len(prev["page_tables"].get(name, []))
            tag = "  <- newest: preempted" if name == victim else (
                f"  <- needs a page for position {p['position']}" if name == needer else "")
            board.line([(f"{name}", rp.palette.color(name)),
                        (f"  admitted at step {step}, holds {pages} pages,"
                         f" {prev['lengths'].get(name, 0)} tokens", theme.TEXT),
                        (tag, theme.BAD if name == victim else theme.ACCENT)],
                       theme.FS_CAPTION, gap=0.14)
        board.skip(0.1)
        board.line([("the newest has done the least work, so redoing it costs least; ", theme.DIM),
                    ("older requests keep their pages", theme.TEXT)])
        free = bin(prev["free_mask"]).count("1")
        frame = rp.line_of(i, "Scheduler._grow", "victim = self.running[-1]")

        def build(beat):
            rp.show_board(beat, board, "victim")

        who = "itself" if victim == needer else f"{victim}, not {needer}"
        rp.tell(f"{needer}'s next token (position {p['position']}) needs a new page: "
                   f"{free} free, {len(prev['cached'])} cached", f"the pool is dry: the "
                   f"scheduler preempts the newest running request, {who}", build=build,
                   hold=self.pick(3.8, 4.5), events=events, code=(frame, i))

    def _requeue_beat(self, rp: StoryReplay, spec) -> None:
        st = self.facts
        p = st.events[st.preempt]
        board = Board(rp.layout, f"{p['task']} waits at the head of the queue")
        board.skip(0.1)
        board.line([("waiting: ", theme.DIM), (" ".join(p["state"]["queue"]), theme.TEXT),
                    ("   (head first)", theme.DIM)], theme.FS_CAPTION, gap=0.14)
        prompt = p["n_tokens"] - p["generated"]
        board.line([(f"{p['task']} keeps its tokens: ", theme.DIM),
                    (f"{prompt} prompt + {p['generated']} generated = {p['n_tokens']}",
                     theme.TEXT), ("  (ids, not K/V)", theme.DIM)], theme.FS_CAPTION, gap=0.14)
        board.line([("still running: ", theme.DIM), (", ".join(p["running"]), theme.TEXT),
                    ("  - they keep decoding", theme.DIM)], theme.FS_CAPTION)

        def build(beat):
            rp.show_board(beat, board, "requeue")

        rp.tell(f"{p['task']} is preempted: its pages went back, it is requeued at the head",
                   f"its K/V is gone; its {p['n_tokens']} tokens are kept and recomputed when "
                   "it is admitted again", build=build, hold=self.pick(3.4, 4.0),
                   events=spec.events,
                   code=(rp.line_of(st.preempt, "Scheduler._preempt", "appendleft"), st.preempt))

    def _recompute_beat(self, rp: StoryReplay, i: int, events: list[int] = ()) -> None:
        st = self.facts
        a = st.events[i]
        row = st.victim_row()
        name = a["task"]
        prompt_len, generated = a["prompt_len"], a["generated"]
        outs = st.trace.outputs.get(name, [])[:generated]
        board = Board(rp.layout, f"{name} is admitted again: one prefill recomputes all it had")
        board.skip(0.1)
        board.line([("prompt    ", theme.DIM), (f"{prompt_len} tokens", theme.TEXT)],
                   theme.FS_CAPTION, gap=0.1)
        board.line([("generated ", theme.DIM), (f"{generated} tokens: ", theme.TEXT),
                    (" ".join(map(str, outs)), rp.palette.color(name))], theme.FS_CAPTION,
                   gap=0.1)
        if row is not None:
            board.line([("prefill   ", theme.DIM),
                         (f"positions {row['start']}-{row['start'] + row['n'] - 1}: "
                          f"{row['n']} tokens computed again", theme.ACCENT)],
                        theme.FS_CAPTION)

        def build(beat):
            rp.show_board(beat, board, "recompute")

        n = row["n"] if row else a["n_tokens"]
        rp.tell(f"readmission: {name}'s prefill is {n} tokens long: {prompt_len} prompt + "
                   f"{generated} generated", f"pages_for({a['n_tokens']}) = "
                   f"{a['pages_needed']} pages; the K/V it lost is computed again from its "
                   "tokens", build=build, hold=self.pick(3.4, 4.0), events=events,
                   code=self._prefill_code(rp))

    def _prefill_code(self, rp: StoryReplay) -> tuple:
        """The prefill's chunk line: each task computes its tokens (prompt + output) past
        what is cached, which for a readmitted task is everything it had."""
        st = self.facts
        if st.prefill is None:
            return (None, None)
        return (rp.line_of(st.prefill, "Scheduler._prefill", "chunks = "), st.prefill)

    def _continue_beat(self, rp: StoryReplay, i: int) -> None:
        st = self.facts
        e = st.events[i]
        name = st.events[st.preempt]["task"]
        count = e["state"]["outputs"][name]
        rp.tell(f"{name} continues where it stopped: token {count} is {e['tokens'][name]}",
                   "the same token it would have made had it never been paused (end card)",
                   hold=self.pick(2.0, 1.0))

    def _end_card(self, rp: StoryReplay) -> None:
        c = self.comparison
        board = Board(rp.layout, "The same workload, two real runs", full=True)
        board.skip(0.05)
        shown = []
        for name in c.preempted:
            board.line([(f"{name}'s output tokens", theme.TEXT)], theme.FS_CAPTION, gap=0.08)
            shown += token_rows(board, (f"{c.n_pages} pages", f"{c.big_n_pages} pages"),
                                c.outputs[name], c.big_outputs[name], per_line=20, label_w=10)
        board.skip(0.05)
        rows = [
            ("requests preempted", ", ".join(c.preempted) or "none", "none"),
            ("tokens recomputed", str(c.recomputed_tokens), "0"),
            ("steps to finish everything", str(c.steps), str(c.big_steps)),
        ] + [(f"step {name} finished at", str(c.finished[name]), str(c.big_finished[name]))
             for name in c.preempted]
        self.card_rows = rows
        figure_rows(board, ("", f"pool of {c.n_pages}", f"pool of {c.big_n_pages}"), rows,
                    label_w=30, col_w=14)

        def build(beat):
            rp.show_board(beat, board, "end card", stay=True)

        same = "equal token for token" if c.outputs_equal else "NOT equal"
        names = ", ".join(c.preempted) or "no request"
        rp.tell(f"{names}'s output on a pool that never runs dry: {same}",
                   f"the cost: {c.recomputed_tokens} tokens recomputed, {c.extra_steps} more "
                   "steps in all", build=build, hold=self.pick(5.5, 6.5))
