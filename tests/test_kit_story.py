"""The kit pieces scenes 2 and 5 add: fast-forward captions, the LRU strip, the hash chain, and
a Beat that never animates what came and went within it."""

from __future__ import annotations

import pytest

pytest.importorskip("manim")

from manim import Square, VGroup  # noqa: E402

from astrai.trace.events import Alloc, Free, Write  # noqa: E402
from scenes.framework.kit.anim import Beat  # noqa: E402
from scenes.framework.kit.captions import caption_room  # noqa: E402
from scenes.framework.kit.hashchain import ChainRow, Link, short_key  # noqa: E402
from scenes.framework.kit.layout import edges  # noqa: E402
from scenes.framework.kit.lru import LruStrip  # noqa: E402
from scenes.framework.replay.steered import summarize  # noqa: E402


def test_what_came_and_went_in_a_beat_is_not_animated():
    layer, group = VGroup(), VGroup(Square(), VGroup(Square()))
    beat = Beat()
    beat.appear(layer, group)
    beat.touch(group[0])
    group[0].shift([1, 0, 0])
    beat.replace(group[1], group[1][0], Square())  # a counter inside it changes its text
    beat.vanish(layer, group)
    assert group not in layer.submobjects
    assert beat.animations() == []


def _ev(kind, step, **kw):
    return kind(step=step, phase=kw.pop("phase", "decode"), state={}, **kw)


def test_summaries_say_compressed_and_fit():
    events = [_ev(Alloc, 3, page=p, task="A", logical=p, phase="refill") for p in range(12)]
    events += [_ev(Write, s, rows=[{"task": "A"}, {"task": "B"}], page_table=[])
               for s in range(3, 9)]
    events += [_ev(Free, 9, page=p, task=t, refs=0, phase="cleanup")
               for t in "BCDEFGHIJK" for p in range(3)]
    caption, detail = summarize(events)
    assert caption.startswith("steps 3-9 compressed: A allocates page(s) 0, 1, 2")
    caption_chars, detail_chars = caption_room(*edges())
    assert len(caption) <= caption_chars and len(detail) <= detail_chars
    assert detail.endswith("…")  # more happened than fits: it says so
    caption, detail = summarize(events[12:18])
    assert caption == "steps 3-8 compressed: 6 decode steps (A, B)" and detail == ""


def test_lru_strip_shows_the_order_it_is_given():
    strip = LruStrip(8, 6.0, 0.0)
    for order in ([5], [5, 2, 7], [2, 7], [2, 7, 5, 0], []):
        strip.sync(order, Beat())
        assert strip.shown() == order


def test_chain_row_shows_short_keys_and_notes():
    key = (1 << 60) + 0xBEEF
    assert short_key(key) == "#beef" and short_key(-1) == "#ffff"
    row = ChainRow("A", "#ffffff", [Link("tok 0-15", key, "page 3"),
                                    Link("tok 16-31", 7, "miss", "miss")], 0.0, 0.0)
    assert row.shown() == [("tok 0-15", "#beef", "page 3"), ("tok 16-31", "#0007", "miss")]
