"""Multi-process training under ``torchrun``: process-group set-up and small collective helpers.

A run is distributed when ``WORLD_SIZE`` (set by ``torchrun``) is greater than 1. The process
group uses NCCL when the training device is CUDA and gloo otherwise. Every helper is a no-op in
a single process, so callers need no special case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

_OWNED = False  # whether this module created the process group (and so tears it down)


def world() -> int:
    """Number of processes (1 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """Global rank of this process (0 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on rank 0, the process that validates and writes files."""
    return rank() == 0


def is_distributed() -> bool:
    """True when launched with more than one process."""
    return world() > 1


def setup(device: torch.device) -> torch.device:
    """Initialise the process group when launched by ``torchrun``; return this rank's device.

    With CUDA, rank ``r`` uses ``cuda:LOCAL_RANK`` (unless an explicit index was given).
    """
    global _OWNED
    if not is_distributed():
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        _OWNED = True
    return device


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the other ranks (e.g. rank 0 writes a cache, the rest read it)."""
    if not (dist.is_available() and dist.is_initialized()):
        return fn()
    if is_main():
        out = fn()
        dist.barrier()
        return out
    dist.barrier()
    return fn()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in one process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_json(obj: Any, src: int = 0, device: torch.device | None = None) -> Any:
    """Rank ``src``'s JSON-serialisable ``obj`` on every rank (sent as UTF-8 bytes, never pickled)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    device = device or torch.device("cpu")
    payload = json.dumps(obj).encode() if rank() == src else b""
    size = torch.tensor([len(payload)], dtype=torch.long, device=device)
    dist.broadcast(size, src=src)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if rank() == src:
        buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buf, src=src)
    return json.loads(bytes(buf.cpu().tolist()).decode())


def teardown() -> None:
    """Destroy the process group if :func:`setup` created it."""
    global _OWNED
    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False
