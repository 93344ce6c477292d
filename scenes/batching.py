"""A storyboard scene: continuous vs static batching, from two real runs.

    manim -ql scenes/batching.py BatchingScene                 # the traffic workload
    ASTRAI_WORKLOAD=batching manim -ql scenes/batching.py BatchingScene
    ASTRAI_CUT=teaser manim -ql scenes/batching.py BatchingScene

The same requests run twice through the same model (astrai.compare.batching): the paged
Scheduler (continuous batching, recorded) and a DenseBatcher that admits a batch only when the
last one is done (static batching). Both grids grow step by step at one scale: a column per
step, a row per batch slot, yellow where a prompt is prefilled (with its request's letter),
blue where a token is generated, empty where a slot idles. Under them, tokens generated per step
(both runs) and the continuous run's pool pages, plotted from the runs. The end card gives steps,
tokens per step and the measured wall time of each run.

The narrator's lines (`script`, `teaser_script`) say what each stretch of the grids shows, with
the runs' own step counts; the caption lines under the charts are denser annotation, on screen
only. The teaser cut is one shot (`teaser_story`): the grids fill fast under two lines.
Everything is placed relative to the named regions of its plan (kit/plans.batching_plan).

Tests build it state-only and read `snapshots` (what the grids and charts show after each
play), `cells` and `charts`.
"""

from __future__ import annotations

import math

from manim import DOWN, LEFT, RIGHT, UP, FadeIn, Rectangle, VGroup

from astrai.compare import batching
from astrai.compare.batching import GEN, IDLE, PROMPT
from scenes.framework import theme
from scenes.framework.kit.captions import CaptionLines
from scenes.framework.kit.charts import StepChart, legend, spans, spread
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.plans import batching_plan
from scenes.framework.story import StoryScene

KIND_COLOR = {PROMPT: theme.ACCENT, GEN: theme.RAN}
RUN_COLOR = {"continuous": theme.GOOD, "static": theme.REQUEST_COLORS[1]}
POOL_SERIES = (("in use", theme.USED), ("cached", theme.CACHED), ("free", theme.FREE))


# Pacing of the explainer: the first steps one at a time (so a request joining is seen), then a
# few steps a play while the two runs are told apart, then the static run's tail.
FIRST, CHUNK, TAIL_CHUNK = 12, 3, 5
# The teaser's one shot: each half of the grids in at most this many plays.
TEASER_PLAYS = 8
END_HOLD = 0.8  # the last picture stays this long after the last line


def times(x: float) -> str:
    return f"{x:.1f} times"


def script(c: batching.BatchingComparison, n_req: int) -> dict[str, str]:
    """The narrator's lines of the explainer, every number from the two runs."""
    more = c.static_steps - c.continuous_steps
    same = "same answers" if c.outputs_equal else "but different answers"
    return {
        "why": "A model serves many requests at once, in a batch. How it refills the batch "
               "decides how busy the model stays.",
        "setup": f"Here {n_req} requests arrive over time, at most {c.max_batch} at a time. "
                 "The same model serves them twice.",
        "legend": "Each column is one step of the model, each row a slot in the batch. Yellow "
                  "reads a prompt, blue makes one token.",
        "continuous": "On top, continuous batching. When a request finishes, a waiting one "
                      "takes its slot at the very next step.",
        "static": "Below, static batching. A batch runs until its longest request is done, "
                  "so finished slots sit empty.",
        "done": f"Continuous batching is done after {c.continuous_steps} steps. "
                + (f"Static batching needs {more} more." if more > 0
                   else f"Static batching takes {c.static_steps}."),
        "end": f"Same requests, {same}, and static batching took "
               f"{times(c.static_steps / c.continuous_steps)} as many steps.",
    }


def teaser_script(c: batching.BatchingComparison, n_req: int) -> list[str]:
    """The teaser's two lines: the idea, then the runs' real step counts."""
    return ["Continuous batching gives a freed slot to a waiting request at once.",
            f"The same {n_req} requests take {c.continuous_steps} steps, not {c.static_steps} "
            "as with static batching."]


class BatchingScene(StoryScene):
    WORKLOAD = "traffic"
    TITLE = "Continuous batching"
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("The paged scheduler refills free batch slots every step while static batching of "
               "the same requests waits for its slowest one: fewer steps, more tokens per step.")

    def __init__(self, *args, comparison: batching.BatchingComparison | None = None, **kw):
        self.comparison = comparison
        self.cells: dict[str, dict[int, list[VGroup]]] = {"continuous": {}, "static": {}}
        self.charts: dict[str, StepChart] = {}
        self.plan = batching_plan()
        super().__init__(*args, **kw)

    # ---- layout ----------------------------------------------------------------------------

    def build(self) -> batching.BatchingComparison:
        """Run (or take) the comparison and lay out the empty grids and charts."""
        c = self.comparison = self.comparison or batching.compare(workload=self.workload)
        self.n_req = len(c.trace.workload["request"])
        p = self.plan
        self.n_steps = max(c.continuous_steps, c.static_steps)
        self.step_w = p.grids["continuous"].width / self.n_steps
        self.row_h = p.grids["continuous"].height / c.max_batch
        self.atlas = Atlas.get(theme.FS_MIN)

        title = theme.text(self.TITLE, theme.FS_TITLE, bold=True).to_corner(UP + LEFT, buff=0.2)
        title.shift(LEFT * 0.05 + UP * 0.05)
        keys = legend([("prompt prefilled", theme.ACCENT, True), ("token generated", theme.RAN,
                       True), ("slot idle", theme.FAINT, False)])
        keys.next_to(title, RIGHT, buff=p.legend_gap).align_to(title, UP).shift(UP * 0.02)
        self.add(title, keys)

        names = {
            "continuous": "continuous (paged Scheduler): requests join as slots free",
            "static": f"static (DenseKVCache rows): batches of {c.max_batch}, each run to its end",
        }
        self.counters: dict[str, Counter] = {}
        for run, grid in p.grids.items():
            label = theme.text(names[run], theme.FS_BODY, RUN_COLOR[run])
            label.move_to(grid.above(0.2), aligned_edge=LEFT)
            frame = Rectangle(width=grid.width, height=grid.height,
                              stroke_color=theme.PANEL_EDGE, stroke_width=1,
                              fill_color=theme.PANEL, fill_opacity=1.0).move_to(grid.center)
            slots = VGroup(*(
                theme.text(str(b), theme.FS_MIN, theme.DIM).move_to(
                    grid.cell(0, b, 0, self.row_h) + LEFT * 0.18)
                for b in range(c.max_batch)
            ))
            counter = Counter(self.atlas, "", theme.DIM)
            counter.place(grid.right_at(grid.top + 0.2), align=RIGHT)
            self.counters[run] = counter
            self.add(frame, label, counter)
            if self.row_h >= 0.2:
                self.add(slots)

        def chart(name: str, y_max: int, title: str) -> StepChart:
            r = p.charts[name]
            return StepChart(r.left, r.width, r.bottom, r.height, self.n_steps, y_max, title)

        self.charts["tokens"] = chart(
            "tokens", c.max_batch, "tokens generated per step (green: continuous, orange: static)")
        self.charts["pool"] = chart(
            "pool", c.trace.geometry["n_pages"],
            "continuous run's pool pages after each step: in use (white), cached (violet), "
            "free (grey)")
        x_label = theme.text("step →", theme.FS_MIN, theme.DIM)
        x_label.next_to(self.charts["pool"].axes.c2p(self.n_steps, 0), UP, buff=0.05)
        x_label.align_to(self.charts["pool"].axes.c2p(self.n_steps, 0), RIGHT)
        self.add(*self.charts.values(), x_label)
        self.caption_lines = CaptionLines.across(p.caption.cy)
        self.add(self.caption_lines)
        return c

    def cell(self, run: str, step: int, slot: int, cell: batching.Cell) -> VGroup:
        grid = self.plan.grids[run]
        w, h = self.step_w * 0.9, self.row_h * 0.84
        box = Rectangle(width=w, height=h, stroke_width=0)
        if cell.kind == IDLE:
            box.set_stroke(theme.FAINT, 1.0).set_fill(theme.BG, 1.0)
        else:
            box.set_fill(KIND_COLOR[cell.kind], 1.0)
        box.move_to(grid.cell(step, slot, self.step_w, self.row_h))
        group = VGroup(box)
        group.kind, group.task = cell.kind, cell.task
        if cell.kind == PROMPT:
            letter = self.atlas.line(cell.task[:1], theme.BG).move_to(box)
            group.add(letter)
            group.letter = letter
        return group

    # ---- drawing ---------------------------------------------------------------------------

    def draw_steps(self, span: tuple[int, int], run_time: float, shot) -> None:
        """Steps a..b (inclusive) of both runs, where they have them, in one play of `shot`."""
        a, b = span
        c = self.comparison
        new = []
        tokens = c.tokens_generated
        for run, grid, toks in (("continuous", c.continuous_grid, tokens[0]),
                                ("static", c.static_grid, tokens[1])):
            steps = range(a, min(b, len(grid) - 1) + 1)
            if not steps:
                continue
            for s in steps:
                row = [self.cell(run, s, slot, cell) for slot, cell in enumerate(grid[s])]
                self.cells[run][s] = row
                new.extend(row)
            line = self.charts["tokens"].extend(run, {s: toks[s] for s in steps},
                                                RUN_COLOR[run])
            if line is not None:
                new.append(line)
            last = steps[-1]
            made = sum(toks[: last + 1])
            where = f"step {a}" if a == last else f"steps {a}-{last}"
            self.counters[run].set(f"{where} · {made} tokens")
            if run == "continuous":
                for i, (name, color) in enumerate(POOL_SERIES):
                    line = self.charts["pool"].extend(
                        name, {s: c.continuous_pool[s][i] for s in steps}, color)
                    if line is not None:
                        new.append(line)
        shot.show([FadeIn(VGroup(*new))], run_time)
        self.snapshot((a, b))

    def snapshot(self, steps) -> None:
        """What the screen shows now, read back from the mobjects."""
        grids = {}
        for run, rows in self.cells.items():
            grids[run] = {
                s: [(g.kind, g.letter.shown() if hasattr(g, "letter") else "",
                     _fill_kind(g[0])) for g in row]
                for s, row in rows.items()
            }
        self.snap("steps", steps=steps, grids=grids,
                  tokens={run: self.charts["tokens"].values_of(run) for run in RUN_COLOR},
                  pool={name: self.charts["pool"].values_of(name) for name, _ in POOL_SERIES},
                  counters={run: ctr.text for run, ctr in self.counters.items()})

    # ---- story -----------------------------------------------------------------------------

    def story(self) -> None:
        c = self.build()
        say = script(c, self.n_req)
        done = c.continuous_steps

        self.chapter("Two runs")
        first = spans(0, min(FIRST, done) - 1, 1)
        cut1, cut2 = round(len(first) / 3), round(2 * len(first) / 3)
        self.shot(f"{self.n_req} requests arrive over time, at most {c.max_batch} at once",
                  "the same model serves them twice: continuous batching (top) and static "
                  "(below)", spread(first[:cut1], self.draw_steps), line=say["why"])
        self.shot(None, "", spread(first[cut1:cut2], self.draw_steps), line=say["setup"])
        self.shot("Each column is one step of the model, each row a batch slot",
                  "yellow: a request's prompt is prefilled (its letter); blue: one generated "
                  "token", spread(first[cut2:], self.draw_steps), line=say["legend"])

        self.chapter("Steps")
        middle = spans(len(first), done - 1, CHUNK)
        half = (len(middle) + 1) // 2
        self.shot("Continuous: when a request is done, a waiting request joins at once",
                  "its slot and pages go back at the next step",
                  spread(middle[:half], self.draw_steps), line=say["continuous"])
        self.shot("Static: the batch keeps its rows until its longest member is done",
                  "finished rows sit idle (empty), and new arrivals wait for the whole batch",
                  spread(middle[half:], self.draw_steps), line=say["static"])
        self.shot("Tokens per step (middle chart) stay high with continuous batching",
                  "the pool (bottom) shows pages in use, kept as cached prefixes, and free",
                  spread(spans(done, self.n_steps - 1, TAIL_CHUNK), self.draw_steps),
                  line=say["done"])

        self.chapter("End card")
        self.end_card(c, say["end"])

    def teaser_story(self) -> None:
        """One shot: both runs fill their grids fast while the narrator says the idea, then
        the steps each run took, as the continuous run ends and the static run goes on."""
        c = self.build()
        said = teaser_script(c, self.n_req)
        done = c.continuous_steps
        self.chapter("Steps")
        size = math.ceil(done / TEASER_PLAYS)
        self.shot(f"Continuous batching {done} steps, static batching {c.static_steps} steps",
                  f"the same {self.n_req} requests on the same model",
                  spread(spans(0, done - 1, size), self.draw_steps, least=0.3), line=said[0])
        size = math.ceil(max(self.n_steps - done, 1) / TEASER_PLAYS)
        self.shot(None, "", spread(spans(done, self.n_steps - 1, size), self.draw_steps,
                                   least=0.3), line=said[1])
        self.shot(None, "", least=END_HOLD)

    def end_card(self, c: batching.BatchingComparison, line: str) -> None:
        def ratio(x: float, y: float) -> str:
            return f"{x / y:.2f}x" if y else "-"

        rows = [
            ("", "continuous", "static", "static / continuous"),
            ("steps", str(c.continuous_steps), str(c.static_steps),
             ratio(c.static_steps, c.continuous_steps)),
            ("tokens per step", f"{c.continuous_tokens_per_step:.2f}",
             f"{c.static_tokens_per_step:.2f}",
             ratio(c.static_tokens_per_step, c.continuous_tokens_per_step)),
            ("wall time (s)", f"{c.continuous_wall_s:.3f}", f"{c.static_wall_s:.3f}",
             ratio(c.static_wall_s, c.continuous_wall_s)),
        ]
        table = VGroup()
        col_x, pitch = self.plan.card_columns, self.plan.card_pitch
        for i, row in enumerate(rows):
            for j, word in enumerate(row):
                if not word:
                    continue
                t = theme.text(word, theme.FS_CAPTION, theme.ACCENT if i == 0 else theme.TEXT,
                               mono=j > 0 and i > 0)
                y = -pitch * i
                if j == 0:
                    t.move_to([col_x[0], y, 0], aligned_edge=LEFT)
                else:
                    t.move_to([col_x[j], y, 0], aligned_edge=RIGHT)
                table.add(t)
        lines = ["  ".join(r).strip() for r in rows]
        same = "identical" if c.outputs_equal else "NOT identical"
        notes = VGroup(
            theme.text(f"{c.continuous_tokens} tokens generated in each run; every request's "
                       f"output {same} in both runs.", theme.FS_BODY, theme.DIM),
            theme.text("Wall time is measured in this render's own runs of the model and "
                       "varies from run to run; steps do not.", theme.FS_BODY, theme.DIM),
        ).arrange(DOWN, buff=0.12, aligned_edge=LEFT)
        card = VGroup(table, notes).arrange(DOWN, buff=0.3, aligned_edge=LEFT)
        # Covers both charts: the card replaces them.
        box = self.plan.card
        panel = Rectangle(width=box.width, height=box.height, stroke_color=theme.PANEL_EDGE,
                          stroke_width=1.5, fill_color=theme.PANEL, fill_opacity=1.0)
        panel.move_to(box.center)
        card.move_to(panel)
        self.card_lines = lines + [n.text for n in notes]
        self.shot(f"Static batching took {ratio(c.static_steps, c.continuous_steps)} the steps "
                  "of continuous batching here", f"same requests, outputs {same}",
                  ([FadeIn(VGroup(panel, card))], 0.6), line=line, least=1.6)
        self.shot(None, "", least=END_HOLD)


def _fill_kind(box) -> str:
    """What a grid cell's colour says: the kind it was drawn for."""
    if box.get_fill_opacity() > 0 and box.get_fill_color().to_hex().upper() != \
            theme.BG.to_hex().upper():
        for kind, color in KIND_COLOR.items():
            if box.get_fill_color().to_hex().upper() == color.to_hex().upper():
                return kind
        return "?"
    return IDLE
