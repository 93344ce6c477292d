"""A captured run's two steps drawn slot by slot (see scenes.framework.capture): the
tokens of a step as cells in rows, the flat slot under each, its page table, the storage they
land in, and copies read back in gather order. Each piece is built here and returned with its
animations; a scene decides when to play them. `*_shown` read back what a piece shows (from
the mobjects, for tests).
"""

from __future__ import annotations

from types import SimpleNamespace

from manim import DOWN, LEFT, FadeIn, LaggedStart, Line, Rectangle, VGroup

from astrai.trace import Trace
from astrai.trace.events import Alloc, Free
from scenes.framework import theme
from scenes.framework.capture import MAX_ROWS, Plan, Step
from scenes.framework.kit.glyphs import Atlas
from scenes.framework.kit.pieces import fitted, sequences
from scenes.framework.kit.slots import CELL_W, FRAME_PAD, PITCH, Cell, Storage
from scenes.framework.words import dims

# How far a repeated write's card sits up and right of the one below: within the page frame's
# padding (FRAME_PAD each side, less its stroke), so the frame and the label above stay clear.
STACK_STEP, STACK_ROOM = 0.045, FRAME_PAD - 0.025


class SlotView:
    """The slot-level picture of `plan` (a captured run): storage, and the cells each slot
    holds (`held`: slot -> cells drawn there, oldest first)."""

    def __init__(self, plan: Plan, trace: Trace, palette: theme.Palette, atlas: Atlas):
        self.plan, self.trace, self.palette, self.atlas = plan, trace, palette, atlas
        self.words = sequences(trace.events)  # the trace's pieces, by task and position
        self.storage = Storage(plan.null, plan.page_size, -0.5, atlas)
        self.held: dict[int, list[Cell]] = {}
        self.grid_y = [2.1 - 0.8 * b for b in range(MAX_ROWS)]
        self.grid_x = -5.45

    def word(self, name: str, pos: int, width: float) -> str:
        """The token at `pos` of `name`, fitted to `width` (its position if the run carried no
        text)."""
        seq = self.words.get(name)
        if seq is None or pos >= len(seq):
            return str(pos)
        return fitted(seq[pos], int(width / self.atlas.advance))

    def row_names(self, rows: list[str]) -> VGroup:
        """Each row's request name, in its colour, left of its row."""
        return VGroup(*[self.atlas.line(n, self.palette.color(n)).move_to(
            [self.grid_x - 0.55, self.grid_y[b], 0]) for b, n in enumerate(rows)])

    def ring(self, cell: Cell) -> Rectangle:
        """One token's cell and the slot number under it, ringed."""
        return Rectangle(width=CELL_W + 0.14, height=0.86, stroke_color=theme.ACCENT,
                         stroke_width=3).move_to(cell.get_center() + DOWN * 0.18)

    def fence(self, cells: list[Cell]) -> Rectangle:
        """A run of cells (padding) and their slot numbers, fenced in red."""
        return Rectangle(width=PITCH * len(cells) + 0.08, height=0.9, stroke_color=theme.BAD,
                         stroke_width=2.5).move_to(VGroup(*cells).get_center() + DOWN * 0.18)

    def owners(self, state: dict) -> list[tuple]:
        """(frame, colour) per page from the state's page tables; labels set at once."""
        owners = {page: name for name, pages in state["page_tables"].items() for page in pages}
        out = []
        for page, label in self.storage.labels.items():
            if page == self.plan.null:
                label.set([(f"null page {page}", theme.DIM)])
                continue
            who = owners.get(page)
            color = self.palette.color(who) if who else theme.FREE
            label.set([(f"page {page} ", theme.DIM), (who or "free", color)])
            out.append((self.storage.frames[page], color))
        return out

    def grid(self, s: Step):
        """The step's tokens as cells, row by row (padding grey), row names at the left."""
        n = s.slots["n_tokens"]
        lengths = s.slots["lengths"] or [n] * len(s.rows)
        cells, names = [], VGroup()
        for b, name in enumerate(s.rows):
            color = self.palette.color(name)
            names.add(self.atlas.line(name, color).move_to([self.grid_x - 0.55, self.grid_y[b], 0]))
            row = []
            for t in range(n):
                pos, pad = s.slots["start_pos"][b] + t, t >= lengths[b]
                cell = Cell(self.atlas, str(pos) if pad else self.word(name, pos, CELL_W),
                            color, pad=pad)
                cell.owner, cell.pos = name, s.slots["start_pos"][b] + t
                row.append(cell.move_to([self.grid_x + t * PITCH, self.grid_y[b], 0]))
            cells.append(row)
        return names, cells, VGroup(*[c for row in cells for c in row]), lengths

    def slot_labels(self, s: Step, cells: list[list[Cell]]) -> VGroup:
        """Under each token, the flat slot the real slot_index call gave it (null page red)."""
        n = s.slots["n_tokens"]
        out = VGroup()
        for b, row in enumerate(cells):
            for t, cell in enumerate(row):
                slot = s.slots["slots"][b * n + t]
                null = slot // self.plan.page_size == self.plan.null
                lab = self.atlas.line(str(slot), theme.BAD if null else theme.TEXT)
                cell.slot, cell.slot_label = slot, lab.move_to(cell.get_center() + DOWN * 0.36)
                out.add(lab)
        return out

    def table(self, s: Step) -> VGroup:
        """page_table rows as the call got them (-1 in red), with start_pos and lengths."""
        x, ys = self.grid_x + 5.2, self.grid_y
        head = self.atlas.line("page_table     start_pos  lengths", theme.DIM)
        out = VGroup(head.move_to([x, ys[0] + 0.42, 0], aligned_edge=LEFT))
        lengths = s.slots["lengths"] or [s.slots["n_tokens"]] * len(s.rows)
        for b, row in enumerate(s.slots["page_table"]):
            segs = [("[", theme.DIM)]
            for i, page in enumerate(row):
                segs.append((f"{page:>2}", theme.BAD if page < 0 else theme.TEXT))
                segs.append((", " if i < len(row) - 1 else "]", theme.DIM))
            used = sum(len(t) for t, _ in segs)
            segs.append((" " * max(15 - used, 1) + f"{s.slots['start_pos'][b]:>9}", theme.TEXT))
            segs.append((f"{lengths[b]:>9}", theme.TEXT))
            out.add(self.atlas.line(segs).move_to([x, ys[b], 0], aligned_edge=LEFT))
        return out

    def land(self, cells: list[Cell]) -> tuple[list, list[Cell]]:
        """Each cell onto its slot: (cell, target) moves, and the cells a real write replaces.
        Cells sharing a slot (padding in the null page) stack a little so each shows, inside
        the page's frame: a card over the frame's edge crowds the page's label above it."""
        moves, replaced = [], []
        for cell in cells:
            held = self.held.setdefault(cell.slot, [])
            if not cell.pad:
                replaced += held
                held.clear()
            # a second write to one slot shows as a card behind, offset up to STACK_ROOM
            lift = min(STACK_STEP * len(held), STACK_ROOM)
            target = [self.storage.x(cell.slot) + lift, self.storage.y + lift, 0]
            held.append(cell)
            moves.append((cell, target))
        return moves, replaced

    def landed(self, cells: list[Cell]) -> list[dict]:
        """Where each cell sits now, read from its position: the slot under it, and whether
        that slot is in the null page."""
        out = []
        for c in cells:
            slot = self.storage.slot_at(c.get_center()[0])
            out.append({"row": c.owner, "pos": c.pos, "pad": c.pad, "slot": slot,
                        "null": slot // self.plan.page_size == self.plan.null})
        return out

    def heading(self, s: Step):
        line = self.atlas.line(f"step {s.step}, {s.phase} · k, v {dims(s.write['k_shape'])}",
                             theme.DIM)
        return line.move_to([self.grid_x - 0.75, self.grid_y[0] + 0.42, 0], aligned_edge=LEFT)

    # ---- write -----------------------------------------------------------------------------

    def prefill(self) -> SimpleNamespace:
        """The prefill step drawn, nothing added yet: page frames in their owners' colours,
        its tokens as cells (padding grey), the slot under each, its page table."""
        s = self.plan.prefill
        n = s.slots["n_tokens"]
        for frame, color in self.owners(self.trace.events[s.write_event].state):
            frame.set_stroke(color)
        names, cells, flat, lengths = self.grid(s)
        return SimpleNamespace(
            step=s, cells=cells, flat=flat, labels=self.slot_labels(s, cells),
            static=VGroup(names, self.heading(s), self.table(s)), lengths=lengths,
            padded=[b for b in range(len(s.rows)) if lengths[b] < n],
            real=[c for row in cells for c in row if not c.pad],
            pads=[c for row in cells for c in row if c.pad])

    def slots_shown(self, pre: SimpleNamespace) -> dict:
        """The prefill's rows, the slot under each token and which are padding, read back."""
        rows = pre.step.rows
        return dict(rows=list(rows),
                    slots={rows[b]: [int(c.slot_label.shown()) for c in row]
                           for b, row in enumerate(pre.cells)},
                    pad={rows[b]: [c.pad for c in row] for b, row in enumerate(pre.cells)})

    def gathered(self, s: Step, rows_shown: list[int]):
        """Copies of each shown row's pages, in the order the captured index read them, and
        where each goes: (copies by row, page tags, moves)."""
        ps, null = self.plan.page_size, self.plan.null
        index = s.gather["index"]
        cols = len(index) // len(s.rows)
        by_row, tags, moves = {}, VGroup(), []
        for k, b in enumerate(rows_shown):
            y, row = self.grid_y[k], []
            for c in range(cols):
                page = index[b * cols + c]
                x0 = self.grid_x + c * (ps * PITCH + 0.16)
                tag = self.atlas.line("null" if page == null else f"page {page}",
                                    theme.BAD if page == null else theme.DIM)
                tags.add(tag.move_to([x0 + (ps - 1) * PITCH / 2, y - 0.36, 0]))
                for i in range(ps):
                    slot = page * ps + i
                    held = self.held.get(slot, [])
                    if held:
                        cell = held[-1].copy()
                    else:  # never written: an empty slot
                        cell = Cell(self.atlas, "", theme.FAINT, pad=True)
                        cell.box.set_fill(theme.BG, opacity=1)
                        cell.move_to([self.storage.x(slot), self.storage.y, 0])
                    cell.src = slot
                    moves.append((cell, [x0 + i * PITCH, y, 0]))
                    row.append(cell)
            by_row[b] = row
        return by_row, tags, moves

    def between(self) -> SimpleNamespace:
        """The page events between the two steps: frames recoloured for their new owners
        (labels set at once), and the cells of freed pages, which go stale."""
        p = self.plan
        state = self.trace.events[p.decode.write_event].state
        frees = [ev for ev in p.between if isinstance(ev, Free) and ev.refs == 0]
        return SimpleNamespace(
            state=state, frees=frees,
            allocs=[ev for ev in p.between if isinstance(ev, Alloc)],
            frames=self.owners(state),
            stale=[c for ev in frees for i in range(p.page_size)
                   for c in self.held.get(ev.page * p.page_size + i, [])])

    def decode_write(self) -> SimpleNamespace:
        """The decode step's tokens drawn (one a row) with their slots, and where each lands:
        the cells it replaces are the ones a real write overwrites."""
        p, s = self.plan, self.plan.decode
        names, cells, flat, _ = self.grid(s)
        labels = self.slot_labels(s, cells)
        cells_flat = [c for row in cells for c in row]
        moves, replaced = self.land(sorted(cells_flat, key=lambda c: c.pad))
        return SimpleNamespace(
            step=s, cells=cells, flat=flat, labels=labels, cells_flat=cells_flat,
            static=VGroup(names, self.heading(s), self.table(s)), moves=moves,
            replaced=replaced, cell=cells[p.row][0], over=[c for c in replaced if not c.pad])

    def decode_write_shown(self, dw: SimpleNamespace) -> dict:
        """The decode tokens' slots and where each cell sits now, read back."""
        rows = dw.step.rows
        return dict(slots={rows[b]: [int(c.slot_label.shown()) for c in row]
                           for b, row in enumerate(dw.cells)},
                    landed=self.landed(dw.cells_flat))

    def decode_gather(self) -> SimpleNamespace:
        """The decode row's pages read back in the captured index's order (copies flying to a
        row), each key's position above it, and the cut at total_len (its animations)."""
        p, s = self.plan, self.plan.decode
        g, b = s.gather, p.row
        cols = len(g["index"]) // len(s.rows)
        by_row, tags, moves = self.gathered(s, [b])
        mine = by_row[b]
        y = self.grid_y[0]
        name = s.rows[b]
        tag = self.atlas.line(name, self.palette.color(name)).move_to([self.grid_x - 0.55, y, 0])
        pages = g["index"][b * cols:(b + 1) * cols]
        positions = VGroup(*[self.atlas.line(str(j), theme.DIM).move_to([t[0], y + 0.38, 0])
                             for j, (_, t) in enumerate(moves)])
        total = g["total_len"]
        cut = mine[total:]
        extra = VGroup(tag, tags, *cut, *positions[total:])
        trim = []
        if cut:
            x = moves[total - 1][1][0] + PITCH / 2
            line = Line([x, y + 0.55, 0], [x, y - 0.25, 0], color=theme.BAD, stroke_width=3)
            mark = self.atlas.line(f"[:, :{total}]", theme.BAD).move_to([x + 0.1, y - 0.75, 0],
                                                                     aligned_edge=LEFT)
            extra.add(line, mark)
            trim = [FadeIn(line), FadeIn(mark), *[c.animate.set_opacity(0.12) for c in cut],
                    *[t.animate.set_opacity(0.25) for t in positions[total:]]]
        stale = sum(c.stale for c in cut)
        empty = sum(not c.label.shown().strip() for c in cut)
        why = ([f"{stale} stale from a freed page"] if stale else []) + \
            ([f"{empty} never written"] if empty else [])
        return SimpleNamespace(
            step=s, name=name, pages=pages, order=", ".join(map(str, pages)), total=total,
            mine=mine, kept=mine[:total], cut=cut, tags=tags, positions=positions, extra=extra,
            why=why, reads=[FadeIn(tag), FadeIn(tags)], trim=trim,
            fly=[LaggedStart(*[c.animate.move_to(t) for c, t in moves], lag_ratio=0.05),
                 FadeIn(positions)])

    def gather_shown(self, g: SimpleNamespace) -> dict:
        """The decode row's gather: the page tags, positions and source slots, read back."""
        return dict(row=g.name, pages=[t.shown() for t in g.tags],
                    positions=[int(t.shown()) for t in g.positions],
                    sources=[c.src for c in g.mine], kept=len(g.kept), cut=[c.src for c in g.cut])
