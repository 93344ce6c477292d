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
              shows - scenes/anchors.py - and the function that animates it)
  driver.py   `Replay`: builds the kit (header, captions, pool, bits, tables, code panel) and
              plays beats

Each event is applied to the kit at once and a snapshot of what the kit then shows is kept in
`Replay.snapshots` (one per event, in order), so tests compare the screen with the trace after
every event. Every caption (with the detail line under it) is also a subtitle cue lasting its
beat (`StoryScene.say`), and each
step starts a Manim section ("construction", "step 3", "steps 5-40" for a compressed run), so
`--save_sections` cuts one clip per scheduler step: the unit the scheduler works in, long enough
to watch on its own (one clip per beat would give clips of a second).

Using it from a scene (a StoryScene)
------------------------------------
    trace = self.trace_of()
    replay = Replay(self, trace, title="Prefix cache · workload prefix")
    replay.run()                                   # construction, then every beat

A scene adds narrative beats of its own between the trace's beats, either with a hook

    def interlude(spec, replay):                   # runs before each trace beat
        if spec.kind == Share.kind and spec.first:  # a beat named after its event's kind
            replay.narrate("a prefix hit shares pages", "no K/V recomputed",
                           show=[my_card])         # mobjects stay (replay.notes) until hidden
    replay.run(interlude=interlude)

or by driving the beats itself (choose, reorder nothing: skipping a trace beat would leave the
picture behind the trace):

    replay.construct_cache()
    for spec in replay.beats:
        ...                                        # narrate(), self.play(...), chapter(...)
        replay.play_beat(spec)
    replay.narrate("end card", show=[card], hold=3)

`spec.kind`, `spec.main` (the event the beat is about: `replay.events[spec.main]`),
`spec.events`, `spec.first` say what a beat is. The cut (`scene.cut`, or `cut=`) picks the
beats: "full" plays them all; "teaser" plays `plan.teaser(...)` - the first beat of each kind
and every beat that moves pages, the rest applied at once in "skip" beats that say so, with
shorter holds - ending in the same state as the full cut. `keep=` chooses the teaser's beats.
After a replay, `replay.snapshots`, `replay.panels`, `replay.beat_times` (start, kind, main
event, subtitle) and `replay.captions_shown` say what was shown.
"""

from scenes.replay.beats import KINDS, Kind
from scenes.replay.driver import Replay
from scenes.replay.load import load
from scenes.replay.plan import BeatSpec, plan_beats, teaser

__all__ = ["KINDS", "BeatSpec", "Kind", "Replay", "load", "plan_beats", "teaser"]
