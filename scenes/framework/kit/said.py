"""What a request said, fitted to a few glyph cells: its prompt (the head) or its output (the tail,
as it grows). Characters the glyph atlas cannot draw (control bytes, most non-Latin text, the
U+FFFD an untrained byte-level model's stray bytes decode to) are shown as '?', so what the
scene reads back equals what this returns.
"""

from __future__ import annotations

from scenes.framework.kit.glyphs import CHARS

_DRAWN = set(CHARS) | {" "}


def drawable(text: str) -> str:
    """The text with each character the atlas cannot draw as '?' (spaces stay)."""
    return "".join(c if c in _DRAWN else "?" for c in text)


def flat(text: str) -> str:
    """One line: runs of whitespace become one space; undrawable characters become '?'."""
    return "".join(c if c in _DRAWN else "?" for c in " ".join(text.split()))


def quoted(text: str, n: int, tail: bool = False) -> str:
    """text in double quotes, at most n cells: the head cut with '…' (a prompt), or with
    tail=True the last characters after '…' (an output as it grows)."""
    s = flat(text)
    room = max(n - 2, 2)
    if len(s) > room:
        s = "…" + s[-(room - 1):] if tail else s[: room - 1] + "…"
    return f'"{s}"'


def said(prompt: str | None, output: str | None, n: int) -> str:
    """A page table's text line: the output's tail once there is output, else the prompt."""
    if output:
        return "→ " + quoted(output, n - 2, tail=True)
    return quoted(prompt, n) if prompt else ""
