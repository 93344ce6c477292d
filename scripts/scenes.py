"""Print the storyboard's scenes that exist, one `file.py:Class` a line, in storyboard order.

`make render` renders these; a scene listed in scenes/storyboard.py whose file has not landed
yet is left out (and named on stderr). The list is read as data, so this runs before any
install."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def storyboard() -> list[tuple[str, str]]:
    tree = ast.parse((ROOT / "scenes" / "storyboard.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(getattr(t, "id", None) == "STORYBOARD" for t in targets):
                return [tuple(pair) for pair in ast.literal_eval(node.value)]
    raise SystemExit("scenes/storyboard.py has no STORYBOARD list")


def existing() -> list[str]:
    out = []
    for module, cls in storyboard():
        path = Path(*module.split(".")).with_suffix(".py")
        if (ROOT / path).is_file():
            out.append(f"{path.as_posix()}:{cls}")
        else:
            print(f"not yet in the tree: {path} ({cls})", file=sys.stderr)
    return out


if __name__ == "__main__":
    print("\n".join(existing()))
