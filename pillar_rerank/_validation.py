"""Input checkers: each kind of input has exactly one function that validates it.

Messages follow one shape: where the problem is, what was expected, what arrived.
"""

from __future__ import annotations

import contextvars
import math
import numbers
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError

FLOAT_DTYPES = (np.float16, np.float32, np.float64)

# How the user spells a parameter: the Python name by default; the ``rerank`` command sets its
# flags (``cli/main.py``, CLI_SPELLINGS) so library messages name the option the user typed.
_SPELLINGS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("spellings",
                                                                                     default=None)


def spelled(name: str) -> str:
    """``name`` as the caller spells it: its command-line flag under ``rerank``, else itself."""
    return (_SPELLINGS.get() or {}).get(name, name)


def use_spellings(spellings: Mapping[str, str]) -> contextvars.Token:
    """Name parameters by these spellings in messages (the CLI calls it once per command)."""
    return _SPELLINGS.set(dict(spellings))


def reset_spellings(token: contextvars.Token) -> None:
    """Undo :func:`use_spellings`."""
    _SPELLINGS.reset(token)
_FINITE_CHECK_ROWS = 1024


def _where(name: str, source: str | None) -> str:
    return f"{name} ({source})" if source else name


def check_float_matrix(
    array: Any,
    *,
    name: str,
    source: str | None = None,
    shape: tuple[int | None, int | None] | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """Validate a 2-D float16/32/64 matrix without copying it (memory maps stay memory maps).

    Checks dimensionality, dtype, emptiness, an expected shape (``None`` entries are free) and
    finiteness, scanning memory-mapped arrays in row blocks so memory stays bounded.
    """
    where = _where(name, source)
    if isinstance(array, np.ndarray):
        arr = array
    else:
        try:
            arr = np.asarray(array)
        except Exception as exc:  # noqa: BLE001 - anything that cannot become an array
            raise InvalidInputError(
                f"{where}: expected a 2-D float array; got {type(array).__name__}."
            ) from exc
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise InvalidInputError(
            f"{where}: expected a float16/float32/float64 array; got dtype {arr.dtype!s}."
        )
    if arr.dtype.kind != "f":
        raise InvalidInputError(
            f"{where}: expected a float16/float32/float64 array; got dtype {arr.dtype!s} "
            "(cast integer or boolean scores to float explicitly)."
        )
    if arr.dtype.kind == "f" and not arr.dtype.isnative and arr.dtype.newbyteorder("=") in FLOAT_DTYPES:
        raise InvalidInputError(
            f"{where}: expected the native byte order; got dtype {arr.dtype.str} (big-endian). Convert "
            "it with a.astype(a.dtype.newbyteorder('=')); files are converted on load."
        )
    if arr.dtype not in FLOAT_DTYPES:
        raise InvalidInputError(f"{where}: expected float16, float32 or float64; got dtype {arr.dtype!s}.")
    if arr.ndim != 2:
        raise InvalidInputError(f"{where}: expected a 2-D array; got shape {arr.shape}.")
    if not allow_empty and arr.size == 0:
        raise InvalidInputError(f"{where}: expected a non-empty array; got shape {arr.shape}.")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, arr.shape)):
            if want is not None and want != got:
                raise InvalidInputError(
                    f"{where}: expected shape {tuple('*' if s is None else s for s in shape)}; "
                    f"got {arr.shape} (axis {axis} differs)."
                )
    check_finite(arr, name=name, source=source)
    return arr


# Read-only arrays (memory maps opened "r", frozen arrays) already scanned for finiteness, so a
# multi-GB memory map loaded by a file reader and then wrapped in a RetrievalSet is read once.
_FINITE_READ_ONLY: dict[int, weakref.ref] = {}


def _known_finite(arr: np.ndarray) -> bool:
    ref = _FINITE_READ_ONLY.get(id(arr))
    return ref is not None and ref() is arr and not arr.flags.writeable


def _remember_finite(arr: np.ndarray) -> None:
    if arr.flags.writeable:
        return
    key = id(arr)
    try:
        _FINITE_READ_ONLY[key] = weakref.ref(arr, lambda _ref, key=key: _FINITE_READ_ONLY.pop(key, None))
    except TypeError:  # pragma: no cover - array types without weak references
        pass


def max_row_norm(rows: np.ndarray) -> float:
    """Largest L2 norm of the rows of ``rows`` as float32 (inf when float32 cannot hold them)."""
    top = 0.0
    step = max(1, 2**22 // max(1, rows.shape[1]))   # 16 MiB of float32 at a time (memory maps)
    for start in range(0, rows.shape[0], step):
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(rows[start:start + step], dtype=np.float32)
            top = max(top, float(np.einsum("ij,ij->i", x, x, dtype=np.float64).max()))
    return math.sqrt(top) if math.isfinite(top) else math.inf


def product_is_finite(norm_a: float, norm_b: float, dim: int, dtype: Any = np.float32) -> bool:
    """True when every entry of ``a @ b.T`` (finite float32 rows, ``dim`` columns) is finite.

    ``|a_i . b_j| <= |a_i| |b_j|`` (Cauchy-Schwarz) bounds every entry and every partial sum of
    its dot product; float32 accumulation adds at most ``dim * 6e-8`` relatively, covered by a
    factor of 4 below the largest value of ``dtype`` (the stored type). Then the product cannot
    hold NaN or inf and need not be scanned; otherwise it must be.
    """
    limit = float(np.finfo(np.dtype(dtype)).max) / 4
    bound = norm_a * norm_b
    return math.isfinite(bound) and bound < limit and dim * 1.2e-7 < 1.0


def mark_finite(arr: np.ndarray) -> None:
    """Record that the read-only ``arr`` holds only finite values, which its caller has just
    established, so :func:`check_finite` does not scan it again (a writeable array is not
    recorded: it could change)."""
    _remember_finite(arr)


def check_finite(arr: np.ndarray, *, name: str, source: str | None = None) -> None:
    """Raise if ``arr`` holds NaN or inf, naming the count and the first offending entry.

    Scans in row blocks (memory maps stay bounded); a read-only array that passed once is not
    scanned again.
    """
    if _known_finite(arr):
        return
    rows = max(1, _FINITE_CHECK_ROWS * 4096 // max(1, arr.shape[-1] if arr.ndim else 1))
    n_bad = 0
    first: tuple[int, ...] | None = None
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim >= 2 else arr.reshape(1, -1)
    for start in range(0, flat.shape[0], rows):
        block = np.asarray(flat[start:start + rows])
        bad = ~np.isfinite(block)
        if bad.any():
            n_bad += int(bad.sum())
            if first is None:
                r, c = np.argwhere(bad)[0]
                first = (start + int(r), int(c))
    if n_bad:
        raise InvalidInputError(
            f"{_where(name, source)}: expected finite values; found {n_bad} NaN/inf "
            f"(first at {first})."
        )
    _remember_finite(arr)


def check_item_map(
    txt_to_img: Any,
    *,
    n_images: int | None = None,
    n_texts: int | None = None,
    name: str = "txt_to_img",
    source: str | None = None,
    require_all_images: bool = True,
) -> np.ndarray:
    """Validate a caption → image map: 1-D ints in ``[0, n_images)``, every image covered.

    Returns an ``int64`` copy.
    """
    where = _where(spelled(name), source)
    try:
        arr = np.asarray(txt_to_img)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise InvalidInputError(f"{where}: expected a 1-D integer array; got {type(txt_to_img).__name__} "
                                f"that is not one ({exc}).") from exc
    if arr.dtype == object or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            raise InvalidInputError(
                f"{where}: expected an integer array; got dtype {arr.dtype!s} (store the map as int)."
            )
        raise InvalidInputError(f"{where}: expected an integer array; got dtype {arr.dtype!s}.")
    if arr.ndim != 1:
        raise InvalidInputError(f"{where}: expected a 1-D array of shape (n_texts,); got shape {arr.shape}.")
    if arr.size == 0:
        raise InvalidInputError(f"{where}: expected at least one caption; got an empty map.")
    if n_texts is not None and arr.shape[0] != n_texts:
        raise InvalidInputError(
            f"{where}: expected one entry per caption (n_texts={n_texts}); got {arr.shape[0]}."
        )
    if arr.dtype.kind == "u" and int(arr.max()) > np.iinfo(np.int64).max:
        big = np.flatnonzero(arr > np.iinfo(np.int64).max)
        raise InvalidInputError(
            f"{where}: {big.size} captions point past n_images={n_images} "
            f"(first: caption {big[0]} -> image {int(arr[big[0]])})."
        )
    arr = arr.astype(np.int64)
    neg = np.flatnonzero(arr < 0)
    if neg.size:
        raise InvalidInputError(
            f"{where}: {neg.size} captions have a negative image index "
            f"(first: caption {neg[0]} -> image {arr[neg[0]]})."
        )
    if n_images is None:
        n_images = int(arr.max()) + 1
    over = np.flatnonzero(arr >= n_images)
    if over.size:
        raise InvalidInputError(
            f"{where}: {over.size} captions point past n_images={n_images} "
            f"(first: caption {over[0]} -> image {arr[over[0]]})."
        )
    if require_all_images:
        counts = np.bincount(arr, minlength=n_images)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise InvalidInputError(
                f"{where}: {empty.size} of n_images={n_images} images have no caption "
                f"(first: image {empty[0]})."
            )
    return arr


def check_int(value: Any, *, name: str, owner: str | None = None, low: int = 1,
              high: int | None = None, high_name: str | None = None) -> int:
    """Validate an integer parameter in ``[low, high]``."""
    flag = spelled(name)
    who = f"The {flag!r} parameter of {owner}" if owner else f"The {flag!r} parameter"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(f"{who} must be an int; got {value!r}.")
    value = int(value)
    hi = "inf" if high is None else (f"{high_name}={high}" if high_name else str(high))
    if value < low or (high is not None and value > high):
        fix = f"; lower {flag} to at most {high}" if high is not None and value > high else \
            f"; raise {flag} to at least {low}"
        raise InvalidParameterError(f"{who} must be an int in [{low}, {hi}]; got {value!r}{fix}.")
    return value


def check_k(k: Any, *, n_gallery: int, name: str = "k", owner: str | None = None) -> int:
    """Validate a neighbour count against the gallery size (never clipped silently)."""
    return check_int(k, name=name, owner=owner, low=1, high=n_gallery, high_name="n_gallery")


@dataclass(frozen=True)
class Interval:
    """Allowed numeric range for a parameter (``None`` = unbounded)."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right", "neither"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if self.kind is float and not isinstance(value, numbers.Real):
            return False
        if isinstance(value, float) and not np.isfinite(value):
            return False
        closed_low = self.closed in ("both", "left")
        closed_high = self.closed in ("both", "right")
        lo_ok = self.low is None or (value >= self.low if closed_low else value > self.low)
        hi_ok = self.high is None or (value <= self.high if closed_high else value < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"{'an int' if self.kind is int else 'a float'} in the range {left}{lo}, {hi}{right}"


@dataclass(frozen=True)
class Options:
    """Allowed values for a categorical parameter."""

    values: frozenset

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in sorted(self.values, key=repr))


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, Any], *, owner: str) -> None:
    """Check every parameter against its constraint list; ``None`` in a list allows ``None``.

    The message names the parameter, its owner, what was expected and what arrived.
    """
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        rules = allowed if isinstance(allowed, (list, tuple)) else [allowed]
        ok = False
        for rule in rules:
            if rule is None:
                ok = value is None
            elif isinstance(rule, type):
                ok = isinstance(value, rule) and not (rule is not bool and isinstance(value, bool))
            else:
                ok = rule.accepts(value)
            if ok:
                break
        if not ok:
            expected = " or ".join("None" if r is None else (r.__name__ if isinstance(r, type) else str(r))
                                   for r in rules)
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be {expected}; got {value!r} instead."
            )
