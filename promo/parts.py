"""What a promo cut is made of: its parts in order, each one manim render of one scene class.

The explainer: title card, then for every storyboard scene a chapter card and the scene, then the
closing card. The teaser: every scene's teaser cut (the first one is the hook and carries the
title), then the closing card in its teaser cut. Storyboard scenes whose module is not there
yet are left out, and said so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from scenes.storyboard import STORYBOARD

ROOT = Path(__file__).resolve().parents[1]
CUTS = ("full", "teaser")
CARDS = "scenes/cards.py"


@dataclass(frozen=True)
class Part:
    """One render: `cls` from `file` with `env`, written as `name`.mp4 (+ .srt).

    `chapter` is the chapter of the whole video it belongs to: consecutive parts with the same
    chapter (a chapter card and its scene) make one chapter."""

    name: str
    file: str  # relative to the repository root
    cls: str
    chapter: str
    env: dict[str, str] = field(default_factory=dict)
    own: tuple[str, ...] = ()  # files this part reads beyond the shared ones (relative)

    @property
    def deps(self) -> list[Path]:
        return [ROOT / self.file, *(ROOT / f for f in self.own)]  # ROOT / absolute = absolute


def module_file(module: str) -> str | None:
    """'scenes.x' -> 'scenes/x.py' if that file is in this checkout, else None. (Looked up by
    path, not by import: an installed copy of the project elsewhere must not stand in.)"""
    base = ROOT.joinpath(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return str(f.relative_to(ROOT))
    return None


def scene_files() -> set[str]:
    """Files that are one scene each: a change to one re-renders that scene only."""
    files = {CARDS}
    for module, _ in STORYBOARD:
        f = module_file(module)
        if f:
            files.add(f)
    return files


def shared_deps() -> list[Path]:
    """Files every part depends on: the scene kit and base (scenes/ minus the scene files), the
    engine and its workloads, and the render settings."""
    skip = scene_files()
    out = [p for p in sorted((ROOT / "scenes").rglob("*.py"))
           if str(p.relative_to(ROOT)) not in skip]
    out += sorted((ROOT / "astrai").rglob("*.py")) + sorted((ROOT / "astrai").rglob("*.toml"))
    out.append(ROOT / "manim.cfg")
    return out


def digest(part: Part, args: list[str], shared: list[Path]) -> str:
    """Hash of everything the render reads and how it is called: equal -> up to date."""
    h = hashlib.sha256()
    h.update(repr((args, sorted(part.env.items()))).encode())
    for p in [*shared, *part.deps]:
        h.update(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p).encode())
        if p.is_file():
            h.update(p.read_bytes())
        else:  # a workload or trace named by path outside the tree, or missing
            h.update(b"<missing>")
    return h.hexdigest()


def suffix(cut: str) -> str:
    return "" if cut == "full" else "_" + cut


def title_part(cut: str) -> Part:
    return Part("TitleCard" + suffix(cut), CARDS, "TitleCard", "Opening", {"ASTRAI_CUT": cut})


def closing_part(cut: str) -> Part:
    return Part("ClosingCard" + suffix(cut), CARDS, "ClosingCard", "Closing: the figures",
                {"ASTRAI_CUT": cut})


def chapter_name(module: str, cls: str, index: int) -> str:
    """The scene's chapter as its chapter card shows it (scenes.cards.chapter_of: its number in
    the storyboard and its CHAPTER,
    else '<index>. <title>'), so the video's chapter list and the card always agree."""
    from scenes.cards import chapter_of, scene_class  # imports manim: only when planning

    return chapter_of(scene_class(f"{module}:{cls}"), index)


def in_teaser(module: str, cls: str) -> bool:
    """Whether the scene gives the teaser a shot (its IN_TEASER)."""
    from scenes.cards import scene_class  # imports manim: only when planning

    return bool(getattr(scene_class(f"{module}:{cls}"), "IN_TEASER", True))


def scene_parts(module: str, cls: str, index: int, cut: str, workload: str = "",
                cards: bool = True) -> list[Part]:
    """A storyboard scene in `cut` (with its chapter card before it if `cards`)."""
    f = module_file(module)
    if f is None:
        raise LookupError(f"{module} is not on this checkout")
    chapter = chapter_name(module, cls, index)
    env = {"ASTRAI_CUT": cut}
    own: tuple[str, ...] = ()
    if workload:
        env["ASTRAI_WORKLOAD"] = workload
        own = (workload,) if workload.endswith((".toml", ".json")) else ()
    out = []
    if cards:
        out.append(Part(f"ChapterCard_{cls}{suffix(cut)}", CARDS, "ChapterCard", chapter,
                        {**env, "ASTRAI_CHAPTER": f"{module}:{cls}"}, (f, *own)))
    out.append(Part(cls + suffix(cut), f, cls, chapter, env, own))
    return out


def plan(cut: str, log=print) -> list[Part]:
    """The parts of one cut, in order, from STORYBOARD and what is on this checkout."""
    if cut not in CUTS:
        raise ValueError(f"cut must be one of {CUTS}, got {cut!r}")
    # The teaser opens on a real run (the first scene's shot carries the title), not a card.
    parts = [title_part(cut)] if cut == "full" else []
    for i, (module, cls) in enumerate(STORYBOARD, 1):
        if module_file(module) is None:
            log(f"promo: {module}.{cls} is not on this checkout yet: left out of the {cut} cut")
            continue
        if cut == "teaser" and not in_teaser(module, cls):
            continue
        parts += scene_parts(module, cls, i, cut, cards=cut == "full")
    parts.append(closing_part(cut))
    return parts
