"""The promo: the storyboard's scenes joined into videos a person can post.

Two cuts from the same scenes (scenes/storyboard.py, in order): the explainer (title card, a
chapter card before every scene, the scenes as they render, a closing card with figures from
real runs) and the teaser (the same cards shorter, and every scene's own teaser cut; at most 90
seconds). Each part is one manim CLI render (promo.render), rendered in parallel and only when
out of date; the parts are joined with PyAV (promo.join) with one subtitle file and chapters
(promo.subtitles), then a WebM, a thumbnail and a GIF (promo.extras).

    python -m promo [--cut full|teaser|both] [-q l|h] [--jobs N] [--no-webm]

This package imports no manim itself (it runs the CLI); astrai/ never imports it.
"""


class PromoError(RuntimeError):
    """A promo build failed: which part, and why."""


class Refused(PromoError):
    """A path this build may not read, publish or replace (a symbolic link, a folder it did not
    write): nothing was changed. Exit 2 at the command line, as for any bad input."""
