"""How numbers and lists read on screen and in the narration: shapes, floats, sizes, spoken
lists."""

from __future__ import annotations


def shape(x) -> str:
    """'[2, 8]' for a nested list / shape list."""
    dims = []
    while isinstance(x, list):
        dims.append(len(x))
        x = x[0] if x else None
    return "[" + ", ".join(map(str, dims)) + "]"


def dims(s: list[int]) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def fmt(x: float) -> str:
    return f"{x:.2f}"



def spoken_list(items, last: str = "and") -> str:
    """'1, 2 and 0' (or '1, 2, then 0' with last='then'): a list as the narrator says it."""
    items = [str(x) for x in items]
    if len(items) < 2:
        return "".join(items)
    sep = ", then " if last == "then" else f" {last} "
    return ", ".join(items[:-1]) + sep + items[-1]


_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _largest_unit(n_bytes: int) -> tuple[float, str] | None:
    """n_bytes in the largest binary unit it reaches, or None under 1 KiB."""
    return next(((n_bytes / scale, unit) for unit, scale in _UNITS if n_bytes >= scale), None)


def size(n_bytes: int) -> str:
    """A size as shown, in the largest binary unit it reaches: "16.9 MiB", "192.0 KiB", "40 B"."""
    scaled = _largest_unit(n_bytes)
    return f"{scaled[0]:.1f} {scaled[1]}" if scaled else f"{n_bytes} B"


def spoken_size(n_bytes: int) -> str:
    """A size as said, in the largest binary unit it reaches: "16.9 MiB", "1.5 KiB", "40 bytes"."""
    scaled = _largest_unit(n_bytes)
    return f"{round(scaled[0], 1):g} {scaled[1]}" if scaled else f"{n_bytes} bytes"
