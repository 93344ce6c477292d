"""The decoding token's attention over the keys a gather read back: the keys in a row, block
by block (one block a page), the query beside them, and the scores, softmax weights and bars the
model computed (a captured decode step's layer-0 numbers), each key's word (the trace's piece)
under its bar. Built here, played by a scene.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from manim import DOWN, FadeIn, FadeOut, GrowFromEdge, Rectangle, RoundedRectangle, VGroup

from scenes.framework import theme
from scenes.framework.capture import Plan
from scenes.framework.kit.slots import CELL_W, Cell
from scenes.framework.kit.slotview import SlotView
from scenes.framework.words import fmt


def attention_picture(view: SlotView, keys: list, key_positions,
                      gather_extra) -> SimpleNamespace:
    """The gathered keys moved into a row, block by block (one block a page), the query
    beside them, and the scores, weights and bars the model computed, not yet shown."""
    p, s = view.plan, view.plan.decode
    a, ps, b, h = s.attention, p.page_size, p.row, p.head
    name, color = s.rows[b], view.palette.color(s.rows[b])
    scores, weights = a["scores"][b][h][0], a["weights"][b][h][0]
    allowed = a["allowed"][b][0]
    total = len(keys)
    cols = len(s.gather["index"]) // len(s.rows)
    pages = s.gather["index"][b * cols:(b + 1) * cols][: -(-total // ps)]
    qpos = s.slots["start_pos"][b]
    # Keys spread out so each has room for its numbers; blocks keep a gap between pages.
    pitch, gap = 0.92, 0.3
    width = total * pitch + (len(pages) - 1) * gap
    x0 = -width / 2 + pitch / 2 + 1.0
    xs = [x0 + j * pitch + (j // ps) * gap for j in range(total)]
    x_left = xs[0] - 1.9
    y_key, y_score, base, tall = 1.95, 1.2, -0.72, 1.45
    moves = [FadeOut(view.storage), FadeOut(gather_extra)]
    moves += [FadeOut(c) for held in view.held.values() for c in held]
    for j, c in enumerate(keys):
        moves.append(c.animate.move_to([xs[j], y_key, 0]))
        moves.append(key_positions[j].animate.move_to([xs[j], y_key + 0.38, 0]))
    blocks = VGroup()
    for i, page in enumerate(pages):
        lo, hi = xs[i * ps], xs[min((i + 1) * ps, total) - 1]
        box = RoundedRectangle(corner_radius=0.06, width=hi - lo + pitch - 0.04,
                               height=0.8, stroke_width=2, stroke_color=theme.FAINT)
        box.move_to([(lo + hi) / 2, y_key + 0.17, 0])
        tag = view.atlas.line(f"page {page}", theme.DIM)
        blocks.add(VGroup(box, tag.move_to([(lo + hi) / 2, y_key - 0.4, 0])))
    q = Cell(view.atlas, view.word(name, qpos, CELL_W), color).move_to([x_left, y_key, 0])
    # The query's word in its tag, which must end short of the first key's block (18 cells).
    tag = f"query: {name}, pos {qpos}"
    q_word = view.word(name, qpos, view.atlas.width(18 - len(f'query: {name} ""')))
    if q_word != str(qpos):
        tag = f'query: {name} "{q_word}"'
    q_tag = view.atlas.line(tag, theme.TEXT)
    q_tag.move_to([x_left, y_key + 0.38, 0])
    head_tag = view.atlas.line(f"layer {a['layer']}, head {h}", theme.ACCENT)
    head_tag.move_to([x_left, y_key - 0.4, 0])
    score_txt = [view.atlas.line(fmt(scores[j]) if allowed[j] else "masked",
                               theme.TEXT if allowed[j] else theme.FAINT)
                 .move_to([xs[j], y_score, 0]) for j in range(total)]
    top = max(weights[:total]) or 1.0
    bars, w_txt = VGroup(), []
    for j in range(total):
        bar = Rectangle(width=pitch * 0.6, height=max(tall * weights[j] / top, 0.01),
                        stroke_width=0, fill_color=color, fill_opacity=0.8)
        bars.add(bar.move_to([xs[j], base, 0], aligned_edge=DOWN))
        w_txt.append(view.atlas.line(fmt(weights[j]), theme.TEXT)
                     .move_to([xs[j], base - 0.22, 0]))
    words = [view.atlas.line(view.word(name, j, pitch - 0.02), theme.TEXT)
             .move_to([xs[j], base - 0.5, 0]) for j in range(total)]
    j_max = int(np.argmax(weights[:total]))
    return SimpleNamespace(
        name=name, total=total, pages=pages, qpos=qpos, kv=h // (a["n_heads"]
                                                                 // a["n_kv_heads"]),
        scores=scores, allowed=allowed, moves=moves, blocks=blocks, q=q,
        enter=[FadeIn(blocks), FadeIn(q), FadeIn(q_tag), FadeIn(head_tag)],
        head_tag=head_tag, q_tag=q_tag, score_txt=score_txt, bars=bars, w_txt=w_txt,
        label_s=view.atlas.line("scores", theme.DIM).move_to([x_left, y_score, 0]),
        label_w=view.atlas.line("weights", theme.DIM).move_to([x_left, base + 0.3, 0]),
        grow=[*[GrowFromEdge(bar, DOWN) for bar in bars], *[FadeIn(t) for t in w_txt],
              *[FadeIn(t) for t in words]], words=words,
        j_max=j_max, top=weights[j_max])



def attention_shown(at: SimpleNamespace, plan: Plan, key_positions) -> dict:
    """What the attention picture shows, read back from its mobjects."""
    a = plan.decode.attention
    return dict(row=at.name, head=plan.head, layer=a["layer"], query=at.qpos,
                blocks=[blk[1].shown() for blk in at.blocks],
                keys=[int(t.shown()) for t in key_positions],
                scores=[t.shown() for t in at.score_txt],
                weights=[t.shown() for t in at.w_txt],
                bars=[bar.height for bar in at.bars], head_tag=at.head_tag.shown(),
                words=[t.shown() for t in at.words], query_tag=at.q_tag.shown())
