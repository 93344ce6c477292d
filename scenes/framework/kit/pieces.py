"""What each page holds, in words: every text request's tokens as the trace's visible pieces
(arrive.prompt_pieces, then tokens.pieces as they come), and the pieces a page's filled slots
hold, read through a holder's page table. Nothing is decoded here: the pieces are the trace's.
"""

from __future__ import annotations

from astrai.trace.events import Arrive, Event, Tokens
from scenes.framework.kit.said import drawable


class PagePieces:
    """Follows a trace's events (`see`); `of(state, page)` is the drawable pieces in the page's
    filled slots, slot 0 first (None when no text request holds it)."""

    def __init__(self, page_size: int):
        self.page_size = page_size
        self.seqs: dict[str, list[str]] = {}

    def see(self, ev: Event) -> None:
        if isinstance(ev, Arrive) and ev.prompt_pieces is not None:
            for name in ev.samples or [ev.task]:  # every sample begins with the one prompt
                self.seqs[name] = [drawable(p) for p in ev.prompt_pieces]
        elif isinstance(ev, Tokens) and ev.pieces:
            for name, piece in ev.pieces.items():
                if name in self.seqs:
                    self.seqs[name].append(drawable(piece))

    def of(self, state: dict, page: int) -> list[str] | None:
        """A page's tokens, through the first table that holds it (every holder of a shared
        page has the same tokens there: that is why it is shared)."""
        for name, table in state["page_tables"].items():
            if page in table and name in self.seqs:
                start = table.index(page) * self.page_size
                return self.seqs[name][start:start + state["filled"][page]]
        return None


def sequences(events: list[Event]) -> dict[str, list[str]]:
    """Every text request's whole sequence of drawable pieces (prompt, then its tokens), by
    task: position p of a task is its list's item p."""
    follow = PagePieces(1)
    for ev in events:
        follow.see(ev)
    return follow.seqs


def fitted(piece: str, cells: int) -> str:
    """A piece in at most `cells` characters: cut with '…' when longer."""
    return piece if len(piece) <= cells else piece[: max(cells - 1, 1)] + "…"

