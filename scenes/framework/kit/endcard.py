"""End cards: the figures of two real runs side by side, and two outputs compared: as text
(`text_rows`) when the runs carry text, else as token ids (`token_rows`).

Everything on a card is handed in from a comparison (astrai.compare); a card only lays it out.
`Board.texts()` reads back what is drawn, for tests.
"""

from __future__ import annotations

from manim import Line

from scenes.framework import theme
from scenes.framework.kit.board import Board
from scenes.framework.kit.glyphs import Atlas
from scenes.framework.kit.said import drawable

# An answer on a card: its line breaks and tabs drawn, never an invisible gap.
_MARKS = str.maketrans({"\n": "↵", "\t": "⇥", "\r": "?"})


def card_text(text: str) -> str:
    """An output as a card draws it: newlines as '↵', tabs as '⇥', what the atlas lacks as '?'."""
    return drawable(text.translate(_MARKS))


def text_rows(board: Board, names: tuple[str, str], a: str, b: str, label_w: int = 12,
              max_lines: int = 2) -> list:
    """Two outputs as text, each wrapped to the board's width under its run's name (a long one
    cut with '…' after max_lines), then a line saying whether they are the same text."""
    atlas = Atlas.get(theme.FS_BODY)
    width = int((board.width - 2 * Board.PAD) / atlas.advance) - label_w - 2
    out = []
    for name, text in zip(names, (a, b)):
        s = f'"{card_text(text)}"'
        lines = [s[k:k + width] for k in range(0, len(s), width)] or [""]
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] = lines[-1][:-1] + "…"
        for k, line in enumerate(lines):
            out.append(board.line([((name if k == 0 else "").ljust(label_w), theme.DIM),
                                   (line, theme.TEXT)], gap=0.04))
    same = a == b
    out.append(board.line([("".ljust(label_w), theme.DIM),
                           ("= the same text" if same else "x the texts differ",
                            theme.GOOD if same else theme.BAD)], gap=0.12))
    return out


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

