"""Load a Llama-architecture checkpoint directory (the Hugging Face layout) into a TinyModel.

A directory holds `config.json` and the weights as safetensors: one `model.safetensors`, or
shards listed by `model.safetensors.index.json`. Only safetensors are read (no pickle, no
torch.load), and only files inside the directory. Nothing the directory names is imported or
run: a config that asks for its own code (`auto_map`) is refused, and so is any architecture
other than `LlamaForCausalLM`, any rope scaling, bias, activation or quantisation this model
does not implement. Every tensor is checked by name, shape and dtype before a byte is copied,
and the whole model's size is checked against the device's memory before anything is allocated.

    config = read_config("my-llama")            # ModelConfig + what the file said
    model = load_checkpoint("my-llama", device="cuda", dtype=None)  # None: the file's dtype

dtype=None keeps the checkpoint's dtype (bfloat16 / float16 / float32) on CUDA and uses float32
on CPU, where half-precision matmuls are slow; pass a dtype to choose.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from astrai.errors import (
    CheckpointError,
    CheckpointTensorError,
    CheckpointTooLarge,
    UnsupportedCheckpoint,
)
from astrai.files import read_text, replacing, require_file, write_text
from astrai.memory import available_bytes
from astrai.model import ModelConfig, TinyModel

__all__ = [
    "CheckpointInfo",
    "describe",
    "kv_bytes_per_token",
    "load_checkpoint",
    "model_bytes",
    "read_config",
    "save_checkpoint",
    "tensor_names",
]

MAX_JSON_BYTES = 16 << 20  # config.json is ~1 KiB and an index ~100 KiB; past this it is not one
MAX_DIM = 1 << 20  # any one size in a config; keeps the size arithmetic honest
FILE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
              "F64": torch.float64}
# Derived buffers some exporters saved next to the weights; the model recomputes them.
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    config: ModelConfig
    dtype: str  # the dtype config.json declares ("float32" if it says none)
    files: dict[str, str]  # tensor name -> safetensors file name in the directory
    context: int | None = None  # max_position_embeddings: prompt + output may not exceed it


def _read_json(path: Path) -> dict:
    # A regular file only, read with a cap: a FIFO would block, /dev/zero never ends.
    text = read_text(path, CheckpointError, MAX_JSON_BYTES)
    try:
        data = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply to be a config") from None
    except ValueError as e:  # not JSON, or an integer of thousands of digits
        raise CheckpointError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: must hold a JSON object")
    return data


def _config(path: Path, cfg: dict) -> tuple[ModelConfig, str]:
    where = path / "config.json"

    def refuse(what: str) -> UnsupportedCheckpoint:
        return UnsupportedCheckpoint(f"{where}: {what}")

    if "auto_map" in cfg:
        raise refuse("auto_map asks for the checkpoint's own code; only the built-in Llama "
                     "model runs here, so it is refused")
    arch = cfg.get("architectures") or ["LlamaForCausalLM"]
    if cfg.get("model_type") != "llama" or arch != ["LlamaForCausalLM"]:
        raise refuse(f"model_type {cfg.get('model_type')!r} / architectures {arch!r}: only "
                     "'llama' / ['LlamaForCausalLM'] is supported")
    if cfg.get("quantization_config") is not None:
        raise refuse("quantised weights (quantization_config) are not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        raise refuse(f"hidden_act {cfg['hidden_act']!r}: only 'silu' is supported")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key, False) is not False:
            raise refuse(f"{key} {cfg[key]!r}: only bias-free layers are supported")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise refuse(f"rope settings must be an object, got {rope!r}")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "llama3"):
        raise refuse(f"rope_type {kind!r}: only plain rotary embeddings ('default') and "
                     "Llama 3's scaling ('llama3') are supported")
    scaling = {}
    if kind == "llama3":
        for key, field in (("factor", "rope_factor"), ("low_freq_factor", "rope_low_freq_factor"),
                           ("high_freq_factor", "rope_high_freq_factor"),
                           ("original_max_position_embeddings", "rope_original_max_pos")):
            value = rope.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CheckpointError(f"{where}: rope {key} must be a number, got {value!r}")
            scaling[field] = int(value) if field == "rope_original_max_pos" else float(value)

    def size(key: str, default=None) -> int:
        value = cfg.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DIM:
            raise CheckpointError(f"{where}: {key} must be an int in 1..{MAX_DIM}, got {value!r}")
        return value

    d, heads = size("hidden_size"), size("num_attention_heads")
    head_dim = size("head_dim") if cfg.get("head_dim") is not None else None
    if head_dim is None:
        if d % heads:
            raise CheckpointError(f"{where}: hidden_size {d} is not a multiple of "
                                  f"num_attention_heads {heads}, and head_dim is not given")
        head_dim = d // heads
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    eps = cfg.get("rms_norm_eps", 1e-6)
    tied = cfg.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise CheckpointError(f"{where}: tie_word_embeddings must be true or false, got {tied!r}")
    dtype = cfg.get("dtype", cfg.get("torch_dtype")) or "float32"
    if dtype not in FILE_DTYPES:
        raise refuse(f"dtype {dtype!r}: only {', '.join(FILE_DTYPES)} are supported")
    try:
        config = ModelConfig(
            vocab_size=size("vocab_size"),
            d_model=d,
            n_layers=size("num_hidden_layers"),
            n_heads=heads,
            n_kv_heads=size("num_key_value_heads", heads),
            head_dim=head_dim,
            d_ff=size("intermediate_size"),
            rope_theta=float(theta) if isinstance(theta, (int, float)) else theta,
            norm_eps=float(eps) if isinstance(eps, (int, float)) else eps,
            tied_head=tied,
            **scaling,
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: {e}") from None
    return config, dtype


def tensor_names(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Llama checkpoint of this config holds, with its shape."""
    c = config
    d, q, kv = c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    names = {"model.embed_tokens.weight": (c.vocab_size, d)}
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        names.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q, d),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.o_proj.weight": (d, q),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (c.d_ff, d),
            p + "mlp.up_proj.weight": (c.d_ff, d),
            p + "mlp.down_proj.weight": (d, c.d_ff),
        })
    names["model.norm.weight"] = (d,)
    if not c.tied_head:
        names["lm_head.weight"] = (c.vocab_size, d)
    return names


def _targets(model: TinyModel) -> dict[str, torch.Tensor]:
    """Checkpoint tensor name -> the model's parameter it fills (same order as tensor_names)."""
    out = {"model.embed_tokens.weight": model.embed}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        out.update({
            p + "input_layernorm.weight": layer.attn_norm.weight,
            p + "self_attn.q_proj.weight": layer.wq,
            p + "self_attn.k_proj.weight": layer.wk,
            p + "self_attn.v_proj.weight": layer.wv,
            p + "self_attn.o_proj.weight": layer.wo,
            p + "post_attention_layernorm.weight": layer.mlp_norm.weight,
            p + "mlp.gate_proj.weight": layer.w_gate,
            p + "mlp.up_proj.weight": layer.w_up,
            p + "mlp.down_proj.weight": layer.w_down,
        })
    out["model.norm.weight"] = model.final_norm.weight
    if not model.config.tied_head:
        out["lm_head.weight"] = model.head
    return out


def _weight_files(path: Path) -> dict[str, str]:
    """Tensor name -> file, from the index (sharded) or model.safetensors (one file)."""
    index = path / "model.safetensors.index.json"
    if os.path.lexists(index):  # whatever is there is read as a file or refused, never skipped
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: weight_map must be a non-empty object")
        for name, file in weight_map.items():
            # Only plain .safetensors names inside the directory: never a path elsewhere.
            if (not isinstance(file, str) or not file.endswith(".safetensors")
                    or Path(file).name != file or file.startswith(".")):
                raise CheckpointError(f"{index}: tensor {name!r} is mapped to {file!r}, not a "
                                      ".safetensors file in this directory")
        return dict(weight_map)
    single = path / "model.safetensors"
    if not os.path.lexists(single):
        other = "pickled .bin weights are not read; " if any(path.glob("*.bin")) else ""
        raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json "
                              f"({other}only safetensors are loaded)")
    return {name: single.name for name in _file_keys(single)}


def _safe_open(file: Path, device: str = "cpu"):
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError("loading a checkpoint needs the 'safetensors' package "
                              "(pip install safetensors)") from None
    require_file(file, CheckpointError)  # a FIFO or device is never opened
    try:
        return safe_open(str(file), framework="pt", device=device)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: no such file (named by the index)") from None
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise CheckpointError(f"{file}: not a readable safetensors file: {e}") from None


def _file_keys(file: Path) -> list[str]:
    with _safe_open(file) as f:
        return list(f.keys())


def read_config(path: str | Path) -> CheckpointInfo:
    """The checkpoint's geometry and tensor map, checked; reads no tensor data. `path` may be a
    named model (astrai.models): its converted folder, checked against its stamp."""
    from astrai.models.store import checkpoint_dir

    path = checkpoint_dir(path)
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        is_dir = False
    if not is_dir:
        raise CheckpointError(f"checkpoint {_shown(path)} is not a directory")
    cfg = _read_json(path / "config.json")
    config, dtype = _config(path, cfg)
    files = _weight_files(path)
    expected = tensor_names(config)
    allowed_extra = {"lm_head.weight"} if config.tied_head else set()  # tied: unused copy
    extra = [n for n in files if n not in expected and n not in allowed_extra
             and not _IGNORED.fullmatch(n)]
    if extra:
        raise CheckpointTensorError(f"{path}: unexpected tensor {extra[0]!r} (a Llama "
                                    f"checkpoint of this config has {len(expected)} tensors)")
    missing = [n for n in expected if n not in files]
    if missing:
        raise CheckpointTensorError(f"{path}: tensor {missing[0]!r} is missing")
    return CheckpointInfo(path, config, dtype, files, _context(path, cfg))


def _context(path: Path, cfg: dict) -> int | None:
    """The longest sequence the model was trained for (max_position_embeddings), if given."""
    value = cfg.get("max_position_embeddings")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1 << 24:
        raise CheckpointError(f"{path / 'config.json'}: max_position_embeddings must be a "
                              f"positive int, got {value!r}")
    return value


def _shown(path) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def model_bytes(config: ModelConfig, dtype: torch.dtype) -> int:
    """Bytes of the model's weights in dtype (norm weights included)."""
    n = sum(math.prod(shape) for shape in tensor_names(config).values())
    return n * torch.empty((), dtype=dtype).element_size()


def resolve_dtype(info: CheckpointInfo, device: torch.device,
                  dtype: torch.dtype | None) -> torch.dtype:
    """dtype None: the checkpoint's own dtype on CUDA, float32 on CPU."""
    if dtype is not None:
        return dtype
    return FILE_DTYPES[info.dtype] if device.type == "cuda" else torch.float32


def load_checkpoint(path: str | Path | CheckpointInfo, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None, reserve: int = 0) -> TinyModel:
    """A TinyModel holding the checkpoint's weights, on device, in dtype (see resolve_dtype).

    Refused before any allocation if the weights plus `reserve` bytes (e.g. the KV cache) would
    not fit in the device's free memory. Each tensor is checked (shape, float dtype) before it
    is copied, one at a time, converted to dtype on the way.
    """
    info = path if isinstance(path, CheckpointInfo) else read_config(path)
    device = torch.device(device)
    dtype = resolve_dtype(info, device, dtype)
    need = model_bytes(info.config, dtype) + reserve
    free = available_bytes(device)
    if free is not None and need > free:
        raise CheckpointTooLarge(
            f"{info.path}: the weights in {str(dtype).removeprefix('torch.')}"
            f"{' plus the KV cache' if reserve else ''} need {need / 2**30:.2f} GiB, and "
            f"{device} has {free / 2**30:.2f} GiB free"
        )
    model = TinyModel(info.config, device=device, dtype=dtype, init=False)  # no random draw
    targets = _targets(model)
    by_file: dict[str, list[str]] = {}
    for name, file in info.files.items():
        if name in targets:
            by_file.setdefault(file, []).append(name)
    # First every header (shapes and dtypes, no data), then the copies: a bad tensor is
    # reported before any weight is read.
    for file, names in by_file.items():
        with _safe_open(info.path / file) as f:
            present = set(f.keys())
            for name in names:
                _check_tensor(f, name, present, targets[name], info.path / file)
    for file, names in by_file.items():
        # Read on the CPU (memory-mapped, one tensor at a time) and copied to the device,
        # converted to dtype on the way: only one tensor is ever held twice.
        with _safe_open(info.path / file) as f, torch.no_grad():
            for name in names:
                targets[name].copy_(f.get_tensor(name))
    return model


def _check_tensor(f, name: str, present: set[str], target: torch.Tensor, file: Path) -> None:
    if name not in present:
        raise CheckpointTensorError(f"{file}: tensor {name!r} is missing (the index says it "
                                    "is in this file)")
    piece = f.get_slice(name)
    shape = tuple(piece.get_shape())
    if shape != tuple(target.shape):
        raise CheckpointTensorError(f"{file}: tensor {name!r} has shape {list(shape)}, "
                                    f"config.json implies {list(target.shape)}")
    if piece.get_dtype() not in _ST_DTYPES:
        raise CheckpointTensorError(f"{file}: tensor {name!r} has dtype {piece.get_dtype()}, "
                                    f"not one of {', '.join(_ST_DTYPES)}")


def save_checkpoint(model: TinyModel, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write the model as a Llama checkpoint (config.json + model.safetensors) that
    load_checkpoint, and Hugging Face's LlamaForCausalLM, read back."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise CheckpointError("saving a checkpoint needs the 'safetensors' package") from None
    c = model.config
    dtype = dtype or model.dtype
    name = {v: k for k, v in FILE_DTYPES.items()}.get(dtype)
    if name is None:
        raise CheckpointError(f"cannot save in {dtype}: one of {', '.join(FILE_DTYPES)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": c.vocab_size, "hidden_size": c.d_model, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim, "intermediate_size": c.d_ff, "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta, "tie_word_embeddings": c.tied_head,
        **({"rope_scaling": {
            "rope_type": "llama3", "factor": c.rope_factor,
            "low_freq_factor": c.rope_low_freq_factor,
            "high_freq_factor": c.rope_high_freq_factor,
            "original_max_position_embeddings": c.rope_original_max_pos,
        }} if c.rope_factor != 1.0 else {}),
        "attention_bias": False, "mlp_bias": False, "max_position_embeddings": 4096,
        "dtype": name,
    }
    tensors = {k: t.detach().to("cpu", dtype).contiguous() for k, t in _targets(model).items()}
    # each file whole or not at all, never written through a link (astrai.files.replacing)
    with replacing(path / "model.safetensors", CheckpointError) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_text(path / "config.json", json.dumps(config, indent=2) + "\n", CheckpointError)


def kv_bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """K and V of one token across all layers: what each cached token costs in the pool."""
    c = config
    return 2 * c.n_layers * c.n_kv_heads * c.head_dim * torch.empty((), dtype=dtype).itemsize


def describe(path: str | Path) -> list[str]:
    """What a checkpoint is and what it needs, from config.json and the tensor table only."""
    from astrai.models import MODELS

    info = read_config(path)
    c = info.config
    n = sum(math.prod(s) for s in tensor_names(c).values())
    lines = []
    src = MODELS.get(str(path))
    if src is not None:
        lines += [f"{src.name}: {src.title}, {src.license}",
                  f"  converted from {src.file} (package {src.package}, sha256 "
                  f"{src.sha256[:16]}...), lives in {info.path}"]
    lines += [
        f"{info.path}: Llama, {n / 1e6:.1f} M parameters, stored as {info.dtype}",
        f"  {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads / {c.n_kv_heads} KV "
        f"heads x {c.head_dim}, d_ff {c.d_ff}, vocab {c.vocab_size}"
        f"{', tied head' if c.tied_head else ''}"
        f"{f', context {info.context} tokens' if info.context else ''}",
    ]
    free = available_bytes(torch.device("cpu"))
    for name, dtype in (("float32 (CPU default)", torch.float32),
                        (f"{info.dtype} (CUDA default)", FILE_DTYPES[info.dtype])):
        lines.append(f"  weights in {name}: {model_bytes(c, dtype) / 2**30:.2f} GiB; "
                     f"KV cache {kv_bytes_per_token(c, dtype) / 1024:.1f} KiB per token")
    if free is not None:
        lines.append(f"  free memory here: {free / 2**30:.2f} GiB")
    return lines


def main(argv=None) -> int:
    """python -m astrai.checkpoint CHECKPOINT: describe() printed; a refusal is one line and
    exit 2 (usage errors too, through astrai.cli.Parser)."""
    from astrai.cli import Parser
    from astrai.errors import AstraiError
    from astrai.models import MODELS

    ap = Parser(
        prog="python -m astrai.checkpoint",
        description="What a Llama checkpoint is and what it needs: its geometry, size and "
                    "K/V bytes per token, from config.json and the tensor table only.")
    ap.add_argument("checkpoint", metavar="CHECKPOINT",
                    help=f"a named model ({', '.join(MODELS)}) or a Hugging Face Llama folder")
    args = ap.parse_args(argv)
    try:
        print("\n".join(describe(args.checkpoint)))
    except AstraiError as e:
        print(f"error: {_shown(' '.join(str(e).split()))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from astrai.cli import run

    sys.exit(run(main))  # Ctrl-C and output that cannot be written: one line (astrai.cli)
