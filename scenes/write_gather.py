"""A storyboard scene: inside write and gather, slot by slot, and the attention they feed.

    manim -ql scenes/write_gather.py WriteGatherScene            # the write_gather workload
    ASTRAI_CUT=teaser manim -ql scenes/write_gather.py WriteGatherScene

Not a pool replay: it tells the tensors a run recorded with `capture=True`
(scenes/framework/capture.py picks its two steps) slot by slot: a batched prefill with a padded
row (write), a decode step whose page table reads out of physical order (write, then gather),
and the decoding token's attention over the gathered keys, page by page. Every slot, page,
shape and number on screen is a field of the trace; the kit (slotview, attention) draws it.
Tests compare `scene.snapshots` (read back from the mobjects) with values they compute from the
page tables and the model.
"""

from __future__ import annotations

from types import SimpleNamespace

from manim import LEFT, Arrow, FadeIn, FadeOut, LaggedStart, VGroup

from scenes.framework import capture, theme
from scenes.framework.anchors import anchor
from scenes.framework.kit.attention import attention_picture, attention_shown
from scenes.framework.kit.captions import CaptionLines, Pills
from scenes.framework.kit.code import CodePanel, anchor_line
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.layout import make_layout
from scenes.framework.kit.plans import closeup_plan
from scenes.framework.kit.slotview import SlotView
from scenes.framework.story import StoryScene
from scenes.framework.words import fmt, spoken_list


class WriteGatherScene(StoryScene):
    """The explainer tells the run step by step (`story`); the teaser is one shot of its own
    (`teaser_story`): the state up to the decode step set at once, then the scattered pages
    gathered back in order and attended to. Both draw with the same pieces (the SlotView's
    `prefill`, `decode_write`, `decode_gather`, and `attention_picture`); only the telling
    differs.

    The narrator speaks `line=` of a shot; the caption and detail lines above the picture are
    dense annotation for whoever pauses, on screen only."""

    WORKLOAD = "write_gather"
    TITLE = "Inside write and gather"
    # The teaser holds one idea a shot and stays under 90 s: this slot-level close-up is the
    # explainer's (its own teaser cut still renders with ASTRAI_CUT=teaser).
    IN_TEASER = False
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("Slot by slot: where each token's keys and values are written, the null page that "
               "padded rows go to, and the gather that reads them back in page-table order for "
               "the decoding token's attention.")
    HEAD = 0  # layer 0's query head whose attention is shown (named on screen)
    SNAP_TEXTS = True  # tests check that no two texts overlap

    # ---- the two cuts ----------------------------------------------------------------------

    def story(self) -> None:
        """The explainer: chapters follow the run (prefill write, its gather, the decode step,
        attention); the pills follow the operation on screen."""
        self.frame()
        self.chapter("write")
        self.pills.light("write")
        self.write_prefill()
        self.chapter("gather")
        self.pills.light("gather")
        self.gather_prefill()
        self.chapter("decode")
        self.pills.light(None)  # pages change hands: neither write nor gather
        self.step_between()
        self.pills.light("write")
        self.write_decode()
        self.pills.light("gather")
        self.gather_decode()
        self.chapter("attention")
        self.pills.light("attention")
        self.attend()

    def teaser_story(self) -> None:
        """The teaser's one idea: a request's keys lie scattered over pages, gather reads them
        back in order, and its new token attends to all of them. Two spoken lines over the real
        decode step; what led there is on screen from the first frame."""
        self.frame()
        self.settle()
        p, s = self.plan, self.plan.decode
        self.chapter("gather")
        self.pills.light("gather")
        g = self._decode_gather()
        self.shot(f"Gather reads {g.name}'s pages in table order, {g.order}, and cuts at "
                  f"total_len = {g.total}", "scattered in memory, in order in the buffer; "
                  f"the view keeps positions 0-{g.total - 1}",
                  (g.reads, 0.5), (g.fly, 2.4), (g.trim, 0.8),
                  line=f"This request's keys are scattered over pages "
                       f"{spoken_list(g.pages)}. Gather reads them back in order.")
        self._snap_gather(g)
        self.chapter("attention")
        self.pills.light("attention")
        at = self._attention()
        a = s.attention
        # The last shot holds a little past its speech: its subtitle stays to be read.
        self.shot(f"Attention: {at.name}'s query scores all {at.total} keys, page by page; "
                  "softmax makes the weights", f"the model's own numbers: layer "
                  f"{a['layer']}, head {p.head}; largest weight {fmt(at.top)} on key "
                  f"{at.j_max}", (at.moves, 0.6), (at.enter, 0.3),
                  ([FadeIn(at.label_s), FadeIn(at.label_w), *[FadeIn(t) for t in at.score_txt],
                    *at.grow], 1.0),
                  line=f"So its new token can attend to all {at.total} keys.", least=3.6)
        self.snap("attention", **attention_shown(at, self.plan, self.key_positions))

    def frame(self) -> None:
        """What stays on screen all scene: title, pills, caption lines, code panel, storage."""
        trace = self.trace if self.trace is not None else capture.load_captured(self.workload)
        self.plan = p = capture.plan_capture(trace, self.HEAD)
        self.trace_used = trace
        self.colors = theme.Palette(p.names)
        self.a17 = Atlas.get(theme.FS_BODY)
        self.lay = lay = make_layout(p.null, code_lines=6)
        self.code = CodePanel(lay)
        code = lay.regions["code"]  # the tensors' shapes sit just above the code panel
        self.shapes = Counter(self.a17, "", theme.DIM).place(
            code.left_at(code.top + 0.2, dx=0.05), LEFT)
        at = closeup_plan()
        self.caption_lines = CaptionLines(lay.left, lay.right, at.caption.top, at.detail.top)
        title = theme.text(self.TITLE, theme.FS_TITLE, theme.TEXT, bold=True)
        title.move_to(at.header.left_at(at.header.cy), aligned_edge=LEFT)
        self.pills = Pills(("attention", "gather", "write"), lay.right, at.header.cy, gap=0.1)
        self.add(title, self.pills, self.caption_lines, self.code, self.shapes)
        self.view = SlotView(p, trace, self.colors, self.a17)  # storage, cells, grid

    def settle(self) -> None:
        """The teaser's opening picture: the prefill written, the pages changed hands and the
        decode token written, all at once (the same pieces the explainer animates)."""
        pre = self.view.prefill()
        self.add(self.view.storage)
        self.snap("slots", **self.view.slots_shown(pre))
        moves, _ = self.view.land(pre.real + pre.pads)
        for c, t in moves:
            c.move_to(t)
        self.add(*pre.real, *pre.pads)
        self.snap("write", landed=self.view.landed(pre.real + pre.pads))
        between = self.view.between()
        for frame, color in between.frames:
            frame.set_stroke(color)
        for c in between.stale:
            c.go_stale()
        dw = self.view.decode_write()
        for c, t in dw.moves:
            c.move_to(t)
        self.add(dw.flat)
        self.remove(*dw.replaced)
        self.snap("decode_write", **self.view.decode_write_shown(dw))

    # ---- beat plumbing ---------------------------------------------------------------------

    def panel(self, name: str, beat: str, shapes: str, step: capture.Step | None = None) -> None:
        """Show the engine function of anchor `name` (scenes/framework/anchors.py: the line
        that does what the beat shows, found by its text, never an observer call) marked, the
        lines it ran in `step` faint, and the real shapes of this call above it."""
        a = anchor(name)
        ran = capture.ran_lines(self.trace_used, a.fn, step)
        info = self.code.show({"file": a.file, "fn": a.fn, "line": anchor_line(a), "ran": ran})
        self.caption_lines.check("", shapes)  # the shapes line is as wide as the detail line
        self.shapes.set(shapes)
        self.panels.append({"beat": beat, **info, "shapes": shapes})

    # ---- pieces the beats share (built by the kit, shown and snapped here) -------------------

    def _decode_gather(self) -> SimpleNamespace:
        g, s = self.view.decode_gather(), self.plan.decode
        self.panel("gather.select", "gather/index_select", capture.select_call(s), s)
        self.add(VGroup(*g.mine))
        return g

    def _snap_gather(self, g: SimpleNamespace) -> None:
        self.snap("gather", **self.view.gather_shown(g))
        self.keys, self.key_positions = g.kept, g.positions[:g.total]
        self.gather_extra = g.extra

    def _attention(self) -> SimpleNamespace:
        at = attention_picture(self.view, self.keys, self.key_positions, self.gather_extra)
        self.panel("model.attend", "attention/sdpa", capture.attend_call(self.plan.decode))
        return at

    # ---- the beats -------------------------------------------------------------------------

    def write_prefill(self) -> None:
        p, pre = self.plan, self.view.prefill()
        s, ps, n = pre.step, p.page_size, pre.step.slots["n_tokens"]
        self.panel("store.shape", "write/storage", capture.store_call(p))
        self.shot(f"The cache keeps K and V in pages of {ps} slots, numbered through all pages",
                  f"page p, slot i is flat slot p·{ps} + i; page {p.null}, past the pool, "
                  "is the null page", ([FadeIn(self.view.storage)], 1.0),
                  line=f"The cache stores each token's key and value in pages of {ps} slots.",
                  least=6.0)
        rows = " and ".join(f"{r} ({ln} tokens)" for r, ln in zip(s.rows, pre.lengths))
        pad = ", ".join(f"{s.rows[b]} is padded to {n}" for b in pre.padded)
        who = [f"{r} has {ln}" + (" tokens" if b == 0 else "")
               for b, (r, ln) in enumerate(zip(s.rows, pre.lengths))]
        padded = [s.rows[b] for b in pre.padded]
        self.shot(f"Prefill: {rows} run as one batch" + (f", so {pad}" if pad else ""),
                  "grey cells are padding; -1 in a page table means no page there",
                  ([FadeIn(pre.static), FadeIn(pre.flat)], 1.0),
                  line=f"Prefill runs the prompts as one batch: {spoken_list(who)}"
                       + (f", so {spoken_list(padded)} {'is' if len(padded) == 1 else 'are'} "
                          f"padded to {n}." if padded else "."), least=6.0)
        self._explain_slots(pre)
        self.snap("slots", **self.view.slots_shown(pre))

        self.panel("write.index_copy", "write/write_slots", capture.write_call(s), s)
        moves, _ = self.view.land(pre.real + pre.pads)
        pad_slots = [c.slot for c in pre.pads]
        twice = sorted({x for x in pad_slots if pad_slots.count(x) > 1})
        self.shot("write_slots copies every token's K and V to its slot in one index_copy_",
                  "padding only ever lands in the null page"
                  + (f" (slot {', '.join(map(str, twice))} is written twice)" if twice else ""),
                  ([LaggedStart(*[c.animate.move_to(t) for c, t in moves], lag_ratio=0.04)],
                   2.2),
                  line="Then one copy writes every key and value to its slot.", least=7.0)
        self.snap("write", landed=self.view.landed(pre.real + pre.pads))
        self.shot(None, "", ([FadeOut(VGroup(pre.labels, pre.static))], 0.6))

    def _explain_slots(self, pre: SimpleNamespace) -> None:
        """One token worked through (the last row's second page), then every slot; then
        where the padding went."""
        p, s, cells, labels = self.plan, pre.step, pre.cells, pre.labels
        ps, n = p.page_size, s.slots["n_tokens"]
        b = len(s.rows) - 1
        t = min(pre.lengths[b] - 1, ps + 1)
        cell = cells[b][t]
        page, off = divmod(cell.slot, ps)
        ring = self.view.ring(cell)
        self.panel("slots.flat_index", "write/slot_index", capture.slot_index_call(s), s)
        rest = VGroup(*[lab for i, lab in enumerate(labels) if i != b * n + t])
        self.shot(f"slot_index gives each token one flat slot: page_table[b, t // {ps}]·{ps} "
                  f"+ t % {ps}",
                  f"{s.rows[b]}'s token {cell.pos}: page_table[{b}][{cell.pos} // {ps}] = "
                  f"{page}, {cell.pos} % {ps} = {off} → {page}·{ps} + {off} = {cell.slot}",
                  ([FadeIn(ring), FadeIn(labels[b * n + t])], 0.8),
                  ([FadeIn(rest)], 1.2),
                  line=f"Each token gets a slot of its own. {s.rows[b]}'s token {cell.pos} "
                       f"falls in page {page}, place {off}: slot {cell.slot}.", least=8.0)
        if not pre.padded:
            self.shot(None, "", ([FadeOut(ring)], 0.3))
            return
        b0 = pre.padded[0]
        pads = [c for c in cells[b0] if c.pad]
        null_slots = sorted({c.slot for c in pads})
        col = pads[0].pos // ps
        row_table = s.slots["page_table"][b0]
        would = row_table[col] if col < len(row_table) else -1
        box = self.view.fence(pads)
        self.panel("slots.null_page", "write/null", "padding → slots "
                   + ", ".join(str(c.slot) for c in pads) + f": all in null page {p.null}", s)
        where = f"page {would}, a live page" if would >= 0 else "a -1 entry"
        self.shot(f"{s.rows[b0]}'s padding goes to the null page (slots {null_slots[0]}-"
                  f"{null_slots[-1]}), never a live page",
                  f"position {pads[0].pos} would be in {where}: t ≥ lengths[{b0}] = "
                  f"{pre.lengths[b0]} sends it to page {p.null} instead",
                  ([FadeOut(ring), FadeIn(box)], 0.8),
                  line=f"Padding must never touch a real page, so {s.rows[b0]}'s padding goes "
                       f"to the null page: slots {null_slots[0]} to {null_slots[-1]}.", least=7.0)
        self.shot(None, "", ([FadeOut(box)], 0.3))

    # ---- gather ----------------------------------------------------------------------------

    def gather_prefill(self) -> None:
        p, s = self.plan, self.plan.prefill
        g = s.gather
        shown = list(range(len(s.rows)))
        by_row, tags, moves = self.view.gathered(s, shown)
        names = self.view.row_names(s.rows)
        copies = VGroup(*[c for c, _ in moves])
        self.panel("gather.index", "gather/prefill", capture.index_call(s), s)
        self.add(copies)
        cols = len(g["index"]) // len(s.rows)
        short = [s.rows[b] for b in shown if p.null in g["index"][b * cols:(b + 1) * cols]]
        self.shot("To attend, each row reads its pages back, in page-table order",
                  f"index = {g['index']}" + (f": a -1 entry reads null page {p.null}, garbage "
                                              "the attention mask hides" if short else ""),
                  ([FadeIn(names), FadeIn(tags)], 0.5),
                  ([LaggedStart(*[c.animate.move_to(t) for c, t in moves], lag_ratio=0.03)],
                   2.0),
                  line="To attend, each row reads its pages back in order."
                       + (f" Where {spoken_list(short)} has no page, it reads the null page, "
                          "masked out." if short else ""), least=7.0)
        self.snap("gather_prefill", rows=list(s.rows), pages=[t.shown() for t in tags],
                  sources={s.rows[b]: [c.src for c in row] for b, row in by_row.items()})
        self.shot(None, "", ([FadeOut(VGroup(copies, tags, names))], 0.6))

    # ---- the decode step -------------------------------------------------------------------

    def step_between(self) -> None:
        """A freed page keeps its K/V (stale); an allocated page joins a table."""
        p, bt = self.plan, self.view.between()
        anims = [frame.animate.set_stroke(color) for frame, color in bt.frames]
        anims += [c.animate.go_stale() for c in bt.stale]
        parts = [f"{ev.task} is done and frees page {ev.page}" for ev in bt.frees]
        parts += [f"{ev.task} needs a new page and gets page {ev.page}"
                  for ev in bt.allocs]
        name = p.decode.rows[p.row]
        if bt.allocs:
            ev = bt.allocs[-1]
            st = ev.state
            self.panel("grow.alloc", "between/grow", f"{ev.task} holds {st['lengths'][ev.task]} "
                       f"tokens; alloc_n(1) → page {ev.page}; its table is now "
                       f"{st['page_tables'][ev.task]}", p.decode)
        said = []
        if bt.frees:
            said.append(spoken_list(parts[:len(bt.frees)])
                        + (", but the keys stay there" if bt.stale else "") + ".")
        said += [f"{part}." for part in parts[len(bt.frees):]]
        self.shot(f"Step {p.decode.step}: " + ("; ".join(parts) if parts else "decode"),
                  f"{name}'s page table is now {bt.state['page_tables'][name]}"
                  + ("; a freed page keeps its old K/V" if bt.stale else ""), (anims, 1.0),
                  line=" ".join(said) or None, least=7.0)

    def write_decode(self) -> None:
        p, dw = self.plan, self.view.decode_write()
        s, cell, ps = dw.step, dw.cell, p.page_size
        page, off = divmod(cell.slot, ps)
        name = s.rows[p.row]
        self.panel("slots.flat_index", "decode/slot_index", capture.slot_index_call(s), s)
        self.shot(f"Decode writes one token a row: {name}'s token {cell.pos} "
                  f"gets flat slot {cell.slot}",
                  f"page_table[{p.row}][{cell.pos} // {ps}] = {page}, {cell.pos} % {ps} = "
                  f"{off} → {page}·{ps} + {off} = {cell.slot}",
                  ([FadeIn(dw.static), FadeIn(dw.flat), FadeIn(dw.labels)], 0.8),
                  line=f"{name} generates one more token: token {cell.pos} gets slot "
                       f"{cell.slot}.", least=4.0)
        self.panel("write.index_copy", "decode/write_slots", capture.write_call(s), s)
        over = dw.over[0].owner if dw.over else None
        self.shot("write_slots copies its K and V there, as in prefill",
                  (f"it overwrites {over}'s stale K/V in slot {cell.slot}: the page is "
                   f"{name}'s now" if over else "one slot per row"),
                  ([*[c.animate.move_to(t) for c, t in dw.moves],
                    *[FadeOut(c) for c in dw.replaced]], 1.4),
                  line=f"It writes over {over}'s old key and value." if over else None,
                  least=4.0)
        self.shot(None, "", ([FadeOut(VGroup(dw.static, dw.labels))], 0.5))
        self.snap("decode_write", **self.view.decode_write_shown(dw))

    def gather_decode(self) -> None:
        g = self._decode_gather()
        self.shot(f"Gather reads {g.name}'s pages in table order, {g.order}: scattered in "
                  "memory, in order here", "above each key its position in the sequence; "
                  "under each block the page it came from", (g.reads, 0.6), (g.fly, 2.4),
                  line=f"{g.name}'s pages are out of order in memory: "
                       f"{spoken_list(g.pages, 'then')}. Gather reads them back in order.",
                  least=9.0)
        self.panel("gather.cut", "gather/cut", capture.cut_call(g.step), g.step)
        self.shot(f"total_len = {g.total}: the view keeps positions 0-{g.total - 1}"
                  + (f" and cuts the last {len(g.cut)}" if g.cut else ""),
                  ("the cut slots: " + ", ".join(g.why)) if g.why else
                  "the tail of the last page holds nothing of this row", (g.trim, 1.0),
                  line=f"{g.name} has {g.total} tokens, so gather keeps {g.total} keys and "
                       f"drops the last {len(g.cut)}." if g.cut else None, least=6.0)
        self._snap_gather(g)

    # ---- attention -------------------------------------------------------------------------

    def attend(self) -> None:
        p, s = self.plan, self.plan.decode
        a, ps, h = s.attention, p.page_size, p.head
        at = self._attention()
        self.shot(f"Attention: {at.name}'s new token (position {at.qpos}) scores its query "
                  f"against all {at.total} keys",
                  f"the model's own numbers: layer {a['layer']}, query head {h} of "
                  f"{a['n_heads']} (it reads KV head {at.kv}); score = q·k / "
                  f"√{a['q_shape'][-1]}", (at.moves, 1.2), (at.enter, 0.6),
                  line=f"Now attention: {at.name}'s new token, at position {at.qpos}, scores "
                       f"all {at.total} keys.", least=5.0)
        self.add(at.label_s)
        for i, page in enumerate(at.pages):  # block by block: on screen, not spoken
            js = range(i * ps, min((i + 1) * ps, at.total))
            box = at.blocks[i][0]
            arrow = Arrow(at.q.get_right(), box.get_left(), buff=0.08, stroke_width=3,
                          color=theme.ACCENT, max_tip_length_to_length_ratio=0.08)
            keys = f"keys {js[0]}-{js[-1]}" if len(js) > 1 else f"key {js[0]}"
            self.shot(f"Block by block: block {i} is page {page}, {keys}",
                      "scores " + ", ".join(fmt(at.scores[j]) for j in js if at.allowed[j]),
                      ([FadeIn(arrow), box.animate.set_stroke(theme.ACCENT),
                        *[FadeIn(at.score_txt[j]) for j in js]], 0.8),
                      ([FadeOut(arrow), box.animate.set_stroke(theme.FAINT)], 0.4), least=2.8)
        self.shot(f"Softmax turns the {at.total} scores into weights that sum to 1",
                  f"the output is the weighted sum of V; the largest weight, "
                  f"{fmt(at.top)}, is key {at.j_max} (page {at.pages[at.j_max // ps]}, "
                  f"slot {at.j_max % ps})", ([FadeIn(at.label_w)], 0.4), (at.grow, 1.6),
                  line=f"Softmax turns the scores into weights that add up to one. Key "
                       f"{at.j_max} gets the most: {fmt(at.top)}.", least=8.0)
        self.snap("attention", **attention_shown(at, self.plan, self.key_positions))
        self.shot("Every slot, page and number here was recorded from the real run",
                  f"slots from slot_index, pages from gather_pages, weights from the "
                  f"model at step {s.step}", least=3.0)

