"""Resolve a user's ``device`` and ``precision`` once: no silent fallback, bf16 only where native."""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

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


PRECISIONS = ("auto", "fp32", "bf16")
#: CPU feature flags (as /proc/cpuinfo spells them) of native bf16 dot products: AVX512-BF16 and
#: AMX-BF16 on x86 (Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later), BF16 on Arm.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def _cpuinfo_flags() -> frozenset[str]:
    """Feature flags of the first CPU in /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def _torch_cpu_bf16() -> bool:
    """torch's own CPU probe (cpuinfo library) for AVX512-BF16 or AMX tiles; False when absent."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (not emulated through fp32).

    Detected, never guessed: torch's CPU probe (AVX512-BF16, AMX) or the kernel's feature flags
    (:data:`BF16_CPU_FLAGS`), and oneDNN (which runs CPU bf16 matmuls) must be built in. On CPUs
    without these, bf16 autocast is emulated and slower than fp32.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    if _torch_cpu_bf16():
        return True
    flags = _cpuinfo_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & (BF16_CPU_FLAGS - {"bf16"}))


def resolve_precision(device: torch.device, precision: str, *, training: bool = False) -> str:
    """The precision ``precision`` ("auto", "fp32", "bf16") means on ``device``: "fp32" or "bf16".

    For re-ranking, "auto" is bf16 on a CUDA device with bf16 support and on a CPU with native
    bf16 (:func:`cpu_has_native_bf16`), fp32 elsewhere. For ``training`` "auto" is always fp32:
    trained under bf16 autocast, a reduced model lost 20 RSUM on COCO 5K where re-ranking in
    bf16 cost nothing (accuracy/leaprr_precision). An explicit choice is kept as given.
    """
    if precision not in PRECISIONS:
        raise InvalidParameterError(f"precision: expected 'auto', 'fp32' or 'bf16'; got {precision!r}.")
    if precision != "auto":
        return precision
    if training:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str, *,
             training: bool = False) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` ("auto", "fp32", "bf16"; see ``LeaPRRConfig``) on ``device``.

    "auto" resolves through :func:`resolve_precision` (re-ranking: bf16 where the hardware has it
    natively, fp32 elsewhere; ``training``: fp32); "bf16" on a CPU without native bf16 works but
    is emulated and slow.
    """
    if resolve_precision(device, precision, training=training) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
