"""Safe file input and output.

* Arrays load with ``allow_pickle=False``; a missing, truncated or object-dtype file gives a
  clear :class:`~pillar_rerank.exceptions.PillarRerankError` naming the file.
* Every file the toolkit writes goes to a temporary file in the same folder and is renamed into
  place (``os.replace``), so a crash never leaves a half-written output.
* Outputs never overwrite an input, and overwrite an existing file only when asked.
* An input must be a regular file: a FIFO, socket or device is refused before it is opened
  (opening a FIFO blocks until a writer appears; a device may never end). Missing, non-regular
  and unreadable inputs are I/O failures (:class:`~pillar_rerank.exceptions.InputFileError`,
  exit 3); bad content is bad input (exit 2).
* Arrays stored in the non-native byte order (big-endian ``.npy`` files) are converted on load,
  integer maps and float matrices alike; such a file is read into memory even when a memory map
  was asked for (the rest of the toolkit, torch included, needs native byte order).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
import tokenize
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pillar_rerank._validation import spelled
from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.typing import PathLikeStr

logger = logging.getLogger(__name__)

_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input_file(path: PathLikeStr, *, name: str, what: str = "file") -> Path:
    """``path`` names an existing regular file, checked without opening it (exit 3 otherwise).

    ``what`` names the expected content in the directory message (e.g. "a .npy file").
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode  # follows symlinks: a link to /dev/zero is a device
    except FileNotFoundError as exc:
        raise InputFileError(f"{name} ({p}): file not found.") from exc
    except OSError as exc:
        raise InputFileError(f"{name} ({p}): cannot access the file ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(mode):
        raise InputFileError(f"{name} ({p}): expected {what}; got a directory.")
    if not stat.S_ISREG(mode):
        kind = next((label for test, label in _FILE_KINDS if test(mode)), "a special file")
        raise InputFileError(
            f"{name} ({p}): not a regular file ({kind}); save the data to a file and pass that file."
        )
    return p


def _native_byte_order(arr: np.ndarray, *, name: str, p: Path, mmap: bool) -> np.ndarray:
    """``arr`` in native byte order (big-endian files are converted, read into memory)."""
    if arr.dtype.isnative or arr.dtype.byteorder == "|":
        return arr
    if mmap:
        logger.warning("%s (%s): stored big-endian; read into memory and converted to the native byte "
                       "order (save it little-endian to memory-map it).", name, p)
    return arr.astype(arr.dtype.newbyteorder("="))


def load_array(path: PathLikeStr, *, name: str = "array", mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` file without unpickling, optionally memory-mapped (read-only).

    A big-endian file is converted to the native byte order (in memory). ``name`` appears in
    messages as the caller spells it (``txt_to_img`` is ``--txt2img`` under ``rerank``).
    """
    name = spelled(name)
    p = check_input_file(path, name=name, what="a .npy file")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(6)
    except PermissionError as exc:
        raise InputFileError(f"{name} ({p}): cannot read the file ({exc.strerror}).") from exc
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        # np.load would report any non-.npy file as "pickled data"
        raise InvalidInputError(f"{name} ({p}): not a valid .npy file (no NumPy header).")
    if magic == b"\x93NUMPY":
        _check_npy_header(p, name=name)
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except PermissionError as exc:
        raise InputFileError(f"{name} ({p}): cannot read the file ({exc.strerror}).") from exc
    except MemoryError as exc:
        raise InputFileError(f"{name} ({p}): too large to load into memory ({exc}).") from exc
    except (SyntaxError, tokenize.TokenError, OverflowError, TypeError, zipfile.BadZipFile) as exc:
        # a corrupt header (or zip directory) can fail inside numpy's parsers or np.memmap with these
        raise InvalidInputError(f"{name} ({p}): not a valid .npy file (corrupt header: {exc}).") from exc
    except ValueError as exc:
        msg = str(exc)
        if "allow_pickle" in msg or "Object arrays" in msg or "Python objects" in msg:
            raise InvalidInputError(
                f"{name} ({p}): holds an object (pickled) array, which is never loaded; "
                "save a numeric array instead."
            ) from exc
        raise InvalidInputError(f"{name} ({p}): not a valid .npy file ({msg}).") from exc
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"{name} ({p}): not a valid .npy file or truncated ({exc}).") from exc
    if isinstance(arr, np.lib.npyio.NpzFile):  # pragma: no cover - .npz given as .npy
        arr.close()
        raise InvalidInputError(f"{name} ({p}): expected a single .npy array; got an .npz archive.")
    return _native_byte_order(arr, name=name, p=p, mmap=mmap)


def _check_npy_header(p: Path, *, name: str) -> None:
    """Parse a ``.npy`` header and check the file holds the data it declares, before loading.

    Without this a corrupt or hostile header declaring a huge shape makes ``np.load`` try to
    allocate it (``MemoryError``) and a truncated file is only noticed after allocation.
    """
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                # 3.0 has the 2.0 layout with a utf-8 header; ASCII headers parse the same way
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            data_offset = fh.tell()
    except PermissionError as exc:
        raise InputFileError(f"{name} ({p}): cannot read the file ({exc.strerror}).") from exc
    except (ValueError, SyntaxError, tokenize.TokenError, OverflowError, TypeError, EOFError,
            OSError) as exc:
        raise InvalidInputError(f"{name} ({p}): not a valid .npy file (corrupt header: {exc}).") from exc
    if dtype.hasobject:
        raise InvalidInputError(
            f"{name} ({p}): holds an object (pickled) array, which is never loaded; "
            "save a numeric array instead."
        )
    if any(int(d) < 0 for d in shape):
        raise InvalidInputError(f"{name} ({p}): not a valid .npy file (negative shape {shape} in header).")
    n_bytes = math.prod(int(d) for d in shape) * dtype.itemsize
    size = p.stat().st_size
    if data_offset + n_bytes > size:
        raise InvalidInputError(
            f"{name} ({p}): truncated .npy file: the header declares shape {tuple(shape)} of {dtype} "
            f"({n_bytes} bytes of data) but the file holds {max(0, size - data_offset)}."
        )


def load_direction_pair(path: PathLikeStr, *, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Load the ``.npz`` of direction-specific scores written by ``rerank baseline``.

    It holds exactly two numeric arrays, ``i2t`` and ``t2i``, both image x text.
    """
    arrays = load_npz(path, name=name, required={"i2t", "t2i"}, allowed={"i2t", "t2i"})
    return arrays["i2t"], arrays["t2i"]


def _pickled(name: str, p: Path) -> str:
    return f"{name} ({p}): holds object (pickled) arrays, which are never loaded."


def load_npz(path: PathLikeStr, *, name: str, required: set[str], allowed: set[str]
              ) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` archive (never unpickling), checking which arrays it holds.

    Missing, truncated, non-zip, single-``.npy`` and object-array files give a clear error.
    """
    p = check_input_file(path, name=name, what="an .npz file")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise InputFileError(f"{name} ({p}): cannot read the file ({exc.strerror or exc}).") from exc
    if magic == b"\x93NUMPY":
        raise InvalidInputError(
            f"{name} ({p}): expected an .npz archive with arrays {sorted(required)}; got a single .npy array."
        )
    if not magic.startswith(b"PK"):
        # np.load would report any non-zip file as "pickled data"
        raise InvalidInputError(f"{name} ({p}): not a valid .npz file (no zip header).")
    try:
        npz = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise InvalidInputError(_pickled(name, p)) from exc
        raise InvalidInputError(f"{name} ({p}): not a valid .npz file ({exc}).") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{name} ({p}): not a valid .npz file ({exc}).") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):  # pragma: no cover - excluded by the magic check
        raise InvalidInputError(
            f"{name} ({p}): expected an .npz archive with arrays {sorted(required)}; got a single .npy array."
        )
    with npz:
        missing = required - set(npz.files)
        if missing:
            raise InvalidInputError(
                f"{name} ({p}): missing array(s) {sorted(missing)}; expected an .npz with arrays "
                f"{' and '.join(repr(k) for k in sorted(allowed))}."
            )
        extra = set(npz.files) - allowed
        if extra:
            raise InvalidInputError(f"{name} ({p}): unexpected array(s) {sorted(extra)}.")
        try:
            return {k: _native_byte_order(npz[k], name=name, p=p, mmap=False) for k in npz.files}
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise InvalidInputError(_pickled(name, p)) from exc
            raise InvalidInputError(f"{name} ({p}): not a valid .npz file ({exc}).") from exc
        except (OSError, EOFError, zipfile.BadZipFile, SyntaxError, tokenize.TokenError, MemoryError) as exc:
            raise InvalidInputError(f"{name} ({p}): not a valid .npz file or truncated ({exc}).") from exc


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: PathLikeStr, *, inputs: Iterable[PathLikeStr] = (), overwrite: bool = False,
                      name: str = "output") -> Path:
    """Refuse to write over an input file, or over an existing file unless ``overwrite``."""
    out = Path(path)
    for inp in inputs:
        if inp is None:
            continue
        ip = Path(inp)
        if _same_file(out, ip) or out.resolve() == ip.resolve():
            raise InputFileError(f"{name} ({out}): refusing to write over the input file {ip}.")
    if out.exists() and not overwrite:
        raise InputFileError(f"{name} ({out}): file exists; pass {spelled('overwrite=True')} to replace it.")
    if out.exists() and out.is_dir() and out.suffix:
        raise InputFileError(f"{name} ({out}): is a directory.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise InputFileError(f"{name} ({out}): folder {parent} does not exist.")
    check_writable_folder(parent, name=name, target=out)
    return out


def check_writable_folder(folder: PathLikeStr, *, name: str, target: PathLikeStr | None = None) -> Path:
    """Create and remove a probe file in ``folder`` so an unwritable location fails before any work.

    A permission bit says little (root passes ``os.access`` on a read-only file system or in
    ``/proc``); creating a file is the test that counts. ``folder`` that does not exist yet is
    probed at its nearest existing ancestor (where it will be created). Raises InputFileError (3).
    """
    where = Path(folder)
    while not where.exists() and where != where.parent:
        where = where.parent
    label = f"{name} ({target if target is not None else folder})"
    if not where.is_dir():
        raise InputFileError(f"{label}: {where} is not a folder; choose a writable location.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=where)
    except OSError as exc:
        raise InputFileError(
            f"{label}: cannot write in folder {where} ({exc.strerror or exc}); choose a writable location."
        ) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return where


@contextlib.contextmanager
def atomic_path(path: PathLikeStr) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_array(path: PathLikeStr, array: np.ndarray, *, inputs: Iterable[PathLikeStr] = (),
               overwrite: bool = False, name: str = "output") -> Path:
    """Write ``array`` as ``.npy`` atomically; never over an input."""
    out = check_output_path(path, inputs=inputs, overwrite=overwrite, name=name)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
    return out


def save_direction_pair(path: PathLikeStr, i2t: np.ndarray, t2i: np.ndarray, *,
                        inputs: Iterable[PathLikeStr] = (), overwrite: bool = False,
                        name: str = "output") -> Path:
    """Write direction-specific scores as the ``.npz`` :func:`load_direction_pair` reads, atomically.

    Both arrays are image x text float32: rank rows of ``i2t`` for image -> text and columns of
    ``t2i`` for text -> image.
    """
    out = check_output_path(path, inputs=inputs, overwrite=overwrite, name=name)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, i2t=np.asarray(i2t, dtype=np.float32), t2i=np.asarray(t2i, dtype=np.float32))
    return out


def save_json(path: PathLikeStr, obj: Any, *, inputs: Iterable[PathLikeStr] = (),
              overwrite: bool = False, name: str = "output") -> Path:
    """Write ``obj`` as indented JSON atomically."""
    out = check_output_path(path, inputs=inputs, overwrite=overwrite, name=name)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return out


def load_json(path: PathLikeStr, *, name: str = "json") -> Any:
    """Read a JSON file with clear errors for missing or malformed files."""
    p = check_input_file(path, name=name, what="a JSON file")
    try:
        return json.loads(p.read_text())
    except OSError as exc:
        raise InputFileError(f"{name} ({p}): cannot read the file ({exc.strerror or exc}).") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{name} ({p}): not valid JSON ({exc}).") from exc


def sha256_file(path: PathLikeStr, *, chunk: int = 2**20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
