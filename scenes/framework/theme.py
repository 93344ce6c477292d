"""The one theme every scene uses: palette, fonts and sizes.

Sizes are manim font sizes chosen to read at 854x480: at that resolution one scene unit is 60 px
and font size 17 is about 14 px from ascender to descender, so nothing here goes below 17.
Fonts are set explicitly to faces Debian ships (fonts-dejavu-core); never rely on the default.
"""

from __future__ import annotations

import numpy as np
from manim import BOLD, NORMAL, ManimColor, Text, VMobject

# ---- fonts -----------------------------------------------------------------------------------
SANS = "DejaVu Sans"
MONO = "DejaVu Sans Mono"

# ---- sizes (manim font_size) -----------------------------------------------------------------
FS_MIN = 17  # ~14 px tall at 480p: the floor for anything on screen
FS_TITLE = 22
FS_CAPTION = 19
FS_BODY = 17
FS_CODE = 17
PX_PER_UNIT_480P = 60  # 480 px / 8 units of frame height

# ---- palette ---------------------------------------------------------------------------------
BG = ManimColor("#0E1117")
PANEL = ManimColor("#161B22")
PANEL_EDGE = ManimColor("#30363D")
TEXT = ManimColor("#E6EDF3")
DIM = ManimColor("#8B949E")
FAINT = ManimColor("#484F58")
ACCENT = ManimColor("#FFD54F")  # phase highlight, the line running now
RAN = ManimColor("#58A6FF")  # background of lines that ran (drawn faint)
GOOD = ManimColor("#7EE787")  # a free bit
BAD = ManimColor("#F85149")

FREE = ManimColor("#5A626E")  # a free page frame
CACHED = ManimColor("#B392F0")  # refs 0 but kept for the prefix cache (violet: no request uses it)
USED = ManimColor("#C9D1D9")  # in use by no table we know of (never expected)

# One colour per request, handed out in order of arrival. Violet is kept for cached pages.
REQUEST_COLORS = [
    ManimColor(c)
    for c in (
        "#58A6FF",  # blue
        "#FFA657",  # orange
        "#56D364",  # green
        "#FF7B9C",  # pink
        "#E3B341",  # gold
        "#39C5CF",  # teal
        "#F47067",  # red
        "#A5D66F",  # lime
        "#6CB6FF",  # sky
        "#DB9D75",  # tan
        "#96D0FF",  # pale blue
        "#FFC680",  # pale orange
    )
]


class Palette:
    """Request name -> colour, assigned in order of first sight (arrival) from REQUEST_COLORS."""

    def __init__(self, names: list[str] | None = None):
        self._colors: dict[str, ManimColor] = {}
        for name in names or []:
            self.color(name)

    def color(self, name: str) -> ManimColor:
        if name not in self._colors:
            self._colors[name] = REQUEST_COLORS[len(self._colors) % len(REQUEST_COLORS)]
        return self._colors[name]

    def names(self) -> list[str]:
        return list(self._colors)

    def label_of(self, color) -> str:
        """Inverse of color(), plus the fixed ones: what a frame of this colour says."""
        hex_ = ManimColor(color).to_hex().upper()
        if hex_ == FREE.to_hex().upper():
            return "free"
        if hex_ == CACHED.to_hex().upper():
            return "cached"
        for name, c in self._colors.items():
            if c.to_hex().upper() == hex_:
                return name
        return "used"


def text(s: str, size: float = FS_BODY, color=TEXT, bold: bool = False, mono: bool = False,
         **kw) -> VMobject:
    """A label in the theme's font, set explicitly (static labels; dynamic text uses glyphs).

    Pango renders it as a Text; the glyphs are then merged into one VMobject (same colour), so
    a label costs one draw per frame instead of one per letter. `.text` keeps the string.
    """
    if size < FS_MIN:
        raise ValueError(f"font size {size} is below the 480p floor {FS_MIN}")
    t = Text(s, font=MONO if mono else SANS, font_size=size, color=color,
             weight=BOLD if bold else NORMAL, **kw)
    flat = VMobject(fill_color=color, fill_opacity=1.0, stroke_width=0)
    parts = [m.points for m in t.family_members_with_points()]
    flat.points = np.concatenate(parts) if parts else np.zeros((0, 3))
    flat.text, flat.font_size = s, size
    return flat
