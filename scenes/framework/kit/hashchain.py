"""The prefix cache's hash chain: one link per full prompt page, each key drawn from the last.

A link shows the page's token positions, its key (the real key from the trace, shortened to its
low 16 bits: `short_key`) and, under it, what became of it (recorded on page p, hit, miss). The
arrow into a link says that its key hashes the previous key with the page's tokens, so equal
tokens after another earlier page get another key.
"""

from __future__ import annotations

from dataclasses import dataclass

from manim import LEFT, Arrow, Rectangle, RoundedRectangle, VGroup

from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas


def short_key(key: int) -> str:
    """A key as shown: '#' and its low 16 bits in hex (enough to tell a scene's keys apart)."""
    return f"#{key & 0xFFFF:04x}"


@dataclass
class Link:
    tokens: str  # e.g. "tok 16-31"
    key: int
    note: str = ""  # under the box: "page 1", "hit: page 1", "miss"
    state: str = "plain"  # plain | hit | miss | skip (looked up no further)


STATE_COLORS = {"plain": theme.CACHED, "hit": theme.GOOD, "miss": theme.BAD, "skip": theme.DIM}


class ChainRow(VGroup):
    """`label` then a start node "0" and the links, left to right, at (x, y) = row centre-left."""

    BOX_W = 1.42
    BOX_H = 0.56
    ARROW_W = 0.42

    def __init__(self, label: str, color, links: list[Link], x: float, y: float):
        super().__init__()
        atlas = Atlas.get(theme.FS_BODY)
        self.label = atlas.line(label, color)
        self.label.move_to([x, y, 0], aligned_edge=LEFT)
        self.add(self.label)
        start = atlas.line("0", theme.DIM)
        cx = x + self.label.width + 0.2
        start.move_to([cx, y, 0], aligned_edge=LEFT)
        self.add(start)
        cx += start.width
        self.links: list[Link] = list(links)
        self.boxes: list[VGroup] = []
        self.notes = []
        for link in links:
            arrow = Arrow([cx + 0.02, y, 0], [cx + self.ARROW_W, y, 0], buff=0.0,
                          stroke_width=2.5, color=theme.DIM, tip_length=0.12,
                          max_tip_length_to_length_ratio=0.4)
            cx += self.ARROW_W
            c = STATE_COLORS[link.state]
            box = RoundedRectangle(corner_radius=0.06, width=self.BOX_W, height=self.BOX_H,
                                   stroke_color=c, stroke_width=2.5, fill_color=c,
                                   fill_opacity=0.12)
            box.move_to([cx + self.BOX_W / 2, y, 0])
            top = atlas.line(link.tokens, theme.DIM)
            top.move_to([box.get_center()[0], y + 0.13, 0])
            key = atlas.line(short_key(link.key), theme.TEXT)
            key.move_to([box.get_center()[0], y - 0.13, 0])
            group = VGroup(box, top, key)
            self.boxes.append(group)
            self.add(arrow, group)
            if link.note:
                note = atlas.line(link.note, c if link.state != "plain" else theme.TEXT)
                note.move_to([box.get_center()[0], y - self.BOX_H / 2 - 0.17, 0])
                self.notes.append(note)
                self.add(note)
            cx += self.BOX_W
        self.right_x = cx

    def shown(self) -> list[tuple[str, str, str]]:
        """(tokens, key, note) per link as drawn."""
        out = []
        notes = iter(self.notes)
        for link, (_, top, key) in zip(self.links, self.boxes):
            note = next(notes).shown() if link.note else ""
            out.append((top.shown(), key.shown(), note))
        return out


def mark(group: VGroup, color=theme.ACCENT) -> Rectangle:
    """A highlight frame around a link (for a pulse)."""
    r = Rectangle(width=group.width + 0.1, height=group.height + 0.1, stroke_color=color,
                  stroke_width=4, fill_opacity=0)
    r.move_to(group)
    return r


def row_width(label: str, n_links: int) -> float:
    atlas = Atlas.get(theme.FS_BODY)
    return atlas.width(len(label) + 1) + 0.2 + n_links * (ChainRow.ARROW_W + ChainRow.BOX_W)


__all__ = ["ChainRow", "Link", "mark", "row_width", "short_key"]
