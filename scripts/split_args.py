"""Run a command with the words of an environment variable appended as its arguments.

    python scripts/split_args.py PROMO_ARGS .venv/bin/python -m promo -q l

The Makefile passes PROMO_ARGS and BENCH_ARGS this way: the value is split as a shell would
split words (quotes group, backslashes escape), and nothing in it is ever run by a shell, so
`PROMO_ARGS='--cut teaser; rm -rf x'` hands `--cut`, `teaser;`, `rm`, `-rf`, `x` to the
command, which refuses what it does not know. A value that cannot be split (an unclosed quote)
is one line on stderr and exit 2; the command is then not run.
"""

from __future__ import annotations

import os
import shlex
import sys


def words(name: str, environ=os.environ) -> list[str]:
    """The value of `name` split into arguments (none when it is unset or blank); ValueError
    naming the variable when it cannot be split."""
    try:
        return shlex.split(environ.get(name, ""))
    except ValueError as e:  # shlex: "No closing quotation", "No escaped character"
        raise ValueError(f"{name}: cannot be split into arguments ({e})") from None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isidentifier():
        print("usage: split_args.py VARIABLE COMMAND [ARGUMENT...]", file=sys.stderr)
        return 2
    try:
        command = argv[1:] + words(argv[0])
        os.execvp(command[0], command)  # returns only by raising
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"error: {argv[1]}: cannot be run ({e.strerror or e})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
