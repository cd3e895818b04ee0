"""Block iteration with sizes derived from a memory budget."""

from __future__ import annotations

import math
from collections.abc import Iterator

from pillar_rerank.exceptions import InvalidParameterError

DEFAULT_BLOCK_BYTES = 256 * 2**20
MAX_MEMORY_BYTES = 2**60  # 1 EiB: anything larger is a typo (and overflows int64 sizes downstream)


def block_rows(n_cols: int, *, bytes_per_item: int = 4, budget_bytes: int = DEFAULT_BLOCK_BYTES,
               minimum: int = 1) -> int:
    """Rows per block so that ``rows * n_cols * bytes_per_item`` stays within ``budget_bytes``."""
    per_row = max(1, int(n_cols) * int(bytes_per_item))
    return max(minimum, int(budget_bytes) // per_row)


def iter_blocks(n: int, block: int) -> Iterator[slice]:
    """Yield consecutive slices ``[start, start + block)`` covering ``range(n)``."""
    block = max(1, int(block))
    for start in range(0, int(n), block):
        yield slice(start, min(start + block, int(n)))


def parse_bytes(text: str | int) -> int:
    """Parse a memory size such as ``"4GB"``, ``"512MiB"`` or ``1048576`` into bytes."""
    if isinstance(text, int):
        return text
    units = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20,
             "MIB": 2**20, "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40,
             "TIB": 2**40}
    s = str(text).strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError as exc:
        raise InvalidParameterError(f"memory size: expected e.g. '4GB' or '512MB'; got {text!r}.") from exc
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(
            f"memory size: expected a finite positive size such as '4GB' or '512MB'; got {text!r}."
        )
    size = value * units[unit]
    if size > MAX_MEMORY_BYTES:
        raise InvalidParameterError(
            f"memory size: {text!r} is more than 1 EiB ({MAX_MEMORY_BYTES} bytes); give e.g. '4GB'."
        )
    return int(size)
