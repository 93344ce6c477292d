"""Scene 4 of the storyboard: the memory a contiguous K/V cache wastes, from real runs.

    manim -ql scenes/memory_waste.py MemoryWasteScene            # the traffic workload
    ASTRAI_CUT=teaser manim -ql scenes/memory_waste.py MemoryWasteScene

Two parts, every number from astrai.compare.memory:
1. Same moments: the requests the paged Scheduler holds at each step, and the same requests in a
   DenseKVCache run admitted the same way. Per request, a bar: the contiguous row reserves
   max_len slots, the paged request holds whole pages (their physical ids shown); the filled part
   is the tokens held. Totals in slots and bytes below.
2. One budget: the workload's pool, all requests arriving at once. The DenseKVCache holds as many
   max_len rows as fit, the rest wait in its queue; the PagedCache holds pages as requests grow.
   Both runs step by step, with requests held per step charted.

Tests build it state-only and read `snapshots` (what the bars, pages, queues and counters show
after each play).
"""

from __future__ import annotations

from manim import LEFT, RIGHT, UP, FadeIn, FadeOut, Rectangle, VGroup

from astrai.compare import memory
from scenes import theme
from scenes.kit.charts import CaptionBar, Captioned, StepChart, legend
from scenes.kit.glyphs import Atlas, Counter
from scenes.story import StoryScene

DENSE_X, PAGED_X, BAR_W = -6.2, 0.95, 4.9  # left edges of the two bar columns; longest bar
ROW_Y0, ROW_DY, BAR_H = 2.45, 0.62, 0.36  # room for 4 rows; more rows get thinner
UNUSED = theme.FAINT
RUN_COLOR = {"dense": theme.REQUEST_COLORS[1], "paged": theme.GOOD}
USAGE = (("contiguous reserved", RUN_COLOR["dense"], "dense_reserved"),
         ("paged reserved", RUN_COLOR["paged"], "paged_reserved"),
         ("tokens held", theme.USED, "used"))


def kib(n_bytes: int) -> str:
    return f"{n_bytes / 1024:.1f} KiB"


class MemoryWasteScene(Captioned, StoryScene):
    WORKLOAD = "traffic"
    TITLE = "Why pages: the memory a contiguous cache wastes"
    CHAPTER = "4. Why pages"
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("A contiguous cache reserves every request's longest length up front while the "
               "paged one holds only the pages in use, so the same memory admits more requests.")

    def __init__(self, *args, comparison: memory.MemoryComparison | None = None, **kw):
        self.comparison = comparison
        self.layer = VGroup()
        super().__init__(*args, **kw)

    # ---- helpers ---------------------------------------------------------------------------


    def color(self, task: str):
        return self.palette.color(task)

    # ---- part 1: same moments --------------------------------------------------------------

    def moment_rows(self, mo: memory.Moment) -> VGroup:
        """Bars of every request held at this moment, one row per batch slot."""
        m, sc = self.comparison, self.scale
        rows = VGroup()
        self.shown_rows = []
        for i, h in enumerate(mo.held):
            y = ROW_Y0 - i * self.row_dy
            color = self.color(h.task)
            name = self.atlas.line(h.task, color).move_to([DENSE_X - 0.3, y, 0])
            # contiguous: the whole row reserved, the tokens held filled
            res = Rectangle(width=h.dense_reserved * sc, height=self.bar_h, stroke_color=UNUSED,
                            stroke_width=1.2, fill_color=theme.PANEL, fill_opacity=1.0)
            res.move_to([DENSE_X, y, 0], aligned_edge=LEFT)
            used = Rectangle(width=max(h.used * sc, 1e-3), height=self.bar_h, stroke_width=0,
                             fill_color=color, fill_opacity=1.0)
            used.move_to([DENSE_X, y, 0], aligned_edge=LEFT)
            d_txt = self.atlas.line(f"{h.used}/{h.dense_reserved}", theme.DIM)
            d_txt.next_to(res, RIGHT, buff=0.1)
            # paged: one box per page it holds, the tokens held filled
            pages = VGroup()
            page_w = m.page_size * sc
            for k, page in enumerate(h.pages):
                x = PAGED_X + k * page_w
                box = Rectangle(width=page_w - 0.04, height=self.bar_h, stroke_color=UNUSED,
                                stroke_width=1.2, fill_color=theme.PANEL, fill_opacity=1.0)
                box.move_to([x, y, 0], aligned_edge=LEFT)
                filled = min(max(h.used - k * m.page_size, 0), m.page_size)
                fill = Rectangle(width=max(filled * sc - 0.04 * filled / m.page_size, 1e-3),
                                 height=self.bar_h, stroke_width=0, fill_color=color,
                                 fill_opacity=1.0)
                fill.move_to([x, y, 0], aligned_edge=LEFT)
                label = self.atlas.line(f"p{page}", theme.BG if filled > m.page_size // 2
                                        else theme.DIM).move_to(box)
                pages.add(VGroup(box, fill, label))
            p_txt = self.atlas.line(f"{h.used}/{h.paged_reserved}", theme.DIM)
            p_txt.move_to([PAGED_X + h.paged_reserved * sc + 0.1, y, 0], aligned_edge=LEFT)
            rows.add(name, res, used, d_txt, pages, p_txt)
            self.shown_rows.append({
                "task": name.shown(),
                "dense_reserved": round(res.width / sc),
                "used": round(used.width / sc) if h.used else 0,
                "pages": [int(g[2].shown()[1:]) for g in pages],
                "paged_used": sum(round((g[1].width + 0.04 * (g[1].width / sc) / m.page_size)
                                        / sc) if g[1].width > 1e-2 else 0 for g in pages),
            })
        return rows

    def set_moment(self, mo: memory.Moment, run_time: float, extra=()) -> None:
        m = self.comparison
        new = self.moment_rows(mo)
        self.counters["step"].set(f"step {mo.step}")
        lines = []
        since = self.usage_upto + 1
        for name, color, attr in USAGE:
            vals = {s: getattr(m.moments[s], attr) for s in range(since, mo.step + 1)}
            line = self.usage.extend(name, vals, color)
            if line is not None:
                lines.append(FadeIn(line))
        self.usage_upto = mo.step
        waste_d = mo.dense_reserved - mo.used
        waste_p = mo.paged_reserved - mo.used
        self.counters["dense"].set(
            f"reserved {mo.dense_reserved} slots = {kib(mo.dense_reserved * m.slot_bytes)}, "
            f"unused {waste_d} ({waste_d / max(mo.dense_reserved, 1):.0%})")
        self.counters["paged"].set(
            f"reserved {mo.paged_reserved} slots = {kib(mo.paged_reserved * m.slot_bytes)}, "
            f"unused {waste_p} ({waste_p / max(mo.paged_reserved, 1):.0%})")
        self.counters["used"].set(
            f"tokens held: {mo.used} slots = {kib(mo.used * m.slot_bytes)} in both caches")
        anims = [FadeIn(new), *lines]
        if self.rows_mob is not None:
            anims.append(FadeOut(self.rows_mob))
        self.rows_mob = new
        self.play(*anims, *extra, run_time=run_time)
        self.snapshot({"part": "moment", "step": mo.step})

    # ---- part 2: one budget ----------------------------------------------------------------

    def budget_view(self, s: int) -> VGroup:
        m = self.comparison
        group = VGroup()
        dense = m.dense_budget[min(s, len(m.dense_budget) - 1)]
        rec = m.dense_budget_records[min(s, len(m.dense_budget_records) - 1)]
        paged = m.paged_budget[min(s, len(m.paged_budget) - 1)]
        st = self.budget_states[min(s, len(self.budget_states) - 1)]
        sc = self.budget_scale
        # contiguous: rows of max_len inside the budget, then what is left (too small for a row)
        y = 2.0
        rows_shown = []
        for r, row in enumerate(rec.rows):
            x = -6.3 + r * m.max_len * sc
            box = Rectangle(width=m.max_len * sc - 0.05, height=0.5, stroke_color=UNUSED,
                            stroke_width=1.2, fill_color=theme.PANEL, fill_opacity=1.0)
            box.move_to([x, y, 0], aligned_edge=LEFT)
            group.add(box)
            if row.task is not None:
                fill = Rectangle(width=max(row.length * sc, 1e-3), height=0.5, stroke_width=0,
                                 fill_color=self.color(row.task), fill_opacity=1.0)
                fill.move_to([x, y, 0], aligned_edge=LEFT)
                group.add(fill, self.atlas.line(row.task, theme.TEXT).next_to(box, UP, buff=0.06))
            rows_shown.append(row.task)
        left = m.budget_slots - len(rec.rows) * m.max_len
        if left:
            x = -6.3 + len(rec.rows) * m.max_len * sc
            rest = Rectangle(width=left * sc, height=0.5, stroke_color=theme.BAD,
                             stroke_width=1.0, fill_opacity=0.0)
            rest.move_to([x, y, 0], aligned_edge=LEFT)
            group.add(rest)
        # paged: every page of the pool, coloured by the request holding it
        y = 0.2
        page_w = m.page_size * sc
        owners = {p: t for t, table in st["page_tables"].items() for p in table}
        pages_shown = []
        for p in range(m.budget_trace.geometry["n_pages"]):
            owner = owners.get(p)
            cached = p in st["cached"]
            color = self.color(owner) if owner else theme.CACHED if cached else theme.FREE
            box = Rectangle(width=page_w - 0.05, height=0.5, stroke_width=0, fill_color=color,
                            fill_opacity=1.0 if owner else 0.5)
            box.move_to([-6.3 + p * page_w, y, 0], aligned_edge=LEFT)
            box.owner = owner
            group.add(box)
            if owner:
                group.add(self.atlas.line(owner, theme.BG).move_to(box))
            pages_shown.append(owner or ("cached" if cached else "free"))
        self.counters["dq"].set(f"holding {len(dense.held)}   queue: {' '.join(dense.queue)}")
        self.counters["pq"].set(f"holding {len(paged.held)}   queue: {' '.join(paged.queue)}")
        self.budget_shown = {"dense_rows": rows_shown, "pages": pages_shown}
        return group

    def set_budget(self, a: int, b: int, run_time: float, extra=()) -> None:
        m = self.comparison
        new = self.budget_view(b)
        lines = []
        for run, seq in (("dense", m.dense_budget), ("paged", m.paged_budget)):
            vals = {s: len(seq[s].held) for s in range(a, min(b, len(seq) - 1) + 1)}
            line = self.chart.extend(run, vals, RUN_COLOR[run])
            if line is not None:
                lines.append(line)
        self.counters["bstep"].set(f"step {b}" if a == b else f"steps {a}-{b}")
        anims = [FadeIn(new), *(FadeIn(x) for x in lines)]
        if self.budget_mob is not None:
            anims.append(FadeOut(self.budget_mob))
        self.budget_mob = new
        self.play(*anims, *extra, run_time=run_time)
        self.snapshot({"part": "budget", "step": b, "steps": (a, b)})

    def snapshot(self, what: dict) -> None:
        snap = dict(what)
        snap["counters"] = {k: c.text for k, c in self.counters.items()}
        if what["part"] == "moment":
            snap["rows"] = list(self.shown_rows)
            snap["usage"] = {name: self.usage.values_of(name) for name, _, _ in USAGE}
        else:
            snap.update(self.budget_shown)
            snap["held"] = {run: self.chart.values_of(run) for run in RUN_COLOR}
        self._snapshots.append(snap)

    # ---- story -----------------------------------------------------------------------------

    def story(self) -> None:
        m = self.comparison or memory.compare(workload=self.workload)
        self.comparison = m
        self.palette = theme.Palette([r["name"] for r in m.trace.workload["request"]])
        self.atlas = Atlas.get(theme.FS_MIN)
        self.caption_bar, self.caption_mob = CaptionBar(y=-3.6), None
        self.rows_mob = self.budget_mob = None
        self.usage_upto = -1
        widest = max([m.max_len] + [h.paged_reserved for mo in m.moments for h in mo.held])
        self.scale = BAR_W / widest
        self.row_dy = ROW_DY * min(1.0, 4 / max(1, m.trace.workload["scheduler"]["max_batch"]))
        self.bar_h = BAR_H * self.row_dy / ROW_DY
        n_req = len(m.trace.workload["request"])

        title = theme.text(self.TITLE, theme.FS_TITLE, bold=True).to_corner(UP + LEFT, buff=0.2)
        self.add(title)
        self.counters = {k: Counter(self.atlas, "", theme.DIM) for k in
                         ("step", "dense", "paged", "used", "bstep", "dq", "pq")}
        self.counters["step"].place([6.9, 3.1, 0], align=RIGHT)

        self.chapter("Same moments")
        heads = VGroup(
            theme.text(f"contiguous (DenseKVCache): rows of max_len = {m.max_len} slots",
                       theme.FS_BODY, RUN_COLOR["dense"]).move_to([DENSE_X - 0.45, 3.1, 0],
                                                                  aligned_edge=LEFT),
            theme.text(f"paged (PagedCache): pages of {m.page_size} slots",
                       theme.FS_BODY, RUN_COLOR["paged"]).move_to([PAGED_X, 3.1, 0],
                                                                  aligned_edge=LEFT),
        )
        keys = legend([("tokens held (its colour)", theme.REQUEST_COLORS[0], True),
                       ("reserved, unused", UNUSED, False)])
        totals = VGroup(
            theme.text("contiguous", theme.FS_BODY, RUN_COLOR["dense"]),
            theme.text("paged", theme.FS_BODY, RUN_COLOR["paged"]),
        )
        ty = ROW_Y0 - 4 * ROW_DY + 0.05
        totals[0].move_to([DENSE_X - 0.45, ty, 0], aligned_edge=LEFT)
        totals[1].move_to([DENSE_X - 0.45, ty - 0.42, 0], aligned_edge=LEFT)
        keys.move_to([6.9, ty - 0.84, 0], aligned_edge=RIGHT)
        self.counters["dense"].place([DENSE_X + 1.3, ty, 0])
        self.counters["paged"].place([DENSE_X + 1.3, ty - 0.42, 0])
        self.counters["used"].place([DENSE_X - 0.45, ty - 0.84, 0])
        geo = m.trace.geometry
        note = theme.text(
            f"1 slot = K and V of one token: 2 x {geo['n_layers']} layers x {geo['n_kv_heads']} "
            f"KV heads x {geo['head_dim']} x {geo['dtype']} = {m.slot_bytes} bytes",
            theme.FS_MIN, theme.DIM).move_to([DENSE_X - 0.45, ty - 1.27, 0], aligned_edge=LEFT)
        self.usage = StepChart(DENSE_X - 0.1, 12.9, -3.0, 1.05, m.moment + 1,
                               max(mo.dense_reserved for mo in m.moments),
                               "slots per step: contiguous reserved (orange), paged reserved "
                               "(green), tokens held (white)")
        part1 = VGroup(heads, keys, totals, note, self.usage, self.counters["dense"],
                       self.counters["paged"], self.counters["used"])
        self.play(FadeIn(part1), FadeIn(self.counters["step"]), *self.caption(
            f"{n_req} requests, held two ways by the same model at the same steps. A contiguous "
            "cache must reserve the longest a request may grow to; a paged one takes pages as "
            "it grows.", self.pick(6.5, 3.4)), run_time=0.6)

        stops = list(range(0, m.moment + 1, self.pick(3, 9)))
        if stops[-1] != m.moment:
            stops.append(m.moment)
        for i, s in enumerate(stops):
            extra = []
            if i == 1 and not self.teaser:
                extra = self.caption(
                    "Each bar is one request. Filled: its tokens' K/V. Outlined: reserved for it "
                    "but unused. Paged boxes are its pages, with their physical ids.", 6.5)
            self.set_moment(m.moments[s], self.pick(0.8, 0.4), extra)
            self.wait(self.pick(0.7, 0.1))
        mo = m.moments[m.moment]
        tails = ", ".join(f"{h.task} {h.paged_waste}" for h in mo.held)
        if not self.teaser:  # the teaser's end card says where paged memory's waste is
            self.play(*self.caption(
                f"Step {mo.step}: the paged requests waste only the tail of their last page "
                f"({tails} slots); each contiguous row leaves the rest of its {m.max_len} "
                "unused.", 7.0), run_time=0.4)
        self.hold_caption()

        self.chapter("One budget")
        drawn = VGroup(*(line for lines in self.usage.series.values() for line in lines))
        self.play(FadeOut(part1), FadeOut(drawn), FadeOut(self.rows_mob),
                  FadeOut(self.counters["step"]), run_time=0.5)
        self.rows_mob = None
        self.budget_part(m, n_req)
        self.chapter("End card")
        self.end_card(m)

    def budget_part(self, m: memory.MemoryComparison, n_req: int) -> None:
        self.budget_states = []
        last: dict[int, dict] = {}
        for ev in m.budget_trace.events:
            last[ev["step"]] = ev["state"]
        self.budget_states = [last[s] for s in sorted(last)]
        self.budget_scale = 12.6 / m.budget_slots
        heads = VGroup(
            theme.text(f"contiguous: {m.dense_rows} rows of {m.max_len} slots fit the budget "
                       f"(red: too small for another)", theme.FS_BODY, RUN_COLOR["dense"]),
            theme.text(f"paged: the same memory as {m.budget_trace.geometry['n_pages']} pages "
                       f"of {m.page_size} slots (violet: cached prefix, evictable; grey: free)",
                       theme.FS_BODY, RUN_COLOR["paged"]),
        )
        heads[0].move_to([-6.3, 2.85, 0], aligned_edge=LEFT)
        heads[1].move_to([-6.3, 1.0, 0], aligned_edge=LEFT)
        self.counters["dq"].place([-6.3, 1.45, 0])
        self.counters["pq"].place([-6.3, -0.35, 0])
        self.counters["bstep"].place([6.9, 3.72, 0], align=RIGHT)
        steps = max(len(m.dense_budget), len(m.paged_budget))
        self.chart = StepChart(-6.3, 12.6, -2.95, 1.75, steps, n_req,
                               "requests held per step (orange: contiguous, green: paged)")
        budget = theme.text(
            f"One budget: {kib(m.budget_bytes)} = {m.budget_slots} slots, all {n_req} requests "
            "at once", theme.FS_BODY, theme.TEXT)
        budget.move_to([-6.3, 3.3, 0], aligned_edge=LEFT)
        part2 = VGroup(heads, self.chart, budget, self.counters["dq"], self.counters["pq"],
                       self.counters["bstep"])
        first = [] if self.teaser else self.caption(
            f"Now one fixed memory budget: {kib(m.budget_bytes)}, and all {n_req} requests at "
            "once. What does not fit waits in a queue.", 5.5)
        self.add(part2)
        self.set_budget(0, 0, self.pick(0.8, 0.4), first)
        self.wait(self.pick(1.5, 0.1))
        chunk = self.pick(3, 9)
        a = 1
        said = False
        while a < steps:
            b = min(a + chunk - 1, steps - 1)
            extra = []
            if not said and self.caption_free():
                extra = self.caption(
                    f"Contiguous holds at most {m.dense_fit} at once; paged holds up to "
                    f"{m.paged_fit}, taking pages as tokens arrive (and preempting if it must).",
                    self.pick(6.5, 3.3))
                said = True
            self.set_budget(a, b, self.pick(0.7, 0.35), extra)
            self.wait(self.pick(0.3, 0.05))
            a = b + 1
        self.hold_caption()
        self.budget_part_mob = part2

    def end_card(self, m: memory.MemoryComparison) -> None:
        mo = m.moments[m.moment]
        lines = [
            (f"At step {mo.step} (same requests, same tokens): K/V held {kib(m.used_bytes)}",
             theme.TEXT),
            (f"contiguous reserved {kib(m.dense_reserved_bytes)}  -  paged reserved "
             f"{kib(m.paged_reserved_bytes)}", theme.TEXT),
            (f"On one {kib(m.budget_bytes)} budget: contiguous held {m.dense_fit} requests at "
             f"once, paged {m.paged_fit}", theme.ACCENT),
            (f"All done after {m.dense_budget_steps} steps (contiguous) vs "
             f"{m.paged_budget_steps} (paged); outputs identical: "
             f"{'yes' if m.outputs_equal else 'NO'}", theme.TEXT),
            ("Every figure from the runs: DenseKVCache rows, PagedCache pages, same model.",
             theme.DIM),
        ]
        card = VGroup(*(theme.text(s, theme.FS_CAPTION, c) for s, c in lines))
        card.arrange(UP * -1, buff=0.2, aligned_edge=LEFT)
        # Covers the chart: the card replaces it.
        panel = Rectangle(width=13.4, height=2.6, stroke_color=theme.PANEL_EDGE,
                          stroke_width=1.5, fill_color=theme.PANEL, fill_opacity=1.0)
        panel.move_to([0, -1.87, 0])
        card.move_to(panel)
        self.card_lines = [s for s, _ in lines]
        self.play(FadeIn(VGroup(panel, card)), *self.caption(
            f"Paged memory held {m.paged_fit / m.dense_fit:.1f}x the requests on the same "
            "budget: its only waste is each request's last partial page.", self.pick(7.0, 3.5)),
            run_time=0.6)
        self.hold_caption()
