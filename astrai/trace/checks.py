"""What an event's field may hold: one `Check` per kind of value (a task name, a page id, a
list of them, ...), its test with the message a refused file gets, and the same rule as JSON
Schema. astrai.trace.events names one next to each field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from astrai.text import MAX_PIECE


def int_ok(x: Any) -> bool:
    """An int that is not a bool (JSON's true would pass isinstance(x, int))."""
    return isinstance(x, int) and not isinstance(x, bool)


def name_ok(x: Any) -> bool:
    """A task name: printable, so it can never forge a line of the text trace."""
    return isinstance(x, str) and 0 < len(x) <= 200 and x.isprintable()


def count_ok(x: Any) -> bool:
    return int_ok(x) and x >= 0


def _page(x: Any, geo: Mapping) -> bool:
    return int_ok(x) and 0 <= x < geo["n_pages"]


@dataclass(frozen=True)
class Check:
    """What a field may hold: `problem(value, geometry)` says what is wrong (None if fine),
    `schema` is the same rule in JSON Schema (without the bounds the geometry sets)."""

    problem: Callable[[Any, Mapping], str | None]
    schema: dict


def _rule(test: Callable[[Any, Mapping], bool], message, schema: dict) -> Check:
    """A check from a test and its message (a string, or a function of the geometry)."""

    def problem(value: Any, geo: Mapping) -> str | None:
        if test(value, geo):
            return None
        return message(geo) if callable(message) else message

    return Check(problem, schema)


NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 200}
COUNT_SCHEMA = {"type": "integer", "minimum": 0}
NAMES_SCHEMA = {"type": "array", "items": NAME_SCHEMA}


def _nullable(schema: dict) -> dict:
    return {**schema, "type": [schema["type"], "null"]}


def _page_range(geo: Mapping) -> str:
    return f"0..{geo['n_pages'] - 1}"


TASK = _rule(lambda v, g: name_ok(v), "must be a printable task name", NAME_SCHEMA)
# The task whose pages a cache call moved: null when no scheduler hook named one.
HOLDER = _rule(lambda v, g: v is None or name_ok(v), "must be a printable task name",
               _nullable(NAME_SCHEMA))
NAME_OR_NULL = _rule(lambda v, g: v is None or name_ok(v),
                     "must be a printable task name or null", _nullable(NAME_SCHEMA))
NAMES = _rule(lambda v, g: isinstance(v, list) and all(name_ok(n) for n in v),
              "must list task names", NAMES_SCHEMA)
PAGE = _rule(_page, lambda g: f"must be a page id in {_page_range(g)}", COUNT_SCHEMA)
PAGES = _rule(lambda v, g: isinstance(v, list) and all(_page(p, g) for p in v),
              lambda g: f"must be a list of page ids in {_page_range(g)}",
              {"type": "array", "items": COUNT_SCHEMA})
COUNT = _rule(lambda v, g: count_ok(v), "must be a non-negative int", COUNT_SCHEMA)
LOGICAL = _rule(lambda v, g: v is None or count_ok(v), "must be a non-negative int or null",
                _nullable(COUNT_SCHEMA))
SLOTS = _rule(lambda v, g: int_ok(v) and 0 <= v <= g["page_size"],
              lambda g: f"must count 0..{g['page_size']} slots", COUNT_SCHEMA)
FLAG = _rule(lambda v, g: isinstance(v, bool), "must be true or false", {"type": "boolean"})
KEYS = _rule(lambda v, g: isinstance(v, list) and all(int_ok(k) or k is None for k in v),
             "must be a list of int prefix keys",
             {"type": "array", "items": {"type": ["integer", "null"]}})
TOKEN_IDS = _rule(lambda v, g: isinstance(v, dict) and all(name_ok(n) and count_ok(t)
                                                           for n, t in v.items()),
                  "must map task names to token ids",
                  {"type": "object", "additionalProperties": COUNT_SCHEMA})
TEXT_OR_NULL = _rule(lambda v, g: v is None or isinstance(v, str), "must be a string or null",
                     {"type": ["string", "null"]})
TEXTS = _rule(lambda v, g: isinstance(v, dict) and all(name_ok(n) and isinstance(t, str)
                                                       for n, t in v.items()),
              "must map task names to strings",
              {"type": "object", "additionalProperties": {"type": "string"}})
# A token's visible piece (astrai.text.visible_piece): a short printable string.
def piece_ok(x: Any) -> bool:
    return isinstance(x, str) and 0 < len(x) <= MAX_PIECE and x.isprintable()


PIECE_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_PIECE}
PIECES = _rule(lambda v, g: v is None or isinstance(v, list) and all(piece_ok(p) for p in v),
               f"must list token pieces (printable strings of 1..{MAX_PIECE} characters)",
               {"type": ["array", "null"], "items": PIECE_SCHEMA})
PIECE_MAP = _rule(lambda v, g: v is None or isinstance(v, dict) and all(
                      name_ok(n) and piece_ok(p) for n, p in v.items()),
                  f"must map task names to token pieces (printable strings of 1..{MAX_PIECE} "
                  "characters)",
                  {"type": ["object", "null"], "additionalProperties": PIECE_SCHEMA})
PAGE_TABLE = _rule(lambda v, g: isinstance(v, list) and all(
                       isinstance(row, list) and all(int_ok(p) and -1 <= p < g["n_pages"]
                                                     for p in row) for row in v),
                   lambda g: f"must be rows of page ids in -1..{g['n_pages'] - 1}",
                   {"type": "array", "items": {"type": "array",
                                               "items": {"type": "integer", "minimum": -1}}})
SHAPE = _rule(lambda v, g: isinstance(v, list) and all(count_ok(d) for d in v),
              "must be a list of sizes", {"type": "array", "items": COUNT_SCHEMA})


def _write_rows_problem(rows: Any, geo: Mapping) -> str | None:
    if not isinstance(rows, list):
        return "must be a list"
    ps = geo["page_size"]
    for b, row in enumerate(rows):
        if not isinstance(row, dict) or not name_ok(row.get("task")):
            return f"[{b}] must be an object with a printable task name"
        if not count_ok(row.get("start")) or not count_ok(row.get("n")):
            return f"[{b}] needs non-negative int start and n"
        runs = row.get("runs")
        if not isinstance(runs, list) or not all(
            isinstance(r, list) and len(r) == 3 and _page(r[0], geo) and count_ok(r[1])
            and int_ok(r[2]) and r[2] >= 1 and r[1] + r[2] <= ps for r in runs
        ):
            return f"[{b}].runs must be [page, first slot, n] inside a page of {ps} slots"
    return None


def _gather_rows_problem(rows: Any, geo: Mapping) -> str | None:
    if not isinstance(rows, list):
        return "must be a list"
    for b, row in enumerate(rows):
        if not isinstance(row, dict) or not name_ok(row.get("task")):
            return f"[{b}] must be an object with a printable task name"
        pages = row.get("pages")
        if not isinstance(pages, list) or not all(_page(p, geo) for p in pages):
            return f"[{b}].pages must be page ids in {_page_range(geo)}"
    return None


def _rows(properties: dict) -> dict:
    return {"type": "array", "items": {"type": "object", "properties": properties,
                                       "required": list(properties)}}


# write: each batch row's positions start..start+n-1, landing in runs of [page, slot, n]
WRITE_ROWS = Check(_write_rows_problem, _rows({
    "task": NAME_SCHEMA, "start": COUNT_SCHEMA, "n": COUNT_SCHEMA,
    "runs": {"type": "array", "items": {"type": "array", "items": COUNT_SCHEMA}},
}))
# gather: the pages each batch row reads, in page-table order
GATHER_ROWS = Check(_gather_rows_problem, _rows({"task": NAME_SCHEMA, "pages": PAGES.schema}))
