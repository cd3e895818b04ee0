"""Resolve a user's ``device`` argument once, never silently falling back."""

from __future__ import annotations

import contextlib

import torch

from pillar_rerank.exceptions import InvalidParameterError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``None`` into CUDA when available (else CPU); validate an explicit choice.

    An explicit ``"cuda"`` on a machine without a GPU is an error, not a fallback.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(f"device: expected 'cpu', 'cuda' or 'cuda:N'; got {device!r}.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"device: {device!r} was requested but no CUDA device is available; "
                "pass device='cpu' or leave it unset."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidParameterError(
                f"device: {device!r} does not exist; {torch.cuda.device_count()} CUDA device(s) visible."
            )
    elif dev.type != "cpu":
        raise InvalidParameterError(f"device: expected 'cpu' or 'cuda[:N]'; got {device!r}.")
    return dev


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` ("auto", "fp32", "bf16"; see ``LeaPRRConfig``) on ``device``.

    "auto" is bf16 on a CUDA device with bf16 support and off elsewhere (CPU bf16 matmuls are
    slower than fp32 on most CPUs, and CPU runs stay bitwise reproducible).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "auto":
        if device.type != "cuda" or not torch.cuda.is_bf16_supported():
            return contextlib.nullcontext()
    elif precision != "bf16":
        raise InvalidParameterError(f"precision: expected 'auto', 'fp32' or 'bf16'; got {precision!r}.")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

