"""Print the storyboard's scenes, one `file.py:Class` a line, in storyboard order.

`make render` renders these. A scene listed in scenes/storyboard.py whose file is missing is an
error (named on stderr, exit 1), never silently left out. The list is read as data, so this
runs before any install."""

from __future__ import annotations

import ast
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


def scene_files() -> list[str]:
    out, missing = [], []
    for module, cls in storyboard():
        path = Path(*module.split(".")).with_suffix(".py")
        (out if (ROOT / path).is_file() else missing).append(f"{path.as_posix()}:{cls}")
    if missing:
        raise SystemExit(f"scenes/storyboard.py lists scenes with no file: {', '.join(missing)}")
    return out


if __name__ == "__main__":
    print("\n".join(scene_files()))
