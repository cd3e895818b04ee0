"""Model directories and resumable training checkpoints: safetensors + JSON, never pickle.

A **model directory** holds

* ``weights.safetensors``: the network's state dict;
* ``config.json``: format version, package version, the :class:`~pillar_rerank.config.LeaPRRConfig`
  and the fitted metadata (input choices, training history summary);
* ``manifest.json``: format version and the SHA-256 and size of the two files above.

It is written into a temporary sibling folder and renamed into place, so a crash never leaves
a half-written model. Loading verifies the manifest first: a tampered, truncated or swapped file
raises :class:`~pillar_rerank.exceptions.CheckpointError` naming it.

A **training checkpoint** (see :class:`TrainingCheckpoint`) is a pair: a safetensors file of
tensors (model, optimiser buffers, best weights, RNG state, data order) and ``state.json`` with
everything else plus the tensors file's checksum. The tensors file gets a fresh name each time
and ``state.json`` is replaced atomically last, so the pair on disk is always consistent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pillar_rerank._version import __version__
from pillar_rerank.exceptions import CheckpointError, InputFileError
from pillar_rerank.io import atomic_path, sha256_file
from pillar_rerank.typing import PathLikeStr

MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_model_dir(
    path: PathLikeStr,
    *,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    overwrite: bool = False,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a model directory atomically; refuse to replace one unless ``overwrite``.

    ``extra`` maps a name to more tensors, stored as ``{name}.safetensors`` and checksummed too.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise InputFileError(f"model dir ({target}): already exists; pass --overwrite (overwrite=True).")
    if target.exists() and not target.is_dir():
        raise InputFileError(f"model dir ({target}): exists and is not a directory.")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputFileError(f"model dir ({target}): folder {parent} does not exist.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        save_file(
            _contiguous(state_dict),
            str(tmp / WEIGHTS_FILE),
            metadata={"format_version": str(MODEL_FORMAT_VERSION), "package_version": __version__},
        )
        doc = {"format_version": MODEL_FORMAT_VERSION, "package_version": __version__, **config}
        (tmp / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        names = [WEIGHTS_FILE, CONFIG_FILE]
        for name, tensors in (extra or {}).items():
            save_file(_contiguous(tensors), str(tmp / f"{name}.safetensors"))
            names.append(f"{name}.safetensors")
        manifest = {
            "format_version": MODEL_FORMAT_VERSION,
            "files": {
                name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                for name in names
            },
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        for name in (*names, MANIFEST_FILE):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            old.rmdir()
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def verify_model_dir(path: PathLikeStr) -> dict[str, Any]:
    """Check a model directory's manifest, format version and checksums; return the manifest."""
    root = Path(path)
    if not root.is_dir():
        raise InputFileError(f"model dir ({root}): not found or not a directory.")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"model dir ({root}): {MANIFEST_FILE} is missing; not a pillar_rerank model.")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        version = manifest["format_version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"model dir ({root}): {MANIFEST_FILE} is corrupt ({exc}).") from exc
    if version != MODEL_FORMAT_VERSION:
        raise CheckpointError(
            f"model dir ({root}): format version {version!r} is not supported "
            f"(this pillar_rerank {__version__} reads version {MODEL_FORMAT_VERSION})."
        )
    if not isinstance(files, dict):
        raise CheckpointError(f"model dir ({root}): {MANIFEST_FILE} is corrupt (no file table).")
    for name in sorted({WEIGHTS_FILE, CONFIG_FILE} | set(files)):
        entry = files.get(name)
        file = root / name
        if entry is None:
            raise CheckpointError(f"model dir ({root}): {MANIFEST_FILE} has no entry for {name}.")
        if not file.is_file():
            raise CheckpointError(f"model dir ({root}): {name} is missing.")
        size = file.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointError(
                f"model dir ({root}): {name} has {size} bytes; the manifest says {entry.get('bytes')} "
                "(truncated or replaced)."
            )
        if sha256_file(file) != entry.get("sha256"):
            raise CheckpointError(
                f"model dir ({root}): {name} fails its SHA-256 check (modified or corrupt)."
            )
    return manifest


def load_model_dir(path: PathLikeStr) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and read a model directory: ``(state_dict, config_document)``."""
    root = Path(path)
    verify_model_dir(root)
    return _read_weights(root, WEIGHTS_FILE), _read_config(root)


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
        return (self.directory / STATE_FILE).is_file()

    def save(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Write tensors under a fresh name, then ``state.json`` atomically, then drop old files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in (*self.directory.glob(".tensors-*.tmp"), *self.directory.glob(f".{STATE_FILE}.*.tmp")):
            with contextlib.suppress(OSError):  # left by a run killed mid-write
                stale.unlink()
        name = f"tensors-{state.get('global_step', 0):09d}-{os.getpid()}.safetensors"
        tensor_path = self.directory / name
        with atomic_path(tensor_path) as tmp:
            save_file(_contiguous(tensors), str(tmp))
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
            raise CheckpointError(f"checkpoint dir ({self.directory}): no {STATE_FILE} to resume from.")
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
