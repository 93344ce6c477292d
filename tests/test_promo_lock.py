"""One build at a time per media folder (promo/lock.py), with real processes: a small holder
that takes the lock, says so, and holds it until told to let go (or is killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promo import lock

ROOT = Path(__file__).resolve().parents[1]

# Takes the lock on argv[1] (waiting as a build does), prints "held" and, with argv[2] == "child",
# starts a child that keeps the lock file open (as the render server does) and prints its pid;
# then holds the lock until a line comes on stdin.
HOLDER = """
import subprocess, sys
from pathlib import Path
from promo import lock
with lock.held(Path(sys.argv[1])) as fd:
    if sys.argv[2:] == ["child"]:
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                               pass_fds=(fd,))
        print("child", kid.pid, flush=True)
    print("held", flush=True)
    sys.stdin.readline()
"""


def holder(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), *args], cwd=ROOT,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def let_go(p: subprocess.Popen) -> str:
    out, err = p.communicate("\n", timeout=60)
    assert p.returncode == 0, err
    return out


def test_a_second_build_waits_for_the_first_naming_its_pid(tmp_path):
    first = holder(tmp_path)
    assert first.stdout.readline() == "held\n"
    second = holder(tmp_path)
    try:
        said = second.stdout.readline()
        assert said == (f"promo: {tmp_path} is being built by pid {first.pid}; "
                        "waiting for it to finish\n")
        time.sleep(0.5)
        assert second.poll() is None  # still waiting: the first holds the folder
        assert (tmp_path / lock.NAME).read_text() == f"{first.pid}\n"
        let_go(first)
        assert second.stdout.readline() == "held\n"  # the first let go: now it builds
        assert (tmp_path / lock.NAME).read_text() == f"{second.pid}\n"
        assert let_go(second) == ""  # a clean release before it: nothing taken over
        assert (tmp_path / lock.NAME).read_text() == ""
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_told_not_to_wait_a_build_refuses_in_one_line_and_writes_nothing(tmp_path):
    from promo.build import build

    first = holder(tmp_path)
    try:
        assert first.stdout.readline() == "held\n"
        with pytest.raises(lock.Busy) as e:
            with lock.held(tmp_path, wait=0):
                pytest.fail("took a held lock")
        assert str(e.value) == f"{tmp_path} is being built by pid {first.pid}"
        with pytest.raises(lock.Busy, match=r"still being built by pid \d+ after 0.3 s"):
            with lock.held(tmp_path, log=lambda *_: None, wait=0.3):
                pytest.fail("took a held lock")
        # the build takes the lock before it writes or starts anything
        with pytest.raises(lock.Busy, match=f"pid {first.pid}"):
            build(("teaser",), out=tmp_path, wait=0, log=lambda *_: None)
        assert sorted(p.name for p in tmp_path.iterdir()) == [lock.NAME]
        assert (tmp_path / lock.NAME).read_text() == f"{first.pid}\n"  # the holder's, as it was
    finally:
        let_go(first)


def test_a_lock_left_by_a_killed_build_is_taken_over_saying_so(tmp_path):
    first = holder(tmp_path)
    assert first.stdout.readline() == "held\n"
    first.send_signal(signal.SIGKILL)
    first.wait()
    said: list[str] = []
    with lock.held(tmp_path, log=said.append, wait=0):
        assert (tmp_path / lock.NAME).read_text() == f"{os.getpid()}\n"
    assert said == [f"promo: taking over the build lock of pid {first.pid}, which ended "
                    "without releasing it (killed mid-build); its finished parts are kept"]


def test_renders_a_killed_build_left_running_keep_the_folder_until_they_end(tmp_path):
    first = holder(tmp_path, "child")
    kid = int(first.stdout.readline().split()[1])
    assert first.stdout.readline() == "held\n"
    first.send_signal(signal.SIGKILL)
    first.wait()
    try:
        with pytest.raises(lock.Busy, match=f"the renders that pid {first.pid} "
                                            r"\(killed\) left running"):
            with lock.held(tmp_path, wait=0):
                pytest.fail("took a lock a child still holds")
    finally:
        os.kill(kid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # the child is gone once the kernel lets go of its open file
        try:
            with lock.held(tmp_path, log=lambda *_: None, wait=0):
                break
        except lock.Busy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_lock_path_that_is_not_a_file_is_refused_by_name(tmp_path, kind):
    path = tmp_path / lock.NAME
    if kind == "directory":
        path.mkdir()
    else:
        (tmp_path / "elsewhere").write_text("a user's file\n")
        path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(lock.LockError, match=f"cannot open the build lock {path}: "):
        with lock.held(tmp_path):
            pytest.fail("used a lock path that is not a plain file")
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_text() == "a user's file\n"
