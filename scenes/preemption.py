"""A storyboard scene: preemption, told from its own real runs.

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

The narrator tells that story in the scene's own beats, one idea a line, with the run's numbers;
the replay's beat kinds pass silently (`StoryReplay.steered`: the paged-cache scene has said what
they do).
The teaser cut (`teaser_story`) is one shot: the pool runs dry and the newest request steps aside.
"""

from __future__ import annotations

from astrai.compare import preemption as preemption_compare
from astrai.inference.phases import StepPhase
from astrai.trace.events import Admit, Alloc, Cache, Free, Grow, Preempt, Retire, Tokens, Write
from scenes.framework import theme
from scenes.framework.kit.board import Board
from scenes.framework.kit.endcard import figure_rows, text_rows, token_rows
from scenes.framework.kit.pieces import fitted, sequences
from scenes.framework.kit.said import drawable
from scenes.framework.replay.steered import StoryReplay
from scenes.framework.story import StoryScene


class PreemptionStory:
    """The moments the scene's own beats show, found in the trace (no manim: tests read it)."""

    def __init__(self, trace):
        self.trace = trace
        ev = self.events = trace.events
        self.ps = trace.geometry["page_size"]
        self.preempt = next((i for i, e in enumerate(ev) if isinstance(e, Preempt)), None)
        self.frees: list[int] = []  # the victim's pages going back, in order
        self.readmit = self.prefill = self.next_tokens = self.last_grow = None
        if self.preempt is None:
            return
        p = ev[self.preempt]
        victim = p.task
        j = self.preempt - 1
        # The victim's pages going back: its frees (refs reaching 0 sets the page free again)
        # and the caching of those that hold a recorded prefix (a cache event names no task).
        while j >= 0 and (isinstance(ev[j], Cache)
                          or isinstance(ev[j], Free) and ev[j].task == victim):
            j -= 1
        self.frees = [k for k in range(j + 1, self.preempt) if isinstance(ev[k], Free)]
        # the last page a growing request took before the pool ran dry
        self.last_grow = next((k for k in range(j, -1, -1) if isinstance(ev[k], Alloc)
                               and ev[k].phase == StepPhase.DECODE), None)
        self.readmit = next((k for k in range(self.preempt + 1, len(ev))
                             if isinstance(ev[k], Admit) and ev[k].task == victim), None)
        if self.readmit is not None:
            self.prefill = next((k for k in range(self.readmit, len(ev))
                                 if isinstance(ev[k], Write) and ev[k].phase == StepPhase.PREFILL
                                 and any(r["task"] == victim for r in ev[k].rows)), None)
            self.next_tokens = next((k for k in range(self.readmit, len(ev))
                                     if isinstance(ev[k], Tokens) and victim in ev[k].tokens),
                                    None)

    def running_before(self) -> list[tuple[str, int]]:
        """(task, step admitted) of the requests running when the victim was chosen, oldest
        first, read from admit/retire/preempt events before it."""
        running: dict[str, int] = {}
        first = self.frees[0] if self.frees else self.preempt
        for e in self.events[:first]:
            if isinstance(e, Admit):
                running[e.task] = e.step
            elif isinstance(e, (Retire, Preempt)):
                running.pop(e.task, None)
        return list(running.items())

    def freed_room(self) -> str | None:
        """The request whose retirement last freed pages before the readmission."""
        if self.readmit is None:
            return None
        return next((e.task for e in reversed(self.events[self.preempt:self.readmit])
                     if isinstance(e, Retire)), None)

    def victim_row(self) -> dict | None:
        if self.prefill is None:
            return None
        victim = self.events[self.preempt].task
        return next(r for r in self.events[self.prefill].rows if r["task"] == victim)


class PreemptionScene(StoryScene):
    WORKLOAD = "preemption"
    TITLE = "Preemption"
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("When the pool runs dry mid-decode the newest request is preempted and requeued, "
               "recomputes its prompt and generated tokens, and still ends token for token like "
               "a run that never preempts.")

    def _replay(self, key_beats) -> tuple[PreemptionStory, StoryReplay]:
        """The facts of the run and the replay the scene steers."""
        trace = self.trace_of()
        self.comparison = preemption_compare.compare(trace=trace)
        st = self.facts = PreemptionStory(trace)
        rp = self.replay = StoryReplay.steered(self, trace, key_beats(st))
        return st, rp

    def story(self) -> None:
        st, rp = self._replay(self._key_beats)
        self.chapter("The pool runs dry")
        # why, said while the pool is built
        self.shot(None, "", lambda shot: rp.construct_cache(), line=self._intro_line(rp))
        if st.last_grow is not None:
            rp.hook_instead(st.last_grow, self._last_page_beat)
        if st.preempt is not None:
            rp.hook_before(st.frees[0] if st.frees else st.preempt, self._victim_beat)
            rp.hook_instead(st.preempt, self._requeue_beat)
            if st.readmit is not None:
                rp.hook_after(st.readmit, self._recompute_beat)
            if st.next_tokens is not None:
                rp.hook_after(st.next_tokens, self._continue_beat)
        rp.run(construct=False)
        self.chapter("Two real runs")
        self._end_card(rp)

    def teaser_story(self) -> None:
        """The teaser's one shot: the victim board as the pool runs dry, the victim's first
        page going back in the same beat, and one line that says the whole trade; every
        other beat of the run is fast-forwarded, silent."""
        st, rp = self._replay(lambda st: set())
        self.chapter("The pool runs dry")
        if st.frees:
            first = st.frees[0]
            rp.hook_instead(first, lambda r, spec: self._victim_beat(
                r, first, spec.events, line=self.teaser_line()))
        rp.run()

    def teaser_line(self) -> str:
        st, c = self.facts, self.comparison
        p = st.events[st.preempt]
        victim = p.task
        n = st.victim_row()["n"] if st.victim_row() else p.n_tokens
        same = "the same output" if c.outputs_equal else "another output"
        return (f"Out of pages, the newest request, {victim}, steps aside. Later it "
                f"recomputes its {n} tokens, with {same}.")

    def _key_beats(self, st: PreemptionStory) -> set:
        """Main events of the beats the full cut plays besides those the scene's own beats
        hook: the last free page taken before the pool runs dry, the victim's pages going
        back, the page that made room for, and the victim's recompute."""
        if st.preempt is None:
            return set()
        ev = st.events
        keep = set(st.frees) | ({st.last_grow} if st.last_grow is not None else set())
        after = next((i for i in range(st.preempt, len(ev)) if isinstance(ev[i], Alloc)), None)
        keep |= {after} if after is not None else set()
        if st.prefill is not None:
            keep.add(st.prefill)
        return keep

    # ---- the scene's own beats ------------------------------------------------------------

    def _intro_line(self, rp: StoryReplay) -> str:
        req = self.facts.trace.workload["request"]
        return (f"{len(req)} requests share a pool of only {rp.geo['n_pages']} pages, and each "
                "takes one more page whenever its last one fills up.")

    def _last_page_beat(self, rp: StoryReplay, spec) -> None:
        """A request that grows takes a page: the last free one, as the pool runs dry."""
        st = self.facts
        i = st.last_grow
        e = st.events[i]
        grow = next((g for g in reversed(st.events[:i]) if isinstance(g, Grow)
                     and g.task == e.task), None)
        left = bin(e.state["free_mask"]).count("1")
        rest = "the last free one" if left == 0 else f"{left} left"
        full = (f"At token {grow.n_tokens}, {e.task}'s {grow.held} pages are full, "
                if grow else f"{e.task} is full, ")
        self.shot(f"{e.task} takes page {e.page}, " + (
                      "the last free page" if left == 0 else f"{left} free page(s) left"),
                  "each request takes one more page whenever its last one fills up",
                  rp.beat(events=spec.events,
                          build=lambda beat: rp.box(beat, e.page, (0.3, 0.9)),
                          code=(rp.line_of(i, "grow.alloc"), i), hold=1.0),
                  line=f"{full}so it takes page {e.page}: {rest}.")

    def _victim_beat(self, rp: StoryReplay, i: int, events: list[int] = (),
                     line: str | None = None) -> None:
        st = self.facts
        p = st.events[st.preempt]
        prev = st.events[i - 1].state
        running = st.running_before()
        victim, needer = p.task, p.needed_by
        # The board holds the state the choice was made on (before any page goes back), so say so.
        board = Board(rp.layout, "when the pool ran dry: running requests, oldest first")
        board.skip(0.1)
        for name, step in running:
            pages = len(prev["page_tables"].get(name, []))
            tag = "  <- newest: preempted" if name == victim else (
                f"  <- needs a page for position {p.position}" if name == needer else "")
            board.line([(f"{name}", rp.palette.color(name)),
                        (f"  admitted at step {step}, holds {pages} pages,"
                         f" {prev['lengths'].get(name, 0)} tokens", theme.TEXT),
                        (tag, theme.BAD if name == victim else theme.ACCENT)],
                       theme.FS_CAPTION, gap=0.14)
        board.skip(0.1)
        board.line([("the newest has done the least work, so redoing it costs least; ", theme.DIM),
                    ("older requests keep their pages", theme.TEXT)])
        free = bin(prev["free_mask"]).count("1")
        frame = rp.line_of(i, "grow.pick_victim")

        def build(beat):
            rp.show_board(beat, board, "victim")

        who = "itself" if victim == needer else f"{victim}, not {needer}"
        if line is None:
            line = (f"{needer} needs a new page, but all {rp.n_pages} are taken. So the "
                    f"scheduler stops the newest request, {victim}: it has done the least "
                    "work, so it costs the least to redo.")
        self.shot(f"{needer}'s next token (position {p.position}) needs a new page: "
                  f"{free} free, {len(prev['cached'])} cached",
                  f"the pool is dry: the "
                  f"scheduler preempts the newest running request, {who}",
                  rp.beat(events=events, build=build, code=(frame, i), hold=3.8),
                  line=line)

    def _requeue_beat(self, rp: StoryReplay, spec) -> None:
        st = self.facts
        p = st.events[st.preempt]
        board = Board(rp.layout, f"{p.task} waits at the head of the queue")
        board.skip(0.1)
        board.line([("waiting: ", theme.DIM), (" ".join(p.state["queue"]), theme.TEXT),
                    ("   (head first)", theme.DIM)], theme.FS_CAPTION, gap=0.14)
        prompt = p.n_tokens - p.generated
        board.line([(f"{p.task} keeps its tokens: ", theme.DIM),
                    (f"{prompt} prompt + {p.generated} generated = {p.n_tokens}",
                     theme.TEXT), ("  (ids, not K/V)", theme.DIM)], theme.FS_CAPTION, gap=0.14)
        board.line([("still running: ", theme.DIM), (", ".join(p.running), theme.TEXT),
                    ("  - they keep decoding", theme.DIM)], theme.FS_CAPTION)

        def build(beat):
            rp.show_board(beat, board, "requeue")

        name = p.task
        self.shot(f"{name} is preempted: its pages went back, it is requeued at the head",
                  f"its K/V is gone; its {p.n_tokens} tokens are kept and recomputed when "
                  "it is admitted again",
                  rp.beat(events=spec.events, build=build,
                          code=(rp.line_of(st.preempt, "preempt.requeue"), st.preempt), hold=3.4),
                  line=f"{name}'s pages are back in the pool, and {name} waits at the head of "
                       f"the queue. It keeps its {p.n_tokens} tokens, but not their keys and "
                       "values.")

    def _recompute_beat(self, rp: StoryReplay, i: int, events: list[int] = ()) -> None:
        st = self.facts
        a = st.events[i]
        row = st.victim_row()
        name = a.task
        prompt_len, generated = a.prompt_len, a.generated
        outs = st.trace.outputs.get(name, [])[:generated]
        board = Board(rp.layout, f"{name} is admitted again: one prefill recomputes all it had")
        board.skip(0.1)
        board.line([("prompt    ", theme.DIM), (f"{prompt_len} tokens", theme.TEXT)],
                   theme.FS_CAPTION, gap=0.1)
        words = sequences(st.events).get(name)  # a text request: the words it had made
        made = (f'"{"".join(words[prompt_len:prompt_len + generated])}"' if words
                else " ".join(map(str, outs)))
        board.line([("generated ", theme.DIM), (f"{generated} tokens: ", theme.TEXT),
                    (fitted(made, 60), rp.palette.color(name))], theme.FS_CAPTION, gap=0.1)
        if row is not None:
            board.line([("prefill   ", theme.DIM),
                         (f"positions {row['start']}-{row['start'] + row['n'] - 1}: "
                          f"{row['n']} tokens computed again", theme.ACCENT)],
                        theme.FS_CAPTION)

        def build(beat):
            rp.show_board(beat, board, "recompute")

        n = row["n"] if row else a.n_tokens
        freer = st.freed_room()
        when = f"When {freer}'s finished, {name} gets back in. " if freer else \
            f"{name} gets back in. "
        self.shot(f"readmission: {name}'s prefill is {n} tokens long: {prompt_len} prompt + "
                  f"{generated} generated",
                  f"pages_for({a.n_tokens}) = "
                  f"{a.pages_needed} pages; the K/V it lost is computed again from its "
                  "tokens",
                  rp.beat(events=events, build=build, code=self._prefill_code(rp), hold=3.4),
                  line=f"{when}Its {prompt_len} prompt tokens and the {generated} it had made "
                       f"are computed again, in one prefill of {n}.")

    def _prefill_code(self, rp: StoryReplay) -> tuple:
        """The prefill's chunk line: each task computes its tokens (prompt + output) past
        what is cached, which for a readmitted task is everything it had."""
        st = self.facts
        if st.prefill is None:
            return (None, None)
        return (rp.line_of(st.prefill, "prefill.chunk"), st.prefill)

    def _continue_beat(self, rp: StoryReplay, i: int) -> None:
        st = self.facts
        e = st.events[i]
        name = st.events[st.preempt].task
        count = e.state["outputs"][name]
        piece = (e.pieces or {}).get(name)
        token = f'"{drawable(piece)}"' if piece else str(e.tokens[name])
        self.shot(f"{name} continues where it stopped: token {count} is {token}",
                  "the same token it would have made had it never been paused (end card)",
                  rp.beat(hold=2.0),
                  line=f"Then {name} goes on to its token number {count}, as if it "
                                 "had never stopped.")

    def _end_card(self, rp: StoryReplay) -> None:
        c = self.comparison
        board = Board(rp.layout, "The same workload, two real runs", full=True)
        board.skip(0.05)
        shown = []
        texts, big_texts = c.texts, c.big_texts
        for name in c.preempted:
            names = (f"{c.n_pages} pages", f"{c.big_n_pages} pages")
            if name in texts and name in big_texts:  # a text request: its answers, as text
                board.line([(f"{name}'s answer", theme.TEXT)], theme.FS_CAPTION, gap=0.08)
                shown += text_rows(board, names, texts[name], big_texts[name], label_w=10)
                continue
            board.line([(f"{name}'s output tokens", theme.TEXT)], theme.FS_CAPTION, gap=0.08)
            shown += token_rows(board, names, c.outputs[name], c.big_outputs[name],
                                per_line=20, label_w=10)
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

        worded = all(n in c.texts for n in c.preempted)  # text requests: say it of their answers
        same = ("the same answer, token for token" if worded else "equal token for token") \
            if c.outputs_equal else "NOT equal"
        names = ", ".join(c.preempted) or "no request"
        said = "is the same, token for token" if c.outputs_equal else "differs"
        self.shot(f"{names}'s output on a pool that never runs dry: {same}",
                  f"the cost: {c.recomputed_tokens} tokens recomputed, {c.extra_steps} more "
                  "steps in all",
                  rp.beat(build=build, hold=5.5),
                  line=f"On a pool of {c.big_n_pages} pages, where nothing is stopped, "
                       f"{names}'s output {said}. The cost here: {c.recomputed_tokens} tokens "
                       "computed twice, and " + (f"{c.extra_steps} more steps." if c.extra_steps
                                                 else "not one step more."))
