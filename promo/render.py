"""Render parts with the manim CLI, in parallel, skipping those already up to date.

Each part renders into its own media directory (build/<quality>/<name>/), because manim keys its
partial-movie directory by scene class: two renders of one class at once (the explainer and the
teaser of a scene, or two chapter cards) would otherwise write the same segment files. A stamp
beside each output holds the hash of every file the part reads and of its command line; a part
whose stamp matches, and whose file still probes to the frame count and duration the stamp
recorded (a part truncated after its stamp was written is caught here, not by the join), is not
rendered again; an unreadable stamp or part is rendered again. Renders run through one render server
(promo/zygote.py) that forks a warm child per part, each running manim's own command line.
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

from astrai.files import check_replaceable, write_text
from promo import PromoError, Refused
from promo.parts import ROOT, Part, digest, shared_deps

QUALITIES = {"l": "480p15", "m": "720p30", "h": "1080p60", "p": "1440p60", "k": "2160p60"}


class RenderError(PromoError):
    """A part's manim render failed; the message ends with the tail of its log."""


class BadSetting(PromoError, ValueError):
    """A build setting out of its range (jobs, the teaser's limit)."""


def check_jobs(jobs: int | None) -> None:
    """None (as many as there are cores) or a whole number of at least 1: fewer renders at a
    time would wait forever for one that never starts."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise BadSetting(f"jobs must be a whole number of at least 1, not {jobs!r}")


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


@dataclass
class Job:
    part: Part
    mp4: Path
    key: str  # digest of what the render reads and its command line
    media_dir: Path
    argv: list[str]  # manim's arguments (after `manim`)

    @property
    def srt(self) -> Path:
        return self.mp4.with_suffix(".srt")

    @property
    def stamp(self) -> Path:
        return self.mp4.with_suffix(".stamp")

    @property
    def log(self) -> Path:
        return self.media_dir / "render.log"

    @property
    def profile(self) -> Path:
        return self.media_dir / "profile.json"

    def env(self) -> dict[str, str]:
        return {**self.part.env, "NARRATION": narration(), "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}

    def up_to_date(self) -> bool:
        """The stamp names this render and the file is still the one it describes: anything
        unreadable (an empty or malformed stamp, a truncated or damaged part) means no."""
        try:
            stamp = _read_stamp(self.stamp)
            if stamp is None or stamp.get("digest") != self.key:
                return False
            from promo.join import probe  # PyAV only when there is a part to check

            got = probe(self.mp4)
        except Exception:  # noqa: BLE001 - whatever fails to read is rendered again
            return False
        return stamp.get("frames") == got.frames and stamp.get("duration") == str(got.duration)

    def start(self) -> None:
        made = (self.mp4, self.srt, self.stamp, self.profile, self.log)
        for path in made:  # only files are written here: a link or folder is someone else's
            check_replaceable(path, Refused)
        for old in made[:4]:  # never keep a stale one
            old.unlink(missing_ok=True)
        self.media_dir.mkdir(parents=True, exist_ok=True)

    def done(self, rc: int, wall: float, cpu: float, profile: bool, log) -> Rendered:
        if rc != 0 or not self.mp4.exists():
            tail = "".join(self.log.read_text().splitlines(keepends=True)[-25:]) \
                if self.log.exists() else ""
            raise RenderError(f"render of {self.part.name} ({self.part.file} {self.part.cls}) "
                              f"failed (exit {rc}); log {self.log}:\n{tail}")
        from promo.join import probe

        got = probe(self.mp4)  # what up_to_date checks the file against next time
        write_text(self.stamp, json.dumps({"digest": self.key, "wall": wall,
                                           "frames": got.frames, "duration": str(got.duration)}),
                   Refused)
        log(f"promo: rendered {self.part.name} in {wall:.1f} s")
        prof = json.loads(self.profile.read_text()) if profile and self.profile.exists() \
            else None
        return Rendered(self.part, self.mp4, self.srt if self.srt.exists() else None, False,
                        wall, cpu, prof)


def narration() -> str:
    """'on' or 'off', as the scenes read NARRATION (scenes.framework.voice.enabled)."""
    from scenes.framework.voice import enabled

    return "on" if enabled() else "off"


def job_of(part: Part, build: Path, quality: str, shared: list[Path], one_stream: bool = True
           ) -> Job:
    media_dir = part_dir(build, quality, part).resolve()
    # no progress bar (only the log reads it) and no check for a newer manim (a request to the
    # package index from every part)
    argv = ["render", f"-q{quality}", "--media_dir", str(media_dir), "--progress_bar", "none",
            "--silent", "-o", part.name, part.file, part.cls]
    # the narration setting changes the part (its sound, its pacing): part of its digest
    how = (["one stream"] if one_stream else []) + [f"narration {narration()}"]
    key = digest(part, [a if a != str(media_dir) else "MEDIA" for a in argv] + how, shared)
    return Job(part, output_of(build, quality, part).resolve(), key, media_dir, argv)


def run_subprocess(job: Job, profile: bool, log) -> Rendered:
    """One render in a fresh interpreter (where fork is not available)."""
    runner = ([sys.executable, str(ROOT / "promo" / "probe.py"), str(job.profile)] if profile
              else [sys.executable, "-m", "manim"])
    job.start()
    t0 = time.perf_counter()
    with open(job.log, "w") as out:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ASTRAI_")}
        proc = subprocess.Popen([*runner, *job.argv], cwd=ROOT, env={**clean, **job.env()},
                                stdout=out, stderr=subprocess.STDOUT)
        # wait4, not wait: it also gives this child's own CPU time, exact under parallel runs
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return job.done(proc.returncode, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime,
                    profile, log)


def start_server(keep: tuple[int, ...] = ()) -> subprocess.Popen | None:
    """The render server (promo/zygote.py), started now so that its imports overlap whatever
    the caller does next; None where there is no fork. `keep`: file descriptors it and its
    renders hold open (the build lock, so renders outliving a killed build keep it)."""
    if not hasattr(os, "fork"):
        return None
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.Popen([sys.executable, "-m", "promo.zygote"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": path}, pass_fds=keep,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def run_zygote(jobs: list[Job], n: int, profile: bool, log, one_stream: bool = True,
               server: subprocess.Popen | None = None) -> dict[str, Rendered]:
    """Every job through one render server (promo/zygote.py), `n` at a time, in list order;
    with `one_stream`, each render writes one x264 stream (promo/stream.py)."""
    server = server or start_server()
    todo, running, done = list(jobs), {}, {}
    try:
        while todo or running:
            while todo and len(running) < n:
                job = todo.pop(0)
                job.start()
                running[job.part.name] = job
                server.stdin.write(json.dumps({
                    "id": job.part.name, "argv": job.argv, "env": job.env(),
                    "log": str(job.log), "profile": str(job.profile) if profile else "",
                    "one_stream": one_stream}) + "\n")
                server.stdin.flush()
            line = server.stdout.readline()
            if not line:
                raise RenderError(f"the render server stopped (exit {server.wait()})")
            report = json.loads(line)
            job = running.pop(report["id"])
            done[job.part.name] = job.done(report["rc"], report["wall"], report["cpu"],
                                           profile, log)
    finally:
        server.stdin.close()
        if running:  # a failure: let the renders still running finish, then stop
            for _ in server.stdout:
                pass
        server.wait()
    return done


def expected_wall(build: Path, quality: str, part: Part) -> float:
    """Last render's wall time (longest first keeps the cores busy to the end); unknown parts
    count as long, scenes before cards."""
    stamp = _read_stamp(output_of(build, quality, part).with_suffix(".stamp"))
    wall = stamp.get("wall") if stamp is not None else None
    if isinstance(wall, (int, float)) and not isinstance(wall, bool):
        return float(wall)
    return 1e6 if part.cls.endswith("Scene") else 1e5


def _read_stamp(path: Path) -> dict | None:
    """A stamp's fields, or None if it is missing, empty or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def render_all(parts: list[Part], build: Path, quality: str = "l", jobs: int | None = None,
               force: bool = False, profile: bool = False, log=print, one_stream: bool = True,
               server: subprocess.Popen | None = None) -> list[Rendered]:
    """Render every part (each once, even if two cuts list it) that is not up to date, longest
    first, `jobs` at a time (default: the cores there are); results in the order of `parts`.
    `server`: a render server from start_server() (else one is started if needed); this call
    shuts it down."""
    try:
        check_jobs(jobs)
    except BadSetting:
        if server:
            server.stdin.close()
            server.wait()
        raise
    n = jobs or os.cpu_count() or 1
    shared = shared_deps()
    unique = list({p.name: p for p in parts}.values())
    todo = [job_of(p, build, quality, shared, one_stream) for p in unique]
    done: dict[str, Rendered] = {}
    for job in todo:
        if not force and not profile and job.up_to_date():
            done[job.part.name] = Rendered(job.part, job.mp4, job.srt if job.srt.exists()
                                           else None, True, 0.0, 0.0)
    todo = sorted((j for j in todo if j.part.name not in done),
                  key=lambda j: -expected_wall(build, quality, j.part))
    if todo and (server or hasattr(os, "fork")):
        done.update(run_zygote(todo, n, profile, log, one_stream, server))
    elif server:
        server.stdin.close()
        server.wait()
    if todo and not (server or hasattr(os, "fork")):
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(run_subprocess, j, profile, log) for j in todo]
            for f in futures:
                r = f.result()
                done[r.part.name] = r
    return [done[p.name] for p in parts]
