"""Manim scenes that replay recorded runs of the real PagedCache and Scheduler (astrai.trace).

The storyboard's scenes and the promo's cards are the modules here, listed in play order in
`storyboard.py`; what they are written with (StoryScene, the kit, the replay) is `framework/`.
"""
