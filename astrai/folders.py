"""Folders this program writes whole and owns: a manifest inside lists what it wrote.

A folder is replaced or removed only while its manifest lists everything in it, unchanged:
anything else in it (a note, a file edited there, a symbolic link) is someone else's, and
the folder is refused by name. A new folder is built in a temporary folder of its own (made
by mkdtemp beside it, never an existing path) and put in place whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from astrai.files import current_umask, read_text

MANIFEST = ".written-by-astrai.json"  # inside a folder this program wrote: what it wrote there
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def _entries(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to `folder`, lstat) of everything under it, symbolic links not followed."""
    stack = [folder]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                yield os.path.relpath(entry.path, folder), st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))


def _manifest(folder: Path) -> dict:
    files, folders = {}, []
    for rel, st in _entries(folder):
        if stat.S_ISDIR(st.st_mode):
            folders.append(rel)
        else:
            files[rel] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return {"files": files, "folders": sorted(folders)}


def _unchanged(listed, st: os.stat_result) -> bool:
    """The file the manifest lists: the same inode, and as written, or hard-linked elsewhere
    too (media linked from where the build found them: its content lives on under that other
    name, so removing this one loses nothing, whatever touched it since)."""
    if not (isinstance(listed, list) and len(listed) == 3 and listed[2] == st.st_ino):
        return False
    return listed[:2] == [st.st_size, st.st_mtime_ns] or st.st_nlink > 1


def _read_manifest(folder: Path) -> dict | None:
    """The manifest a build left in `folder`, or None if there is none that reads as one."""
    path = folder / MANIFEST
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        data = json.loads(read_text(path, ValueError, MAX_MANIFEST_BYTES))
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("files"), dict)
            and isinstance(data.get("folders"), list)):
        return None
    return data


def not_owned(folder: str | Path) -> str | None:
    """Why `folder` is not this program's to replace, or None when it is: missing, empty, or
    holding exactly what its manifest lists (each file unchanged since it was written)."""
    folder = Path(folder)
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return f"cannot be checked ({getattr(e, 'strerror', None) or e})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link, not a folder"
    if not stat.S_ISDIR(st.st_mode):
        return "is a file, not a folder"
    try:
        if not any(folder.iterdir()):
            return None
        listed = _read_manifest(folder)
        if listed is None:
            return f"holds files this program did not write (it has no {MANIFEST})"
        files, folders = listed["files"], set(listed["folders"])
        for rel, st in _entries(folder):
            if rel == MANIFEST:
                continue
            if stat.S_ISDIR(st.st_mode):
                if rel not in folders:
                    return f"holds {rel}/, which this program did not write"
            elif rel not in files or not stat.S_ISREG(st.st_mode):
                return f"holds {rel}, which this program did not write"
            elif not _unchanged(files[rel], st):
                return f"holds {rel}, changed since this program wrote it"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None


def check_owned(folder: str | Path, error: type[Exception]) -> None:
    """`error` naming `folder` and what in it is not ours, unless `not_owned` finds nothing."""
    why = not_owned(folder)
    if why is not None:
        raise error(f"{folder}: {why}: not replacing it (remove it yourself, or choose "
                    "another folder)")


def remove_owned(folder: str | Path, error: type[Exception]) -> None:
    """Remove what `folder`'s manifest lists, then the folder: only what this program wrote.
    Anything else found there (put in since the check) stays, and `error` says where."""
    folder = Path(folder)
    check_owned(folder, error)
    if not os.path.lexists(folder):
        return
    listed = _read_manifest(folder)
    if listed is None:  # empty, but not made by this program either
        raise error(f"{folder}: has no {MANIFEST}, so this program did not write it: "
                    "not removing it")
    for rel in listed["files"]:
        path = folder / rel
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
        except OSError:
            pass  # gone already, or not a file we wrote: left where it is
    (folder / MANIFEST).unlink(missing_ok=True)
    for rel in sorted(listed["folders"], key=lambda r: -r.count(os.sep)):  # deepest first
        with contextlib.suppress(OSError):
            (folder / rel).rmdir()  # a folder with someone else's file in it stays
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        raise error(f"{folder}: kept: it holds files this program did not write") from None


@contextlib.contextmanager
def new_folder(path: str | Path, error: type[Exception]) -> Iterator[Path]:
    """A folder to fill, made whole at `path` when the block ends.

    The block writes into a temporary folder of its own (made by mkdtemp beside `path`, never
    an existing one), removed if the block raises. At the end a manifest of what it holds is
    written into it and it takes `path`'s place; an old `path` goes only if this program
    wrote it (`not_owned`), and only what its manifest lists is deleted. A `path` that is a
    symbolic link, a file, or a folder holding anything else is refused before anything is
    made. The folder gets the usual mode (0777 less the umask), not mkdtemp's 0700."""
    path = Path(path)
    check_owned(path, error)
    made = _make_parents(path.parent, error)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
        os.chmod(tmp, 0o777 & ~current_umask())
    except OSError as e:
        _remove_folders(made)
        raise error(f"{path}: cannot write there ({e.strerror or e})") from None
    try:
        yield tmp
        _write_json(tmp / MANIFEST, _manifest(tmp))
        _put_in_place(tmp, path, error)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # ours alone: made above, this run
        _remove_folders(made)
        raise


def _put_in_place(tmp: Path, path: Path, error: type[Exception]) -> None:
    check_owned(path, error)  # again: it may have changed while the block ran
    try:
        os.rename(tmp, path)  # where `path` is missing or an empty folder
        return
    except OSError:
        pass
    try:
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    except OSError as e:
        raise error(f"{path}: cannot be replaced ({e.strerror or e})") from None
    try:
        os.rename(path, old)  # onto the empty folder just made: the old build, set aside
    except OSError as e:
        old.rmdir()
        raise error(f"{path}: cannot be replaced ({e.strerror or e})") from None
    try:
        os.rename(tmp, path)
    except OSError as e:
        os.rename(old, path)  # put the old build back
        raise error(f"{path}: cannot be replaced ({e.strerror or e})") from None
    remove_owned(old, error)


def _make_parents(folder: Path, error: type[Exception]) -> list[Path]:
    """Make `folder` and its missing parents; the ones made, outermost first."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    made = []
    for p in reversed(missing):
        try:
            p.mkdir()
        except OSError as e:
            _remove_folders(made)
            raise error(f"{p}: cannot be made ({e.strerror or e})") from None
        made.append(p)
    return made


def _remove_folders(made: list[Path]) -> None:
    for p in reversed(made):
        with contextlib.suppress(OSError):
            p.rmdir()  # empty unless someone else wrote there meanwhile: then it stays


def _write_json(path: Path, data: dict) -> None:
    with open(path, "x", encoding="utf-8") as f:  # "x": never over an existing file
        json.dump(data, f, separators=(",", ":"))
