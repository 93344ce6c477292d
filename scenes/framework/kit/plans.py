"""The named regions of every scene kind that is not a pool replay (a replay's come from
`layout.make_layout`): the comparison scenes (batching, memory), the write/gather close-up and
the cards. Each kind's regions and spacings are named here, once; its scene file asks for them by
name and keeps no coordinate of its own beyond a small nudge.
"""

from __future__ import annotations

from dataclasses import dataclass

from manim import config

from scenes.framework.kit.layout import Region, edges

# ---- batching: two grids, two charts -------------------------------------------------------


@dataclass(frozen=True)
class BatchingPlan:
    """Bands from the top of the frame, as wide as the plot (the slot numbers sit left of it).
    The end card covers both charts."""

    header: Region
    grids: dict[str, Region]  # run -> its grid (label and counter just above it)
    charts: dict[str, Region]  # "tokens", "pool": the axes (titles just above them)
    caption: Region
    card: Region
    legend_gap: float = 0.6  # between the title and the legend right of it
    card_columns: tuple[float, ...] = (0.0, 4.2, 6.3, 9.6)  # the end card's columns (see below)
    card_pitch: float = 0.42  # between the end card's rows


def batching_plan() -> BatchingPlan:
    """The end card's first column holds row names (left-aligned at its x), the others numbers
    (right-aligned at theirs); the card is centred in `card` afterwards."""
    screen = Region.frame()
    plot = screen.inset(left=0.66, right=0.61)
    b = plot.stack([("header", 0.45, 0.2), ("continuous", 1.0, 0.33), ("static", 1.0, 0.52),
                    ("tokens", 1.05, 0.65), ("pool", 1.05, 0.7), ("caption", 0.7, 0.3)])
    card = plot.inset(left=-0.4, right=-0.1).span(b["tokens"], b["pool"], above=0.5, below=0.25)
    return BatchingPlan(b["header"], {r: b[r] for r in ("continuous", "static")},
                        {c: b[c] for c in ("tokens", "pool")}, b["caption"], card)


# ---- memory: bars per request, then one budget ---------------------------------------------

MEMORY_ROWS = 4  # batch slots part 1 has room for; more rows get thinner
MEMORY_BAR_W = 4.9  # the longest bar of part 1 (a contiguous row, or the most pages one holds)


@dataclass(frozen=True)
class MemoryPlan:
    """`text` is the column headings, totals and notes start in; part 1 (same moments) puts its
    bars in `dense` and `paged` within `rows`; part 2 (one budget) stacks its bands in `budget`;
    the end card covers part 2's chart."""

    text: Region
    heads: Region
    rows: Region
    dense: Region  # the contiguous bars' column (request names just left of it)
    paged: Region  # the paged bars' column
    totals: Region  # three counter lines and the slot-size note
    usage: Region  # part 1's chart (its title just above it)
    budget: dict[str, Region]  # part 2's bands: line, dense_head, dense, dense_queue, ...
    caption: Region
    card: Region

    @property
    def row_pitch(self) -> float:
        return self.rows.height / MEMORY_ROWS

    def total_y(self, i: int) -> float:
        """Line i of the totals (0-2 counters, 3 the note)."""
        return self.totals.top - 0.15 - 0.42 * i - (0.01 if i == 3 else 0.0)

    def total_at(self, i: int, counter: bool = False):
        """Where line i of the totals starts: at the text's left edge, or (a counter) past the
        run's name, under the contiguous bars."""
        if counter:
            return self.dense.left_at(self.total_y(i), dx=1.3)
        return self.text.left_at(self.total_y(i))

    def budget_step_at(self):
        """The one-budget run's step counter: right of the text, above the budget line."""
        return self.text.right_at(self.budget["line"].top + 0.27)


def memory_plan() -> MemoryPlan:
    screen = Region.frame()
    text = screen.inset(left=0.46, right=0.21)
    part1 = text.stack([("heads", 0.3, 0.75), ("rows", 0.62 * MEMORY_ROWS, 0.19),
                        ("totals", 1.57, 0.11), ("usage", 1.05, 0.55), ("caption", 0.7, 0.25)])
    # the contiguous column leaves room for request names on its left, and for "used/reserved"
    # after its longest bar before the paged column starts
    dense, _, paged = part1["rows"].inset(left=0.45).columns(MEMORY_BAR_W, 2.25, MEMORY_BAR_W)
    budget = screen.inset(left=0.81, right=0.81).stack([
        ("line", 0.3, 0.55), ("dense_head", 0.3, 0.15), ("dense", 0.5, 0.45),
        ("dense_queue", 0.3, 0.15), ("paged_head", 0.3, 0.15), ("paged", 0.5, 0.4),
        ("paged_queue", 0.3, 0.15), ("chart", 1.75, 0.7)])
    card = screen.inset(left=0.41, right=0.41).span(budget["chart"], budget["chart"],
                                                    above=0.63, below=0.22)
    usage = part1["usage"].inset(left=0.35, right=0.3)
    return MemoryPlan(text, part1["heads"], part1["rows"], dense, paged, part1["totals"], usage,
                      budget, part1["caption"], card)


# ---- the write/gather close-up --------------------------------------------------------------


@dataclass(frozen=True)
class CloseupPlan:
    """The close-up's header row (title left, pills right) and caption lines, across the
    frame's edges; its storage and code panel come from the replay layout it is given."""

    header: Region
    caption: Region
    detail: Region


def closeup_plan() -> CloseupPlan:
    left, right = edges()
    top = config.frame_height / 2

    def line(y: float) -> Region:
        return Region(left, right, y, y)

    return CloseupPlan(line(top - 0.34), line(top - 0.78), line(top - 1.08))


# ---- the cards ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CardPlan:
    """Where the cards' words go, by name (units of the frame; buffs are gaps between blocks).

    title card: heading `title_top` under the frame's top, the definition `title_gap` under it,
    the claim `claim_gap` under that. chapter card: its block centred at `chapter_y`, lines
    `chapter_gap` apart, a rule of `rule_w` above it. closing card: heading `closing_top` under
    the top; each figure's bars at `bars_x` (`bars_w` for the longest), its words at `words_x`,
    figures `figure_gap` apart (the columns `bars` and `words`); the command `command_bottom`
    over the frame's bottom."""

    title_top: float = 1.2
    title_gap: float = 0.7
    claim_gap: float = 0.6
    chapter_y: float = 0.6
    chapter_gap: float = 0.35
    rule_w: float = 6.0
    closing_top: float = 0.5
    closing_gap: float = 0.4  # heading to the first figure
    bars_x: float = -6.6
    bars_w: float = 3.0
    bar_h: float = 0.26
    bar_pitch: float = 0.36
    words_x: float = -0.9
    figure_gap: float = 0.35
    command_bottom: float = 0.5

    @property
    def bars(self) -> Region:
        """The closing card's column of bars (the longest `bars_w` wide), the frame's height."""
        screen = Region.frame()
        return Region(self.bars_x, self.bars_x + self.bars_w, screen.top, screen.bottom)

    @property
    def words(self) -> Region:
        """The closing card's column of headlines and calls, to the frame's right edge."""
        screen = Region.frame()
        return Region(self.words_x, screen.right, screen.top, screen.bottom)


CARDS = CardPlan()
