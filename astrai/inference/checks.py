"""Checks on what callers hand the cache, and the keys its views cache indices by.

Functions: each raises a named error (a ValueError subclass) naming what is wrong, before
anything is written or allocated. `PagedCache` and `CheckedKV` call them where a size, a table,
a position or a tensor comes in.
"""

from __future__ import annotations

import torch

from astrai.errors import BadCount, BadTensor, CacheTooLarge
from astrai.memory import available_bytes


def require_sizes(dtype: torch.dtype, **sizes: int) -> None:
    """ValueError naming the first size that is not a positive int, or a non-float dtype."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")


def require_room(need: int, device: torch.device, what: str) -> None:
    """CacheTooLarge unless `need` bytes fit in what the device has available now (when it can
    say: a CUDA device torch cannot use is left for torch itself to refuse)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return
    try:
        have = available_bytes(device)
    except (RuntimeError, ValueError):
        return
    if have is not None and need > have:
        raise CacheTooLarge(f"{what} needs {need / 2**20:.0f} MiB; {device} has "
                            f"{have / 2**20:.0f} MiB available")


def require_kv(k: torch.Tensor, v: torch.Tensor, batch: int, n_kv_heads: int, head_dim: int,
               dtype: torch.dtype | None = None, device: torch.device | None = None):
    """BadTensor (a ValueError) unless k and v are both tensors [batch, S, n_kv_heads,
    head_dim] of the given dtype and device: both are checked before either is written."""
    for name, x in (("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise BadTensor(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if dtype is not None and x.dtype != dtype:
            raise BadTensor(f"{name} is {x.dtype}; the cache holds {dtype}")
        if device is not None and x.device != device:
            raise BadTensor(f"{name} is on {x.device}; the cache is on {device}")
    want = (batch, k.shape[1] if k.dim() == 4 else -1, n_kv_heads, head_dim)
    if k.dim() != 4 or tuple(k.shape) != want or k.shape != v.shape:
        raise BadTensor(
            f"k and v must both be [B={batch}, S, {n_kv_heads}, {head_dim}], "
            f"got {tuple(k.shape)} and {tuple(v.shape)}"
        )


def check_positions(start_pos, lengths, batch: int, page_size: int, n_tokens: int = 0,
                    max_pages: int | None = None) -> None:
    """BadTensor unless start_pos and lengths are ints / integer tensors of B values, every
    position is >= 0 and every real token (t < lengths[b]) lands inside the table: a write
    past it would be dropped silently. Values of a tensor are read on the host (one sync
    for a CUDA tensor; the scheduler hands host tensors)."""
    for name, x in (("start_pos", start_pos), ("lengths", lengths)):
        if isinstance(x, torch.Tensor):
            if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
                raise BadTensor(f"{name} must be an integer tensor, got {x.dtype}")
            if x.numel() != batch:
                raise BadTensor(f"{name} must hold {batch} values, got {tuple(x.shape)}")
        elif x is not None and (isinstance(x, bool) or not isinstance(x, int)
                                or name == "lengths"):
            raise BadTensor(f"{name} must be an int or a tensor, got {type(x).__name__}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
        raise BadCount(f"n_tokens must be an int >= 0, got {n_tokens!r}")
    if max_pages is None:
        return
    starts = (start_pos.reshape(-1).tolist() if isinstance(start_pos, torch.Tensor)
              else [start_pos] * batch)
    counts = lengths.reshape(-1).tolist() if lengths is not None else [n_tokens] * batch
    room = max_pages * page_size
    for b, (start, count) in enumerate(zip(starts, counts)):
        if start < 0:
            raise BadTensor(f"start_pos[{b}] is {start}: positions must be >= 0")
        if count < 0:
            raise BadTensor(f"lengths[{b}] is {count}: must be >= 0")
        real = min(count, n_tokens)
        if real and start + real > room:
            raise BadTensor(
                f"start_pos[{b}] {start} with {real} tokens reaches position "
                f"{start + real - 1}, past the page_table's {room} slots"
            )


def version(x) -> object:
    """A tensor's in-place version (`sp += 4` bumps it); a fresh object, never equal, for
    tensors that keep none (made under inference_mode)."""
    try:
        return x._version
    except RuntimeError:
        return object()


def slot_key(start_pos, n_tokens: int, lengths, *extra) -> tuple:
    """What a write's slot index depends on, for same_key: tensors with their versions."""
    return (start_pos, version(start_pos) if isinstance(start_pos, torch.Tensor) else None,
            n_tokens, lengths, version(lengths) if isinstance(lengths, torch.Tensor) else None,
            *extra)


def same_key(a: tuple, b: tuple) -> bool:
    """Whether two slot_key()s name the same write positions.

    Tensors compare by identity (the view keeps them alive, so an id cannot be reused) and by
    version, so one changed in place is a new key; a tensor never equals a non-tensor."""
    for x, y in zip(a, b):
        if x is y:
            continue
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor) or x != y:
            return False
    return True
