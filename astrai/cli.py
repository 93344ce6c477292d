"""What every command-line entry point does around its main(): the output it cannot write and
the arguments it refuses are one line on stderr, never a traceback.

    if __name__ == "__main__":
        sys.exit(run(main))

- Standard output that cannot be written (a full device such as /dev/full, a pipe whose reader
  has gone as in `python -m astrai.trace traffic | head -1`) stops the command: one line on
  stderr and exit 2. Python would print a traceback, then another from the flush at exit.
- A character the terminal's encoding cannot show (PYTHONIOENCODING=ascii and a name with an
  accent) is printed escaped (\\xe9), not a UnicodeEncodeError.
- Ctrl-C is one line and exit 130.
- `Parser`: argparse whose usage errors are one line (argparse prints the usage first).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

LOST = 2  # the exit status when standard output cannot be written


class StdoutLost(Exception):
    """Standard output cannot be written any more. Not an OSError, so that a command's own
    handling of its files does not mistake it for one of them."""


class _Guarded:
    """sys.stdout, with a failed write or flush raised as StdoutLost (and remembered, in case
    the command catches it)."""

    def __init__(self, stream):
        self._stream = stream
        self.lost: OSError | None = None

    def write(self, text: str) -> int:
        self._check()
        try:
            return self._stream.write(text)
        except OSError as e:
            self._lose(e)

    def flush(self) -> None:
        self._check()
        try:
            self._stream.flush()
        except OSError as e:
            self._lose(e)

    def _check(self) -> None:
        if self.lost is not None:
            raise StdoutLost(reason(self.lost))

    def _lose(self, e: OSError):
        self.lost = e
        raise StdoutLost(reason(e)) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None):
    """main(argv)'s exit status, with standard output guarded as the module says."""
    real = sys.stdout
    if hasattr(real, "reconfigure"):
        real.reconfigure(errors="backslashreplace")
    guard = sys.stdout = _Guarded(real)
    try:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's --help and usage errors end this way
            code = e.code
        guard.flush()  # buffered output fails here, not at exit
    except StdoutLost:
        pass
    except KeyboardInterrupt:
        say("error: interrupted")
        code = 130
    finally:
        sys.stdout = real
    if guard.lost is not None:
        say(f"error: cannot write to standard output ({reason(guard.lost)})")
        silence_stdout()
        return LOST
    return code


def say(line: str) -> None:
    """One line on stderr, if even stderr can be written."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so what is still buffered goes nowhere at exit instead of
    failing again there with a second traceback."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no file descriptor (an in-process caller)
        pass


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: `PROG: error: WHAT (see --help)`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")
