"""A GGUF file's tokenizer (tokens, merges, token types) as a Hugging Face tokenizer.json.

Only byte-level BPE ("gpt2" in GGUF terms) is built. Control tokens (type 3: <|im_start|>,
<|im_end|>, ...) become special added tokens: matched whole in text, skipped on decode. The
pre-tokenizer named by `tokenizer.ggml.pre` decides how text is split before BPE: "smollm"
splits digits one by one before the GPT-2 split, as the model was trained.
"""

from __future__ import annotations

from pathlib import Path

from astrai.errors import CheckpointError, UnsupportedCheckpoint

__all__ = ["tokenizer_json"]

CONTROL = 3  # llama.cpp's token type of control tokens
_DIGITS_FIRST = {"smollm": True, "gpt2": False, "default": False}


def _contents(reader, path: Path, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise CheckpointError(f"{path}: GGUF metadata {key} is missing")
    return field.contents()


def tokenizer_json(reader, path: Path) -> str:
    """tokenizer.json's text (the same text every time for the same file)."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    except ImportError:
        raise CheckpointError("building the tokenizer needs the 'tokenizers' package") from None
    kind = _contents(reader, path, "tokenizer.ggml.model")
    pre = reader.fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in \
        reader.fields else "default"
    if kind != "gpt2" or pre not in _DIGITS_FIRST:
        raise UnsupportedCheckpoint(f"{path}: tokenizer {kind!r} / pre-tokenizer {pre!r}: only "
                                    f"byte-level BPE ('gpt2') with {', '.join(_DIGITS_FIRST)} "
                                    "converts")
    tokens = _contents(reader, path, "tokenizer.ggml.tokens")
    types = _contents(reader, path, "tokenizer.ggml.token_type")
    merges = _contents(reader, path, "tokenizer.ggml.merges")
    if not all(isinstance(t, str) for t in tokens) or len(set(tokens)) != len(tokens):
        raise CheckpointError(f"{path}: tokenizer.ggml.tokens must be distinct strings")
    if len(types) != len(tokens):
        raise CheckpointError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = []
    for m in merges:
        pair = tuple(m.split(" ")) if isinstance(m, str) else ()
        if len(pair) != 2 or any(p not in vocab for p in pair):
            raise CheckpointError(f"{path}: merge {m!r} is not two tokens of the vocabulary")
        pairs.append(pair)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    split = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if _DIGITS_FIRST[pre]:
        split.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(split)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == CONTROL])
    if "tokenizer.ggml.add_bos_token" in reader.fields and \
            reader.fields["tokenizer.ggml.add_bos_token"].contents():
        raise UnsupportedCheckpoint(f"{path}: a tokenizer that adds a begin-of-sequence token "
                                    "is not converted")
    return tok.to_str(pretty=False)
