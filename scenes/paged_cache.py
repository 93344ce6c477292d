"""A storyboard scene: the paged KV cache, replayed from a recorded run.

    manim -ql scenes/paged_cache.py PagedCacheScene                  # the seed workload
    ASTRAI_WORKLOAD=batching manim -ql scenes/paged_cache.py PagedCacheScene
    ASTRAI_WORKLOAD=path/to/workload.toml manim ...                  # any workload file
    ASTRAI_WORKLOAD=path/to/trace.json manim ...                     # a saved trace
    ASTRAI_CUT=teaser manim ...                                      # the promo's short cut

ASTRAI_WORKLOAD is a shipped workload name (see `python -m astrai.trace --help`), a workload
.toml path, or a trace .json saved with `python -m astrai.trace NAME -o trace.json`; unset, the
scene replays `seed`. The render is named after the scene, plus the workload when it is not the
scene's own (PagedCacheScene_prefix.mp4). Everything on screen comes from that trace (see
scenes/framework/replay for how each event becomes animation); the scene allocates nothing itself.

Tests build it without video: under tempconfig({"format": "none", ...}),
`PagedCacheScene(trace=trace, skip_animations=True).render()`, then read `scene.snapshots` (what
the pool, bits, refs and tables showed after every event) and `scene.panels` (every code panel).
"""

from __future__ import annotations

from scenes.framework.exchange import exchange, model_words
from scenes.framework.replay import Replay
from scenes.framework.story import StoryScene

HOOK = ("Every token a model reads leaves a key and a value in memory, and that memory decides "
        "how many requests fit. Here a real cache hands it out in pages.")
MEMORY = "It keeps every token's keys and values in memory, here in pages."
PROJECT = "astrai: a paged KV cache, replayed"


class PagedCacheScene(StoryScene):
    """The paged-cache replay on the seed workload, or on any trace (ASTRAI_WORKLOAD / trace=)."""

    WORKLOAD = "seed"
    TITLE = "Paged KV cache"
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("Requests take the lowest free pages of one shared pool, write and gather their "
               "keys and values through page tables, grow by a page while decoding (wherever "
               "one is free), and leave freed pages that a later request reuses.")

    def story(self) -> None:
        trace = self.trace_of()
        title = f"{self.TITLE} · workload {trace.workload.get('name', '?')}"
        self.replay = Replay(self, trace, title=title)
        self.replay.run()


    def teaser_story(self) -> None:
        """The teaser's opening shot, its hook: the real run filling the pool, fast, under
        the project's title, while the narrator says why this memory matters."""
        trace = self.trace_of()
        self.replay = Replay(self, trace, title=PROJECT)
        self.replay.quiet = {"tail"}  # the hook is the shot's one line
        # the hook is spoken over the replay's first beats
        self.shot(None, "", lambda shot: self.replay.run(), line=hook(trace))


def hook(trace) -> str:
    """The teaser's first words: the run's own question and the model's answer, word for word,
    then what the scene shows; the general hook when the run has no chat request."""
    ex = exchange(trace)
    if ex is None:
        return HOOK
    model = model_words(trace, size=False)
    who = model or "the model"
    return f'Asked "{ex.question}", {who} answers: "{ex.answer}" {MEMORY}'
