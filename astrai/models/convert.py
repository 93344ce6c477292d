"""A Llama GGUF file (llama.cpp's format) turned into a Hugging Face Llama folder.

    files = convert(Path("model.gguf"))   # {"config.json": bytes, "model.safetensors": ..., ...}

Read with the `gguf` package: metadata gives the geometry, the tokenizer and the chat template;
each tensor is dequantized to float32 (gguf.quants), stored as float16 (half the size; the
greedy output measured the same). GGUF lists dimensions innermost first, so every shape is
reversed. llama.cpp stores the rows of attn_q / attn_k interleaved for its rotary layout (the
two halves of each head's pairs side by side); they are put back in Hugging Face's order
(halves one after the other). The output is bytes only, the same bytes every time: writing
them is the caller's business (astrai.models.install).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from astrai.errors import CheckpointError, CheckpointTooLarge, UnsupportedCheckpoint
from astrai.memory import available_bytes
from astrai.models.vocab import tokenizer_json

__all__ = ["CONVERTER_VERSION", "FILES", "convert"]

CONVERTER_VERSION = 1  # bump when the bytes written change: installed copies are rebuilt
FILES = ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja")
MAX_DIM = 1 << 20

# GGUF tensor name (after "blk.N.") -> Hugging Face Llama name (after "model.layers.N.")
_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def _reader(path: Path):
    try:
        import gguf
    except ImportError:
        raise CheckpointError("converting a GGUF file needs the 'gguf' package "
                              "(make setup installs it)") from None
    try:
        return gguf, gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, struct errors, numpy errors
        raise CheckpointError(f"{path}: not a readable GGUF file: {e}") from None


def _field(reader, path: Path, key: str, kind: type):
    field = reader.fields.get(key)
    if field is None:
        raise CheckpointError(f"{path}: GGUF metadata {key} is missing")
    value = field.contents()
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                        or not 0 < value <= MAX_DIM):
        raise CheckpointError(f"{path}: GGUF metadata {key} must be an int in 1..{MAX_DIM}, "
                              f"got {value!r}")
    if kind is float and (not isinstance(value, float) or not math.isfinite(value)
                          or value <= 0):
        raise CheckpointError(f"{path}: GGUF metadata {key} must be a positive number")
    if kind in (str, list) and not isinstance(value, kind):
        raise CheckpointError(f"{path}: GGUF metadata {key} must be a {kind.__name__}")
    return value


def _float32(value: float) -> float:
    """GGUF stores these as float32: the shortest decimal that is that float32 (1e-05, not
    9.999999747378752e-06), as the model's own config.json writes it."""
    return float(str(np.float32(value)))


def _config(reader, path: Path) -> dict:
    arch = _field(reader, path, "general.architecture", str)
    if arch != "llama":
        raise UnsupportedCheckpoint(f"{path}: architecture {arch!r}: only 'llama' converts")
    p = "llama."
    d = _field(reader, path, p + "embedding_length", int)
    heads = _field(reader, path, p + "attention.head_count", int)
    if d % heads:
        raise CheckpointError(f"{path}: embedding_length {d} is not a multiple of "
                              f"head_count {heads}")
    tokens = _field(reader, path, "tokenizer.ggml.tokens", list)
    vocab = reader.fields.get(p + "vocab_size")
    vocab = _field(reader, path, p + "vocab_size", int) if vocab is not None else len(tokens)
    rot = reader.fields.get(p + "rope.dimension_count")
    if rot is not None and _field(reader, path, p + "rope.dimension_count", int) != d // heads:
        raise UnsupportedCheckpoint(f"{path}: partial rotary (rope.dimension_count) is not "
                                    "supported")
    if p + "rope.scaling.type" in reader.fields:
        raise UnsupportedCheckpoint(f"{path}: rope scaling is not supported")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "vocab_size": vocab,
        "hidden_size": d,
        "intermediate_size": _field(reader, path, p + "feed_forward_length", int),
        "num_hidden_layers": _field(reader, path, p + "block_count", int),
        "num_attention_heads": heads,
        "num_key_value_heads": _field(reader, path, p + "attention.head_count_kv", int),
        "head_dim": d // heads,
        "max_position_embeddings": _field(reader, path, p + "context_length", int),
        "rms_norm_eps": _float32(_field(reader, path, p + "attention.layer_norm_rms_epsilon",
                                        float)),
        "rope_theta": _float32(_field(reader, path, p + "rope.freq_base", float)),
        "tie_word_embeddings": not has_output,
        "attention_bias": False,
        "mlp_bias": False,
        "dtype": "float16",
    }
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
        if f"tokenizer.ggml.{name}_token_id" in reader.fields:
            config[key] = int(reader.fields[f"tokenizer.ggml.{name}_token_id"].contents())
    return config


def _hf_name(name: str, n_layers: int) -> str | None:
    m = _BLOCK.fullmatch(name)
    if m:
        if int(m.group(1)) >= n_layers or m.group(2) not in _LAYER:
            return None
        return f"model.layers.{int(m.group(1))}.{_LAYER[m.group(2)]}.weight"
    base = name.removesuffix(".weight")
    return f"{_TOP[base]}.weight" if name.endswith(".weight") and base in _TOP else None


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary row order back to Hugging Face's: per head, rows come as pairs
    (i, i + half) interleaved; Hugging Face keeps the first halves, then the second halves."""
    rows, cols = w.shape
    # [heads, half, 2, cols] -> [heads, 2, half, cols]
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _tensors(gguf, reader, path: Path, config: dict) -> dict[str, np.ndarray]:
    c = config
    q = c["num_attention_heads"] * c["head_dim"]
    kv = c["num_key_value_heads"] * c["head_dim"]
    d, ff, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, d)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "self_attn.q_proj.weight": (q, d),
                       p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d),
                       p + "self_attn.o_proj.weight": (d, q),
                       p + "post_attention_layernorm.weight": (d,),
                       p + "mlp.gate_proj.weight": (ff, d), p + "mlp.up_proj.weight": (ff, d),
                       p + "mlp.down_proj.weight": (d, ff)})
    by_name = {}
    for t in reader.tensors:
        name = _hf_name(t.name, c["num_hidden_layers"])
        if name is None:
            raise UnsupportedCheckpoint(f"{path}: tensor {t.name!r} has no place in a Llama "
                                        "model")
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists the innermost first
        if shape != shapes[name]:
            raise CheckpointError(f"{path}: tensor {t.name!r} has shape {list(shape)}, the "
                                  f"metadata implies {list(shapes[name])}")
        by_name[name] = t
    missing = [n for n in shapes if n not in by_name]
    if missing:
        raise CheckpointError(f"{path}: tensor for {missing[0]!r} is missing")
    # Sizes are known before any tensor is dequantized: refuse what memory cannot hold.
    need = sum(2 * math.prod(s) for s in shapes.values()) + 4 * max(map(math.prod,
                                                                       shapes.values()))
    free = available_bytes("cpu")
    if free is not None and need > free:
        raise CheckpointTooLarge(f"{path}: converting needs {need / 2**30:.2f} GiB, "
                                 f"{free / 2**30:.2f} GiB is free")
    out = {}
    for name, shape in shapes.items():  # a fixed order: the same bytes every time
        t = by_name[name]
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except Exception as e:  # an unknown quantization type, a short buffer
            raise CheckpointError(f"{path}: tensor {t.name!r} ({t.tensor_type.name}) cannot "
                                  f"be dequantized: {e}") from None
        w = np.asarray(w, dtype=np.float32).reshape(shape)
        if name.endswith("q_proj.weight"):
            w = _unpermute(w, c["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = _unpermute(w, c["num_key_value_heads"])
        out[name] = np.ascontiguousarray(w.astype(np.float16))
    return out


def convert(path: str | Path) -> dict[str, bytes]:
    """The Hugging Face folder's files, by name (those of FILES it has), from a Llama GGUF
    file."""
    path = Path(path)
    gguf, reader = _reader(path)
    config = _config(reader, path)
    tensors = _tensors(gguf, reader, path, config)
    try:
        from safetensors.numpy import save
    except ImportError:
        raise CheckpointError("converting needs the 'safetensors' package") from None
    files = {
        "config.json": (json.dumps(config, indent=2) + "\n").encode(),
        # one metadata key: the header is then the same bytes every time
        "model.safetensors": save(tensors, metadata={"format": "pt"}),
        "tokenizer.json": tokenizer_json(reader, path).encode(),
    }
    if "tokenizer.chat_template" in reader.fields:
        files["chat_template.jinja"] = _field(reader, path, "tokenizer.chat_template",
                                              str).encode()
    return files
