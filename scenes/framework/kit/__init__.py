"""Reusable mobjects. Each draws what a trace or a comparison recorded and reports what it
shows (`shown`, read back from its mobjects, for tests); scenes decide when to play them.

For a replay of the pool (each updates itself from a trace `state`, `sync`):
    pool      page frames: owner colour, fill bar from state["filled"], shared marks
    bitmask   free bit and refcount under each frame
    tables    per-task page tables (logical | physical) with arrows into the frames
    code      the real source of a traced function, the lines that ran highlighted
    captions  header (step, phase pills), the caption lines every scene uses, status line
For a slot-level close-up of a captured run: slots (cells, storage), slotview, attention.
For comparisons of two runs: charts (plays spread over a line, step charts), reserve (two ways
of reserving memory as bars), endcard; boards, hashchain and lru for a story's own beats.

plus glyphs (text from a glyph atlas), anim (in-place animations and the Beat), layout (the one
layout system: named regions, the replays' computed from the trace) and plans (the named regions
of every other scene kind and the cards), camera (skips layout-only boxes).
"""
