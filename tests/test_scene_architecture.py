"""The scene layer's shape, read from its source: the storyboard's scenes sit in scenes/, what
they are written with in scenes/framework/; the kit never imports the replay; chapter numbers
come from the storyboard's order; only the timeline plays on a Manim scene, and every scene plays
through its one entry point (`shot`); one caption widget; one layout system (named regions, no
literal coordinates in scene files); no scene file grows past what one reads
in a sitting."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORK = ROOT / "scenes" / "framework"
MAX_SCENE_LINES = 450
MAX_LINES = {"write_gather.py": 400}  # the close-up: its widgets and plan live in the framework

from scenes.storyboard import STORYBOARD  # noqa: E402


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _scene_files() -> list[Path]:
    return [ROOT / Path(*module.split(".")).with_suffix(".py") for module, _ in STORYBOARD]


def test_the_kit_never_imports_the_replay():
    bad = {p.name: sorted(m for m in _imports(p) if m.startswith("scenes.framework.replay"))
           for p in (FRAMEWORK / "kit").glob("*.py")}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_framework_never_imports_a_scene():
    scenes = {module for module, _ in STORYBOARD} | {"scenes.cards"}
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & scenes) for p in FRAMEWORK.rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_storyboard_scenes_sit_in_scenes_and_stay_short():
    for path in _scene_files():
        assert path.parent == ROOT / "scenes", path
        n = len(path.read_text(encoding="utf-8").splitlines())
        most = MAX_LINES.get(path.name, MAX_SCENE_LINES)
        assert n <= most, f"{path.name}: {n} lines (at most {most})"


def test_only_the_timeline_plays_on_a_scene():
    """A scene file plays through the timeline (its shots): a direct Scene.play would run
    outside the clock the subtitles and chapters are placed by."""
    for path in [*_scene_files(), ROOT / "scenes" / "cards.py"]:
        calls = [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                 and node.func.attr in ("play", "wait")
                 and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"]
        assert calls == [], f"{path.name} calls self.play/wait at lines {calls}"


def test_chapter_numbers_come_from_the_storyboard():
    pytest.importorskip("manim")
    from scenes.cards import chapter_of

    for index, (module, name) in enumerate(STORYBOARD, start=1):
        cls = getattr(importlib.import_module(module), name)
        assert not re.match(r"\d", getattr(cls, "CHAPTER", "")), f"{name} types its number"
        chapter = chapter_of(cls, index)
        assert chapter == f"{index}. {cls.CHAPTER or cls.TITLE}"


# What a scene file may call on itself to play: `shot` only. The rest of the timeline (the
# frame-counting plays and holds, speaking a line) is the framework's.
TIMING = {"beat", "speak", "voiced", "show", "hold", "paced", "tell", "play", "wait",
          "_beat", "_speak", "_show", "_hold"}


def _self_calls(path: Path) -> list[tuple[str, int]]:
    return [(node.func.attr, node.lineno)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"]


def _calls_of(path: Path, name: str) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == name]


def test_every_scene_plays_through_one_shot_api():
    """Every storyboard scene and the cards play through `self.shot` and nothing beside it; a
    replay's own beats reach the screen as plays of a shot (`rp.beat(...)`), never `tell`."""
    for path in [*_scene_files(), ROOT / "scenes" / "cards.py"]:
        calls = _self_calls(path)
        other = [(name, line) for name, line in calls if name in TIMING]
        assert other == [], f"{path.name} plays outside `shot`: {other}"
        assert any(name == "shot" for name, _ in calls), f"{path.name} never calls self.shot"
        assert _calls_of(path, "tell") == [], f"{path.name} calls tell"


def test_the_story_scene_offers_one_timing_entry_point():
    pytest.importorskip("manim")
    from scenes.framework.story import StoryScene

    public = {name for name in vars(StoryScene) if not name.startswith("_")}
    assert public & TIMING == set(), public & TIMING
    assert "shot" in public


def test_one_caption_widget():
    """CaptionLines is the caption widget every scene's shots write to (the replay's header
    block holds one too); no second caption widget."""
    classes = {node.name: path.name for path in FRAMEWORK.rglob("*.py")
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ClassDef) and "caption" in node.name.lower()}
    assert classes == {"CaptionLines": "captions.py", "Captions": "captions.py"}, classes
    captions = (FRAMEWORK / "kit" / "captions.py").read_text(encoding="utf-8")
    assert "self.lines = CaptionLines(" in captions  # the replay's block holds the same widget


# Calls that place a mobject or cut a region: a number in one of them is a coordinate.
PLACEMENT = {"move_to", "shift", "next_to", "to_edge", "to_corner", "align_to", "arrange",
             "place", "Region", "inset", "stack", "columns", "span", "cell", "left_at",
             "right_at", "above", "below", "point"}
NUDGE = 0.3  # the largest number a scene file may write in a placement call


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)


def _numbers(node: ast.AST):
    """Numeric literals in an argument, not descending into a call (a call's own arguments
    are its business: `p.total_at(1)` is an index, not a coordinate) or a subscript."""
    if isinstance(node, (ast.Call, ast.Subscript)):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _numbers(child)


def literal_coordinates(source: str, beyond: float = 0.0) -> list[tuple[int, float]]:
    """(line, value) of each number beyond `beyond` in a placement call's arguments."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _call_name(node) in PLACEMENT:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                out += [(n.lineno, n.value) for n in _numbers(arg) if abs(n.value) > beyond]
    return out


def test_literal_coordinates_are_counted():
    """The rule below sees coordinates wherever a placement call writes them."""
    src = ("a.move_to([-6.6, y - 0.2, 0])\nb.next_to(a, UP, buff=0.6)\nc.shift(LEFT * 0.05)\n"
           "d.move_to(p.total_at(3))\ne.arrange(DOWN, buff=0.3)\nf.set_width(4.0)\n")
    assert literal_coordinates(src, NUDGE) == [(1, 6.6), (2, 0.6)]
    assert literal_coordinates(src) == [(1, 6.6), (1, 0.2), (2, 0.6), (3, 0.05), (5, 0.3)]


def test_scene_files_ask_for_regions_by_name():
    """Where things go is named in the framework (kit/layout for the replays, kit/plans for the
    other scene kinds and the cards); a scene file keeps no coordinate beyond a small nudge
    and cuts no region of its own."""
    for path in [*_scene_files(), ROOT / "scenes" / "cards.py"]:
        source = path.read_text(encoding="utf-8")
        big = literal_coordinates(source, NUDGE)
        assert big == [], f"{path.name}: literal coordinates (line, value) {big}"
        assert "Region" not in source, f"{path.name} defines regions of its own"


def test_one_layout_system():
    """Regions are one class, in kit/layout; no second layout module beside it."""
    defined = {node.name: str(path.relative_to(FRAMEWORK)) for path in FRAMEWORK.rglob("*.py")
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ClassDef)
               and ("region" in node.name.lower() or "layout" in node.name.lower())}
    assert defined == {"Region": "kit/layout.py", "Layout": "kit/layout.py"}, defined
    assert not (FRAMEWORK / "kit" / "regions.py").exists()
    assert all(m != "scenes.framework.kit.regions" for p in ROOT.rglob("scenes/**/*.py")
               for m in _imports(p))
