"""What every scene is written with; the scenes themselves sit one folder up.

    story.py    StoryScene: the one timeline (`shot`), cuts, subtitles, chapters
    voice.py    the narrator (Piper, cached by hash); cues.py the subtitle cues and their limits
    theme.py    colours, font sizes, text; limits.py what a scene can draw
    anchors.py  engine lines the code panels mark, named by meaning
    words.py    how shapes, floats and lists read on screen and when spoken
    capture.py  a run recorded with capture=True as the story of one prefill and one decode
                step (`plan_capture`), for a scene that shows slots, not pages
    kit/        mobjects that draw a trace's state (pool, bits, tables, code, captions, charts;
                slots, slotview and attention for the slot-level close-up)
    svgparse.py manim's parse of a text's SVG, one process at a time (it shares a file)
    replay/     a recorded run as an object a scene uses: `Replay`, and `StoryReplay`, which a
                story steers (its own beats around the trace's)

kit/ never imports replay/; replay/ builds from kit/.
"""

from scenes.framework import svgparse  # noqa: E402,F401  (manim's SVG parse, one process at a time)
