"""Stateful: an engine part that declares which of its fields a step changes.

`STATE` names them; `snapshot()` copies each (containers one level deep: their items are ints,
strings, immutable tuples or objects saved on their own, like a scheduler's tasks) and
`restore()` puts them back. `FIXED` names the fields set once at construction. Tests hold every
field of an instance to STATE + FIXED (+ VOLATILE), so a field added without saying which it is
fails a test instead of silently escaping an undone step.
"""

from __future__ import annotations

from collections import deque


class Stateful:
    STATE: tuple[str, ...] = ()
    FIXED: tuple[str, ...] = ()

    def snapshot(self) -> tuple:
        return save(self, self.STATE)

    def restore(self, saved: tuple) -> None:
        put_back(self, self.STATE, saved)


def save(obj, names) -> tuple:
    """Copies of obj's fields `names` (containers one level deep)."""
    return tuple(_copy(getattr(obj, name)) for name in names)


def put_back(obj, names, saved: tuple) -> None:
    """Put back what save(obj, names) took. Containers are refilled in place, so whoever holds
    one (the cache keeps the refcount list at hand) sees the restored values."""
    for name, value in zip(names, saved, strict=True):
        current = getattr(obj, name)
        if isinstance(current, list):
            current[:] = value
        elif isinstance(current, deque):
            current.clear()
            current.extend(value)
        elif isinstance(current, (dict, set)):
            current.clear()
            current.update(value)
        else:
            setattr(obj, name, value)


def _copy(value):
    return value.copy() if isinstance(value, (list, deque, dict, set)) else value


def undeclared(obj) -> list[str]:
    """Fields of obj named in none of its STATE, FIXED or VOLATILE lists (sorted)."""
    declared = set(obj.STATE) | set(obj.FIXED) | set(getattr(obj, "VOLATILE", ()))
    return sorted(set(vars(obj)) - declared)
