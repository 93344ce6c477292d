"""Two ways of reserving K/V memory drawn side by side, from a memory comparison
(astrai.compare.memory): each request's contiguous row and its pages at one moment, both
allocators on one budget step by step, and a bar of the requests each holds at once. Each
drawing comes back with what it shows (read from the mobjects it made), for snapshots.
"""

from __future__ import annotations

from manim import LEFT, RIGHT, UP, FadeIn, Rectangle, VGroup

from astrai.compare import memory
from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas
from scenes.framework.kit.layout import Region

UNUSED = theme.FAINT  # reserved and not holding a token


class ReserveBars:
    """Draws `m`'s runs in `palette`'s request colours, small text from `atlas`."""

    def __init__(self, m: memory.MemoryComparison, palette: theme.Palette, atlas: Atlas):
        self.m, self.palette, self.atlas = m, palette, atlas

    def color(self, task: str):
        return self.palette.color(task)

    def moment(self, mo: memory.Moment, p, scale: float, row_dy: float,
               bar_h: float) -> tuple[VGroup, list[dict]]:
        """Bars of every request held at moment `mo`, one row per batch slot, in `p`'s `rows`
        (contiguous bars in `p.dense`, pages in `p.paged`), and what each row shows."""
        m, sc = self.m, scale
        rows = VGroup()
        shown = []
        for i, h in enumerate(mo.held):
            y = p.rows.top - p.row_pitch / 2 - i * row_dy
            color = self.color(h.task)
            name = self.atlas.line(h.task, color).move_to(p.dense.left_at(y, dx=-0.3))
            # contiguous: the whole row reserved, the tokens held filled
            res = Rectangle(width=h.dense_reserved * sc, height=bar_h, stroke_color=UNUSED,
                            stroke_width=1.2, fill_color=theme.PANEL, fill_opacity=1.0)
            res.move_to(p.dense.left_at(y), aligned_edge=LEFT)
            used = Rectangle(width=max(h.used * sc, 1e-3), height=bar_h, stroke_width=0,
                             fill_color=color, fill_opacity=1.0)
            used.move_to(p.dense.left_at(y), aligned_edge=LEFT)
            d_txt = self.atlas.line(f"{h.used}/{h.dense_reserved}", theme.DIM)
            d_txt.next_to(res, RIGHT, buff=0.1)
            # paged: one box per page it holds, the tokens held filled
            pages = VGroup()
            page_w = m.page_size * sc
            for k, page in enumerate(h.pages):
                at = p.paged.left_at(y, dx=k * page_w)
                box = Rectangle(width=page_w - 0.04, height=bar_h, stroke_color=UNUSED,
                                stroke_width=1.2, fill_color=theme.PANEL, fill_opacity=1.0)
                box.move_to(at, aligned_edge=LEFT)
                filled = min(max(h.used - k * m.page_size, 0), m.page_size)
                fill = Rectangle(width=max(filled * sc - 0.04 * filled / m.page_size, 1e-3),
                                 height=bar_h, stroke_width=0, fill_color=color,
                                 fill_opacity=1.0)
                fill.move_to(at, aligned_edge=LEFT)
                label = self.atlas.line(f"p{page}", theme.BG if filled > m.page_size // 2
                                        else theme.DIM).move_to(box)
                pages.add(VGroup(box, fill, label))
            p_txt = self.atlas.line(f"{h.used}/{h.paged_reserved}", theme.DIM)
            p_txt.move_to(p.paged.left_at(y, dx=h.paged_reserved * sc + 0.1), aligned_edge=LEFT)
            rows.add(name, res, used, d_txt, pages, p_txt)
            shown.append({
                "task": name.shown(),
                "dense_reserved": round(res.width / sc),
                "used": round(used.width / sc) if h.used else 0,
                "pages": [int(g[2].shown()[1:]) for g in pages],
                "paged_used": sum(round((g[1].width + 0.04 * (g[1].width / sc) / m.page_size)
                                        / sc) if g[1].width > 1e-2 else 0 for g in pages),
            })
        return rows, shown

    def budget(self, s: int, bands: dict[str, Region], states: list[dict],
               scale: float) -> tuple[VGroup, dict]:
        """Both runs on one budget at step `s`: the contiguous rows that fit (then what is
        left, too small for a row) in `bands["dense"]`, every page of the pool by owner in
        `bands["paged"]`; and which request each row and page shows."""
        m = self.m
        group = VGroup()
        rec = m.dense_budget_records[min(s, len(m.dense_budget_records) - 1)]
        st = states[min(s, len(states) - 1)]
        sc = scale
        # contiguous: rows of max_len inside the budget, then what is left (too small for a row)
        band = bands["dense"]
        rows_shown = []
        for r, row in enumerate(rec.rows):
            at = band.left_at(band.cy, dx=r * m.max_len * sc)
            box = Rectangle(width=m.max_len * sc - 0.05, height=band.height,
                            stroke_color=UNUSED, stroke_width=1.2, fill_color=theme.PANEL,
                            fill_opacity=1.0)
            box.move_to(at, aligned_edge=LEFT)
            group.add(box)
            if row.task is not None:
                fill = Rectangle(width=max(row.length * sc, 1e-3), height=band.height,
                                 stroke_width=0, fill_color=self.color(row.task),
                                 fill_opacity=1.0)
                fill.move_to(at, aligned_edge=LEFT)
                group.add(fill, self.atlas.line(row.task, theme.TEXT).next_to(box, UP, buff=0.06))
            rows_shown.append(row.task)
        left = m.budget_slots - len(rec.rows) * m.max_len
        if left:
            rest = Rectangle(width=left * sc, height=band.height, stroke_color=theme.BAD,
                             stroke_width=1.0, fill_opacity=0.0)
            rest.move_to(band.left_at(band.cy, dx=len(rec.rows) * m.max_len * sc),
                         aligned_edge=LEFT)
            group.add(rest)
        # paged: every page of the pool, coloured by the request holding it
        band = bands["paged"]
        page_w = m.page_size * sc
        owners = {p: t for t, table in st["page_tables"].items() for p in table}
        pages_shown = []
        for p in range(m.budget_trace.geometry["n_pages"]):
            owner = owners.get(p)
            cached = p in st["cached"]
            color = self.color(owner) if owner else theme.CACHED if cached else theme.FREE
            box = Rectangle(width=page_w - 0.05, height=band.height, stroke_width=0,
                            fill_color=color, fill_opacity=1.0 if owner else 0.5)
            box.move_to(band.left_at(band.cy, dx=p * page_w), aligned_edge=LEFT)
            box.owner = owner
            group.add(box)
            if owner:
                group.add(self.atlas.line(owner, theme.BG).move_to(box))
            pages_shown.append(owner or ("cached" if cached else "free"))
        return group, {"dense_rows": rows_shown, "pages": pages_shown}
    def held(self, run: str, step: int, area: Region, n_req: int,
             color) -> tuple[VGroup, list]:
        """In `area`, a bar of the requests `run` holds at `step`: a block per request, in its
        colour, with its letter, and how many; and the animations that bring it in."""
        m = self.m
        block = area.width * 0.75 / n_req
        held = (m.dense_budget if run == "dense" else m.paged_budget)[step].held
        y = area.top - 0.45 - (0.85 if run == "paged" else 0.0)
        bar = VGroup()
        for k, task in enumerate(held):
            box = Rectangle(width=block - 0.05, height=0.5, stroke_width=0,
                            fill_color=self.color(task), fill_opacity=1.0)
            box.move_to(area.left_at(y, dx=k * block), aligned_edge=LEFT)
            cell = VGroup(box, self.atlas.line(task, theme.BG).move_to(box))
            cell.task = task
            bar.add(cell)
        words = "contiguous rows" if run == "dense" else "pages"
        label = theme.text(f"{words}: {len(held)} requests at once", theme.FS_CAPTION, color)
        label.move_to(area.left_at(y, dx=len(held) * block + 0.2), aligned_edge=LEFT)
        return bar, [*(FadeIn(cell, shift=0.2 * RIGHT) for cell in bar), FadeIn(label)]
