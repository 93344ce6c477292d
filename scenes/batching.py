"""Scene 3 of the storyboard: continuous vs static batching, from two real runs.

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

Tests build it state-only and read `snapshots` (what the grids and charts show after each
play), `cells` and `charts`.
"""

from __future__ import annotations

from manim import LEFT, RIGHT, UP, FadeIn, Rectangle, VGroup

from astrai.compare import batching
from astrai.compare.batching import GEN, IDLE, PROMPT
from scenes import theme
from scenes.kit.charts import CaptionBar, Captioned, StepChart, legend
from scenes.kit.glyphs import Atlas, Counter
from scenes.story import StoryScene

KIND_COLOR = {PROMPT: theme.ACCENT, GEN: theme.RAN}
RUN_COLOR = {"continuous": theme.GOOD, "static": theme.REQUEST_COLORS[1]}
POOL_SERIES = (("in use", theme.USED), ("cached", theme.CACHED), ("free", theme.FREE))

# Screen plan (scene units; the frame is 14.2 x 8).
X0, WIDTH = -6.45, 12.95
GRID_TOP = {"continuous": 3.02, "static": 1.5}
GRID_H = 1.0


class BatchingScene(Captioned, StoryScene):
    WORKLOAD = "traffic"
    TITLE = "Continuous batching"
    CHAPTER = "3. Continuous batching"
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("The paged scheduler refills free batch slots every step while static batching of "
               "the same requests waits for its slowest one: fewer steps, more tokens per step.")

    def __init__(self, *args, comparison: batching.BatchingComparison | None = None, **kw):
        self.comparison = comparison
        self.cells: dict[str, dict[int, list[VGroup]]] = {"continuous": {}, "static": {}}
        self.charts: dict[str, StepChart] = {}
        super().__init__(*args, **kw)

    # ---- layout ----------------------------------------------------------------------------

    def build(self, c: batching.BatchingComparison) -> None:
        self.n_steps = max(c.continuous_steps, c.static_steps)
        self.step_w = WIDTH / self.n_steps
        self.row_h = GRID_H / c.max_batch
        self.atlas = Atlas.get(theme.FS_MIN)

        title = theme.text(self.TITLE, theme.FS_TITLE, bold=True).to_corner(UP + LEFT, buff=0.2)
        title.shift(LEFT * 0.05 + UP * 0.05)
        keys = legend([("prompt prefilled", theme.ACCENT, True), ("token generated", theme.RAN,
                       True), ("slot idle", theme.FAINT, False)])
        keys.next_to(title, RIGHT, buff=0.6).align_to(title, UP).shift(UP * 0.02)
        self.add(title, keys)

        names = {
            "continuous": "continuous (paged Scheduler): requests join as slots free",
            "static": f"static (DenseKVCache rows): batches of {c.max_batch}, each run to its end",
        }
        self.counters: dict[str, Counter] = {}
        for run, top in GRID_TOP.items():
            label = theme.text(names[run], theme.FS_BODY, RUN_COLOR[run])
            label.move_to([X0, top + 0.2, 0], aligned_edge=LEFT)
            frame = Rectangle(width=WIDTH, height=GRID_H, stroke_color=theme.PANEL_EDGE,
                              stroke_width=1, fill_color=theme.PANEL, fill_opacity=1.0)
            frame.move_to([X0 + WIDTH / 2, top - GRID_H / 2, 0])
            slots = VGroup(*(
                theme.text(str(b), theme.FS_MIN, theme.DIM).move_to(
                    [X0 - 0.18, top - (b + 0.5) * self.row_h, 0])
                for b in range(c.max_batch)
            ))
            counter = Counter(self.atlas, "", theme.DIM)
            counter.place([X0 + WIDTH, top + 0.2, 0], align=RIGHT)
            self.counters[run] = counter
            self.add(frame, label, counter)
            if self.row_h >= 0.2:
                self.add(slots)

        self.charts["tokens"] = StepChart(
            X0, WIDTH, -1.2, 1.05, self.n_steps, c.max_batch,
            "tokens generated per step (green: continuous, orange: static)")
        self.charts["pool"] = StepChart(
            X0, WIDTH, -2.95, 1.05, self.n_steps, c.trace.geometry["n_pages"],
            "continuous run's pool pages after each step: in use (white), cached (violet), "
            "free (grey)")
        x_label = theme.text("step →", theme.FS_MIN, theme.DIM)
        x_label.next_to(self.charts["pool"].axes.c2p(self.n_steps, 0), UP, buff=0.05)
        x_label.align_to(self.charts["pool"].axes.c2p(self.n_steps, 0), RIGHT)
        self.add(*self.charts.values(), x_label)
        self.caption_bar = CaptionBar(y=-3.6)
        self.caption_mob = None

    def cell(self, run: str, step: int, slot: int, cell: batching.Cell) -> VGroup:
        top = GRID_TOP[run]
        w, h = self.step_w * 0.9, self.row_h * 0.84
        box = Rectangle(width=w, height=h, stroke_width=0)
        if cell.kind == IDLE:
            box.set_stroke(theme.FAINT, 1.0).set_fill(theme.BG, 1.0)
        else:
            box.set_fill(KIND_COLOR[cell.kind], 1.0)
        box.move_to([X0 + (step + 0.5) * self.step_w, top - (slot + 0.5) * self.row_h, 0])
        group = VGroup(box)
        group.kind, group.task = cell.kind, cell.task
        if cell.kind == PROMPT:
            letter = self.atlas.line(cell.task[:1], theme.BG).move_to(box)
            group.add(letter)
            group.letter = letter
        return group

    # ---- story -----------------------------------------------------------------------------


    def draw_steps(self, a: int, b: int, c: batching.BatchingComparison, run_time: float,
                   extra=()) -> None:
        """Steps a..b (inclusive) of both runs, where they have them, in one play()."""
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
            span = f"step {a}" if a == last else f"steps {a}-{last}"
            self.counters[run].set(f"{span} · {made} tokens")
            if run == "continuous":
                for i, (name, color) in enumerate(POOL_SERIES):
                    line = self.charts["pool"].extend(
                        name, {s: c.continuous_pool[s][i] for s in steps}, color)
                    if line is not None:
                        new.append(line)
        self.play(FadeIn(VGroup(*new)), *extra, run_time=run_time)
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
        self._snapshots.append({
            "steps": steps,
            "grids": grids,
            "tokens": {run: self.charts["tokens"].values_of(run) for run in RUN_COLOR},
            "pool": {name: self.charts["pool"].values_of(name) for name, _ in POOL_SERIES},
            "counters": {run: ctr.text for run, ctr in self.counters.items()},
        })

    def story(self) -> None:
        c = self.comparison or batching.compare(workload=self.workload)
        self.comparison = c
        self.build(c)
        n_req = len(c.trace.workload["request"])

        self.chapter("Two runs")
        self.play(*self.caption(
            f"{n_req} requests arrive over time, at most {c.max_batch} at once. The same tiny "
            "model serves them twice: with continuous batching and with static batching.",
            self.pick(5.5, 2.2)), run_time=0.5)

        first = self.pick(6, 3)  # the first steps one at a time, so joining is seen
        legend_words = ("Each column is one step of the model, each row a batch slot. Yellow: a "
                        "request's prompt is prefilled (its letter); blue: one generated token.")
        for s in range(first):
            extra = self.caption(legend_words, self.pick(6.5, 2.3)) if s == 0 else []
            self.draw_steps(s, s, c, self.pick(0.7, 0.3), extra)
            self.wait(self.pick(0.6, 0.05))

        self.chapter("Steps")
        chunk = self.pick(4, 12)
        beats = [
            "Continuous: when a request is done, its slot and pages go back at the next step "
            "and a waiting request joins at once.",
            "Static: the batch keeps its rows until its longest member is done. Finished rows "
            "sit idle (empty), and new arrivals wait for the whole batch.",
            "Tokens per step (middle chart) stay high with continuous batching; the pool "
            "(bottom) shows pages in use, kept as cached prefixes, and free.",
        ]
        if self.teaser:
            beats = beats[1:2]
        a = first
        while a < self.n_steps:
            b = min(a + chunk - 1, self.n_steps - 1)
            extra = []
            if beats and self.caption_free():
                extra = self.caption(beats.pop(0), self.pick(6.0, 3.2))
            self.draw_steps(a, b, c, self.pick(0.9, 0.4), extra)
            self.wait(self.pick(0.15, 0.05))
            if a <= c.continuous_steps - 1 <= b and not self.teaser:
                self.play(*self.caption(
                    f"The continuous run is done after {c.continuous_steps} steps; the static "
                    f"run still needs {c.static_steps - c.continuous_steps} more.", 4.0),
                    run_time=0.4)
            a = b + 1
        if not self.teaser:
            while beats:
                self.play(*self.caption(beats.pop(0), 6.0), run_time=0.4)

        self.chapter("End card")
        self.end_card(c)

    def end_card(self, c: batching.BatchingComparison) -> None:
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
        col_x = [0.0, 4.2, 6.3, 9.6]  # right edges of the number columns, left of the names
        for i, row in enumerate(rows):
            for j, word in enumerate(row):
                if not word:
                    continue
                t = theme.text(word, theme.FS_CAPTION, theme.ACCENT if i == 0 else theme.TEXT,
                               mono=j > 0 and i > 0)
                y = -0.42 * i
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
            theme.text("Wall time is measured in this render's own runs (tiny model, CPU) and "
                       "varies from run to run; steps do not.", theme.FS_BODY, theme.DIM),
        ).arrange(UP * -1, buff=0.12, aligned_edge=LEFT)
        card = VGroup(table, notes).arrange(UP * -1, buff=0.3, aligned_edge=LEFT)
        # Covers both charts: the card replaces them.
        panel = Rectangle(width=WIDTH + 0.8, height=3.55, stroke_color=theme.PANEL_EDGE,
                          stroke_width=1.5, fill_color=theme.PANEL, fill_opacity=1.0)
        panel.move_to([X0 + WIDTH / 2 - 0.3, -1.42, 0])
        card.move_to(panel)
        self.card_lines = lines + [n.text for n in notes]
        anims = self.caption(
            f"Same requests, same outputs: static batching took "
            f"{ratio(c.static_steps, c.continuous_steps)} the steps of continuous batching here.",
            self.pick(7.0, 3.3))
        self.play(FadeIn(VGroup(panel, card)), *anims, run_time=0.6)
        self.hold_caption()


def _fill_kind(box) -> str:
    """What a grid cell's colour says: the kind it was drawn for."""
    if box.get_fill_opacity() > 0 and box.get_fill_color().to_hex().upper() != \
            theme.BG.to_hex().upper():
        for kind, color in KIND_COLOR.items():
            if box.get_fill_color().to_hex().upper() == color.to_hex().upper():
                return kind
        return "?"
    return IDLE
