"""A render server: imports manim, torch and the scene kit once (and builds the glyph atlases),
then forks one child per render, which runs manim's own command line. Every part thus starts
warm instead of paying ~2 s of imports (measured: manim 0.6 s + torch 1.0 s of CPU, more wall
on a busy machine); with a title, a closing and a chapter card per scene that is most of what
a card costs.

Protocol (one JSON object a line): the driver writes {"id", "argv", "env", "log", "profile",
"one_stream"} (the last: write through promo/stream.py)
to stdin; the server forks and, when a child ends, writes {"id", "rc", "cpu", "wall"} to stdout.
The server runs no torch ops and starts no threads before forking, so children start clean.
"""

from __future__ import annotations

import gc
import json
import os
import select
import sys
import time


def preload() -> None:
    import manim  # noqa: F401
    import manim.__main__  # noqa: F401
    import torch  # noqa: F401

    import scenes.framework.story  # noqa: F401  (the scene kit, theme and the trace package)

    try:
        import scenes.framework.replay  # noqa: F401
    except ImportError:  # pragma: no cover - a checkout without the replay driver
        pass
    # The glyph atlases every scene composes its text from (Pango renders each font size's
    # characters once, ~0.2 s a size): made here once instead of in every part.
    from scenes.framework import theme
    from scenes.framework.kit.glyphs import Atlas

    for size in sorted({theme.FS_MIN, theme.FS_BODY, theme.FS_CODE, theme.FS_CAPTION}):
        Atlas.get(size)


def child(job: dict) -> None:
    """In the forked child: run `manim <argv>` with the job's env and log; never returns."""
    code = 1
    try:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        for name in [k for k in os.environ if k.startswith("ASTRAI_")]:
            del os.environ[name]  # a part renders what its own env says, not the caller's
        os.environ.update(job["env"])
        sys.argv = ["manim", *job["argv"]]
        if job.get("profile"):
            from promo import probe

            probe.install()
        if job.get("one_stream"):
            from promo import stream

            stream.install()
        from manim.__main__ import main

        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if job.get("profile"):
            totals = dict(probe.TOTALS)
            if job.get("one_stream"):
                totals.update(stream.TOTALS)
            with open(job["profile"], "w") as f:
                json.dump(totals, f)
    except BaseException:  # noqa: BLE001 - reported through the log and the exit code
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    preload()
    # What the server holds is never freed: out of the collector's sight, a child's collections
    # do not walk it (nor touch, and so copy, its pages)
    gc.freeze()
    running: dict[int, tuple[str, float]] = {}
    stdin = sys.stdin.fileno()
    buf = b""
    open_ = True
    while open_ or running:
        if open_:
            ready, _, _ = select.select([stdin], [], [], 0.05)
            if ready:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    open_ = False
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    job = json.loads(line)
                    pid = os.fork()
                    if pid == 0:
                        child(job)
                    running[pid] = (job["id"], time.perf_counter())
        else:
            time.sleep(0.05)
        while running:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid not in running:
                continue
            job_id, t0 = running.pop(pid)
            report = {"id": job_id, "rc": os.waitstatus_to_exitcode(status),
                      "cpu": usage.ru_utime + usage.ru_stime, "wall": time.perf_counter() - t0}
            sys.stdout.write(json.dumps(report) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    serve()
