"""Convert named models into the model cache: once, and again when missing or damaged.

    python -m astrai.models.install                 # every named model (scripts/setup.sh)
    python -m astrai.models.install NAME --force    # convert again even if intact

An intact folder (astrai.models.store.check) is left alone. Otherwise the source file is checked
against its pinned size and sha256, converted into a new temporary folder beside the target,
stamped, and renamed into place whole: an interrupted run leaves the old folder or none, never
a half-written one. A folder in the way is replaced only if it holds nothing but files the
converter writes; anything else there is refused, named, and left as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from astrai.errors import AstraiError, ModelDamaged, ModelNotInstalled, OutputError
from astrai.files import Output, require_file
from astrai.models import MODELS
from astrai.models.convert import FILES, convert
from astrai.models.store import (
    STAMP,
    check,
    expected_stamp,
    model_dir,
    sha256,
    source,
    source_file,
)

__all__ = ["install"]


def _ours(folder: Path) -> list[str]:
    """The entries of a folder in the way, if all are files the converter writes; else an
    OutputError naming the first that is not (nothing is removed then)."""
    if not os.path.lexists(folder):
        return []
    if folder.is_symlink() or not folder.is_dir():
        raise OutputError(f"{folder}: is in the way and not a folder the converter made; "
                          "move it away or set ASTRAI_MODELS to another folder")
    entries = sorted(os.listdir(folder))
    for entry in entries:
        path = folder / entry
        if entry not in (STAMP, *FILES) or path.is_symlink() or not path.is_file():
            raise OutputError(f"{folder}: holds {entry!r}, which the converter did not write; "
                              "move the folder away or set ASTRAI_MODELS to another folder")
    return entries


def _checked_source(name: str) -> Path:
    src = source(name)
    path = source_file(src)
    require_file(path, ModelNotInstalled)
    size = path.stat().st_size
    if size != src.size or sha256(path) != src.sha256:
        raise ModelDamaged(f"{path}: not the pinned file ({size} bytes, sha256 differs); "
                           "reinstall it with `make setup`")
    return path


def install(name: str, force: bool = False) -> tuple[Path, bool]:
    """The model's folder, converted now if it was missing, damaged or force; (folder, made)."""
    folder = model_dir(name)
    if not force and check(name, folder) is None:
        return folder, False
    old = _ours(folder)  # before any work: a folder we may not replace stops us here
    gguf = _checked_source(name)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}.", suffix=".tmp"))
    except OSError as e:
        raise OutputError(f"{folder.parent}: cannot write there ({e.strerror or e})") from None
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's 0700 would make the cache private
        digests = {}
        for file, data in convert(gguf).items():
            Output(tmp / file, OutputError).write(data)
            digests[file] = hashlib.sha256(data).hexdigest()
        stamp = expected_stamp(source(name), digests)
        Output(tmp / STAMP, OutputError).write(json.dumps(stamp, indent=2) + "\n")
        for entry in old:  # only files the converter writes, checked above
            (folder / entry).unlink(missing_ok=True)
        if old:
            folder.rmdir()
        try:
            os.rename(tmp, folder)
        except OSError:
            if check(name, folder) is not None:  # not another run's intact copy: a real failure
                raise
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"{folder}: writing failed ({e.strerror or e})") from None
    finally:
        if tmp.exists():  # the temporary folder is ours: gone on any failure (Ctrl-C too)
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, True


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m astrai.models.install",
        description="Convert the named models into the model cache (once; again when missing "
                    "or damaged).")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"models to install (default: all: {', '.join(MODELS)})")
    ap.add_argument("--force", action="store_true", help="convert again even if intact")
    args = ap.parse_args(argv)
    try:
        for name in args.names or list(MODELS):
            t0 = time.perf_counter()
            folder, made = install(name, args.force)
            what = f"converted in {time.perf_counter() - t0:.1f} s" if made else "intact"
            print(f"model {name}: {what}, {_size(folder) / 1e6:.0f} MB in {folder}")
    except AstraiError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
