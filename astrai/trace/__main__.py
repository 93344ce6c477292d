"""python -m astrai.trace WORKLOAD [-o FILE]: run a workload and print it step by step.
python -m astrai.trace verify FILE: run a saved trace's workload again and compare.
python -m astrai.trace schema: print the trace file's JSON Schema (astrai.trace.events).

Every refusal is one line `error: ...` and exit 2 (standard output that cannot be written
too: astrai.cli); Ctrl-C is one line and exit 130, and leaves no partial or temporary file.
"""

from __future__ import annotations

import json
import sys
import time

from astrai.cli import Parser, run
from astrai.errors import AstraiError, OutputError
from astrai.files import Output
from astrai.trace.events import json_schema
from astrai.trace.format import dumps, load_trace
from astrai.trace.record import record, steps_of, workload_of
from astrai.trace.text import format_trace
from astrai.workload import workload_names


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["verify"]:
            return _verify(argv[1:])
        if argv[:1] == ["schema"]:
            return _schema(argv[1:])
        return _run(argv)
    except KeyboardInterrupt:
        _progress_done()
        print("error: interrupted", file=sys.stderr)
        return 130


def _run(argv: list[str]) -> int:
    parser = Parser(
        prog="python -m astrai.trace",
        description="Run a workload through the real scheduler and cache; print every event. "
                    "(python -m astrai.trace verify FILE: check a saved trace against the "
                    "engine; python -m astrai.trace schema: the trace file's JSON Schema.)",
    )
    parser.add_argument("workload", help=f"a name ({', '.join(workload_names())}) or a .toml path")
    parser.add_argument("-o", "--output", help="also save the trace as JSON here")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    parser.add_argument("--device", help="override the workload's device (cpu, cuda)")
    parser.add_argument("--capture", action="store_true",
                        help="also keep slot/gather indices and decode attention (for -o)")
    args = parser.parse_args(argv)
    output = None
    try:
        # Checked before the run, not after it (the file itself is made only at the end).
        output = Output(args.output, OutputError) if args.output is not None else None
        trace = record(args.workload, device=args.device, capture=args.capture,
                       progress=_Progress())
        _progress_done()
        if output is not None:
            output.write(dumps(trace))
    except AstraiError as e:
        _progress_done()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    if not args.quiet:
        for line in format_trace(trace):
            print(line)
    return 0


def _verify(argv: list[str]) -> int:
    parser = Parser(
        prog="python -m astrai.trace verify",
        description="Run a saved trace's workload again (at most as many steps as the trace "
                    "holds) and say whether its events are exactly what the engine does today. "
                    "Exit 0: they are; 1: they differ; 2: the file is refused.",
    )
    parser.add_argument("trace", help="a trace .json saved with -o")
    args = parser.parse_args(argv)
    try:
        trace = load_trace(args.trace)
        wl = workload_of(trace, "verify")
        lines = any(ev.code or ev.returned for ev in trace.events)
        try:
            again = record(wl, lines=lines, capture=bool(trace.captures),
                           max_steps=steps_of(trace), progress=_Progress())
        except AstraiError as e:
            _progress_done()
            print(f"{_safe(args.trace)}: differs: today's engine cannot replay it "
                  f"({_one_line(e)})")
            return 1
        _progress_done()
    except AstraiError as e:
        _progress_done()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    difference = differs(trace.to_json(), json.loads(dumps(again)))
    if difference:
        print(f"{_safe(args.trace)}: differs: {difference}")
        return 1
    print(f"{_safe(args.trace)}: the same {len(trace.events)} events, outputs and captures as "
          "the engine gives today")
    return 0


def _schema(argv: list[str]) -> int:
    Parser(
        prog="python -m astrai.trace schema",
        description="Print the JSON Schema of a trace file, derived from the event classes.",
    ).parse_args(argv)
    print(json.dumps(json_schema(), indent=1))
    return 0


def differs(saved: dict, fresh: dict) -> str | None:
    """Where a saved trace and a fresh run of its workload part ways (None: nowhere)."""
    if saved.get("geometry") != fresh.get("geometry"):
        return "geometry is not the same"
    old, new = saved["events"], fresh["events"]
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            return (f"events[{i}] (step {a.get('step')}, {a.get('kind')}) is not what the "
                    f"engine does (step {b.get('step')}, {b.get('kind')})")
    if len(old) != len(new):
        return f"the trace holds {len(old)} events, the engine gives {len(new)}"
    if saved.get("outputs") != fresh.get("outputs"):
        return "outputs are not the same"
    if saved.get("captures", []) != fresh.get("captures", []):
        return "captures are not the same"
    return None


class _Progress:
    """A status line on stderr while a long run records: only on a terminal, only after the
    first few seconds, at most once a second."""

    def __init__(self):
        self.start = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, scheduler) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.start < 3 or now - self.last < 1:
            return
        self.last = now
        done = sum(t.status.value == "done" for t in scheduler.tasks.values())
        sys.stderr.write(f"\rrecording: step {scheduler.step_count}, {done} of "
                         f"{len(scheduler.tasks)} requests done ")
        sys.stderr.flush()
        global _shown
        _shown = True


_shown = False


def _progress_done() -> None:
    global _shown
    if _shown:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
        _shown = False


def _one_line(e: Exception) -> str:
    return _safe(" ".join(str(e).split()))


def _safe(text: str) -> str:
    """Printable: a control character in a name or path is shown escaped, never sent."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


if __name__ == "__main__":
    sys.exit(run(main))
