"""Text in and out: prompts given as text become token ids, and outputs are decoded as they grow.

Two tokenizers share one small interface (`encode(text) -> ids`, `decode(ids) -> text`):
`ByteTokenizer`, the default tiny model's vocabulary (ids 0..255 are the bytes of UTF-8 text),
and `FileTokenizer`, a checkpoint's `tokenizer.json` read with the `tokenizers` library (a data
file: nothing it names is imported or run). `TextLog` follows each text request's output as it
grows, for the trace recorder.
"""

from __future__ import annotations

import os
from pathlib import Path

from astrai.errors import TokenizerError
from astrai.files import read_text

__all__ = ["ByteTokenizer", "FileTokenizer", "TextLog", "load_tokenizer", "shorten"]

# A tokenizer.json of a large vocabulary is a few MiB to a few tens of MiB; past this it is not one.
MAX_TOKENIZER_BYTES = 64 << 20


class ByteTokenizer:
    """256 ids = the bytes of UTF-8 text; ids past 255 (a bigger vocab) decode as U+FFFD."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        if all(0 <= i < 256 for i in ids):
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(
            bytes([i]).decode("utf-8", errors="replace") if 0 <= i < 256 else "\ufffd"
            for i in ids
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, ByteTokenizer)

    def __hash__(self) -> int:
        return hash(ByteTokenizer)


class FileTokenizer:
    """A checkpoint's tokenizer.json. Special tokens (e.g. a begin-of-sequence id) are added
    on encode as the file's post-processor says, and skipped on decode."""

    def __init__(self, path: str | Path):
        path = Path(path)
        # A regular file only, read with a cap (a FIFO would block, a device never end).
        text = read_text(path, TokenizerError, MAX_TOKENIZER_BYTES)
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TokenizerError(
                f"{path} needs the 'tokenizers' package (pip install tokenizers)"
            ) from None
        try:
            self._tok = Tokenizer.from_str(text)
        except Exception as e:  # the library raises a bare Exception for a malformed file
            raise TokenizerError(f"{path}: not a tokenizer.json the tokenizers library reads: "
                                 f"{e}") from None
        self.name = str(path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


def load_tokenizer(checkpoint: str | Path | None):
    """The checkpoint's tokenizer.json (a folder or a named model), or the byte-level default
    when there is no checkpoint.
    None when a checkpoint has no tokenizer.json (then prompts must be token ids)."""
    if checkpoint is None:
        return ByteTokenizer()
    from astrai.models.store import checkpoint_dir  # a named model: its converted folder

    path = checkpoint_dir(checkpoint) / "tokenizer.json"
    # Anything there (a FIFO, a directory) is read or refused by FileTokenizer, never skipped.
    return FileTokenizer(path) if os.path.lexists(path) else None


def shorten(text: str, n: int) -> str:
    """One line of at most n characters: newlines and tabs shown as spaces, cut with '…'."""
    flat = " ".join(text.replace("\ufffd", "?").split())
    return flat if len(flat) <= n else flat[: max(n - 1, 0)] + "…"


class TextLog:
    """The decoded output of each text request, as its tokens arrive.

    `push(name, ids, done)` returns the new piece of text: the decode of all ids so far minus
    what was already given out. A trailing U+FFFD (an incomplete UTF-8 sequence, or a token a
    byte-level BPE splits across ids) is held back until the next token completes it, or until
    the request is done. The pieces add up to the final text unless a tokenizer rewrites text
    it already gave (then the piece is empty and `text[name]` holds the rewritten whole).
    """

    def __init__(self, tokenizer, prompts: dict[str, str]):
        self.tokenizer = tokenizer
        self.prompts = dict(prompts)
        self.text: dict[str, str] = {name: "" for name in prompts}

    def prompt(self, name: str) -> str | None:
        return self.prompts.get(name)

    def push(self, name: str, ids: list[int], done: bool) -> str | None:
        if name not in self.prompts:
            return None
        full = self.tokenizer.decode(ids)
        if not done and full.endswith("\ufffd"):
            full = full.rstrip("\ufffd")
        old = self.text[name]
        if full.startswith(old):
            piece = full[len(old):]
        else:
            piece = ""
        self.text[name] = full
        return piece
