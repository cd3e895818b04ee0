"""Model directories and resumable training checkpoints: safetensors + JSON, never pickle.

A **model directory** holds

* ``weights.safetensors``: the network's state dict;
* ``config.json``: format version, package version, the :class:`~pillar_rerank.config.LeaPRRConfig`
  and the fitted metadata (input choices, training history summary);
* ``manifest.json``: format version and the SHA-256 and size of the two files above.

It is written into a temporary sibling folder and renamed into place (or atomically exchanged
with the previous model directory), so a crash never leaves a half-written model, and only a
folder that is a model directory of ours is ever replaced: never one holding inputs or other
files. Loading verifies the manifest first: a tampered, truncated or swapped file raises
:class:`~pillar_rerank.exceptions.CheckpointError` naming it. Every field of the manifest and of a
PillarReranker ``config.json`` is then validated, and the tensor shapes in the weights file's
header are compared with those the config implies, before any tensor is read or model built (a
model too large for the machine is refused with the memory it needs). Files are byte-identical
across identical runs (safetensors metadata is written with sorted keys). Commands that read a model refuse
outputs inside its directory (:func:`check_output_outside_model_dir`).

A **training checkpoint** (see :class:`TrainingCheckpoint`) is a pair: a safetensors file of
tensors (model, optimiser buffers, best weights, RNG state, data order) and ``state.json`` with
everything else plus the tensors file's checksum. The tensors file gets a fresh name each time
and ``state.json`` is replaced atomically last, so the pair on disk is always consistent.
Temporaries left by a run killed mid-write are removed by the next save or resume.

Longer than the ~400 lines aimed at: the one model-folder format (atomic writer, checked reader,
field validation) and the resumable training checkpoint that uses the same safetensors and manifest
rules; keeping them together keeps the format's rules in one place (a split into writer/validation
modules is the next step).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import struct
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file

from pillar_rerank._validation import spelled
from pillar_rerank._version import __version__
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidInputError
from pillar_rerank.io import atomic_path, sha256_file
from pillar_rerank.typing import PathLikeStr

logger = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"

# atomic_path's temporaries of a tensors file or state.json: ".NAME." + 8 random chars + ".tmp"
_STALE_CHECKPOINT_TMP = re.compile(
    r"^\.(tensors-\d+-\d+\.safetensors|" + re.escape(STATE_FILE) + r")\.[a-z0-9_]{8}\.tmp$"
)


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _save_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file whose bytes depend only on its content.

    safetensors serialises ``metadata`` from a hash map, so its keys come out in a random order
    and two identical saves differ. The header is therefore re-serialised here with the metadata
    keys sorted (tensor entries keep safetensors' own deterministic order; offsets are relative
    to the data section, which is copied unchanged).
    """
    tensors = _contiguous(tensors)
    if not metadata:
        save_file(tensors, str(path))
        return
    raw = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    header = {"__metadata__": header.pop("__metadata__"), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data section to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        fh.write(memoryview(raw)[8 + n :])


def check_model_dir_target(
    path: PathLikeStr, *, overwrite: bool = False, inputs: Iterable[PathLikeStr | None] = ()
) -> Path:
    """Check that a model directory may be written at ``path``; return it as a Path.

    Refused (:class:`~pillar_rerank.exceptions.InputFileError`): an existing path without
    ``overwrite``; a file or a symbolic link; a non-empty folder that is not a model directory
    (no ``manifest.json``); a model directory holding anything beyond its own files; a folder
    that is or holds one of ``inputs``. So replacing a model directory never deletes anything
    but a previous model. Call it before long work (training), and :func:`save_model_dir` calls
    it again before writing.
    """
    target = Path(path)
    label = f"model dir ({target})"
    resolved = target.resolve()
    for inp in inputs:
        if inp is None:
            continue
        ip = Path(inp).resolve()
        if ip == resolved or resolved in ip.parents:
            raise InputFileError(f"{label}: holds the input {inp}; refusing to write the model over it.")
    if not (target.exists() or target.is_symlink()):
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise InputFileError(f"{label}: folder {parent} does not exist.")
        return target
    if not overwrite:
        raise InputFileError(f"{label}: already exists; pass {spelled('overwrite=True')} to replace it.")
    if target.is_symlink() or not target.is_dir():
        kind = "a symbolic link" if target.is_symlink() else "not a directory"
        raise InputFileError(f"{label}: exists and is {kind}; refusing to replace it.")
    entries = sorted(p.name for p in target.iterdir())
    if entries and not (target / MANIFEST_FILE).is_file():
        raise InputFileError(
            f"{label}: exists and is not a pillar_rerank model directory (no {MANIFEST_FILE}); "
            f"refusing to replace it, which would delete its {len(entries)} entries "
            f"(e.g. {entries[0]}). Choose a new or empty folder."
        )
    foreign = [name for name in entries if name not in _own_files(target)]
    if foreign:
        raise InputFileError(
            f"{label}: holds {len(foreign)} entries that are not part of the model "
            f"({', '.join(foreign[:3])}); refusing to replace it and delete them."
        )
    return target


def check_output_outside_model_dir(
    output: PathLikeStr, model_dir: PathLikeStr, *, name: str = "output"
) -> None:
    """Refuse to write ``output`` inside ``model_dir`` (a model being read is an input)."""
    out, root = Path(output).resolve(), Path(model_dir).resolve()
    if out == root or root in out.parents:
        raise InputFileError(
            f"{name} ({output}): is inside the model directory {model_dir} being read; "
            "refusing to write there. Choose a path outside it."
        )


def model_dir_files(model_dir: PathLikeStr) -> list[Path]:
    """The files of a model directory (to pass as ``inputs`` to output checks); [] if absent."""
    root = Path(model_dir)
    return sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else []


def _own_files(root: Path) -> set[str]:
    """Names of the files a model directory of ours consists of (from its manifest)."""
    names = {WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE}
    try:
        files = json.loads((root / MANIFEST_FILE).read_text())["files"]
        names |= {n for n in files if isinstance(n, str) and _is_plain_tensors_name(n)}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a damaged manifest: only the fixed names count as ours
    return names


def _is_plain_tensors_name(name: str) -> bool:
    return name.endswith(".safetensors") and Path(name).name == name and not name.startswith(".")


# safetensors writes through a sibling temporary file named like this (Rust ``tempfile``): a
# save killed mid-write leaves one in its temporary folder.
_PARTIAL_WRITE = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")


def _remove_model_files(folder: Path, *, partial_writes: bool = False) -> None:
    """Delete a model directory (or a temporary one) file by file: only our own file names, only
    regular files; the folder itself is removed only when that leaves it empty. With
    ``partial_writes`` (our own temporary folders only) also safetensors' partial-write files."""
    for entry in folder.iterdir():
        mine = entry.name in {WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE} or _is_plain_tensors_name(entry.name)
        mine = mine or (partial_writes and _PARTIAL_WRITE.match(entry.name) is not None)
        if mine and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(OSError):
                entry.unlink()
    try:
        folder.rmdir()
    except OSError:
        logger.warning("left %s in place: it holds files that are not part of a model", folder)


def _stale_model_temporaries(parent: Path, name: str) -> list[Path]:
    """Temporary folders of earlier, killed saves of model dir ``name`` (our naming only)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.[a-z0-9_]{{8}}\.(tmp|old)$")
    try:
        return [p for p in parent.iterdir() if pattern.match(p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model_dir(
    path: PathLikeStr,
    *,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    overwrite: bool = False,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
    inputs: Iterable[PathLikeStr | None] = (),
) -> Path:
    """Write a model directory atomically; replace a previous one only with ``overwrite``.

    ``extra`` maps a name to more tensors, stored as ``{name}.safetensors`` and checksummed too.
    The target is checked by :func:`check_model_dir_target` (never a folder that is not a model
    directory of ours, never one holding an input). The files are written into a temporary
    sibling folder which is then renamed into place, or atomically exchanged with the previous
    model directory (whose files are then deleted). Temporary folders left beside the target by
    a killed earlier save are removed. Permissions are the usual ones (0o777 / 0o666 minus the
    umask), not ``mkdtemp``'s 0o700.
    """
    given = check_model_dir_target(path, overwrite=overwrite, inputs=inputs)
    target = Path(os.path.abspath(given))  # a real name and parent even for "." or "dir/.."
    parent = target.parent
    for stale in _stale_model_temporaries(parent, target.name):
        _remove_model_files(stale, partial_writes=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        _save_tensors(
            state_dict,
            tmp / WEIGHTS_FILE,
            metadata={"format_version": str(MODEL_FORMAT_VERSION), "package_version": __version__},
        )
        doc = {"format_version": MODEL_FORMAT_VERSION, "package_version": __version__, **config}
        (tmp / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        names = [WEIGHTS_FILE, CONFIG_FILE]
        for name, tensors in (extra or {}).items():
            _save_tensors(tensors, tmp / f"{name}.safetensors")
            names.append(f"{name}.safetensors")
        manifest = {
            "format_version": MODEL_FORMAT_VERSION,
            "files": {
                name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                for name in names
            },
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        mask = _umask()
        for name in (*names, MANIFEST_FILE):
            os.chmod(tmp / name, 0o666 & ~mask)
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~mask)
        _fsync_dir(tmp)
        if target.exists():
            check_model_dir_target(target, overwrite=overwrite, inputs=inputs)  # unchanged meanwhile?
            if not _exchange(tmp, target):
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
                old.rmdir()
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    os.replace(old, target)
                    raise
                tmp = old
            _fsync_dir(parent)
            _remove_model_files(tmp)  # the previous model, now under the temporary name
        else:
            os.replace(tmp, target)
            _fsync_dir(parent)
    except BaseException as exc:
        if tmp.exists() and not (target.exists() and os.path.samefile(tmp, target)):
            _remove_model_files(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, InputFileError):
            raise InputFileError(f"model dir ({given}): cannot be written ({exc}).") from exc
        raise
    return given


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_manifest(manifest: Any, root: Path) -> dict[str, dict[str, Any]]:
    """Every field of a manifest, checked; returns its file table. Errors name the field."""
    where = f"model dir ({root}): {MANIFEST_FILE}"
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{where} is corrupt (a JSON {type(manifest).__name__}, not an object).")
    _check_fields(manifest, ("format_version", "files"), where=f"{where} is corrupt: it")
    _check_format_version(manifest["format_version"], where=where)
    files = manifest["files"]
    if not isinstance(files, dict):
        raise CheckpointError(f"{where} is corrupt: field 'files' is not a table of file names.")
    for name, entry in files.items():
        if name not in (WEIGHTS_FILE, CONFIG_FILE) and not _is_plain_tensors_name(name):
            raise CheckpointError(
                f"{where} is corrupt: files[{name!r}] is not a file of a model directory "
                f"({WEIGHTS_FILE}, {CONFIG_FILE} or NAME.safetensors, inside the folder)."
            )
        if not isinstance(entry, dict) or set(entry) != {"sha256", "bytes"}:
            raise CheckpointError(
                f"{where} is corrupt: files[{name!r}] must be an object with exactly 'sha256' and 'bytes'."
            )
        if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
            raise CheckpointError(
                f"{where} is corrupt: files[{name!r}].sha256 must be 64 lower-case hex digits; "
                f"got {entry['sha256']!r}."
            )
        if not _is_count(entry["bytes"]):
            raise CheckpointError(
                f"{where} is corrupt: files[{name!r}].bytes must be a non-negative integer; "
                f"got {entry['bytes']!r}."
            )
    return files


def verify_model_dir(path: PathLikeStr) -> dict[str, Any]:
    """Check a model directory's manifest (every field), format version and checksums; return it."""
    root = Path(path)
    if not root.is_dir():
        raise InputFileError(f"model dir ({root}): not found or not a directory.")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"model dir ({root}): {MANIFEST_FILE} is missing; not a pillar_rerank model.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"model dir ({root}): {MANIFEST_FILE} is corrupt ({exc}).") from exc
    files = _check_manifest(manifest, root)
    for name in sorted({WEIGHTS_FILE, CONFIG_FILE} | set(files)):
        entry = files.get(name)
        file = root / name
        if entry is None:
            raise CheckpointError(f"model dir ({root}): {MANIFEST_FILE} has no entry for {name}.")
        if not file.is_file():
            raise CheckpointError(f"model dir ({root}): {name} is missing.")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(
                f"model dir ({root}): {name} has {size} bytes; the manifest says {entry['bytes']} "
                "(truncated or replaced)."
            )
        if sha256_file(file) != entry["sha256"]:
            raise CheckpointError(
                f"model dir ({root}): {name} fails its SHA-256 check (modified or corrupt)."
            )
    return manifest


def load_model_dir(path: PathLikeStr) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and read a model directory: ``(state_dict, config_document)``.

    The content of the model directory of an estimator this module knows (``config.json``'s
    ``estimator``; see :data:`_CONTENT_CHECKS`) is validated before its weights are read: every
    field of ``config.json``, and the tensor shapes in the weights file's header against those the
    config implies. So a forged size is refused without allocating it.
    """
    root = Path(path)
    verify_model_dir(root)
    doc = _read_config(root)
    check = _CONTENT_CHECKS.get(doc.get("estimator")) if isinstance(doc, dict) else None
    if check is not None:
        check(root, doc)
    return _read_weights(root, WEIGHTS_FILE), doc


def load_model_extra(path: PathLikeStr, name: str) -> dict[str, torch.Tensor] | None:
    """The verified ``{name}.safetensors`` of a model directory, or None when it has none."""
    root = Path(path)
    files = verify_model_dir(root)["files"]
    return _read_weights(root, f"{name}.safetensors") if f"{name}.safetensors" in files else None


def _read_config(root: Path) -> dict[str, Any]:
    try:
        doc = json.loads((root / CONFIG_FILE).read_text())
    except ValueError as exc:
        raise CheckpointError(f"model dir ({root}): {CONFIG_FILE} is not valid JSON ({exc}).") from exc
    return doc


def _read_weights(root: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(root / name))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"model dir ({root}): {name} cannot be read ({exc}).") from exc


def read_tensor_shapes(path: PathLikeStr, *, source: str | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a safetensors file, from its header (no data is read)."""
    label = source or str(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {name: tuple(int(n) for n in fh.get_slice(name).get_shape()) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{label}: cannot be read ({exc}).") from exc


# Fields of LeaPRRConfig in model directories of format version 1. A model directory must hold
# all of them; fields added to LeaPRRConfig later are not in this set and take their defaults
# when a model directory written before them lacks them.
_LEAPRR_CONFIG_KEYS_V1 = frozenset({
    "n_pillars", "list_len_i2t", "list_len_t2i", "anchor", "graph_neighbors", "graph_coef",
    "reference_thresholds", "intra_source", "intra_rank", "neighbor_index", "neighbor_index_params",
    "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "attention", "temperature", "margin",
    "triplet_weight", "hinge_weight", "kl_weight", "kl_temperature", "epochs", "batch_size", "lr",
    "momentum", "weight_decay", "eval_every", "seed", "device", "precision", "normalize",
    "normalize_params",
})
_RERANKER_DOC_KEYS = ("format_version", "package_version", "estimator", "config", "fitted")
_FITTED_KEYS = ("n_images_in", "n_texts_in", "input", "history")
_OPTIONAL_FITTED_KEYS = ("fusion",)  # added after format 1; checked by pillar_rerank.fusion.check_record


def check_reranker_document(doc: Any, *, source: str):
    """Validate every field of a PillarReranker ``config.json``; return its ``LeaPRRConfig``.

    Fields: ``format_version`` (this format), ``package_version`` (a string), ``estimator``
    ("PillarReranker"), ``config`` (every :class:`~pillar_rerank.config.LeaPRRConfig` field of
    this format, each of the right type and range) and ``fitted`` (``n_images_in`` and
    ``n_texts_in`` non-negative integers, ``input`` and ``history`` objects). Missing and unknown
    fields are errors too. Raises :class:`~pillar_rerank.exceptions.CheckpointError` naming the
    file and the field.
    """
    from pillar_rerank._validation import Interval, validate_params
    from pillar_rerank.config import LeaPRRConfig

    where = f"{source}: {CONFIG_FILE}"
    if not isinstance(doc, dict):
        raise CheckpointError(f"{where} must hold a JSON object; got a {type(doc).__name__}.")
    _check_fields(doc, _RERANKER_DOC_KEYS, where=where)
    _check_format_version(doc["format_version"], where=where)
    if not isinstance(doc["package_version"], str):
        raise CheckpointError(f"{where}: package_version must be a string; got {doc['package_version']!r}.")
    if doc["estimator"] != "PillarReranker":
        raise CheckpointError(f"{where}: estimator is {doc['estimator']!r}, not 'PillarReranker'.")
    values = doc["config"]
    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: field 'config' must be an object; got a {type(values).__name__}.")
    absent = sorted(_LEAPRR_CONFIG_KEYS_V1 - set(values))
    if absent:
        raise CheckpointError(f"{where}: config lacks the field {absent[0]!r} ({len(absent)} missing).")
    try:
        cfg = LeaPRRConfig.from_dict(values)
    except (InvalidInputError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: 'config' is not a valid LeaPRR config ({exc})") from exc
    fitted = doc["fitted"]
    if not isinstance(fitted, dict):
        raise CheckpointError(f"{where}: field 'fitted' must be an object; got a {type(fitted).__name__}.")
    _check_fields(fitted, _FITTED_KEYS, optional=_OPTIONAL_FITTED_KEYS, where=f"{where}: field 'fitted'")
    try:
        validate_params(
            fitted,
            {"n_images_in": Interval(int, 0), "n_texts_in": Interval(int, 0), "input": dict, "history": dict},
            owner=f"{where} field 'fitted'",
        )
    except InvalidInputError as exc:
        raise CheckpointError(str(exc)) from exc
    return cfg


def _check_fields(obj: dict, required: tuple[str, ...], *, where: str,
                  optional: tuple[str, ...] = ()) -> None:
    """Refuse a JSON object lacking one of ``required`` or holding a key outside required + optional."""
    missing = [k for k in required if k not in obj]
    extra = sorted(set(obj) - set(required) - set(optional))
    if missing or extra:
        what = f"lacks the field {missing[0]!r}" if missing else f"has the unknown field {extra[0]!r}"
        raise CheckpointError(f"{where} {what} (fields: {', '.join(required)}).")


def _check_format_version(version: Any, *, where: str) -> None:
    if not _is_count(version):
        raise CheckpointError(f"{where}: format_version must be an integer; got {version!r}.")
    if version != MODEL_FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format_version {version!r} is not supported (this pillar_rerank {__version__} "
            f"reads version {MODEL_FORMAT_VERSION})."
        )


def check_weights_match_config(cfg, shapes: dict[str, tuple[int, ...]], *, source: str) -> None:
    """Refuse weights (name -> shape) that are not exactly those ``cfg``'s model has.

    The expected shapes come from :func:`~pillar_rerank.model.network.state_shapes`, which
    allocates nothing and first refuses a model too large for this machine, so this runs
    before any model is built.
    """
    from pillar_rerank.model.network import state_shapes

    try:
        expected = state_shapes(cfg)
    except InvalidInputError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    bad = sorted(k for k in set(expected) & set(shapes) if tuple(expected[k]) != tuple(shapes[k]))
    if missing or extra or bad:
        first = (
            f"missing {missing[0]!r}"
            if missing
            else f"unexpected {extra[0]!r}"
            if extra
            else f"{bad[0]!r} has shape {tuple(shapes[bad[0]])}, the config needs {tuple(expected[bad[0]])}"
        )
        raise CheckpointError(
            f"{source}: the weights do not match the config (embed_dim={cfg.embed_dim}, "
            f"depth={cfg.depth}, n_pillars={cfg.n_pillars}, anchor={cfg.anchor!r}): {len(missing)} missing, "
            f"{len(extra)} unexpected, {len(bad)} mis-shaped tensors ({first})."
        )


def _check_reranker_dir(root: Path, doc: dict[str, Any]) -> None:
    """config.json fully valid, and the weights' header shapes exactly those of its config."""
    from pillar_rerank.model.network import check_model_size

    source = f"model dir ({root})"
    cfg = check_reranker_document(doc, source=source)
    try:
        check_model_size(cfg)
    except InvalidInputError as exc:
        raise CheckpointError(f"{source}: {CONFIG_FILE}: {exc}") from exc
    shapes = read_tensor_shapes(root / WEIGHTS_FILE, source=f"{source}: {WEIGHTS_FILE}")
    check_weights_match_config(cfg, shapes, source=source)


#: estimator name (config.json) -> check of its model directory's content before loading
_CONTENT_CHECKS = {"PillarReranker": _check_reranker_dir}


class SimulatedCrash(RuntimeError):
    """Raised by ``fit(crash_at_step=N)``: a test knob that simulates a killed run."""


class TrainingCheckpoint:
    """A resumable training state in ``directory`` (tensors in safetensors, the rest in JSON).

    Parameters
    ----------
    directory : path
        Created if missing.
    """

    def __init__(self, directory: PathLikeStr) -> None:
        self.directory = Path(directory)

    def exists(self) -> bool:
        """Whether a complete checkpoint (``state.json``) is there to resume from."""
        return (self.directory / STATE_FILE).is_file()

    def is_empty(self) -> bool:
        """Whether nothing of a checkpoint is there: no ``state.json`` and no tensors file
        (stale temporaries of a killed write do not count)."""
        return not self.exists() and not any(self.directory.glob("tensors-*.safetensors"))

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files an earlier run killed mid-write left (our names only)."""
        if not self.directory.is_dir():
            return []
        removed = []
        for entry in self.directory.iterdir():
            if _STALE_CHECKPOINT_TMP.match(entry.name) and entry.is_file() and not entry.is_symlink():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
        if removed:
            logger.info("removed %d temporary file(s) of an interrupted checkpoint write in %s",
                        len(removed), self.directory)
        return removed

    def save(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Write tensors under a fresh name, then ``state.json`` atomically, then drop old files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temporaries()
        name = f"tensors-{state.get('global_step', 0):09d}-{os.getpid()}.safetensors"
        tensor_path = self.directory / name
        with atomic_path(tensor_path) as tmp:
            _save_tensors(tensors, tmp)
        doc = {
            "format_version": MODEL_FORMAT_VERSION,
            "package_version": __version__,
            "tensors_file": name,
            "tensors_sha256": sha256_file(tensor_path),
            **state,
        }
        with atomic_path(self.directory / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
        for old in self.directory.glob("tensors-*.safetensors"):
            if old.name != name:
                with contextlib.suppress(OSError):
                    old.unlink()

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Read and verify the latest state: ``(tensors, state)``."""
        state_path = self.directory / STATE_FILE
        if not state_path.is_file():
            orphans = sorted(p.name for p in self.directory.glob("tensors-*.safetensors"))
            hint = (
                f" It holds {orphans[0]} without it: {STATE_FILE} was deleted, or the run was killed "
                "while writing its first checkpoint; run without --resume (resume=False) to start over."
                if orphans
                else ""
            )
            raise CheckpointError(f"checkpoint dir ({self.directory}): no {STATE_FILE} to resume from.{hint}")
        try:
            doc = json.loads(state_path.read_text())
            tensor_path = self.directory / doc["tensors_file"]
            digest = doc["tensors_sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint dir ({self.directory}): {STATE_FILE} is corrupt ({exc})."
            ) from exc
        if doc.get("format_version") != MODEL_FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint dir ({self.directory}): format version {doc.get('format_version')!r} "
                f"is not supported (expected {MODEL_FORMAT_VERSION})."
            )
        if not tensor_path.is_file() or sha256_file(tensor_path) != digest:
            raise CheckpointError(
                f"checkpoint dir ({self.directory}): {tensor_path.name} is missing "
                "or fails its SHA-256 check."
            )
        try:
            tensors = load_file(str(tensor_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint dir ({self.directory}): cannot read {tensor_path.name} ({exc})."
            ) from exc
        return tensors, doc
