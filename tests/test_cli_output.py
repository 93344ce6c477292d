"""Every command line's standard output, when it cannot be written or cannot show a character:
a full device, a pipe whose reader has gone (`... | head -1`), an ASCII-only terminal. One line
on stderr and exit 2, never a traceback; a name the encoding cannot show is printed escaped.

astrai.cli.run is checked in-process on streams that fail on purpose; each entry point is then
run for real into a full device, with the cheapest arguments that print (a schema, a --help, a
tiny checkpoint); a pipe nobody reads and an ASCII terminal are tried on two of them.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from astrai import cli
from astrai.cli import run

ROOT = Path(__file__).resolve().parents[1]


class Failing(io.RawIOBase):
    """A raw stream every write to which fails with `err` (ENOSPC: /dev/full, EPIPE: a pipe
    with no reader)."""

    def __init__(self, err: int):
        self.err = err

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        raise OSError(self.err, os.strerror(self.err))


def printing(lines: int = 1):
    def main(argv):
        for i in range(lines):
            print(f"line {i}")
        return 0
    return main


@pytest.mark.parametrize("err,words", [(errno.ENOSPC, "No space left on device"),
                                       (errno.EPIPE, "Broken pipe")])
@pytest.mark.parametrize("lines", [1, 100_000])  # lost at the final flush, or mid-run
def test_output_that_cannot_be_written_is_one_line_and_exit_2(capsys, monkeypatch, err, words,
                                                              lines):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(Failing(err))))
    assert run(printing(lines)) == 2
    assert capsys.readouterr().err == f"error: cannot write to standard output ({words})\n"


def test_a_command_that_catches_the_failure_itself_still_exits_2(capsys, monkeypatch):
    def main(argv):
        try:
            print("x" * 100_000)
        except Exception:
            return 0  # a careless handler: the output is still lost
        return 0

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(Failing(errno.EPIPE))))
    assert run(main) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_help_into_a_full_device_is_one_line(capsys, monkeypatch):
    def main(argv):
        cli.Parser(prog="p").parse_args(["--help"])

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(Failing(errno.ENOSPC))))
    assert run(main) == 2
    assert capsys.readouterr().err.startswith("error: cannot write to standard output")


def test_exit_codes_and_output_pass_through(capsys):
    assert run(printing(3)) == 0
    assert capsys.readouterr().out == "line 0\nline 1\nline 2\n"
    assert run(lambda argv: 7) == 7
    assert run(lambda argv: sys.exit(3)) == 3


def test_ctrl_c_is_one_line_and_130(capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert run(main) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_a_character_the_encoding_cannot_show_is_escaped(capsys, monkeypatch):
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))

    def main(argv):
        print("request caf\u00e9 \u2192 done")
        sys.stdout.flush()
        return 0

    assert run(main) == 0
    assert raw.getvalue() == b"request caf\\xe9 \\u2192 done\n"


def test_usage_errors_are_one_line():
    ap = cli.Parser(prog="p")
    ap.add_argument("--n", type=int)
    err = io.StringIO()
    with pytest.raises(SystemExit) as info:
        sys_stderr, sys.stderr = sys.stderr, err
        try:
            ap.parse_args(["--n", "x"])
        finally:
            sys.stderr = sys_stderr
    assert info.value.code == 2
    assert err.getvalue() == "p: error: argument --n: invalid int value: 'x' (see --help)\n"


# ---- each entry point, for real ----------------------------------------------------------------

def tiny_checkpoint(folder: Path) -> Path:
    from astrai.checkpoint import save_checkpoint
    from astrai.model import ModelConfig, TinyModel

    cfg = ModelConfig(vocab_size=32, n_layers=1, d_model=16, n_heads=2, n_kv_heads=1,
                      head_dim=8, d_ff=16)
    save_checkpoint(TinyModel(cfg), folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("safetensors")
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "mod\u00e8le")


def commands(checkpoint: Path) -> dict[str, list[str]]:
    return {"trace": ["-m", "astrai.trace", "schema"],
            "checkpoint": ["-m", "astrai.checkpoint", str(checkpoint)],
            "promo": ["-m", "promo", "--help"],
            "site": ["-m", "promo.site", "--help"]}


def python(args: list[str], stdout, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("name", ["trace", "checkpoint", "promo", "site"])
def test_every_command_into_a_full_device(checkpoint, name):
    with open("/dev/full", "w") as full:
        out = python(commands(checkpoint)[name], full)
    assert out.returncode == 2
    assert out.stderr == "error: cannot write to standard output (No space left on device)\n"


@pytest.mark.parametrize("name", ["trace", "promo"])
def test_a_command_into_a_pipe_nobody_reads(name):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as `| head -1` after its line
    try:
        out = python(commands(Path("unused"))[name], write)
    finally:
        os.close(write)
    assert out.returncode == 2
    assert out.stderr == "error: cannot write to standard output (Broken pipe)\n"


def test_a_name_an_ascii_terminal_cannot_show(tmp_path):
    from test_bad_input_files import BASE, tomli_w

    data = {**BASE, "request": [{**r, "name": r["name"] + "\u00e9"} for r in BASE["request"]]}
    data["request"][1]["after"] = "a\u00e9"
    workload = tmp_path / "w.toml"
    workload.write_text(tomli_w(data), encoding="utf-8")
    trace = python(["-m", "astrai.trace", str(workload)], subprocess.PIPE,
                   PYTHONIOENCODING="ascii")
    assert trace.returncode == 0, trace.stderr
    assert "a\\xe9" in trace.stdout and "Traceback" not in trace.stderr
