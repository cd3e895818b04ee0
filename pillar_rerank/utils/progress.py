"""Progress bars: tqdm on stderr, shown only on a terminal, off on request (``--quiet``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, disable: bool = False, total: int | None = None,
             unit: str = "it") -> Iterator[T]:
    """Iterate ``items`` with a tqdm bar on stderr; no bar when ``disable`` or stderr is no terminal
    (logs and pipes stay clean)."""
    if disable or not sys.stderr.isatty():
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr)
