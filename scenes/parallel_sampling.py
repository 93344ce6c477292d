"""A storyboard scene: parallel sampling with copy-on-write, told from its own real runs.

    manim -ql scenes/parallel_sampling.py ParallelSamplingScene         # the `sampling` workload
    ASTRAI_CUT=teaser manim -ql scenes/parallel_sampling.py ParallelSamplingScene

One request asks for three samples of one prompt. The scene replays the recorded run and stops
where it matters, with beats of its own drawn from the trace's fields:
- the prompt prefilled once, then the other samples forking: three page tables pointing at the
  same frames, refs 3 (the `fork` events and the state after their shares);
- the first decode step: a sample about to write into the shared, half-filled last page takes a
  fresh page and copies the filled slots into it, slot by slot from the recorded source and
  destination (`copy` events); the last holder keeps the page and writes in place;
- the samples diverging (their real tokens);
- the end card: a second real run with the samples as independent requests
  (astrai.compare.sampling): pages allocated, prompt tokens computed, peak pages in use, and
  each sample's tokens next to its independent twin's.
"""

from __future__ import annotations

from manim import Rectangle

from astrai.compare import sampling as sampling_compare
from astrai.inference.phases import StepPhase
from astrai.trace.events import Admit, Alloc, Arrive, Copy, Fork, Free, Tokens, Write
from scenes.framework import theme
from scenes.framework.kit.board import Board
from scenes.framework.kit.endcard import card_text, figure_rows, text_rows, token_rows
from scenes.framework.replay.steered import StoryReplay
from scenes.framework.story import StoryScene


class SamplingStory:
    """The moments the scene's own beats show, found in the trace (no manim: tests read it)."""

    def __init__(self, trace):
        self.trace = trace
        ev = self.events = trace.events
        self.ps = trace.geometry["page_size"]
        self.arrive = next((i for i, e in enumerate(ev)
                            if isinstance(e, Arrive) and e.samples), None)
        self.samples = ev[self.arrive].samples if self.arrive is not None else []
        self.forks = [i for i, e in enumerate(ev) if isinstance(e, Fork)]
        self.copies = [i for i, e in enumerate(ev) if isinstance(e, Copy)]
        # the share events of each fork: the len(pages) events right after it
        self.shares = {i: list(range(i + 1, i + 1 + len(ev[i].pages))) for i in self.forks}
        self.prefill = next((i for i, e in enumerate(ev)
                             if isinstance(e, Write) and e.phase == StepPhase.PREFILL), None)
        self.first_tokens = next((i for i in range(self.forks[-1] if self.forks else 0, len(ev))
                                  if isinstance(ev[i], Tokens)), None)
        self.first_decode = next((i for i, e in enumerate(ev)
                                  if isinstance(e, Write) and e.phase == StepPhase.DECODE), None)
        self.decode_tokens = next((i for i in range(self.first_decode or len(ev), len(ev))
                                   if isinstance(ev[i], Tokens)), None)

    def free_of(self, copy: int) -> int:
        """The free of the shared page that starts a copy (before the alloc of its page)."""
        return copy - 2

    def keeper(self) -> tuple[str, int] | None:
        """(task, page) of the sample that kept the shared page: the one whose first decode
        write lands on the copies' source page."""
        if not self.copies or self.first_decode is None:
            return None
        src = self.events[self.copies[0]].source
        for row in self.events[self.first_decode].rows:
            if any(p == src for p, _, _ in row["runs"]):
                return row["task"], src
        return None

    def tokens_at(self, i: int) -> dict[str, list[int]]:
        """Each sample's tokens as of event i (its recorded output count)."""
        outs = self.events[i].state["outputs"]
        return {n: self.trace.outputs[n][: outs.get(n, 0)] for n in self.samples}


class ParallelSamplingScene(StoryScene):
    WORKLOAD = "sampling"
    TITLE = "Parallel sampling"
    SUMMARY = ("Three samples of one prompt share its pages after a single prefill; a sample "
               "copies the shared half-filled page only when it writes into it, and each ends "
               "token for token like an independent request.")

    def _replay(self, key_beats) -> tuple[SamplingStory, StoryReplay]:
        """The facts of the run and the replay the scene steers."""
        trace = self.trace_of()
        self.comparison = sampling_compare.compare(trace=trace)
        st = self.facts = SamplingStory(trace)
        self.slot_copies: list[tuple[int, int, Board, list]] = []  # (source, page, board, cells)
        rp = self.replay = StoryReplay.steered(self, trace, key_beats(st))
        return st, rp

    def teaser_story(self) -> None:
        """The teaser's one shot: the first copy, slot by slot, with one line that says the
        whole trade in the two runs' numbers; every other beat is fast-forwarded, silent."""
        st, rp = self._replay(lambda st: set())
        self.chapter("One prompt, three samples")
        if st.copies:
            rp.hook_instead(st.copies[0], lambda r, spec: self._copy_beat(
                r, spec, line=self.teaser_line()))
        rp.run()

    def teaser_line(self) -> str:
        c = self.comparison
        n = len(c.samples)
        same = "the same tokens" if c.outputs_equal else "other tokens"
        return (f"{n} samples of one prompt share its pages. A page is copied only when a sample "
                f"writes into it: {c.pages_allocated} pages instead of "
                f"{c.independent_pages_allocated}, and {same}.")

    def story(self) -> None:
        st, rp = self._replay(self._key_beats)
        self.chapter("One prompt, three samples")
        # the question, said while the pool is built
        self.shot(None, "", lambda shot: rp.construct_cache(), line=self._intro_line())
        if st.forks:  # the share kind's own words are a prefix hit's: these say a fork's
            rp.hook_instead(st.shares[st.forks[0]][0], self._fork_beat)
            rp.hook_instead(st.shares[st.forks[-1]][-1], self._shared_beat)
        if st.first_tokens is not None:
            rp.hook_after(st.first_tokens, self._first_tokens_beat)
        for c in st.copies:
            rp.hook_instead(st.free_of(c), self._take_beat)
            rp.hook_instead(c, self._copy_beat)
        if st.keeper() is not None:
            rp.hook_before(st.first_decode, self._keep_beat)
        if st.decode_tokens is not None and not self.teaser:
            rp.hook_after(st.decode_tokens, self._diverge_beat)
        rp.run(construct=False)
        self.chapter("Two real runs")
        self._end_card(rp)

    def _key_beats(self, st: SamplingStory) -> set:
        """Main events of the beats the full cut plays; the rest are fast-forwarded."""
        keep = set()
        for i, e in enumerate(st.events):
            if isinstance(e, (Arrive, Admit)) or i == st.prefill:
                keep.add(i)
            elif isinstance(e, Alloc) and e.phase == StepPhase.REFILL and e.logical == 0:
                keep.add(i)
        return keep

    # ---- the scene's own beats ------------------------------------------------------------

    def _intro_line(self) -> str:
        st = self.facts
        if st.arrive is None:
            return "No request of this workload asks for more than one sample."
        a = st.events[st.arrive]
        full, rest = divmod(a.prompt_len, st.ps)
        return (f"One request asks for {len(st.samples)} samples of the same "
                f"{a.prompt_len}-token prompt: {full} full pages of {st.ps}, and {rest} "
                "tokens in one more. Do the samples need a copy of it each?")

    def _fork_beat(self, rp: StoryReplay, spec) -> None:
        st = self.facts
        i = st.forks[0]
        e, share = st.events[i], st.events[st.shares[i][0]]
        row = next(r for r in st.events[st.prefill].rows) if st.prefill is not None else None
        once = f": {row['n']} tokens computed once, in one row" if row else ""
        self.shot(f"prefill ran once, for {e.parent}{once}",
                  f"{e.task} forks: it shares pages {e.pages}; page {share.page} -> "
                  f"{e.task}[{share.logical}], refs {share.state['refs'][share.page]}",
                  rp.beat(events=spec.events,
                          code=(rp.line_of(st.shares[i][0], "fork.share_pages"),
                        st.shares[i][0]), hold=self.pick(1.2, 1.6), name="fork"),
                  line="The prompt is computed once. The other samples fork: they point at "
                       "the same pages.")

    def _shared_beat(self, rp: StoryReplay, spec) -> None:
        st = self.facts
        i = st.shares[st.forks[-1]][-1]
        state = st.events[i].state
        tables = {n: state["page_tables"][n] for n in st.samples if n in state["page_tables"]}
        pages = sorted({p for t in tables.values() for p in t})
        refs = ", ".join(f"refs[{p}] = {state['refs'][p]}" for p in pages)
        board = Board(rp.layout, "three page tables, one set of frames")
        board.skip(0.08)
        for name, table in tables.items():
            board.line([(name.ljust(5), rp.palette.color(name)),
                        (f" -> pages {table}", theme.TEXT)], theme.FS_CAPTION, gap=0.1)
        board.line([(refs, theme.ACCENT)], theme.FS_CAPTION)

        def build(beat):
            rp.show_board(beat, board, "shared")

        self.shot(f"{len(tables)} tables point at the same {len(pages)} frames: {refs}",
                  "full pages are never written again: they stay shared until the samples finish",
                  rp.beat(events=spec.events, build=build, hold=self.pick(2.4, 2.6), name="shared"),
                  line=f"{len(tables)} page tables, one set of frames. Each page now has "
                       f"{state['refs'][pages[0]]} holders.")

    def _first_tokens_beat(self, rp: StoryReplay, i: int) -> None:
        st = self.facts
        toks = st.events[i].tokens
        said = ", ".join(f"{n}: {toks[n]}" for n in st.samples if n in toks)
        self.shot(f"first tokens, one logits row, a generator per sample: {said}",
                  "each sample's generator is seeded by its name, as an independent request's is",
                  rp.beat(hold=self.pick(1.6, 1.6)),
                  line="Each sample draws its first token from the same logits, with its own "
                       "random generator.")

    def _take_beat(self, rp: StoryReplay, spec) -> None:
        st = self.facts
        i = next(k for k in spec.events if isinstance(st.events[k], Free))
        f = st.events[i]
        c = st.events[i + 2]
        was = st.events[i - 1].state["refs"][f.page]
        first = i + 2 == st.copies[0]
        words = (f"{f.task}'s next token goes to page {f.page} slot {c.slots}: "
                 f"refs {was}, shared", f"so it lets go of page {f.page} (refs {was} -> "
                 f"{f.refs}) to write into a copy of its own")
        line = (f"The next token lands in page {f.page}, and {was} samples share it. "
                f"Writing there would change it for the others. So {f.task} lets go of it, "
                "to write into a copy of its own." if first else
                f"{f.task} lets go of page {f.page} too.")
        self.shot(*words,
                  rp.beat(events=spec.events, code=(rp.line_of(i, "cow.drop_shared"), i),
                          hold=self.pick(1.0, 1.2), name="take"),
                  line=line)

    def _copy_beat(self, rp: StoryReplay, spec, line: str | None = None) -> None:
        st = self.facts
        i = next(k for k in spec.events if isinstance(st.events[k], Copy))
        c = st.events[i]
        board = Board(rp.layout, f"copy_page({c.source}, {c.page}, {c.slots}): "
                                 "K and V, every layer")
        board.skip(0.1)
        cells = self._slot_rows(rp, board, c)
        self.slot_copies.append((c.source, c.page, board, cells))

        def build(beat):
            rp.show_board(beat, board, "copy")
            for k, cell in enumerate(cells):  # slot by slot, in slot order
                t0 = 0.25 + 0.5 * k / max(len(cells), 1)
                beat.window = (t0, min(1.0, t0 + 0.2))
                beat.appear(rp.notes, cell)
            beat.window = (0.0, 1.0)
            rp.transient += cells  # they leave with the board

        first = i == st.copies[0]
        line = line or (
            f"It takes page {c.page}, and copies the {c.slots} filled slots of page "
            f"{c.source} into it: keys and values, in every layer." if first else
            f"{c.task} takes page {c.page}, and copies the same {c.slots} slots.")
        self.shot(f"{c.task}: slots 0-{c.slots - 1} of page {c.source} copied to page "
                  f"{c.page}",
                  f"alloc: {c.task}[{c.logical}] = page {c.page}; page "
                  f"{c.source} keeps {c.refs} holder(s)",
                  rp.beat(events=spec.events, build=build, code=(rp.line_of(i, "cow.copy_kv"), i),
                          run_time=1.4, hold=self.pick(1.4, 1.8), name="copy"),
                  line=line)

    def _slot_rows(self, rp: StoryReplay, board: Board, c: Copy) -> list:
        """Two rows of slot cells, source and destination page; returns the destination's
        filled cells (to appear one by one). Every number is a field of the copy event."""
        ps, n = self.facts.ps, c.slots
        w = min(0.34, (board.width - 2.2) / ps)
        cells = []
        for label, page, color, fill in (("page", c.source, theme.TEXT, True),
                                         ("page", c.page, rp.palette.color(c.task), False)):
            row = board.line([(f"{label} {page:>2}", color)], theme.FS_CAPTION, gap=0.04)
            y = row.get_center()[1]
            x0 = board.left + 1.5
            for k in range(ps):
                box = Rectangle(width=w * 0.86, height=0.22, stroke_color=theme.FAINT,
                                stroke_width=1, fill_opacity=0)
                box.move_to([x0 + k * w, y, 0])
                board.add(box)
                if k < n:
                    cell = Rectangle(width=w * 0.86, height=0.22, stroke_width=0,
                                     fill_color=color if fill else rp.palette.color(c.task),
                                     fill_opacity=0.8)
                    cell.move_to(box)
                    if fill:
                        board.add(cell)
                    else:
                        cells.append(cell)
            board.skip(0.06)
        board.line([(f"slots 0-{n - 1} filled ({n} of {ps}): copied; slots {n}-{ps - 1} "
                     "empty: not copied", theme.DIM)], theme.FS_CAPTION)
        return cells

    def _keep_beat(self, rp: StoryReplay, i: int) -> None:
        st = self.facts
        name, page = st.keeper()
        state = st.events[i - 1].state
        self.shot(f"{name} is the last holder of page {page}: refs {state['refs'][page]}, "
                  "nothing to copy",
                  f"it writes its token into page {page} in place",
                  rp.beat(hold=self.pick(1.4, 1.6)),
                  line=f"{name} is now the only one holding page {page}, so it keeps the page "
                       "and writes in place. Nothing is copied.")

    def _diverge_beat(self, rp: StoryReplay, i: int) -> None:
        st = self.facts
        toks = st.tokens_at(i)
        board = Board(rp.layout, "the samples so far: one prompt, three continuations")
        board.skip(0.08)
        texts = st.events[i].state["output_text"]  # text requests: their words so far
        for name in st.samples:
            said = (f'"{card_text(texts[name])}"' if name in texts
                    else " ".join(map(str, toks[name])))
            board.line([(name.ljust(5), rp.palette.color(name)), (said, theme.TEXT)],
                       theme.FS_CAPTION, gap=0.1)

        def build(beat):
            rp.show_board(beat, board, "diverge")

        self.shot("the samples diverge: each has its own tokens and its own last page",
                  "the full prompt pages stay shared by all of them",
                  rp.beat(build=build, hold=self.pick(2.0, 1.2)),
                  line="From here the samples go their own ways, each in its own last page.")

    def _end_card(self, rp: StoryReplay) -> None:
        c = self.comparison
        n = len(c.samples)
        board = Board(rp.layout, "The same prompt and seeds, two real runs", full=True)
        board.skip(0.05)
        texts, alone = c.texts, c.independent_texts
        for name in c.samples:
            if name in texts and name in alone:  # text requests: the answers, as text
                board.line([(f"{name}'s answer", rp.palette.color(name))], theme.FS_CAPTION,
                           gap=0.04)
                text_rows(board, (f"n = {n}", "alone"), texts[name], alone[name], label_w=8)
                continue
            board.line([(f"{name}'s tokens", rp.palette.color(name))], theme.FS_CAPTION,
                       gap=0.04)
            token_rows(board, (f"n = {n}", "alone"), c.outputs[name],
                       c.independent_outputs[name], per_line=20, label_w=8)
        board.skip(0.05)
        rows = [
            ("pages allocated", str(c.pages_allocated), str(c.independent_pages_allocated)),
            ("prompt tokens computed", str(c.prompt_tokens_computed),
             str(c.independent_prompt_tokens_computed)),
            ("peak pages in use", str(c.peak_pages), str(c.independent_peak_pages)),
            ("pages copied", str(c.copies), "0"),
        ]
        self.card_rows = rows
        figure_rows(board, ("", f"n = {n} samples", f"{n} requests"), rows, label_w=26,
                    col_w=16)

        def build(beat):
            rp.show_board(beat, board, "end card", stay=True)

        worded = all(n in c.texts for n in c.samples)  # text requests: say it of their answers
        same = ("the same answer, token for token" if worded else "equal token for token") \
            if c.outputs_equal else "NOT equal"
        self.shot(f"each sample beside an independent request: {same}",
                  f"{c.pages_allocated} pages allocated instead of "
                  f"{c.independent_pages_allocated}; the prompt computed once instead of {n} times",
                  rp.beat(build=build, hold=self.pick(5.0, 6.0)),
                  line=f"Against {n} independent requests: the same tokens, "
                       f"{c.pages_allocated} pages instead of {c.independent_pages_allocated}, "
                       f"and the prompt computed once instead of {n} times.")
