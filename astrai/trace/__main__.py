"""python -m astrai.trace WORKLOAD [-o FILE]: run a workload and print it step by step."""

from __future__ import annotations

import argparse
import sys

from astrai.errors import AstraiError
from astrai.trace.format import save_trace
from astrai.trace.record import record
from astrai.trace.text import format_trace
from astrai.workload import workload_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m astrai.trace",
        description="Run a workload through the real scheduler and cache; print every event.",
    )
    parser.add_argument("workload", help=f"a name ({', '.join(workload_names())}) or a .toml path")
    parser.add_argument("-o", "--output", help="also save the trace as JSON here")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    parser.add_argument("--device", help="override the workload's device (cpu, cuda)")
    parser.add_argument("--capture", action="store_true",
                        help="also keep slot/gather indices and decode attention (for -o)")
    args = parser.parse_args(argv)
    try:
        trace = record(args.workload, device=args.device, capture=args.capture)
    except AstraiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output:
        save_trace(trace, args.output)
    if not args.quiet:
        for line in format_trace(trace):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
