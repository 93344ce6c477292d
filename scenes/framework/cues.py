"""Spoken text cut into subtitle cues a person can read (Netflix's English template): at most
two lines of at most 42 characters, cut at sentence ends first, then at clause breaks (, ; :
and before "and", "but", "so", ...), then between words; the two lines of a cue as even as the
words allow. A word longer than a line (a URL, a long name) is broken after a / . - _ ? & = :
or # where one falls late enough in the line, else after 42 characters; its pieces never share
a line, so each piece ends a line.

The reading-speed limits (17 characters a second, 5/6 s to 7 s a cue) are checked by
`check` once the cues are timed; the time of a cue is its own speech (scenes.framework.voice).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

LINE = 42  # characters a line
LINES = 2
CUE = LINE * LINES
CPS, CPS_MAX = 17.0, 20.0  # target for 90% of cues / never over
MIN_CUE, MAX_CUE = 5 / 6, 7.0  # seconds
SOFT = ("and", "but", "so", "because", "which", "while", "then", "where", "when", "or")
BREAK_AFTER = "/.-_?&=:#"  # where a word too long for a line is broken, the latest one first
MIN_PIECE = 8  # characters before a break in a long word: no line of a lone "/"


# A terminal's escape sequences (CSI, OSC), taken out whole; bidirectional overrides and
# isolates reorder what is shown (and a terminal's line): neither is ever text.
ESCAPES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
BIDI = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                "\u2066\u2067\u2068\u2069"))


def plain(text: str) -> str:
    """`text` without control characters (each a space) or bidirectional overrides: a line
    reaches the subtitles and a terminal, where either is a code, never a word."""
    text = ESCAPES.sub(" ", text.translate(BIDI))  # a whole escape sequence, not just its ESC
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def _unbroken(word: str) -> list[str]:
    """`word` as pieces of at most LINE characters, each as long as a break point allows. Two
    pieces never fit one line together (else the first would have ended at the second's end)."""
    out = []
    while len(word) > LINE:
        cut = max((i + 1 for i in range(MIN_PIECE - 1, LINE) if word[i] in BREAK_AFTER),
                  default=LINE)
        out.append(word[:cut])
        word = word[cut:]
    return out + [word]


def _sentences(text: str) -> list[str]:
    """Cut after . ! ? and after a quotation that ends with one ('... is 4." Every')."""
    return [s for s in re.split(r"(?<=[.!?])\s+|(?<=[.!?][\"”])\s+", text.strip()) if s]


def _clauses(sentence: str) -> list[str]:
    """Break points inside a sentence: after , ; : and before a joining word."""
    parts = re.split(r"(?<=[,;:])\s+|\s+(?=(?:" + "|".join(SOFT) + r")\b)", sentence)
    return [p for p in parts if p]


def _fill(pieces: list[str], limit: int) -> list[str]:
    """Greedily join pieces (with spaces) into runs of at most `limit` characters."""
    out: list[str] = []
    for p in pieces:
        if out and len(out[-1]) + 1 + len(p) <= limit:
            out[-1] += " " + p
        else:
            out.append(p)
    return out


def _words(text: str, limit: int) -> list[str]:
    if len(text) <= limit:
        return [text]
    words = text.split()
    n = -(-len(text) // limit)  # as few chunks as fit, of even length
    target = len(text) / n
    out, cur = [], ""
    for w in words:
        if cur and (len(cur) + 1 + len(w) > limit or len(cur) >= target):
            out.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    out.append(cur)
    return out


def chunks(text: str, limit: int = CUE) -> list[str]:
    """The text as cue-sized runs, cut where a reader would pause."""
    out: list[str] = []
    text = " ".join(p for w in text.split() for p in _unbroken(w))
    for s in _sentences(text):
        if len(s) <= limit:
            out.append(s)
            continue
        pieces = [w for c in _clauses(s) for w in _words(c, limit)]
        out += _fill(pieces, limit)
    # short sentences read better together when they fit one cue
    return _fill(out, limit) if all(len(c) <= limit for c in out) else out


def two_lines(text: str) -> str:
    """A cue's text on one line, or two lines of at most LINE characters, as even as possible."""
    if len(text) <= LINE:
        return text
    words = text.split()
    best = None
    for k in range(1, len(words)):
        a, b = " ".join(words[:k]), " ".join(words[k:])
        if len(a) <= LINE and len(b) <= LINE:
            score = abs(len(a) - len(b)) - (6 if a.endswith((",", ";", ":", ".")) else 0) \
                + (8 if a.count('"') % 2 else 0)  # a quotation kept on one line if it can
            if best is None or score < best[0]:
                best = (score, f"{a}\n{b}")
    if best is None:
        raise ValueError(f"cannot fit {text!r} in {LINES} lines of {LINE} characters")
    return best[1]


def split(text: str) -> list[str]:
    """The cues' texts, each already broken into its lines (a chunk whose words cannot make
    two lines of 42 becomes two cues, or failing that one cue a line)."""
    out = []
    for c in chunks(text):
        try:
            out.append(two_lines(c))
            continue
        except ValueError:
            pass
        try:
            out += [two_lines(h) for h in _words(c, -(-len(c) // 2) + 8)]
        except ValueError:  # every word fits a line (chunks broke the longer ones)
            out += _fill(c.split(), LINE)
    return out


@dataclass(frozen=True)
class Timed:
    start: float
    end: float
    text: str

    @property
    def cps(self) -> float:
        return len(self.text.replace("\n", " ")) / max(self.end - self.start, 1e-9)


def problems(cues: list[Timed], frame: float, share: float = 0.9) -> list[str]:
    """What breaks the reading limits: lines over 42 characters or over 2 lines, a cue
    shorter than 5/6 s or longer than 7 s, faster than 20 cps, fewer than `share` of the cues
    at most 17 cps, or less than 2 frames between cues."""
    out = []
    for c in cues:
        lines = c.text.split("\n")
        name = repr(c.text[:30])
        if len(lines) > LINES or any(len(x) > LINE for x in lines):
            out.append(f"{name}: lines {[len(x) for x in lines]} (at most {LINES} x {LINE})")
        d = c.end - c.start
        if not MIN_CUE - 1e-3 <= d <= MAX_CUE + 1e-3:
            out.append(f"{name}: {d:.2f} s on screen (5/6 s to 7 s)")
        if c.cps > CPS_MAX + 1e-6:
            out.append(f"{name}: {c.cps:.1f} characters a second (at most {CPS_MAX:g})")
    for a, b in zip(cues, cues[1:]):
        if b.start - a.end < 2 * frame - 1e-3:
            out.append(f"{b.text[:30]!r}: {b.start - a.end:.3f} s after the cue before it "
                       f"(at least 2 frames)")
    if cues:
        slow = sum(c.cps <= CPS + 1e-6 for c in cues) / len(cues)
        if slow < share:
            out.append(f"only {slow:.0%} of cues at most {CPS:g} characters a second "
                       f"(at least {share:.0%})")
    return out
