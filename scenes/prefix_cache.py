"""A storyboard scene: the prefix cache, told from its own real runs.

    manim -ql scenes/prefix_cache.py PrefixCacheScene               # the `prefix` workload
    ASTRAI_CUT=teaser manim -ql scenes/prefix_cache.py PrefixCacheScene

Requests share a system prompt. The scene replays the recorded run and stops at the moments
that make the point, with beats of its own drawn from the trace's fields:
- A's prompt pages are recorded under chained keys (the real keys, shortened);
- B looks its keys up page by page: hits are shared (refs 2), only its tail is allocated;
- C repeats the same tokens after another first page: other keys, a miss, and why;
- D is exactly the system prompt: a full hit, yet its last token is computed;
- released prefix pages stay cached in an LRU strip (the trace's order); D revives them; E's
  long prompt evicts from the LRU end, and the scene says why that page;
- the end card: this run against a second real run with the prefix cache off.
Scenes never allocate: every page, key, count and figure is read from the runs.

The narrator tells that story in the scene's own beats, one idea a line, with the run's numbers;
the replay's beat kinds pass silently (`StoryReplay.steered`: the paged-cache scene has said what
they do).
The teaser cut (`teaser_story`) is one shot: B sharing A's pages, over that moment of the replay.
"""

from __future__ import annotations

from astrai.compare import prefix as prefix_compare
from astrai.trace.events import Admit, Alloc, Cache, Evict, Free, Record, Share
from scenes.framework import theme
from scenes.framework.kit.board import Board
from scenes.framework.kit.endcard import figure_rows
from scenes.framework.kit.hashchain import ChainRow, Link, mark, row_width, short_key
from scenes.framework.kit.lru import LruStrip
from scenes.framework.replay.queries import admit_of, prefill_row, released_by, same_prompt_as
from scenes.framework.replay.steered import StoryReplay
from scenes.framework.story import StoryScene


class PrefixStory:
    """What the scene's own beats show, found in the trace (no manim here: tests read it)."""

    def __init__(self, trace):
        self.trace = trace
        self.events = trace.events
        self.ps = trace.geometry["page_size"]
        self.prompts = {r["name"]: list(r["prompt"]) for r in trace.workload["request"]}
        ev = self.events
        self.records = [i for i, e in enumerate(ev) if isinstance(e, Record)]
        self.admits = [i for i, e in enumerate(ev) if isinstance(e, Admit)]
        recorded_by: dict[int, tuple[str, int]] = {}  # key -> (task, logical page)
        self.known_at: dict[int, dict] = {}  # admit event -> the keys recorded by then
        self.first_record = self.records[0] if self.records else None
        self.hit_admit = self.miss_admit = self.full_admit = None
        for i in sorted(self.records + self.admits):
            e = ev[i]
            if isinstance(e, Record):
                table = e.state["page_tables"].get(e.task, [])
                for page, key in zip(e.pages, e.keys):
                    recorded_by.setdefault(key, (e.task, table.index(page)))
                continue
            keys, hits = e.keys, e.hits
            self.known_at[i] = dict(recorded_by)
            if hits and len(hits) == len(keys) and self.hit_admit is None:
                self.hit_admit = i
            elif not hits and keys and self.miss_admit is None and self._same_tokens(e):
                self.miss_admit = i
            elif (hits and len(hits) == len(keys) - 1 and e.n_tokens % self.ps == 0
                  and keys[-1] in recorded_by and self.full_admit is None):
                self.full_admit = i
        self.recorded_by = recorded_by
        self.first_cache = next((i for i, e in enumerate(ev) if isinstance(e, Cache)), None)
        self.first_evict = next((i for i, e in enumerate(ev) if isinstance(e, Evict)), None)
        self.first_revive = next((i for i, e in enumerate(ev)
                                  if isinstance(e, Share) and e.revived), None)

    def shared_prompt(self) -> tuple[int, int, int]:
        """(requests that open with the most common system prompt, requests, its tokens)."""
        wl = self.trace.workload
        req, sizes = wl["request"], wl.get("prefixes", {})
        heads = [tuple([r["prefix"]] if isinstance(r.get("prefix"), str) else r.get("prefix", []))
                 for r in req]
        common = max(set(h for h in heads if h), key=heads.count, default=())
        return sum(h == common for h in heads), len(req), sum(sizes.get(p, 0) for p in common)

    def last_share(self, admit: int) -> int:
        """The last page the admitted request shares in that admission (else the admission)."""
        e = self.events[admit]
        return max((j for j in range(admit, len(self.events)) if isinstance(self.events[j], Share)
                    and self.events[j].task == e.task
                    and self.events[j].step == e.step), default=admit)

    def _same_tokens(self, admit: Admit) -> list[tuple[int, str]]:
        """(logical page, first recorder) for full pages of this prompt whose tokens equal a
        recorded page's at the same position, recorded by an earlier request."""
        out = []
        mine = self.prompts.get(admit.task, [])
        for k in range(len(admit.keys)):
            chunk = mine[k * self.ps:(k + 1) * self.ps]
            for r in self.records:
                e = self.events[r]
                if e.step > admit.step or e.task == admit.task:
                    continue
                theirs = self.prompts.get(e.task, [])
                if theirs[k * self.ps:(k + 1) * self.ps] == chunk and k < len(e.pages):
                    out.append((k, e.task))
                    break
        return out

    def tokens(self, k: int) -> str:
        return f"tok {k * self.ps}-{(k + 1) * self.ps - 1}"

    def record_links(self, i: int) -> list[Link]:
        e = self.events[i]
        table = e.state["page_tables"][e.task]
        return [Link(self.tokens(table.index(p)), key, f"page {p}")
                for p, key in zip(e.pages, e.keys)]

    def lookup_links(self, i: int) -> list[Link]:
        """Each full page of the admitted prompt: hit (on page p), miss, or not looked up."""
        e = self.events[i]
        hits = e.hits
        same = dict(self._same_tokens(e))
        known = self.known_at[i]
        links = []
        for k, key in enumerate(e.keys):
            if k < len(hits):
                links.append(Link(self.tokens(k), key, f"hit: page {hits[k]}", "hit"))
            elif k == len(hits) and key not in known:
                note = "same tokens" if k in same else "miss"
                links.append(Link(self.tokens(k), key, note, "miss"))
            elif key in known and k == len(e.keys) - 1 and hits:
                links.append(Link(self.tokens(k), key, "cached too", "skip"))
            else:
                note = "same tokens" if k in same else "not looked up"
                links.append(Link(self.tokens(k), key, note, "miss" if k in same else "skip"))
        return links


class PrefixCacheScene(StoryScene):
    WORKLOAD = "prefix"
    TITLE = "Prefix cache"
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("Prompts that begin alike share their first pages through chained page keys until "
               "a different page misses, and freed cached pages wait in an LRU to be revived or "
               "evicted.")

    def _replay(self, key_beats: set) -> tuple[PrefixStory, StoryReplay]:
        """The facts of the run and the replay the scene steers (with its LRU strip)."""
        trace = self.trace_of()
        self.comparison = prefix_compare.compare(trace=trace)
        st = self.facts = PrefixStory(trace)
        rp = self.replay = StoryReplay.steered(self, trace, key_beats(st))
        lay = rp.layout
        self.strip = LruStrip(rp.n_pages, lay.right - 0.05, lay.tables_top - 0.62)
        self.strip_on = False
        rp.on_apply.append(self._sync_strip)
        return st, rp

    def story(self) -> None:
        st, rp = self._replay(self._key_beats)
        self.chapter("A records its prompt")
        # why, said while the pool is built
        self.shot(None, "", lambda shot: rp.construct_cache(), line=self._intro_line())
        if st.first_record is not None:
            rp.hook_instead(st.first_record, self._chain_beat)
        if st.hit_admit is not None:
            rp.hook_after(st.hit_admit, self._lookup_beat)
        if st.miss_admit is not None:
            rp.hook_after(st.miss_admit, self._miss_beat)
        if st.full_admit is not None:
            rp.hook_after(st.full_admit, self._full_hit_beat)
        if st.first_cache is not None:
            rp.hook_instead(st.first_cache, self._cached_beat)
        if st.first_evict is not None:
            rp.hook_instead(st.first_evict, self._evict_beat)
        rp.run(construct=False)
        self.chapter("Two real runs")
        self._end_card(rp)

    def teaser_story(self) -> None:
        """The teaser's one shot: B's lookup board as its last hit page is shared (the pool
        shows the pages it shares), and one line that says what sharing saved it; every other
        beat of the run is fast-forwarded, silent."""
        st, rp = self._replay(lambda st: set())
        self.chapter("B shares A's pages")
        if st.hit_admit is not None:
            rp.hook_instead(st.last_share(st.hit_admit), lambda r, spec: self._lookup_beat(
                r, st.hit_admit, spec.events, line=self.teaser_line()))
        rp.run()

    def teaser_line(self) -> str:
        st = self.facts
        e = st.events[st.hit_admit]
        first = st.events[st.first_record].task
        row = prefill_row(st.events, e.task, st.hit_admit)
        computed = row["n"] if row else e.n_tokens - len(e.hits) * st.ps
        return (f"{e.task}'s prompt opens like {first}'s, so {e.task} shares "
                f"{first}'s {len(e.hits)} pages, and computes only {computed} of its "
                f"{e.n_tokens} tokens.")

    # ---- which trace beats play in full ---------------------------------------------------

    def _key_beats(self, st: PrefixStory) -> set:
        """Main events of the beats the full cut plays besides those the scene's own beats
        hook: pages shared or revived, and pages evicted (what the cache does). Arrivals,
        allocations and prefills (the paged-cache scene's story) are fast-forwarded."""
        return {i for i, e in enumerate(st.events) if isinstance(e, (Share, Evict))}

    # ---- the strip ------------------------------------------------------------------------

    def _sync_strip(self, i: int, beat) -> None:
        cached = self.facts.events[i].state["cached"]
        rp = self.replay
        if cached and not self.strip_on:
            beat.appear(rp.notes, self.strip.static)
            rp.notes.add(self.strip)
            self.strip_on = True
        if self.strip_on:
            self.strip.sync(cached, beat)
        rp.snapshots[-1]["lru"] = self.strip.shown() if self.strip_on else []

    # ---- the scene's own beats ------------------------------------------------------------

    def _intro_line(self) -> str:
        same, total, n = self.facts.shared_prompt()
        return (f"{same} of these {total} requests begin with the same {n}-token system "
                "prompt. Why compute its keys and values more than once?")

    def _chain_beat(self, rp: StoryReplay, spec) -> None:
        st = self.facts
        i = st.first_record
        e = st.events[i]
        links = st.record_links(i)
        board = Board(rp.layout, f"{e.task}'s full prompt pages, recorded under chained keys")
        y = board.free_top - 0.36
        row = ChainRow(e.task, rp.palette.color(e.task), links, board.left + 0.3, y)
        board.add(row)
        board.free_top = row.get_bottom()[1] - 0.12
        board.line([("key = hash((previous key, the page's tokens)): ", theme.DIM),
                    ("a page matches only after the same pages before it", theme.TEXT)])
        self.chain_rows = {e.task: row}

        def build(beat):
            rp.show_board(beat, board, "chain")
            for k, g in enumerate(row.boxes):
                beat.window = (0.2 + 0.6 * k / len(row.boxes), 0.5 + 0.5 * (k + 1) / len(row.boxes))
                beat.pulse(mark(g, theme.CACHED))

        pages = ", ".join(str(p) for p in e.pages)
        keys = " -> ".join(short_key(k) for k in e.keys)
        self.shot(f"record_prefix: {e.task}'s full pages {pages} get chained keys",
                  f"keys {keys} (low 16 bits shown); a partly filled page is never recorded",
                  rp.beat(events=spec.events, build=build,
                          code=(rp.line_of(i, "record.chunk_keys"), i), hold=3.2),
                  line=f"Once {e.task}'s prompt is written, its {len(e.pages)} full pages "
                       "are recorded, each under a key made from its tokens and every token "
                       "before them.")

    def _lookup_board(self, rp: StoryReplay, i: int, title: str) -> tuple[Board, ChainRow]:
        st = self.facts
        e = st.events[i]
        board = Board(rp.layout, title)
        y = board.free_top - 0.36
        first = st.events[st.first_record]
        ref = ChainRow(first.task, rp.palette.color(first.task), st.record_links(
            st.first_record), board.left + 0.3, y)
        mine = ChainRow(e.task, rp.palette.color(e.task), st.lookup_links(i),
                        board.left + 0.3, y - 0.86)
        if row_width(e.task, len(mine.links)) > board.width:
            mine = ChainRow(e.task, rp.palette.color(e.task), st.lookup_links(i)[:6],
                            board.left + 0.3, y - 0.86)
        board.add(ref, mine)
        board.free_top = mine.get_bottom()[1] - 0.1
        return board, mine

    def _lookup_beat(self, rp: StoryReplay, i: int, events: list[int] = (),
                     line: str | None = None) -> None:
        st = self.facts
        e = st.events[i]
        board, mine = self._lookup_board(rp, i, f"lookup_prefix: {e.task}'s keys, page by "
                                                "page, against the recorded ones")
        board.line([("hits are shared: ", theme.DIM),
                    ("refs 2, both page tables point at one frame; only the tail is new",
                     theme.TEXT)])

        build = _marked_in_turn(rp, board, "lookup", mine, theme.GOOD)
        hits = e.hits
        row = prefill_row(st.events, e.task, i)
        computed = f"; its prefill computes {row['n']} tokens, from position {row['start']}" \
            if row else ""
        if line is None:
            n = row["n"] if row else e.n_tokens - len(hits) * st.ps
            line = (f"{e.task} looks up its own keys: the first {len(hits)} match, so it "
                    f"shares those pages and computes only its last {n} tokens.")
        self.shot(f"{e.task}: {len(hits)} of its prompt pages hit: pages "
                  f"{', '.join(map(str, hits))} are shared",
                  f"{e.task} allocates {e.pages_needed - len(hits)} page(s) for its "
                  f"tail{computed}",
                  rp.beat(events=events, build=build,
                          code=(rp.line_of(i, "lookup.probe", ("returned",)), i), hold=3.0),
                  line=line)

    def _miss_beat(self, rp: StoryReplay, i: int) -> None:
        st = self.facts
        e = st.events[i]
        same = st._same_tokens(e)
        who = same[0][1]
        board, mine = self._lookup_board(rp, i, f"{e.task}'s tokens {st.tokens(same[0][0])[4:]}"
                                                f" onwards equal {who}'s, after another first "
                                                "page")
        board.line([("a token's K/V depends on every token before it: ", theme.DIM),
                    ("same tokens after another page must not share", theme.TEXT)])

        build = _marked_in_turn(rp, board, "miss", mine, theme.BAD)
        k = same[0][0]
        ref_key = next(key for key, (t, lp) in st.recorded_by.items() if t == who and lp == k)
        self.shot(f"{e.task} misses: its page {k} has {who}'s tokens, but key "
                  f"{short_key(e.keys[k])}, not {short_key(ref_key)}",
                  f"the key chains {e.task}'s own page 0 (other tokens): {e.task} shares "
                  f"nothing, allocates {e.pages_needed} pages",
                  rp.beat(build=build,
                          code=(rp.line_of(i, "lookup.stop_on_miss", ("returned",)), i), hold=3.6),
                  line=f"{e.task} has the same tokens after a different first page, yet "
                       "shares nothing: a token's keys and values depend on every token before "
                       "it.")

    def _full_hit_beat(self, rp: StoryReplay, i: int) -> None:
        st = self.facts
        e = st.events[i]
        board, mine = self._lookup_board(rp, i, f"{e.task}'s prompt is exactly "
                                                f"{len(e.keys)} full pages, all of them cached")
        row = prefill_row(st.events, e.task, i)
        board.line([("the last prompt token is always computed: ", theme.DIM),
                     ("its logits pick the first new token", theme.TEXT)])

        def build(beat):
            rp.show_board(beat, board, "full hit")
            beat.window = (0.3, 0.9)
            beat.pulse(mark(mine.boxes[-1], theme.ACCENT))

        computed = (f"positions {row['start']}-{row['start'] + row['n'] - 1} ({row['n']} tokens)"
                    if row else "its last page")
        again = f"its last {row['n']} tokens" if row else "its last page"
        before = same_prompt_as(st.trace.workload, e.task)  # why every page is cached
        asks = (f"{e.task} asks {before}'s question again, so all" if before
                else f"{e.task}: all")
        self.shot(f"{e.task}: a full hit, but the last prompt token is always computed",
                  f"lookup stops before the last token: {len(e.hits)} pages hit, "
                  f"{computed} computed again",
                  rp.beat(build=build,
                          code=(rp.line_of(i, "fit.skip_last_token", ("returned",)), i), hold=3.6),
                  line=f"{asks} {len(e.keys)} of its pages are cached. Still, {again} are "
                       "computed again: the model must run the last token to choose the next one.")

    def _cached_beat(self, rp: StoryReplay, spec) -> None:
        i = self.facts.first_cache
        e = self.facts.events[i]
        free = next((j for j in spec.events if isinstance(self.facts.events[j], Free)), i)

        def build(beat):
            rp.box(beat, e.page, (0.3, 0.9), theme.CACHED)

        who = self.facts.events[free].task
        self.shot(f"refs 0, but page {e.page} holds a recorded prefix: cached, not free",
                  "cached pages wait in LRU order (the strip, right): a later prompt can revive "
                  "them",
                  rp.beat(events=spec.events, build=build,
                          code=(rp.line_of(free, "free.keep_cached"), free), hold=2.6),
                  line=f"When {who} is done, its recorded pages are kept, not freed, in order "
                       "of last use, for a later prompt that starts the same way.")

    def _evict_beat(self, rp: StoryReplay, spec) -> None:
        st = self.facts
        i = st.first_evict
        e = st.events[i]
        before = st.events[i - 1].state["cached"]
        freed = released_by(st.events, e.page, i)
        when = (f"cached since step {freed.step} ({freed.task}'s release), unused since"
                if freed else "unused the longest")
        owner = next((ev for ev in st.events[i + 1:i + 2] if isinstance(ev, Alloc)), None)
        who = f" for {owner.task}" if owner else ""
        admit = admit_of(st.events, owner.task, i) if owner else None
        need = (f"{owner.task}'s long prompt needs {admit.pages_needed} pages. "
                if admit else "")

        def build(beat):
            cell = self.strip.cells[e.page]
            beat.window = (0.1, 0.9)
            beat.pulse(mark(cell, theme.BAD))

        frame = None
        for j in spec.events:
            frame = frame or rp.line_of(j, "evict.pop_lru", ("returned",))
        self.shot(f"no free page left{who}: evict from the LRU end, page {e.page}",
                  f"LRU order {before}: page {e.page} is {when}",
                  rp.beat(events=spec.events, build=build, code=(frame, i), hold=2.6),
                  line=f"{need}When no page is free, the cached page unused the longest "
                       f"gives way: page {e.page}.")

    def _end_card(self, rp: StoryReplay) -> None:
        c = self.comparison
        board = Board(rp.layout, f"The same {len(c.outputs)} requests, two real runs",
                      full=True)
        board.skip(0.1)
        rows = [
            ("prompt tokens computed (prefill)", str(c.prompt_tokens_computed),
             str(c.off_prompt_tokens_computed)),
            ("prompt tokens served from the cache", str(c.prompt_tokens_cached),
             str(c.off_prompt_tokens_cached)),
            ("pages allocated", str(c.pages_allocated), str(c.off_pages_allocated)),
            ("pages shared (prefix hits)", str(c.pages_shared), str(c.off_pages_shared)),
            ("cached pages revived / evicted", f"{c.pages_revived} / {c.pages_evicted}", "- / -"),
            ("output tokens, every request", "identical" if c.outputs_equal else "DIFFERENT",
             "identical" if c.outputs_equal else "DIFFERENT"),
        ]
        self.card_rows = rows
        figure_rows(board, ("", "prefix cache on", "off"), rows)
        board.skip(0.2)
        board.line([("saved by sharing: ", theme.DIM),
                    (f"{c.prefill_tokens_saved} prompt tokens of prefill, "
                     f"{c.pages_saved} pages", theme.GOOD)], theme.FS_CAPTION)

        def build(beat):
            rp.show_board(beat, board, "end card", stay=True)

        same = "the outputs are identical" if c.outputs_equal else "the outputs DIFFER"
        said = ("The output is the same, token for token." if c.outputs_equal else
                "And the outputs differ.")
        self.shot(f"prefix caching off: {c.prefill_tokens_saved} more prompt tokens computed, "
                  f"{c.pages_saved} more pages",
                  f"a second real run of the same workload; "
                  f"{same}, token for token",
                  rp.beat(build=build, hold=5.0),
                  line=f"With the prefix cache off, the same requests compute "
                       f"{c.prefill_tokens_saved} more prompt tokens and take {c.pages_saved} "
                       f"more pages. {said}")


def _marked_in_turn(rp: StoryReplay, board: Board, name: str, row: ChainRow, colour):
    """A beat builder for a lookup board: the board shown, then the row's keys marked in
    `colour` one after another."""

    def build(beat):
        rp.show_board(beat, board, name)
        for k, g in enumerate(row.boxes):
            beat.window = (0.15 + 0.7 * k / len(row.boxes), 0.15 + 0.7 * (k + 1) / len(row.boxes))
            beat.pulse(mark(g, colour))

    return build
