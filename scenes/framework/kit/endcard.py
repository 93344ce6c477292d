"""End cards: the figures of two real runs side by side, and two token sequences compared.

Everything on a card is handed in from a comparison (astrai.compare); a card only lays it out.
`FigureCard.rows_shown()` and `TokenRows.shown()` read back what is drawn, for tests.
"""

from __future__ import annotations

from manim import Line

from scenes.framework import theme
from scenes.framework.kit.board import Board
from scenes.framework.kit.glyphs import Atlas


def figure_rows(board: Board, header: tuple[str, str, str], rows: list[tuple[str, str, str]],
                label_w: int = 34, col_w: int = 16) -> list:
    """A table on the board: label | run 1 | run 2 (strings, already read from the runs)."""
    lines = [board.line([(header[0].ljust(label_w), theme.DIM),
                         (header[1].rjust(col_w), theme.TEXT),
                         (header[2].rjust(col_w), theme.TEXT)], theme.FS_BODY)]
    y = lines[0].get_bottom()[1] - 0.02
    rule = Line([board.left + Board.PAD, y, 0],
                [board.left + Board.PAD + Atlas.get(theme.FS_BODY).width(label_w + 2 * col_w),
                 y, 0], stroke_width=1, stroke_color=theme.FAINT)
    board.add(rule)
    board.skip(0.04)
    for label, a, b in rows:
        lines.append(board.line([(label.ljust(label_w), theme.TEXT), (a.rjust(col_w), theme.ACCENT),
                                 (b.rjust(col_w), theme.ACCENT)], theme.FS_BODY))
    return lines


def token_rows(board: Board, names: tuple[str, str], a: list[int], b: list[int],
               per_line: int = 20, label_w: int = 18) -> list:
    """Two token sequences, `per_line` ids a line, each id under its twin; a third line marks
    each position '=' where they agree and 'x' where they differ."""
    out = []
    for start in range(0, max(len(a), len(b)), per_line):
        ca, cb = a[start:start + per_line], b[start:start + per_line]
        w = max([len(str(t)) for t in ca + cb] + [1]) + 1
        ra = "".join(str(t).rjust(w) for t in ca)
        rb = "".join(str(t).rjust(w) for t in cb)
        marks = "".join(("=" if i < len(ca) and i < len(cb) and ca[i] == cb[i] else "x").rjust(w)
                        for i in range(max(len(ca), len(cb))))
        out.append(board.line([(names[0].ljust(label_w), theme.DIM), (ra, theme.TEXT)]))
        out.append(board.line([(names[1].ljust(label_w), theme.DIM), (rb, theme.TEXT)]))
        ok = "x" not in marks
        out.append(board.line([("".ljust(label_w), theme.DIM),
                               (marks, theme.GOOD if ok else theme.BAD)], gap=0.12))
    return out

