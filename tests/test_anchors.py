"""The engine anchors (scenes/framework/anchors.py) against the engine source, read as text.

Every line a scene's code panel marks is one entry of that table; `problems()` checks them all
here, so a renamed, moved or duplicated line fails this test with the entry's name, not a scene
at render time. Scenes are scanned (as text, with `ast`) for the names they use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scenes.framework.anchors import ANCHORS, Anchor, anchor, engine_lines, marked_line, problems

SCENES = Path(__file__).resolve().parents[1] / "scenes"


def test_every_anchor_names_one_working_line_of_a_real_engine_function():
    assert problems() == []
    assert len(ANCHORS) >= 30  # the table is the scenes' one registry, not a sample of it


def _renamed(a: Anchor, fragment: str):
    """A source reader over today's engine, with every part of `fragment` renamed in a.fn."""

    def lines_of(file: str, fn: str) -> list[str] | None:
        lines = engine_lines(file, fn)
        if (file, fn) != (a.file, a.fn):
            return lines
        for part in fragment.split("\n"):
            lines = [line.replace(part, "<renamed>") for line in lines]
        return lines

    return lines_of


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_renaming_an_anchored_line_fails_with_the_entry_named(name):
    a = ANCHORS[name]
    for fragment in a.effect:
        found = problems(lines_of=_renamed(a, fragment))
        assert any(p.startswith(f"{name}: {fragment!r} is on 0 lines of {a.fn}") for p in found), \
            found
        # Only entries pointing into the same function can be hit by it.
        assert all(ANCHORS[p.split(":")[0]].fn == a.fn for p in found), found


def test_a_function_moved_away_fails_with_the_entry_named():
    def moved(file: str, fn: str) -> list[str] | None:
        return None if fn == "PageAllocator._take" else engine_lines(file, fn)

    assert problems(lines_of=moved) == [
        "take.lowest_free: PageAllocator._take is not a function defined in "
        "astrai/inference/allocator.py"]
    # A file no panel may show is no engine source either.
    assert problems([Anchor("x.y", "setup.py", "main", ("x",))]) == [
        "x.y: main is not a function defined in setup.py"]


def test_a_line_that_is_not_unique_or_is_notification_code_fails_with_the_entry_named():
    body = ["def f(self):", "    if page is None:", "        break", "    pages.append(page)",
            "        break", "    self.listener.on_free(idx)  # free.drop"]

    def lines_of(file: str, fn: str) -> list[str]:
        return body

    found = problems([Anchor("a.twice", "f.py", "f", ("break",)),
                      Anchor("a.after", "f.py", "f", ("if page is None:\nbreak",)),
                      Anchor("a.notify", "f.py", "f", ("free.drop",)),
                      Anchor("a.nothing", "f.py", "f", ())], lines_of=lines_of)
    assert found == [
        "a.twice: 'break' is on 2 lines of f (f.py), not exactly one",
        "a.notify: 'free.drop' marks notification code in f: "
        "'self.listener.on_free(idx)  # free.drop'",
        "a.nothing: names no line of f",
    ]


def test_the_marked_line_is_the_first_fragment_on_a_line_that_ran():
    a = Anchor("t.t", "f.py", "f", ("b = 2", "a = 1"))
    src = ["def f():", "    a = 1", "    b = 2", "    if x:", "        break"]
    assert marked_line(a, src, 10) == 12  # any line: the first fragment wins
    assert marked_line(a, src, 10, ran={11}) == 11  # `b = 2` did not run
    assert marked_line(a, src, 10, ran={10}) is None
    assert marked_line(Anchor("t.u", "f.py", "f", ("if x:\nbreak",)), src, 10) == 14


def test_an_unknown_name_is_refused_with_the_name():
    with pytest.raises(LookupError, match="no engine anchor named 'take.lowest'"):
        anchor("take.lowest")


def _names_used() -> dict[str, list[str]]:
    """Anchor name -> where scenes use it: `anchor("...")`, `line_of(event, "...")` and a
    close-up's `panel("...", ...)` calls."""
    used: dict[str, list[str]] = {}
    for path in sorted(SCENES.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else None
            at = {"anchor": 0, "line_of": 1, "panel": 0}.get(name)
            if at is None or path.name == "anchors.py" or len(node.args) <= at:
                continue
            arg = node.args[at]
            where = f"{path.relative_to(SCENES.parent)}:{node.lineno}"
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                used.setdefault(arg.value, []).append(where)
            else:  # only line_of's own lookup passes a name through
                assert name == "anchor", f"{where}: name the anchor by a literal, to be checked"
    return used


def test_scenes_name_only_anchors_of_the_table_and_use_every_one():
    used = _names_used()
    unknown = {n: w for n, w in used.items() if n not in ANCHORS}
    assert not unknown, unknown
    unused = sorted(set(ANCHORS) - set(used))
    assert not unused, f"entries no scene shows: {unused}"
