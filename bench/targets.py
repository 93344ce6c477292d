"""The section every benchmark ends with: one PASS/FAIL line a target (each a ratio of two
things timed side by side), then lines of information that hold no target."""

from __future__ import annotations


def report(checks: list[tuple[str, bool]], info: list[str] = ()) -> bool:
    """Print the targets; True when every one passed."""
    print("\n== targets")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    for text in info:
        print(f"info  {text}")
    return all(ok for _, ok in checks)
