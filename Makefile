# The two entry points are `make render` (set up, then render every scene) and `make test`.
# Both do all set-up themselves (scripts/setup.sh), system packages included.

PY      := .venv/bin/python
MANIM   := .venv/bin/manim
# file:Scene pairs in storyboard order (scenes/storyboard.py); a listed scene with no file
# stops the render (scripts/scenes.py says which)
SCENES  = $(shell python3 scripts/scenes.py)
# preview one scene: make preview SCENE=scenes/paged_cache.py:PagedCacheScene WORKLOAD=prefix
SCENE   ?= scenes/paged_cache.py:PagedCacheScene
# WORKLOAD: replay another workload (the output name then says which); CUT=teaser: the short cut
WORKLOAD ?=
CUT     ?=
# The variables a user sets are data, never code: each is taken as typed ($(value): not even
# make expands it), handed to the recipes in the environment, and read there as "$$NAME", one
# argument; PROMO_ARGS and BENCH_ARGS are split into arguments by scripts/split_args.py, without
# a shell. So WORKLOAD='x; rm -rf y' names a workload called that, which is refused.
USER_VARS := WORKLOAD CUT SCENE Q PROMO_ARGS BENCH_ARGS
$(foreach v,$(USER_VARS),$(eval override $(v) := $$(value $(v))))
export $(USER_VARS)
SPLIT   = $(PY) scripts/split_args.py
RUN     = ASTRAI_WORKLOAD="$$WORKLOAD" ASTRAI_CUT="$$CUT" $(MANIM) render
VIDEO   = media/videos/paged_cache/480p15/PagedCacheScene.mp4

.PHONY: setup setup-test test lint bench bench-render bench-render-hq render render-hq promo \
	promo-hq site preview stills gif sheet trace clean

setup:
	@bash scripts/setup.sh

# the tests also need the headless Chromium (and its driver) the promo page is tested in
setup-test:
	@bash scripts/setup.sh --browser

test: setup-test
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check astrai scenes promo tests bench scripts

# Cache, scheduler and real-model benchmarks; each ends with its targets, PASS/FAIL, every one
# a ratio of two things timed side by side (docs/engine.md: Hot paths). BENCH_ARGS=--strict: exit 1 if
# a target fails (all still run); BENCH_ARGS=--quick: smaller sizes, fewer repeats.
bench: setup
	@$(SPLIT) BENCH_ARGS $(PY) bench/bench_cache.py; cache=$$?; \
	  $(SPLIT) BENCH_ARGS $(PY) bench/bench_scheduler.py; sched=$$?; \
	  $(SPLIT) BENCH_ARGS $(PY) bench/bench_model.py; exit $$((cache | sched | $$?))

# The promo, both cuts (explainer and <= 90 s teaser), into media/promo/: mp4, .srt, chapters
# (.chapters.vtt and in the mp4), WebM, thumbnail PNG, and teaser.gif. Parts already up to date
# are not rendered again; PROMO_ARGS passes more (e.g. --cut teaser, --no-webm, --force).
# Then the promo page (media/site/), which needs both cuts and their WebMs.
promo: setup
	$(SPLIT) PROMO_ARGS $(PY) -m promo -q l
	$(PY) -m promo.site -q l

promo-hq: setup
	$(SPLIT) PROMO_ARGS $(PY) -m promo -q h
	$(PY) -m promo.site -q h

# The promo page alone, from what `make promo` wrote: media/site/index.html with the cuts, scene
# clips, stills and tracks beside it. A missing or stale cut, track or scene render stops it,
# named. Q=h: from the 1080p60 promo.
site: setup
	$(PY) -m promo.site -q "$${Q:-l}"

# Render speed of the explainer, part by part, against the encoder floor (480p15 / 1080p60)
bench-render: setup
	$(PY) bench/bench_render.py -q l

bench-render-hq: setup
	$(PY) bench/bench_render.py -q h

# Every storyboard scene at 480p15 into media/videos/<file>/480p15/<Scene>.mp4, each with its
# subtitles (<Scene>.srt) beside it and one clip per scheduler step under sections/
render: setup
	@python3 scripts/scenes.py >/dev/null  # fails, naming it, if a scene has no file
	@for s in $(SCENES); do \
	  $(RUN) -ql --save_sections $${s%%:*} $${s##*:} || exit 1; done

# Every storyboard scene at 1080p60 (media/videos/<file>/1080p60/)
render-hq: setup
	@python3 scripts/scenes.py >/dev/null  # fails, naming it, if a scene has no file
	@for s in $(SCENES); do \
	  $(RUN) -qh --save_sections $${s%%:*} $${s##*:} || exit 1; done

# One scene at 480p15; with WORKLOAD=prefix it renders to <Scene>_prefix.mp4, next to the seed's
preview: setup
	$(RUN) -ql "$${SCENE%%:*}" "$${SCENE##*:}"

# Last frame of every scene as PNG (media/images/<file>/<Scene>.png)
stills: setup
	@python3 scripts/scenes.py >/dev/null  # fails, naming it, if a scene has no file
	@for s in $(SCENES); do \
	  $(RUN) -ql -s $${s%%:*} $${s##*:} || exit 1; done

# A short GIF of the seed scene for the README (media/preview.gif), from the 480p render
gif: render
	$(PY) scripts/frames.py $(VIDEO) --gif media/preview.gif --start 6 --end 30 --fps 4

# A contact sheet of 8 frames spread over the video, to look at a render quickly
sheet: setup
	$(PY) scripts/frames.py $(VIDEO) --grid media/sheet.png --n 8

# The text version of a run: make trace WORKLOAD=seed
trace: setup
	$(PY) -m astrai.trace "$${WORKLOAD:-seed}"

clean:
	rm -rf media/videos media/images media/texts media/Tex media/partial_movie_files media/promo/build \
	  media/promo/bench
	if [ -x $(PY) ]; then $(PY) -m promo.site --clean; fi  # the page: only what it wrote
