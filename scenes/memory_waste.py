"""A storyboard scene: the memory a contiguous K/V cache wastes, from real runs.

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

The narrator's lines (`script`, `teaser_script`) say why before how, with the runs' own numbers;
the headings, counters and caption lines are denser annotation, on screen only. The teaser cut is
one shot (`teaser_story`): the one-budget run where the paged cache holds the most, both
allocators side by side, under two lines.
Everything is placed relative to the named regions of its plan (kit/plans.memory_plan).

Tests build it state-only and read `snapshots` (what the bars, pages, queues and counters show
after each play).
"""

from __future__ import annotations

from manim import DOWN, LEFT, RIGHT, UP, FadeIn, FadeOut, Rectangle, VGroup

from astrai.compare import memory
from scenes.framework import theme
from scenes.framework.kit.captions import CaptionLines
from scenes.framework.kit.charts import StepChart, legend, spans, spread
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.plans import MEMORY_ROWS, memory_plan
from scenes.framework.kit.reserve import UNUSED, ReserveBars
from scenes.framework.story import StoryScene
from scenes.framework.words import size, spoken_size

BAR_H = 0.36  # of a bar, in a row of the room's pitch
RUN_COLOR = {"dense": theme.REQUEST_COLORS[1], "paged": theme.GOOD}
USAGE = (("contiguous reserved", RUN_COLOR["dense"], "dense_reserved"),
         ("paged reserved", RUN_COLOR["paged"], "paged_reserved"),
         ("tokens held", theme.USED, "used"))
STOP_EVERY, BUDGET_CHUNK = 3, 3  # part 1 shows every 3rd step; part 2 plays 3 steps at a time
TEASER_STEPS = 2  # the teaser shows the budget run up to (at most) 2 steps of its peak
END_HOLD = 0.8  # the last picture stays this long after the last line


def script(m: memory.MemoryComparison) -> dict[str, str]:
    """The narrator's lines of the explainer, every number from the runs."""
    mo = m.moments[m.moment]
    n_req = len(m.trace.workload["request"])
    same = "Same answers either way" if m.outputs_equal else "The answers differ"
    return {
        "why": "While a request generates, the model keeps the keys and values of each token: "
               f"one slot per token, here {m.token_bytes.total:,} bytes.",
        "dense": f"A contiguous cache reserves {m.max_len} slots for every request up front, "
                 "the most it may ever need.",
        "paged": f"A paged cache hands out pages of {m.page_size} slots, only as a request "
                 "grows.",
        "moment": f"At step {mo.step}, the contiguous rows leave {mo.dense_reserved - mo.used} "
                  f"reserved slots unused. The pages leave only {mo.paged_reserved - mo.used}.",
        "tail": "The paged cache wastes only the unfilled end of each request's last page.",
        "budget": f"Now give both caches the same {spoken_size(m.budget_bytes)} of memory, room "
                  f"for {m.budget_slots} tokens, and all {n_req} requests at once.",
        "fit": f"Contiguous rows fit only {m.dense_fit} requests; the rest wait in line. Pages "
               f"fit {m.paged_fit}.",
        "end": f"{same}, and the paged cache finished all {n_req} in {m.paged_budget_steps} "
               f"steps instead of {m.dense_budget_steps}.",
    }


def slot_note(tb: memory.TokenBytes) -> str:
    """One slot's bytes as the product the cache allocates: the figure the narrator says."""
    return (f"1 slot = K and V of one token: {tb.n_layers} layers x 2 x {tb.n_kv_heads} KV heads "
            f"x {tb.head_dim} x {tb.dtype_bytes} bytes ({tb.dtype}) = {tb.total:,} bytes")


def teaser_script(m: memory.MemoryComparison) -> list[str]:
    """The teaser's two lines: one budget, how many requests each way of reserving holds."""
    return [f"Reserve the most a request may need, and this memory holds just {m.dense_fit} "
            "requests.",
            f"Hand out pages as tokens arrive, and it holds {m.paged_fit}."]


class MemoryWasteScene(StoryScene):
    WORKLOAD = "traffic"
    TITLE = "Why pages: the memory a contiguous cache wastes"
    CHAPTER = "Why pages"  # shorter than its title
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("A contiguous cache reserves every request's longest length up front while the "
               "paged one holds only the pages in use, so the same memory admits more requests.")

    def __init__(self, *args, comparison: memory.MemoryComparison | None = None, **kw):
        self.comparison = comparison
        self.layer = VGroup()
        self.bars: dict[str, VGroup] = {}  # the teaser's bars of requests held, by run
        self.plan = memory_plan()
        super().__init__(*args, **kw)

    # ---- helpers ---------------------------------------------------------------------------

    def color(self, task: str):
        return self.palette.color(task)

    def build(self) -> memory.MemoryComparison:
        """Run (or take) the comparison; the title, counters and scales both parts share."""
        m = self.comparison = self.comparison or memory.compare(workload=self.workload)
        self.palette = theme.Palette([r["name"] for r in m.trace.workload["request"]])
        self.atlas = Atlas.get(theme.FS_MIN)
        self.draw = ReserveBars(m, self.palette, self.atlas)
        self.caption_lines = CaptionLines.across(self.plan.caption.cy)
        self.rows_mob = self.budget_mob = None
        self.usage_upto = -1
        self.n_req = len(m.trace.workload["request"])
        widest = max([m.max_len] + [h.paged_reserved for mo in m.moments for h in mo.held])
        self.scale = self.plan.dense.width / widest
        self.row_dy = self.plan.row_pitch * min(
            1.0, MEMORY_ROWS / max(1, m.trace.workload["scheduler"]["max_batch"]))
        self.bar_h = BAR_H * self.row_dy / self.plan.row_pitch
        title = theme.text(self.TITLE, theme.FS_TITLE, bold=True).to_corner(UP + LEFT, buff=0.2)
        self.add(title, self.caption_lines)
        self.counters = {k: Counter(self.atlas, "", theme.DIM) for k in
                         ("step", "dense", "paged", "used", "bstep", "dq", "pq")}
        self.counters["step"].place(self.plan.text.right_at(self.plan.heads.cy), align=RIGHT)
        return m

    # ---- part 1: same moments --------------------------------------------------------------

    def set_moment(self, step: int, run_time: float, shot) -> None:
        m = self.comparison
        mo = m.moments[step]
        new, self.shown_rows = self.draw.moment(mo, self.plan, self.scale, self.row_dy,
                                                self.bar_h)
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
            f"reserved {mo.dense_reserved} slots = {size(mo.dense_reserved * m.slot_bytes)}, "
            f"unused {waste_d} ({waste_d / max(mo.dense_reserved, 1):.0%})")
        self.counters["paged"].set(
            f"reserved {mo.paged_reserved} slots = {size(mo.paged_reserved * m.slot_bytes)}, "
            f"unused {waste_p} ({waste_p / max(mo.paged_reserved, 1):.0%})")
        self.counters["used"].set(
            f"tokens held: {mo.used} slots = {size(mo.used * m.slot_bytes)} in both caches")
        anims = [FadeIn(new), *lines]
        if self.rows_mob is not None:
            anims.append(FadeOut(self.rows_mob))
        self.rows_mob = new
        shot.show(anims, run_time)
        self.snapshot({"part": "moment", "step": mo.step})

    def moments_part(self) -> VGroup:
        """Part 1's headings, totals, note and chart (not yet shown)."""
        m, p = self.comparison, self.plan
        heads = VGroup(
            theme.text(f"contiguous (DenseKVCache): rows of max_len = {m.max_len} slots",
                       theme.FS_BODY, RUN_COLOR["dense"]).move_to(
                p.text.left_at(p.heads.cy), aligned_edge=LEFT),
            theme.text(f"paged (PagedCache): pages of {m.page_size} slots",
                       theme.FS_BODY, RUN_COLOR["paged"]).move_to(
                p.paged.left_at(p.heads.cy), aligned_edge=LEFT),
        )
        keys = legend([("tokens held (its colour)", theme.REQUEST_COLORS[0], True),
                       ("reserved, unused", UNUSED, False)])
        totals = VGroup(
            theme.text("contiguous", theme.FS_BODY, RUN_COLOR["dense"]),
            theme.text("paged", theme.FS_BODY, RUN_COLOR["paged"]),
        )
        totals[0].move_to(p.total_at(0), aligned_edge=LEFT)
        totals[1].move_to(p.total_at(1), aligned_edge=LEFT)
        keys.move_to(p.text.right_at(p.total_y(2)), aligned_edge=RIGHT)
        self.counters["dense"].place(p.total_at(0, counter=True))
        self.counters["paged"].place(p.total_at(1, counter=True))
        self.counters["used"].place(p.total_at(2))
        note = theme.text(slot_note(m.token_bytes), theme.FS_MIN, theme.DIM).move_to(
            p.total_at(3), aligned_edge=LEFT)
        u = p.usage
        self.usage = StepChart(u.left, u.width, u.bottom, u.height, m.moment + 1,
                               max(mo.dense_reserved for mo in m.moments),
                               "slots per step: contiguous reserved (orange), paged reserved "
                               "(green), tokens held (white)")
        return VGroup(heads, keys, totals, note, self.usage, self.counters["dense"],
                      self.counters["paged"], self.counters["used"])

    # ---- part 2: one budget ----------------------------------------------------------------

    def set_budget(self, span: tuple[int, int], run_time: float, shot) -> None:
        a, b = span
        m = self.comparison
        new, self.budget_shown = self.draw.budget(b, self.plan.budget, self.budget_states,
                                                  self.budget_scale)
        for run, seq in (("dq", m.dense_budget), ("pq", m.paged_budget)):
            st = seq[min(b, len(seq) - 1)]
            self.counters[run].set(f"holding {len(st.held)}   queue: {' '.join(st.queue)}")
        lines = []
        for run, seq in (("dense", m.dense_budget), ("paged", m.paged_budget)):
            if self.chart is None:
                break
            vals = {s: len(seq[s].held) for s in range(a, min(b, len(seq) - 1) + 1)}
            line = self.chart.extend(run, vals, RUN_COLOR[run])
            if line is not None:
                lines.append(line)
        self.counters["bstep"].set(f"step {b}" if a == b else f"steps {a}-{b}")
        anims = [FadeIn(new), *(FadeIn(x) for x in lines)]
        if self.budget_mob is not None:
            anims.append(FadeOut(self.budget_mob))
        self.budget_mob = new
        shot.show(anims, run_time)
        self.snapshot({"part": "budget", "step": b, "steps": (a, b)})

    def budget_part(self, chart: bool = True) -> VGroup:
        """Part 2's headings, queues and (if `chart`) chart, not yet shown; its states, scale
        and steps."""
        m, b = self.comparison, self.plan.budget
        last: dict[int, dict] = {}
        for ev in m.budget_trace.events:
            last[ev.step] = ev.state
        self.budget_states = [last[s] for s in sorted(last)]
        self.budget_scale = b["dense"].width / m.budget_slots
        self.budget_steps = max(len(m.dense_budget), len(m.paged_budget))
        heads = VGroup(
            theme.text(f"contiguous: {m.dense_rows} rows of {m.max_len} slots fit the budget "
                       f"(red: too small for another)", theme.FS_BODY, RUN_COLOR["dense"]),
            theme.text(f"paged: the same memory as {m.budget_trace.geometry['n_pages']} pages "
                       f"of {m.page_size} slots (violet: cached prefix, evictable; grey: free)",
                       theme.FS_BODY, RUN_COLOR["paged"]),
        )
        heads[0].move_to(b["dense_head"].left_at(b["dense_head"].cy), aligned_edge=LEFT)
        heads[1].move_to(b["paged_head"].left_at(b["paged_head"].cy), aligned_edge=LEFT)
        self.counters["dq"].place(b["dense_queue"].left_at(b["dense_queue"].cy))
        self.counters["pq"].place(b["paged_queue"].left_at(b["paged_queue"].cy))
        self.counters["bstep"].place(self.plan.budget_step_at(), align=RIGHT)
        c = b["chart"]
        self.chart = StepChart(c.left, c.width, c.bottom, c.height, self.budget_steps,
                               self.n_req,
                               "requests held per step (orange: contiguous, green: paged)"
                               ) if chart else None
        budget = theme.text(
            f"One budget: {size(m.budget_bytes)} = {m.budget_slots} slots, all {self.n_req} "
            "requests at once", theme.FS_BODY, theme.TEXT)
        budget.move_to(b["line"].left_at(b["line"].cy), aligned_edge=LEFT)
        return VGroup(heads, budget, self.counters["dq"], self.counters["pq"],
                      self.counters["bstep"], *([self.chart] if chart else []))

    def snapshot(self, what: dict) -> None:
        snap = dict(what)
        snap["counters"] = {k: c.text for k, c in self.counters.items()}
        if what["part"] == "moment":
            snap["rows"] = list(self.shown_rows)
            snap["usage"] = {name: self.usage.values_of(name) for name, _, _ in USAGE}
        else:
            snap.update(self.budget_shown)
            if self.chart is not None:
                snap["held"] = {run: self.chart.values_of(run) for run in RUN_COLOR}
            snap["held_bars"] = {run: [g.task for g in bar] for run, bar in self.bars.items()}
        self.snap(snap["part"], **snap)

    # ---- story -----------------------------------------------------------------------------

    def story(self) -> None:
        m = self.build()
        say = script(m)

        self.chapter("Same moments")
        part1 = self.moments_part()
        self.shot(None, "", ([FadeIn(part1), FadeIn(self.counters["step"])], 0.5))
        stops = list(range(0, m.moment + 1, STOP_EVERY))
        if stops[-1] != m.moment:
            stops.append(m.moment)
        cut1, cut2 = round(len(stops) / 3), round(2 * len(stops) / 3)
        self.shot(f"{self.n_req} requests, held two ways by the same model at the same steps",
                  "a contiguous row reserves the longest a request may grow; pages come as it "
                  "grows", spread(stops[:cut1], self.set_moment), line=say["why"])
        self.shot("Each bar is one request: filled, its tokens' K/V; outlined, reserved, unused",
                  "paged boxes are its pages, with their physical ids",
                  spread(stops[cut1:cut2], self.set_moment), line=say["dense"])
        self.shot(None, "", spread(stops[cut2:], self.set_moment), line=say["paged"])
        mo = m.moments[m.moment]
        tails = ", ".join(f"{h.task} {h.paged_waste}" for h in mo.held)
        self.shot(f"Step {mo.step}: the paged requests waste only the tail of their last page",
                  f"unused tail slots: {tails}; each contiguous row leaves the rest of its "
                  f"{m.max_len} unused", spread([], self.set_moment), line=say["moment"])
        self.shot(None, "", spread([], self.set_moment), line=say["tail"])

        self.chapter("One budget")
        drawn = VGroup(*(line for lines in self.usage.series.values() for line in lines))
        self.shot(None, "", ([FadeOut(part1), FadeOut(drawn), FadeOut(self.rows_mob),
                              FadeOut(self.counters["step"])], 0.5))
        self.rows_mob = None
        part2 = self.budget_part()
        self.add(part2)
        self.shot(f"Now one fixed memory budget, {size(m.budget_bytes)}, and all {self.n_req} "
                  "requests at once", "what does not fit waits in a queue",
                  spread([(0, 0)], self.set_budget), line=say["budget"])
        self.shot(f"Contiguous holds at most {m.dense_fit} at once; paged holds up to "
                  f"{m.paged_fit}", "paged takes pages as tokens arrive (and preempts if it must)",
                  spread(spans(1, self.budget_steps - 1, BUDGET_CHUNK), self.set_budget),
                  line=say["fit"])

        self.chapter("End card")
        self.end_card(m, say["end"])

    def teaser_story(self) -> None:
        """One shot: the one-budget run at the moment the paged cache holds the most, both
        allocators side by side, while the narrator says how many requests each holds and a
        bar for each grows, one block per request it holds."""
        m = self.build()
        said = teaser_script(m)
        self.chapter("One budget")
        self.add(self.budget_part(chart=False))
        first, last = peak_steps(m)
        self.shot(f"One budget, {size(m.budget_bytes)}: contiguous rows hold {m.dense_fit} "
                  f"requests at once, pages hold {m.paged_fit}",
                  f"all {self.n_req} requests arrive at once",
                  lambda shot: shot.also(self.held_bar("dense", first)),
                  spread([(0, first)], self.set_budget), line=said[0])
        self.shot(None, "", lambda shot: shot.also(self.held_bar("paged", first)),
                  spread(spans(first + 1, last, last - first), self.set_budget), line=said[1])
        self.shot(None, "", least=END_HOLD)

    def held_bar(self, run: str, step: int) -> list:
        """A bar of the requests `run` holds at `step`, in the chart's place (the snapshots
        list it from then on); the animations that bring it in."""
        self.bars[run], anims = self.draw.held(run, step, self.plan.budget["chart"], self.n_req,
                                               RUN_COLOR[run])
        return anims

    def end_card(self, m: memory.MemoryComparison, line: str) -> None:
        mo = m.moments[m.moment]
        lines = [
            (f"At step {mo.step} (same requests, same tokens): K/V held {size(m.used_bytes)}",
             theme.TEXT),
            (f"contiguous reserved {size(m.dense_reserved_bytes)}  -  paged reserved "
             f"{size(m.paged_reserved_bytes)}", theme.TEXT),
            (f"On one {size(m.budget_bytes)} budget: contiguous held {m.dense_fit} requests at "
             f"once, paged {m.paged_fit}", theme.ACCENT),
            (f"All done after {m.dense_budget_steps} steps (contiguous) vs "
             f"{m.paged_budget_steps} (paged); outputs identical: "
             f"{'yes' if m.outputs_equal else 'NO'}", theme.TEXT),
            ("Every figure from the runs: DenseKVCache rows, PagedCache pages, same model.",
             theme.DIM),
        ]
        card = VGroup(*(theme.text(s, theme.FS_CAPTION, c) for s, c in lines))
        card.arrange(DOWN, buff=0.2, aligned_edge=LEFT)
        # Covers the chart: the card replaces it.
        box = self.plan.card
        panel = Rectangle(width=box.width, height=box.height, stroke_color=theme.PANEL_EDGE,
                          stroke_width=1.5, fill_color=theme.PANEL, fill_opacity=1.0)
        panel.move_to(box.center)
        card.move_to(panel)
        self.card_lines = [s for s, _ in lines]
        self.shot(f"Paged memory held {m.paged_fit / m.dense_fit:.1f}x the requests on the same "
                  "budget", "its only waste is each request's last partial page",
                  ([FadeIn(VGroup(panel, card))], 0.6), line=line, least=1.6)
        self.shot(None, "", least=END_HOLD)


def peak_steps(m: memory.MemoryComparison, most: int = TEASER_STEPS) -> tuple[int, int]:
    """The first and last of the first `most` steps of the one-budget run at which the paged
    cache holds the most requests (what the teaser shows while it says so)."""
    peak = [s for s, b in enumerate(m.paged_budget) if len(b.held) == m.paged_fit][:most]
    return peak[0], peak[-1]
