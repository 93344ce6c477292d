"""Text in and out: prompts given as text become token ids, and outputs are decoded as they grow.

Two tokenizers share one small interface (`encode(text) -> ids`, `decode(ids) -> text`):
`ByteTokenizer`, the default tiny model's vocabulary (ids 0..255 are the bytes of UTF-8 text),
and `FileTokenizer`, a checkpoint's `tokenizer.json` read with the `tokenizers` library (a data
file: nothing it names is imported or run). `TextLog` follows each text request's output as it
grows, for the trace recorder. `visible_piece` is one token as a picture of its slot shows it.
"""

from __future__ import annotations

import os
from pathlib import Path

from astrai.errors import TokenizerError
from astrai.files import read_text

__all__ = ["ByteTokenizer", "FileTokenizer", "TextLog", "load_tokenizer", "shorten",
           "visible_piece"]

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

    def token_bytes(self, token_id: int) -> bytes | None:
        """The token's own bytes (None: a control token, which has a name instead)."""
        return bytes([token_id]) if 0 <= token_id < 256 else b"\xef\xbf\xbd"

    def special_name(self, token_id: int) -> str | None:
        return None

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
        self._special = {i: t.content for i, t in self._tok.get_added_tokens_decoder().items()
                         if t.special}
        from tokenizers import decoders

        self._byte_level = isinstance(self._tok.decoder, decoders.ByteLevel)

    def token_bytes(self, token_id: int) -> bytes | None:
        """The token's own bytes (None for a control token): a byte-level BPE token's
        characters stand for bytes, so a token may be part of a character."""
        if token_id in self._special:
            return None
        if self._byte_level:
            piece = self._tok.id_to_token(token_id)
            if piece is not None and all(c in _BYTE_OF for c in piece):
                return bytes(_BYTE_OF[c] for c in piece)
        return self._tok.decode([token_id], skip_special_tokens=False).encode("utf-8")

    def special_name(self, token_id: int) -> str | None:
        return self._special.get(token_id)

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


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's character for each byte (the GPT-2 scheme): printable Latin-1 bytes
    stand for themselves, the other 68 take the characters from U+0100 on, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = {}, 0
    for b in range(256):
        if b in kept:
            out[chr(b)] = b
        else:
            out[chr(256 + extra)] = b
            extra += 1
    return out


_BYTE_OF = _byte_level_alphabet()

# How a token is drawn in a picture of its slot: whitespace and control characters get a mark
# of their own, so nothing a model wrote shows as an empty gap.
SPACE, NEWLINE, TAB = "·", "↵", "⇥"
MAX_PIECE = 24  # characters: a slot's label, not a paragraph (a long token is cut with '…')


def _marked(text: str) -> str:
    out = []
    for c in text:
        if c == " ":
            out.append(SPACE)
        elif c == "\n":
            out.append(NEWLINE)
        elif c == "\t":
            out.append(TAB)
        elif not c.isprintable() or c.isspace():  # \r, other controls, odd spaces: their bytes
            out.append("".join(f"‹{b:02X}›" for b in c.encode("utf-8")))
        else:
            out.append(c)
    return "".join(out)


def _short_name(special: str) -> str:
    """'<|im_start|>' -> '⟨start⟩', '<|endoftext|>' -> '⟨endoftext⟩', '</s>' -> '⟨/s⟩'."""
    name = special
    for left, right in (("<|", "|>"), ("<", ">"), ("[", "]")):
        if name.startswith(left) and name.endswith(right) and len(name) > len(left + right):
            name = name[len(left):-len(right)]
            break
    name = name.removeprefix("im_")
    return f"⟨{_marked(name)[:MAX_PIECE - 2]}⟩"


def visible_piece(tokenizer, token_id: int) -> str:
    """One token as its slot shows it, never an invisible gap: a space as '·', a newline as
    '↵', a tab as '⇥', a control token by a short name in ⟨ ⟩, bytes that are not a whole
    UTF-8 character (a piece of one) as ‹hex› each, at most MAX_PIECE characters."""
    name = tokenizer.special_name(token_id)
    if name is not None:
        return _short_name(name)
    raw = tokenizer.token_bytes(token_id)
    out = []
    while raw:
        try:
            out.append(_marked(raw.decode("utf-8")))
            break
        except UnicodeDecodeError as e:  # whole characters up to e.start, then a broken run
            out.append(_marked(raw[: e.start].decode("utf-8")))
            out.append("".join(f"‹{b:02X}›" for b in raw[e.start: e.end]))
            raw = raw[e.end:]
    text = "".join(out) or "⟨empty⟩"
    return text if len(text) <= MAX_PIECE else text[: MAX_PIECE - 1] + "…"


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
        self._pieces: dict[int, str] = {}  # token id -> its visible piece (a vocabulary repeats)

    def prompt(self, name: str) -> str | None:
        return self.prompts.get(name)

    def pieces(self, name: str, ids) -> list[str] | None:
        """Each token's visible piece (`visible_piece`), for a text request (else None)."""
        if name not in self.prompts:
            return None
        out = []
        for i in ids:
            piece = self._pieces.get(i)
            if piece is None:
                piece = self._pieces[i] = visible_piece(self.tokenizer, i)
            out.append(piece)
        return out

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
