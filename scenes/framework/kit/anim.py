"""Animations for mobjects nested in the scene's layer groups, and the Beat that collects them.

Manim's introducers/removers (FadeIn, FadeOut, Create ...) and AnimationGroup call `Scene.add` on
their mobject, which dissolves any group holding it; Transform realigns the mobject's family. The
replay keeps every mobject inside a few long-lived layer groups (so the static ones can be painted
once per play), so it animates with these instead: each changes points/colours/opacities in
place and never touches the scene's structure.

The replay applies every trace event to the mobjects *at once* (so what they show can be read
back after each event); a Beat remembers how things looked when it began and, at its end, turns
the difference into animations that start from that look.
"""

from __future__ import annotations

import numpy as np
from manim import Animation, Mobject, VMobject, linear, smooth


def _window(alpha: float, window: tuple[float, float]) -> float:
    t0, t1 = window
    if t1 <= t0:
        return 1.0 if alpha >= t0 else 0.0
    return smooth(min(max((alpha - t0) / (t1 - t0), 0.0), 1.0))


def _members(mob: Mobject) -> list[VMobject]:
    return [m for m in mob.get_family() if isinstance(m, VMobject)]


class _InPlace(Animation):
    """Base: no starting copy, linear outer time, the window shapes the local progress."""

    def __init__(self, mobject: Mobject, window=(0.0, 1.0), **kw):
        kw.setdefault("rate_func", linear)
        super().__init__(mobject, **kw)
        self.window = window

    def begin(self) -> None:
        self.interpolate(0.0)

    def finish(self) -> None:
        self.interpolate(1.0)

    def interpolate(self, alpha: float) -> None:
        self.apply(_window(alpha, self.window))

    def apply(self, a: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Fade(_InPlace):
    """Scale every member's opacity by a factor going start -> end (1 = as built)."""

    def __init__(self, mobject: Mobject, start: float, end: float, window=(0.0, 1.0),
                 profile=None, **kw):
        super().__init__(mobject, window, **kw)
        self.start, self.end, self.profile = start, end, profile
        self.members = _members(mobject)
        self.fill = [m.fill_rgbas[:, 3].copy() for m in self.members]
        self.stroke = [m.stroke_rgbas[:, 3].copy() for m in self.members]

    def apply(self, a: float) -> None:
        k = self.profile(a) if self.profile else self.start + (self.end - self.start) * a
        for m, f, s in zip(self.members, self.fill, self.stroke):
            if m.fill_rgbas.shape[0] == f.shape[0]:
                m.fill_rgbas[:, 3] = f * k
            if m.stroke_rgbas.shape[0] == s.shape[0]:
                m.stroke_rgbas[:, 3] = s * k


def Appear(mob, window=(0.0, 1.0)):
    return Fade(mob, 0.0, 1.0, window)


def Vanish(mob, window=(0.0, 1.0)):
    return Fade(mob, 1.0, 0.0, window)


def Pulse(mob, window=(0.0, 1.0)):
    """Fade in and out again (an emphasis drawn on top of something)."""
    return Fade(mob, 0.0, 0.0, window, profile=lambda a: float(np.sin(np.pi * a)))


class Morph(_InPlace):
    """Go from `start` (a copy taken before the change) to how the mobject looks now.

    Members are paired in family order; any pair whose shapes differ just snaps at the end.
    """

    def __init__(self, mobject: Mobject, start: Mobject, window=(0.0, 1.0), **kw):
        super().__init__(mobject, window, **kw)
        self.pairs = []
        for end, beg in zip(_members(mobject), _members(start)):
            item = [end]
            for attr in ("points", "fill_rgbas", "stroke_rgbas"):
                e, b = getattr(end, attr).copy(), getattr(beg, attr)
                if b.shape != e.shape:
                    same_width = b.shape[1:] == e.shape[1:] and len(b)
                    b = np.broadcast_to(b[:1], e.shape) if same_width else e
                item.append((attr, b.copy(), e))
            item.append(("stroke_width", beg.stroke_width, end.stroke_width))
            self.pairs.append(item)

    def apply(self, a: float) -> None:
        for end, *attrs in self.pairs:
            for attr, b, e in attrs:
                if attr == "stroke_width":
                    end.stroke_width = b + (e - b) * a
                else:
                    setattr(end, attr, b + (e - b) * a if a < 1 else e.copy())


class Beat:
    """What one replay beat changed, turned into animations at its end.

    `window` (fractions of the beat) applies to whatever is registered while it is set, so a
    caller can stage a beat: e.g. the bit flips first, then the table row appears.
    """

    def __init__(self, overlay=None):
        self.window = (0.0, 1.0)
        self.overlay = overlay  # a group for temporary marks (pulses); emptied after the play
        self._touched: dict[int, tuple[Mobject, Mobject, tuple]] = {}
        self._incoming: dict[int, tuple[Mobject, tuple]] = {}
        self._outgoing: list[tuple[Mobject, Mobject, tuple]] = []
        self.extra: list[Animation] = []
        self.after: list = []

    def touch(self, mob: Mobject) -> None:
        """Call before changing mob in place (points or colours, same structure)."""
        if id(mob) not in self._touched and id(mob) not in self._incoming:
            self._touched[id(mob)] = (mob, mob.copy(), self.window)

    def retime(self, mob: Mobject, window: tuple[float, float]) -> None:
        """Move an already registered change of mob to another window (e.g. to stagger)."""
        if id(mob) in self._touched:
            m, start, _ = self._touched[id(mob)]
            self._touched[id(mob)] = (m, start, window)

    def appear(self, container: Mobject, mob: Mobject) -> None:
        container.add(mob)
        self._incoming[id(mob)] = (mob, self.window)

    def vanish(self, container: Mobject, mob: Mobject) -> None:
        """Take mob out of what is shown: it fades and leaves its container after the play."""
        if id(mob) in self._incoming:  # came and went within this beat: never shown
            # Nor is anything that changed inside it: animating a detached member would make
            # Manim add it to the scene on top of everything, where it would stay.
            inside = {id(m) for m in mob.get_family()}
            for key in inside:
                self._touched.pop(key, None)
                self._incoming.pop(key, None)
            self._outgoing = [o for o in self._outgoing if id(o[1]) not in inside]
            container.remove(mob)
            return
        self._touched.pop(id(mob), None)
        self._outgoing.append((container, mob, self.window))

    def replace(self, container: Mobject, old: Mobject, new: Mobject) -> None:
        """Swap old for new: old fades out in the first part of the window, new in after it
        (a cross-fade of text would overlay two strings)."""
        t0, t1 = self.window
        self.window = (t0, t0 + 0.45 * (t1 - t0))
        self.vanish(container, old)
        self.window = (t0 + 0.4 * (t1 - t0), t1)
        self.appear(container, new)
        self.window = (t0, t1)

    def grow(self, container: Mobject, mob: Mobject, start: Mobject) -> None:
        """Add mob, animated from `start` (e.g. an arrow shrunk onto its tail)."""
        container.add(mob)
        self._touched[id(mob)] = (mob, start, self.window)

    def pulse(self, mark: Mobject) -> None:
        """A temporary mark (e.g. a highlight box) that fades in and out during the window."""
        if self.overlay is None:
            return
        self.overlay.add(mark)
        self.extra.append(Pulse(mark, self.window))
        self.after.append(lambda: self.overlay.remove(mark))

    def animations(self) -> list[Animation]:
        """One animation per change; changes inside something that fades as a whole are left
        to that fade (a new table's rows come in with the table)."""
        covered: set[int] = set()
        for mob, _ in self._incoming.values():
            covered.update(id(m) for m in mob.get_family()[1:])
        for _, mob, _ in self._outgoing:
            covered.update(id(m) for m in mob.get_family()[1:])
        anims: list[Animation] = []
        for mob, start, window in self._touched.values():
            if id(mob) not in covered:
                anims.append(Morph(mob, start, window))
        for mob, window in self._incoming.values():
            if id(mob) not in covered:
                anims.append(Appear(mob, window))
        for container, mob, window in self._outgoing:
            if id(mob) in covered:
                container.remove(mob)  # inside something new or leaving: drop it now
                continue
            anims.append(Vanish(mob, window))
            self.after.append(lambda c=container, m=mob: c.remove(m))
        return anims + self.extra

    def finish(self) -> None:
        for fn in self.after:
            fn()
        self.after.clear()
