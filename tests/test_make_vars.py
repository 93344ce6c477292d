"""Make variables are data: WORKLOAD, SCENE, Q and CUT reach the command as one argument (or
one environment value) exactly as typed; PROMO_ARGS and BENCH_ARGS are split into arguments
without a shell. Nothing in a value is ever run.

Each case is a real `make` run with the set-up skipped (`-o setup`) and the interpreter and
manim replaced by a stand-in that writes down what it was given; the proof that nothing ran is
the file the payload would have made, not being there.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

# A stand-in for .venv/bin/python and manim: the argument splitter runs for real (on this
# interpreter), anything else is written down as one JSON line and not run.
STAND_IN = f"""#!{sys.executable}
import json, os, sys
if sys.argv[1:2] == ["scripts/split_args.py"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
with open(os.environ["MAKE_RECORD"], "a", encoding="utf-8") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "workload": os.environ.get("ASTRAI_WORKLOAD"),
                        "cut": os.environ.get("ASTRAI_CUT")}}) + "\\n")
"""


# Run from `make test`, the outer make's flags and the variables it exports would reach the
# make run here: each case starts from none of them.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "WORKLOAD", "CUT",
                          "SCENE", "Q", "PROMO_ARGS", "BENCH_ARGS"}}


def payloads(marker: Path) -> list[str]:
    """Values a shell (or make) would run as code if it ever read them as such."""
    m = shlex.quote(str(marker))
    return [f"x; touch {m}", f"$(touch {m})", f"`touch {m}`", f"x && touch {m} #",
            f"$(shell touch {m})", f"x' ; touch {m}; '", f'x" ; touch {m}; "', f"x\n touch {m}"]


@pytest.fixture
def make(tmp_path):
    stand_in = tmp_path / "stand-in"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    record = tmp_path / "record.jsonl"

    def run(target: str, *, env: dict | None = None, **variables) -> tuple[int, list[dict], str]:
        record.unlink(missing_ok=True)
        argv = ["make", "-s", "-o", "setup", target, f"PY={stand_in}", f"MANIM={stand_in}",
                *(f"{k}={v}" for k, v in variables.items())]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={**CLEAN_ENV, **(env or {}), "MAKE_RECORD": str(record)})
        calls = ([json.loads(line) for line in record.read_text().splitlines()]
                 if record.exists() else [])
        return out.returncode, calls, out.stderr

    return run


def test_workload_is_one_argument_of_trace(make, tmp_path):
    marker = tmp_path / "F"
    for value in payloads(marker):
        rc, calls, err = make("trace", WORKLOAD=value)
        assert rc == 0, err
        assert [c["argv"] for c in calls] == [["-m", "astrai.trace", value]]
        assert not marker.exists(), value
    # from the environment too, and the default when it is unset
    rc, calls, _ = make("trace", env={"WORKLOAD": payloads(marker)[0]})
    assert calls[0]["argv"][-1] == payloads(marker)[0] and not marker.exists()
    rc, calls, _ = make("trace")
    assert calls[0]["argv"] == ["-m", "astrai.trace", "seed"]


def test_scene_workload_and_cut_reach_manim_as_typed(make, tmp_path):
    marker = tmp_path / "F"
    for value in payloads(marker):
        rc, calls, err = make("preview", SCENE=f"{value}:{value}", WORKLOAD=value, CUT=value)
        assert rc == 0, err
        # SCENE is split at its colon only (no value here holds one)
        assert [c["argv"] for c in calls] == [["render", "-ql", value, value]]
        assert calls[0]["workload"] == value and calls[0]["cut"] == value
        assert not marker.exists(), value
    rc, calls, _ = make("preview", SCENE="scenes/prefix.py:PrefixScene")
    assert calls[0]["argv"] == ["render", "-ql", "scenes/prefix.py", "PrefixScene"]
    assert calls[0]["workload"] == "" and calls[0]["cut"] == ""


def test_quality_is_one_argument_of_site(make, tmp_path):
    marker = tmp_path / "F"
    for value in payloads(marker):
        rc, calls, err = make("site", Q=value)
        assert rc == 0, err
        assert [c["argv"] for c in calls] == [["-m", "promo.site", "-q", value]]
        assert not marker.exists(), value
    rc, calls, _ = make("site")
    assert calls[0]["argv"] == ["-m", "promo.site", "-q", "l"]


@pytest.mark.parametrize("target,quality", [("promo", "l"), ("promo-hq", "h")])
def test_promo_args_are_split_without_a_shell(make, tmp_path, target, quality):
    marker = tmp_path / "F"
    for value in [f"--help; touch {shlex.quote(str(marker))}", *payloads(marker)[1:4],
                  "--cut teaser --no-webm", "--cut 'a b'", ""]:
        rc, calls, err = make(target, PROMO_ARGS=value)
        assert rc == 0, err
        assert [c["argv"] for c in calls] == [["-m", "promo", "-q", quality, *shlex.split(value)],
                                              ["-m", "promo.site", "-q", quality]]
        assert not marker.exists(), value


def test_bench_args_are_split_without_a_shell(make, tmp_path):
    marker = tmp_path / "F"
    value = f"--quick; touch {shlex.quote(str(marker))}"
    rc, calls, err = make("bench", BENCH_ARGS=value)
    assert rc == 0, err
    assert [c["argv"] for c in calls] == [["bench/bench_cache.py", *shlex.split(value)],
                                          ["bench/bench_scheduler.py", *shlex.split(value)],
                                          ["bench/bench_model.py", *shlex.split(value)]]
    assert not marker.exists()


def test_args_that_cannot_be_split_stop_with_one_line(make):
    rc, calls, err = make("promo", PROMO_ARGS="--cut 'teaser")
    assert rc != 0 and calls == []  # nothing ran, the page included
    lines = [line for line in err.splitlines() if not line.startswith("make")]
    assert lines == ["error: PROMO_ARGS: cannot be split into arguments (No closing quotation)"]
