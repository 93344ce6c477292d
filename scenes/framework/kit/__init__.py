"""Reusable mobjects for trace replays. Each updates itself from a trace `state` (`sync`) and
reports what it shows (`shown`, read back from its mobjects, for tests):

    pool      page frames: owner colour, fill bar from state["filled"], shared marks
    bitmask   free bit and refcount under each frame
    tables    per-task page tables (logical | physical) with arrows into the frames
    code      the real source of a traced function, the lines that ran highlighted
    captions  header (step, phase pills), caption lines, status (mask, LRU, queue)

plus glyphs (text from a glyph atlas), anim (in-place animations and the Beat), layout,
camera (skips layout-only boxes).
"""
