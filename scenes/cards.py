"""The promo's cards: the opening title, a chapter card before each storyboard scene, and a closing
card with figures from real runs. Each is a StoryScene: it plays and speaks through the one
timeline (`StoryScene.shot`), and what it says is its subtitles.

    manim -ql scenes/cards.py TitleCard
    ASTRAI_CHAPTER=scenes.paged_cache:PagedCacheScene manim -ql scenes/cards.py ChapterCard
    ASTRAI_CUT=teaser manim -ql scenes/cards.py ClosingCard

The chapter card reads the scene it opens (its CHAPTER, TITLE and WORKLOAD) and that workload's
file; the closing card reads `astrai.compare` (memory, prefix, batching): every figure on it is a
field of a comparison's result, shown with the call and workload it came from. A comparison that
is not available is left off the card (and logged), never filled in.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import textwrap
from dataclasses import dataclass

from manim import (
    DOWN,
    LEFT,
    RIGHT,
    UP,
    FadeIn,
    FadeOut,
    GrowFromEdge,
    Indicate,
    Line,
    Rectangle,
    VGroup,
)

from astrai.workload import load_workload
from scenes.framework import theme
from scenes.framework.exchange import Exchange, exchange, model_label, model_words
from scenes.framework.kit.plans import CARDS
from scenes.framework.story import StoryScene
from scenes.framework.words import size

log = logging.getLogger(__name__)

FS_HEAD = 40
FS_SUB = 26
WRAP = 64  # characters per line at FS_SUB / FS_CAPTION: stays inside the 480p frame


def paragraph(s: str, size: float = theme.FS_CAPTION, color=theme.TEXT, width: int = WRAP):
    """Left-aligned lines of at most `width` characters (theme.text never wraps)."""
    lines = [theme.text(line, size, color) for line in textwrap.wrap(s, width)]
    return VGroup(*lines).arrange(DOWN, aligned_edge=LEFT, buff=0.14)


class Card(StoryScene):
    """A card: text beats, each shown and subtitled for its duration (shorter in the teaser)."""

    WORKLOAD = ""

    def card(self, mobject, line: str | None, hold: float, fade: float = 0.5) -> None:
        """Fade `mobject` in while the narrator says `line`; at least `hold` seconds in all."""
        self.shot(None, "", ([FadeIn(mobject, shift=0.15 * UP)], fade), line=line,
                  least=fade + max(hold - fade, 1 / 60))

    def clear_out(self, run_time: float = 0.4) -> None:
        if self.mobjects:
            self.shot(None, "", ([FadeOut(m) for m in self.mobjects], run_time))


# ---- opening ----------------------------------------------------------------------------------

DEFINITION = ("A paged KV cache keeps each request's attention keys and values in small "
              "fixed-size pages taken from one shared pool, so memory is handed out as the text "
              "grows instead of reserved up front.")
CLAIM = ("Everything you will see was recorded from real runs of the cache and its scheduler "
         "driving {model}: no page, count, figure or word is typed in.")


SAID_CLAIM = ("Everything you will see was recorded from real runs of this model. No number and "
              "no word is typed in.")
WHY = ("To write each word, a language model looks back at every token before it, kept in "
       "memory as keys and values.")
HOW = ("That memory grows with every token, and it decides how many requests fit at once. A "
       "paged KV cache hands it out in small pages, as the text grows.")


def opening_run():
    """The run the opening quotes: the first storyboard scene's own (its real question and
    answer), kept in the trace store."""
    from astrai.trace import recorded
    from scenes.storyboard import STORYBOARD

    return recorded(scene_class(":".join(STORYBOARD[0])).WORKLOAD)


def asked(ex: Exchange, model: str | None) -> str:
    """The opening's first line: the run's question and the model's answer, word for word."""
    who = f"{model}," if model else "the model"
    return f'Asked "{ex.question}", {who} answered: "{ex.answer}"'


class TitleCard(Card):
    """The explainer's opening: the title over a real question and the model's real answer, why
    that memory matters, what a paged cache does, and the claim the video keeps. (The teaser
    opens on a real run instead: the paged-cache scene's shot.)"""

    TITLE = "astrai: a paged KV cache, replayed"
    CHAPTER = "Opening"

    def story(self) -> None:
        trace = self.trace if self.trace is not None else opening_run()  # tests hand one in
        ex = exchange(trace)
        label = model_label(trace)
        self.said_exchange = ex
        head = theme.text(self.TITLE, FS_HEAD, theme.ACCENT, bold=True)
        head.to_edge(UP, buff=CARDS.title_top)
        top = VGroup(head)
        if ex is not None:
            answer = paragraph(f'→ "{ex.answer}"', FS_SUB, theme.ACCENT, 52)
            where = (f"{label or 'the model'}, request {ex.task} of workload "
                     f"'{trace.workload.get('name', '?')}'")
            talk = VGroup(paragraph(f'"{ex.question}"', FS_SUB, theme.TEXT, 52), answer,
                          paragraph(where, theme.FS_CAPTION, theme.DIM, 70)
                          ).arrange(DOWN, aligned_edge=LEFT, buff=0.14)
            talk.next_to(head, DOWN, buff=CARDS.title_gap, aligned_edge=LEFT)
            top.add(talk)
            self.card(top, asked(ex, model_words(trace)), 2.0)
            self.shot(None, "", ([Indicate(answer, color=theme.TEXT, scale_factor=1.05)], 1.0),
                      line=WHY)
        else:
            self.card(top, WHY, 2.0)
        definition = paragraph(DEFINITION, FS_SUB, theme.TEXT, 52)
        definition.next_to(top, DOWN, buff=CARDS.title_gap, aligned_edge=LEFT)
        self.card(definition, HOW, 4.0)
        claim = paragraph(CLAIM.format(model=label or "a transformer"), theme.FS_CAPTION,
                          theme.DIM, 84)
        claim.next_to(definition, DOWN, buff=CARDS.claim_gap, aligned_edge=LEFT)
        self.card(claim, SAID_CLAIM, 3.0)
        self.clear_out(0.4)


# ---- chapters ---------------------------------------------------------------------------------


def scene_class(spec: str):
    """'module:Class' (a storyboard entry) -> the class, imported."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"ASTRAI_CHAPTER must be 'module:Class', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def chapter_of(cls, index: int | None = None) -> str:
    """'<index>. <name>': the scene's place in the storyboard (never typed in a scene) and its
    chapter name (CHAPTER, else TITLE, else the class name); a card has no index."""
    name = (getattr(cls, "CHAPTER", "") or getattr(cls, "TITLE", "")
            or cls.__name__.removesuffix("Scene"))
    return f"{index}. {name}" if index else name


def workload_line(name: str) -> str:
    """What the recorded run was, from the workload file itself."""
    wl = load_workload(name)
    reqs = len(wl.requests)
    return (f"recorded from workload '{wl.name}': {reqs} request{'s' * (reqs != 1)}, "
            f"{wl.n_pages} pages of {wl.page_size} slots")


class ChapterCard(Card):
    """Opens the storyboard scene $ASTRAI_CHAPTER ('module:Class') with its chapter and title."""

    CHAPTER = "Chapter"

    def story(self) -> None:
        spec = os.environ.get("ASTRAI_CHAPTER", "").strip()
        if not spec:
            raise ValueError("ChapterCard needs ASTRAI_CHAPTER=module:Class (a storyboard entry)")
        from scenes.storyboard import STORYBOARD

        module, _, name = spec.partition(":")
        index = next((i + 1 for i, e in enumerate(STORYBOARD) if e == (module, name)), None)
        cls = scene_class(spec)
        chapter = chapter_of(cls, index)
        head = theme.text(chapter, FS_HEAD, theme.ACCENT, bold=True).move_to(CARDS.chapter_y * UP)
        parts = [head]
        title = getattr(cls, "TITLE", "")
        if title and title not in chapter:
            parts.append(theme.text(title, FS_SUB, theme.TEXT))
        workload = os.environ.get("ASTRAI_WORKLOAD", "").strip() or getattr(cls, "WORKLOAD", "")
        if workload:
            parts.append(theme.text(workload_line(workload), theme.FS_CAPTION, theme.DIM))
        group = VGroup(*parts).arrange(DOWN, buff=CARDS.chapter_gap)
        half = CARDS.rule_w / 2
        rule = Line(half * LEFT, half * RIGHT, color=theme.FAINT)
        rule.next_to(group, UP, buff=CARDS.chapter_gap)
        # the chapter is said; its longer title is on screen
        self.card(VGroup(rule, group), chapter + ".", 2.0)
        self.clear_out(0.3)


# ---- closing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One claim on the closing card: a headline, the numbers behind it, where they come from,
    the two bars it draws (label, value: this design against the other, both from real runs;
    `better` says which way is better) and what the narrator says of it."""

    headline: str
    detail: str
    source: str
    bars: tuple[tuple[str, float], tuple[str, float]] = (("", 0.0), ("", 0.0))
    unit: str = ""
    spoken: str = ""
    short: str = ""  # the teaser's words for it: the two numbers and what they count


def _same(equal: bool) -> str:
    return "same tokens out" if equal else "OUTPUTS DIFFER"


def memory_figure(r, source: str) -> Figure:
    """astrai.compare.memory: a contiguous cache against the paged one, same requests."""
    moment = getattr(r, "moment", None)
    when = f"at step {moment}: " if moment is not None else ""
    return Figure(
        f"Paged: {r.paged_fit} requests fit where contiguous fits {r.dense_fit} "
        f"({size(r.budget_bytes)} budget)",
        f"{when}reserved {size(r.paged_reserved_bytes)} paged vs "
        f"{size(r.dense_reserved_bytes)} contiguous, for {size(r.used_bytes)} of K/V in use",
        source, (("paged", r.paged_fit), ("contiguous", r.dense_fit)), "requests in one budget",
        f"In the same memory, pages hold {r.paged_fit} requests where a contiguous cache "
        f"holds {r.dense_fit}.", f"{r.paged_fit} requests fit, not {r.dense_fit}")


def prefix_figure(r, source: str) -> Figure:
    """astrai.compare.prefix: the prefix cache on against off."""
    total = r.prompt_tokens_cached + r.prompt_tokens_computed
    return Figure(
        f"Prefix cache: {r.prompt_tokens_cached} of {total} prompt tokens served from "
        f"{r.pages_shared} shared pages",
        f"{r.prompt_tokens_computed} prompt tokens computed instead of "
        f"{r.off_prompt_tokens_computed} with it off; {_same(r.outputs_equal)}",
        source, (("prefix cache on", r.prompt_tokens_computed),
                 ("off", r.off_prompt_tokens_computed)), "prompt tokens computed",
        f"Sharing a prompt's pages, the model computes {r.prompt_tokens_computed} prompt "
        f"tokens instead of {r.off_prompt_tokens_computed}.",
        f"{r.prompt_tokens_computed} prompt tokens computed, not {r.off_prompt_tokens_computed}")


def batching_figure(r, source: str) -> Figure:
    """astrai.compare.batching: continuous against static batching."""
    return Figure(
        f"Continuous batching: {r.continuous_steps} steps where static batching takes "
        f"{r.static_steps}",
        f"{r.continuous_tokens_per_step:.2f} vs {r.static_tokens_per_step:.2f} tokens per step; "
        f"{_same(r.outputs_equal)}",
        source, (("continuous", r.continuous_steps), ("static", r.static_steps)),
        "steps for the same requests",
        f"Continuous batching serves the same requests in {r.continuous_steps} steps, "
        f"not {r.static_steps}.", f"{r.continuous_steps} steps, not {r.static_steps}")


def sampling_figure(r, source: str) -> Figure:
    """astrai.compare.sampling: samples sharing a prompt against independent requests."""
    n = len(r.samples)
    return Figure(
        f"Parallel sampling: {n} samples take {r.pages_allocated} pages where {n} separate "
        f"requests take {r.independent_pages_allocated}",
        f"{r.prompt_tokens_computed} prompt tokens computed instead of "
        f"{r.independent_prompt_tokens_computed}; {r.copies} pages copied on write; "
        f"{_same(r.outputs_equal)}",
        source, (("shared", r.pages_allocated), ("separate", r.independent_pages_allocated)),
        "pages allocated",
        f"{n} samples of one prompt share its pages: {r.pages_allocated} pages, where {n} "
        f"separate requests take {r.independent_pages_allocated}.",
        f"{r.pages_allocated} pages, not {r.independent_pages_allocated}")


COMPARISONS = (("memory", memory_figure), ("prefix", prefix_figure),
               ("sampling", sampling_figure), ("batching", batching_figure))


def source_of(module: str, fn, result) -> str:
    """'astrai.compare.X.compare(workload=W)': the call and the workload it ran."""
    workload = getattr(result, "workload", None)
    if workload is None:
        default = inspect.signature(fn).parameters.get("workload")
        workload = default.default if default is not None else None
    if workload is not None and not isinstance(workload, str):
        workload = getattr(workload, "name", workload)
    arg = f"workload={workload!r}" if workload not in (None, inspect.Parameter.empty) else ""
    return f"from astrai.compare.{module}.compare({arg})"


def closing_figures() -> list[Figure]:
    """A Figure per comparison that runs here; missing comparisons are logged and left off."""
    out = []
    for module, figure in COMPARISONS:
        try:
            fn = importlib.import_module(f"astrai.compare.{module}").compare
        except (ImportError, AttributeError) as e:
            log.warning("closing card: astrai.compare.%s not available (%s): left off", module, e)
            continue
        result = fn()
        out.append(figure(result, source_of(module, fn, result)))
    return out


CLOSING = "Every figure is a second real run of the same requests, not a formula."
COMMAND = "make promo"
OUTRO = "To make this video yourself, from real runs, type make promo."
SHORT_OUTRO = "Make it yourself: make promo."


class Bars(VGroup):
    """One figure as two bars growing from zero: this design and the other, to scale."""

    def __init__(self, f: Figure, width: float):
        super().__init__()
        (la, va), (lb, vb) = f.bars
        top = max(va, vb, 1e-9)
        self.figure = f
        self.title = theme.text(f"{f.unit}", theme.FS_BODY, theme.DIM)
        self.bars = VGroup()
        self.labels = VGroup()
        for k, (label, value) in enumerate(((la, va), (lb, vb))):
            w = max(width * value / top, 0.02)
            bar = Rectangle(width=w, height=CARDS.bar_h, stroke_width=0,
                            fill_color=theme.ACCENT if k == 0 else theme.FAINT, fill_opacity=1)
            text = theme.text(f"{label}  {value:g}", theme.FS_BODY, theme.TEXT)
            row = VGroup(bar, text)
            bar.move_to(CARDS.bar_pitch * k * DOWN, aligned_edge=LEFT)
            text.next_to(bar, RIGHT, buff=0.12)
            self.bars.add(bar)
            self.labels.add(text)
            self.add(row)
        self.title.next_to(self.bars, UP, buff=0.12, aligned_edge=LEFT)
        self.add(self.title)

    def grow(self) -> list:
        return [GrowFromEdge(b, LEFT) for b in self.bars] + [FadeIn(self.labels),
                                                             FadeIn(self.title)]


class ClosingCard(Card):
    """The figures of the real comparison runs as bars growing to their values, each with the
    call it came from, ending on the command that makes the video. The explainer tells one
    figure at a time; the teaser grows them all under one line."""

    TITLE = "What the runs measured"
    CHAPTER = "Closing: the figures"

    figures: list[Figure] | None = None  # tests hand figures in; else closing_figures()

    def story(self) -> None:
        figures = self.figures if self.figures is not None else closing_figures()
        self.shown_figures = figures
        for bars, words in self.layout(figures):
            self.shot(None, "", ([*bars.grow(), FadeIn(words)], 1.2), line=bars.figure.spoken,
                      least=1.8)
        self.end()

    def teaser_story(self) -> None:
        """The teaser's last shot: every bar grows at once under one line of the numbers."""
        figures = self.figures if self.figures is not None else closing_figures()
        self.shown_figures = figures
        shown = self.layout(figures)
        line = "Measured on real runs: " + "; ".join(f.short for f in figures) + "."
        self.shot(None, "", ([a for bars, words in shown for a in (*bars.grow(), FadeIn(words))],
                             1.5), line=line if figures else None, least=2.0)
        self.end(SHORT_OUTRO)

    def layout(self, figures: list[Figure]) -> list[tuple[Bars, VGroup]]:
        """The title shown; each figure's bars (left) and headline with its call (right),
        placed top to bottom, not yet shown."""
        head = theme.text(self.TITLE, FS_SUB + 4, theme.ACCENT, bold=True)
        head.to_edge(UP, buff=CARDS.closing_top)
        self.card(head, None, 0.6)
        y = head.get_bottom()[1] - CARDS.closing_gap
        out = []
        for f in figures:
            bars = Bars(f, CARDS.bars.width)
            words = VGroup(paragraph(f.headline, theme.FS_BODY, theme.TEXT, 56),
                           paragraph(f.source, theme.FS_BODY, theme.RAN, 60)
                           ).arrange(DOWN, aligned_edge=LEFT, buff=0.08)
            bars.move_to(CARDS.bars.left_at(y - 0.2), aligned_edge=UP + LEFT)
            words.move_to(CARDS.words.left_at(bars.get_top()[1]), aligned_edge=UP + LEFT)
            y = min(bars.get_bottom()[1], words.get_bottom()[1]) - CARDS.figure_gap
            out.append((bars, words))
        return out

    def end(self, line: str = OUTRO) -> None:
        """The command that makes the video, said and shown."""
        command = theme.text(COMMAND, FS_SUB, theme.ACCENT, bold=True)
        command.to_edge(DOWN, buff=CARDS.command_bottom)
        self.card(command, line, 1.0)
        self.clear_out(0.4)
