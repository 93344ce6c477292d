"""The engine source a trace's code frames point into, read as text and never imported.

A trace names code by (file, function, lines). Those names come from a file anyone may hand us,
so they are only ever looked up here: `file` must be one of ENGINE_FILES (found next to this
installed package, never at a path the trace gives), `fn` a function defined in it (found with
`ast`, nothing is imported or run), and every line inside that function.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

import astrai

_PACKAGE = Path(astrai.__file__).resolve().parent

# The one registry of engine files: trace name -> the shipped file. The recorder traces these
# line by line, a trace's code frames may name only these, and their digests stamp a trace.
# (checks.py, checked.py and observer.py are left out on purpose: argument checks and no-op
# hooks are not what a scene shows.)
ENGINE_FILES: dict[str, Path] = {
    f"astrai/inference/{name}.py": _PACKAGE / "inference" / f"{name}.py"
    for name in ("cache", "allocator", "prefix", "kv", "scheduler")
}

# Files a scene may show by its own choice, never because a trace names them: the engine files
# and the model (scene 6 shows its attention). Trace frames are held to ENGINE_FILES.
PANEL_FILES: dict[str, Path] = {**ENGINE_FILES, "astrai/model.py": _PACKAGE / "model.py"}


@functools.cache
def _text(file: str) -> str:
    return PANEL_FILES[file].read_text(encoding="utf-8")


@functools.cache
def digest(file: str) -> str:
    """sha256 of an engine file as shipped."""
    return hashlib.sha256(ENGINE_FILES[file].read_bytes()).hexdigest()


def digests() -> dict[str, str]:
    return {file: digest(file) for file in ENGINE_FILES}


@functools.cache
def functions(file: str) -> dict[str, tuple[int, int]]:
    """qualname -> (first line, last line) of every function defined in an engine file.

    Qualnames are Python's (`PageAllocator._take`, `f.<locals>.g`); the first line is the first
    decorator's, as `inspect.getsourcelines` gives it."""
    spans: dict[str, tuple[int, int]] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                spans[name] = (first, child.end_lineno or child.lineno)
                walk(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            elif not isinstance(child, ast.Lambda):
                walk(child, prefix)

    walk(ast.parse(_text(file)), "")
    return spans


@functools.cache
def executable(file: str) -> dict[str, frozenset[int]]:
    """qualname -> the lines of that function that hold code (what a frame's line can be).

    From the file's text compiled to bytecode (compiled, never run): a docstring, a comment or
    a blank line inside a function holds none, so a trace frame pointing there is a lie.
    Comprehensions and lambdas count as lines of the function they are written in."""
    code = compile(_text(file), file, "exec", dont_inherit=True)
    named = functions(file)
    out: dict[str, set[int]] = {}

    def walk(co, owner: str | None) -> None:
        name = co.co_qualname
        if name in named:
            owner = name
        if owner is not None:
            out.setdefault(owner, set()).update(
                line for _, _, line in co.co_lines() if line is not None)
        for const in co.co_consts:
            if hasattr(const, "co_lines"):
                walk(const, owner)

    walk(code, None)
    return {name: frozenset(lines) for name, lines in out.items()}


def source_of(file: str, fn: str) -> tuple[list[str], int]:
    """(the function's source lines, the number of the first), for a known file and function.

    KeyError if either is unknown: callers validate trace frames first (check_frame)."""
    first, last = functions(file)[fn]
    return _text(file).split("\n")[first - 1 : last], first


def frame_problem(frame: object) -> str | None:
    """What is wrong with one code frame of a trace, or None if it names real engine code."""
    if not isinstance(frame, dict):
        return "must be an object"
    file, fn = frame.get("file"), frame.get("fn")
    if not isinstance(file, str) or file not in ENGINE_FILES:
        return f"file {file!r} is not an engine file ({', '.join(ENGINE_FILES)})"
    spans = functions(file)
    if not isinstance(fn, str) or fn not in spans:
        return f"fn {str(fn)[:80]!r} is not a function defined in {file}"
    first, last = spans[fn]
    line, ran = frame.get("line"), frame.get("ran", [])
    if not _line(line, first, last):
        return f"line {str(line)[:20]} is outside {fn} (lines {first}-{last})"
    if not isinstance(ran, list) or not all(_line(r, first, last) for r in ran):
        return f"ran has a line outside {fn} (lines {first}-{last})"
    code = executable(file).get(fn, frozenset())
    for what, n in [("line", line)] + [("ran", r) for r in ran]:
        if n not in code:
            return (f"{what} {n} of {fn} holds no code (a docstring, comment or blank line): "
                    "no frame can run it")
    return None


def _line(x: object, first: int, last: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and first <= x <= last
