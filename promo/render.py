"""Render parts with the manim CLI, in parallel, skipping those already up to date.

Each part renders into its own media directory (build/<quality>/<name>/), because manim keys its
partial-movie directory by scene class: two renders of one class at once (the explainer and the
teaser of a scene, or two chapter cards) would otherwise write the same segment files. A stamp
beside each output holds the hash of every file the part reads and of its command line; a part
whose stamp matches is not rendered again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from promo import PromoError
from promo.parts import ROOT, Part, digest, shared_deps

QUALITIES = {"l": "480p15", "m": "720p30", "h": "1080p60", "p": "1440p60", "k": "2160p60"}


class RenderError(PromoError):
    """A part's manim render failed; the message ends with the tail of its log."""


@dataclass
class Rendered:
    part: Part
    mp4: Path
    srt: Path | None
    skipped: bool  # up to date: not rendered this time
    wall: float  # seconds this render took (0 when skipped)
    cpu: float  # CPU seconds of the render process and its threads
    profile: dict | None = None  # where the time went, when rendered with profile=True


def part_dir(build: Path, quality: str, part: Part) -> Path:
    return build / QUALITIES[quality] / part.name


def output_of(build: Path, quality: str, part: Part) -> Path:
    """Where manim writes the part: <media_dir>/videos/<module stem>/<quality dir>/<name>.mp4."""
    q = QUALITIES[quality]
    return part_dir(build, quality, part) / "videos" / Path(part.file).stem / q / f"{part.name}.mp4"


def command(part: Part, quality: str, media_dir: Path, profile: Path | None = None) -> list[str]:
    runner = ([sys.executable, str(ROOT / "promo" / "probe.py"), str(profile)] if profile
              else [sys.executable, "-m", "manim"])
    return [*runner, "render", f"-q{quality}", "--media_dir", str(media_dir), "-o", part.name,
            part.file, part.cls]


def render_one(part: Part, build: Path, quality: str, shared: list[Path], force: bool = False,
               profile: bool = False, log=print) -> Rendered:
    mp4 = output_of(build, quality, part)
    srt = mp4.with_suffix(".srt")
    stamp = mp4.with_suffix(".stamp")
    media_dir = part_dir(build, quality, part)
    key = digest(part, command(part, quality, Path("MEDIA")), shared)
    if not force and not profile and mp4.exists() and stamp.exists() \
            and json.loads(stamp.read_text()).get("digest") == key:
        return Rendered(part, mp4, srt if srt.exists() else None, True, 0.0, 0.0)
    for old in (mp4, srt, stamp):  # never leave a stale output beside a failed render
        old.unlink(missing_ok=True)
    prof = media_dir / "profile.json" if profile else None
    args = command(part, quality, media_dir.resolve(), prof.resolve() if prof else None)
    env = {**os.environ, **part.env, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    media_dir.mkdir(parents=True, exist_ok=True)
    logfile = media_dir / "render.log"
    t0 = time.perf_counter()
    with open(logfile, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        # wait4, not wait: it also gives this child's own CPU time, exact under parallel runs
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not mp4.exists():
        tail = "".join(logfile.read_text().splitlines(keepends=True)[-25:])
        raise RenderError(f"render of {part.name} ({part.file} {part.cls}) failed "
                          f"(exit {proc.returncode}); log {logfile}:\n{tail}")
    stamp.write_text(json.dumps({"digest": key, "wall": wall}))
    log(f"promo: rendered {part.name} in {wall:.1f} s")
    return Rendered(part, mp4, srt if srt.exists() else None, False, wall,
                    usage.ru_utime + usage.ru_stime,
                    json.loads(prof.read_text()) if prof and prof.exists() else None)


def expected_wall(build: Path, quality: str, part: Part) -> float:
    """Last render's wall time (longest first keeps the cores busy to the end); unknown parts
    count as long, scenes before cards."""
    stamp = output_of(build, quality, part).with_suffix(".stamp")
    if stamp.exists():
        return float(json.loads(stamp.read_text()).get("wall", 0.0))
    return 1e6 if part.cls.endswith("Scene") else 1e5


def render_all(parts: list[Part], build: Path, quality: str = "l", jobs: int | None = None,
               force: bool = False, profile: bool = False, log=print) -> list[Rendered]:
    """Render every part (each once, even if two cuts list it), longest first, `jobs` at a
    time (default: the cores there are); results in the order of `parts`."""
    jobs = jobs or os.cpu_count() or 1
    shared = shared_deps()
    unique = list({p.name: p for p in parts}.values())
    order = sorted(unique, key=lambda p: -expected_wall(build, quality, p))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {p.name: pool.submit(render_one, p, build, quality, shared, force, profile, log)
                   for p in order}
        done = {name: f.result() for name, f in futures.items()}
    return [done[p.name] for p in parts]
