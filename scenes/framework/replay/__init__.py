"""The replay: a recorded trace, event by event, turned into beats of animation.

Nothing shown is made up: every page id, bit, refcount, table row, length and count on screen is
read from the trace (`geometry`, event fields, and each event's `state`), and every code panel is
the real source of a function the trace names, with the line that did what the beat shows
marked (never notification code).

Where things live
-----------------
  load.py     which trace: `load(spec)` ($ASTRAI_WORKLOAD: a workload name, a .toml, a .json)
  plan.py     events -> beats (`plan_beats`), and the teaser's selection (`teaser`)
  beats.py    the registry: one entry per beat kind (timing, the engine anchors its panel
              shows - scenes/framework/anchors.py - and the function that animates it)
  driver.py   `Replay`: builds the kit (header, captions, pool, bits, tables, code panel) and
              plays beats

Each event is applied to the kit at once and a snapshot of what the kit then shows is kept in
`Replay.snapshots` (one per event, in order), so tests compare the screen with the trace after
every event. Every caption (with the detail line under it) stays on screen for whoever pauses;
what the narrator says over a beat (a beat kind's own line, `Replay.queue_line`, spoken by a
`StoryScene.shot` around that beat; or the line of the scene's shot the beat plays in) is the
subtitle track. Each step starts a Manim section
("construction", "step 3", "steps 5-40" for a compressed run), so `--save_sections` cuts one
clip per scheduler step: the unit the scheduler works in, long enough to watch on its own.

Using it from a scene (a StoryScene)
------------------------------------
A scene that replays the run as it is (the paged-cache scene):

    self.replay = Replay(self, self.trace_of(), title="Paged KV cache · workload seed")
    self.replay.run()                              # construction, then every beat

A scene that tells a story of its own over the run steers it (steered.py, `StoryReplay`): the
beats it does not keep are fast-forwarded, and its own beats (a scene's shot: a caption, a
detail, the line spoken, with `rp.beat(...)` as its play: the events it applies, a board, a code
panel) run before, after or instead of the beat that applies an event it names:

    rp = self.replay = StoryReplay.steered(self, trace, key_beats)
    rp.hook_after(i, lambda rp, i: self.shot("caption", "detail", rp.beat(),
                                             line="What is said."))
    rp.run()

`spec.kind`, `spec.main` (the event the beat is about: `replay.events[spec.main]`),
`spec.events`, `spec.first` say what a beat is. The cut (`scene.cut`, or `cut=`) picks the
beats: "full" plays them all; "teaser" plays `plan.teaser(...)` - the first beat of each kind
and every beat that moves pages, the rest applied at once in "skip" beats that say so, with
shorter holds - ending in the same state as the full cut. `keep=` chooses the teaser's beats.
After a replay, `replay.snapshots`, `replay.panels`, `replay.beat_times` (start, kind, main
event, subtitle) and `replay.captions_shown` say what was shown.
"""

from scenes.framework.replay.beats import KINDS, Kind
from scenes.framework.replay.driver import Replay
from scenes.framework.replay.load import load
from scenes.framework.replay.plan import BeatSpec, plan_beats, teaser
from scenes.framework.replay.steered import StoryReplay

__all__ = ["KINDS", "BeatSpec", "Kind", "Replay", "StoryReplay", "load", "plan_beats", "teaser"]
