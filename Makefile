# The two entry points are `make render` (set up, then render every scene) and `make test`.
# Both do all set-up themselves (scripts/setup.sh), system packages included.

PY      := .venv/bin/python
MANIM   := .venv/bin/manim
# file:Scene pairs, rendered in this order
SCENES  := scenes/paged_cache.py:PagedCacheScene
# preview one scene: make preview SCENE=scenes/paged_cache.py:PagedCacheScene WORKLOAD=prefix
SCENE   ?= $(firstword $(SCENES))
WORKLOAD ?=
ENCODERS := --max_files_cached -1

.PHONY: setup test lint bench render render-hq preview stills gif trace clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check astrai scenes tests bench

bench: setup
	$(PY) bench/bench_cache.py
	$(PY) bench/bench_scheduler.py

# All scenes at 480p15 into media/videos/<file>/480p15/<Scene>.mp4
render: setup
	@for s in $(SCENES); do \
	  ASTRAI_WORKLOAD=$(WORKLOAD) $(MANIM) render -ql $${s%%:*} $${s##*:} || exit 1; done

# All scenes at 1080p60
render-hq: setup
	@for s in $(SCENES); do \
	  ASTRAI_WORKLOAD=$(WORKLOAD) $(MANIM) render -qh $${s%%:*} $${s##*:} || exit 1; done

preview: setup
	ASTRAI_WORKLOAD=$(WORKLOAD) $(MANIM) render -ql $(firstword $(subst :, ,$(SCENE))) \
	  $(lastword $(subst :, ,$(SCENE)))

# Last frame of every scene as PNG (media/images/<file>/<Scene>.png)
stills: setup
	@for s in $(SCENES); do \
	  ASTRAI_WORKLOAD=$(WORKLOAD) $(MANIM) render -ql -s $${s%%:*} $${s##*:} || exit 1; done

# The text version of a run: make trace WORKLOAD=seed
trace: setup
	$(PY) -m astrai.trace $(or $(WORKLOAD),seed)

clean:
	rm -rf media/videos media/images media/texts media/Tex media/partial_movie_files
