"""How much memory a device has free now: the one check before a checkpoint or a workload
allocates anything."""

from __future__ import annotations

import os

import torch


def available_bytes(device: str | torch.device) -> int | None:
    """Free memory on the device: CUDA's own count, or MemAvailable on Linux; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
