"""python -m promo: build the promo cuts (see promo/__init__.py)."""

from __future__ import annotations

import argparse
import math
import sys

from astrai.cli import Parser, run
from promo import PromoError, Refused
from promo.build import OUT, TEASER_MAX, build
from promo.render import QUALITIES


def jobs(text: str) -> int:
    """--jobs: a whole number of renders at once, at least 1 (fewer would wait forever)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return n


def seconds(text: str) -> float:
    """--teaser-max: finite and not negative (nan would switch the check off, inf is no
    limit in disguise: 0 says that)."""
    try:
        s = float(text)
    except ValueError:
        s = math.nan
    if not math.isfinite(s) or s < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more (0: no "
                                         f"limit), not {text!r}")
    return s


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m promo", description=__doc__)
    ap.add_argument("--cut", choices=("full", "teaser", "both"), default="both")
    ap.add_argument("-q", "--quality", choices=sorted(QUALITIES), default="l",
                    help="manim quality: l = 480p15, h = 1080p60")
    ap.add_argument("--jobs", type=jobs, default=None, help="renders at once (default: cores)")
    ap.add_argument("--force", action="store_true", help="render every part again")
    ap.add_argument("--no-webm", action="store_true", help="skip the WebM encodes")
    ap.add_argument("--manim-segments", action="store_true",
                    help="let manim write a partial movie per animation (its stock writer)")
    ap.add_argument("--teaser-max", type=seconds, default=TEASER_MAX,
                    help="fail when the teaser is longer (seconds; 0 = no limit)")
    args = ap.parse_args(argv)
    cuts = ("full", "teaser") if args.cut == "both" else (args.cut,)
    try:
        build(cuts, args.quality, OUT, args.jobs, args.force, not args.no_webm,
              args.teaser_max or None, one_stream=not args.manim_segments)
    except PromoError as e:
        print(f"promo: FAILED: {e}", file=sys.stderr)
        return 2 if isinstance(e, Refused) else 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
