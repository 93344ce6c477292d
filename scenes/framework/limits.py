"""What a scene can draw: limits of the screen, not of a trace (astrai.trace.format holds those)."""

from __future__ import annotations

from astrai.errors import TraceFormatError
from astrai.trace import Trace

# The most page frames a scene draws legibly: two rows of 32 (a third row pushes the page
# tables into the code panel, and three-digit page ids overflow their frames).
MAX_SCENE_PAGES = 64


def require_drawable(trace: Trace, source: str = "trace") -> None:
    """TraceFormatError unless a scene can draw the trace's pool (MAX_SCENE_PAGES)."""
    n_pages = trace.geometry.get("n_pages")
    if not isinstance(n_pages, int) or isinstance(n_pages, bool) \
            or not 0 < n_pages <= MAX_SCENE_PAGES:
        raise TraceFormatError(
            f"{source}: geometry.n_pages is {n_pages!r}; a scene draws at most "
            f"{MAX_SCENE_PAGES} pages"
        )
