"""The model cache: where a named model's converted folder lives, and whether it is intact.

Each folder holds the converted files and a stamp, `astrai-model.json`: the model's name, the
converter's version, the source file's sha256 and the sha256 of every converted file. A folder
is intact when its stamp says the current converter made it from the pinned source and every
file still has its recorded hash. locate() checks that before handing out the folder (once per
process while the files stay unchanged: hashing 270 MB takes a fraction of a second).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path

from astrai.errors import ModelDamaged, ModelNotInstalled, UnknownModel
from astrai.files import read_text
from astrai.models import MODELS, ModelSource, models_root
from astrai.models.convert import CONVERTER_VERSION, FILES

__all__ = ["STAMP", "check", "checkpoint_dir", "identity", "locate", "model_dir", "sha256",
           "source_file"]

STAMP = "astrai-model.json"
FIX = "run `make setup` (or `python -m astrai.models.install`) to convert it"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # what a model's name looks like
_intact: dict[Path, tuple] = {}  # folder -> the files' (inode, size, mtime) when last checked


def model_dir(name: str) -> Path:
    return models_root() / name


def source(name: str) -> ModelSource:
    if name not in MODELS:
        raise UnknownModel(f"no model named {name!r} (known: {', '.join(MODELS)}); give a "
                           "known name or a Llama checkpoint folder")
    return MODELS[name]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def source_file(src: ModelSource) -> Path:
    """The installed package's GGUF file, found without importing the package."""
    try:
        spec = importlib.util.find_spec(src.package)  # a top-level finder: runs no code of it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"model {src.name}: the package {src.package} is not installed; "
                                "`make setup` installs it")
    return Path(list(spec.submodule_search_locations)[0]) / src.file


def expected_stamp(src: ModelSource, files: dict[str, str]) -> dict:
    return {"model": src.name, "converter": CONVERTER_VERSION,
            "source": {"file": src.file, "sha256": src.sha256, "bytes": src.size},
            "files": dict(sorted(files.items()))}


def read_stamp(folder: Path) -> dict | None:
    try:
        stamp = json.loads(read_text(folder / STAMP, ValueError, 1 << 16))
    except ValueError:  # missing, unreadable, not JSON: no stamp
        return None
    return stamp if isinstance(stamp, dict) else None


def check(name: str, folder: Path | None = None) -> str | None:
    """What is wrong with the named model's folder, or None when it is intact."""
    src = source(name)
    folder = folder or model_dir(name)
    if not folder.is_dir():
        return f"{folder} does not exist"
    stamp = read_stamp(folder)
    files = stamp.get("files") if stamp else None
    if not isinstance(files, dict) or not set(files) <= set(FILES) or not files:
        return f"{folder / STAMP} is missing or unreadable"
    if stamp != expected_stamp(src, files):
        return (f"{folder} was converted by another converter version or from another "
                "source file")
    for file, digest in files.items():
        if not (folder / file).is_file():
            return f"{folder / file} is missing"
        if sha256(folder / file) != digest:
            return f"{folder / file} is damaged (its sha256 differs from the stamp's)"
    return None


def _signature(folder: Path) -> tuple:
    out = []
    for name in (STAMP, *FILES):
        try:
            st = os.stat(folder / name)
            out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((name, None))
    return tuple(out)


def locate(name: str) -> Path:
    """The named model's converted folder, checked intact; a named error saying what to do
    when it is not installed or damaged."""
    src = source(name)
    folder = model_dir(name)
    sig = _signature(folder)
    if _intact.get(folder) == sig:
        return folder
    if not folder.is_dir():
        source_file(src)  # first: is the package there at all?
        raise ModelNotInstalled(f"model {name} is not converted yet ({folder} does not exist); "
                                f"{FIX}")
    problem = check(name, folder)
    if problem:
        raise ModelDamaged(f"model {name}: {problem}; {FIX}")
    _intact[folder] = sig
    return folder


def identity(name: str) -> dict:
    """What the named model is, as a recording's key needs it: its checked folder's stamp (the
    source's sha256, the converter's version and every converted file's sha256), so a model
    converted again into other bytes is another model."""
    folder = locate(name)
    stamp = read_stamp(folder)
    if stamp is None:  # pragma: no cover - locate() just checked it
        raise ModelDamaged(f"model {name}: {folder / STAMP} is unreadable; {FIX}")
    return stamp


def checkpoint_dir(text: str | Path) -> Path:
    """A checkpoint as a workload or command line gives it: a model's name (its checked
    folder) or a folder path. A bare word that is neither is an unknown name."""
    text = str(text)
    if text in MODELS:
        return locate(text)
    path = Path(text)
    if _NAME.fullmatch(text) and not os.path.lexists(path):
        source(text)  # raises UnknownModel, naming the known ones
    return path
