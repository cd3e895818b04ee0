"""Reading a trainer's model folder: the package's format, or the previous version's files.

A trainer saves with :func:`pillar_rerank.checkpoint.save_model_dir` (``weights.safetensors``,
``config.json``, ``manifest.json`` with checksums; parameters outside the model, such as a
learnable logit scale, in ``extra.safetensors``). Folders written by the previous version hold
``model.safetensors`` and ``trainer.json`` (flat parameters) and are still read. Never unpickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from pillar_rerank.checkpoint import CONFIG_FILE, load_model_dir, load_model_extra
from pillar_rerank.exceptions import CheckpointError, InputFileError
from pillar_rerank.io import load_json

#: the ``kind`` a trainer's model folder carries in its ``config.json``
MODEL_KIND = "adapter_trainer"
#: files of a model folder written by the previous version (read-only compatibility)
LEGACY_MODEL_FILE, LEGACY_CONFIG_FILE = "model.safetensors", "trainer.json"


def read_trainer_folder(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, config)`` of a trainer's model folder: the package's format (verified against
    its manifest), or the previous version's ``model.safetensors`` + ``trainer.json``."""
    folder = Path(path)
    if (folder / LEGACY_CONFIG_FILE).is_file() and not (folder / CONFIG_FILE).is_file():
        return _read_legacy_folder(folder)
    state, config = load_model_dir(folder)
    if not isinstance(config, dict) or config.get("kind") != MODEL_KIND:
        raise CheckpointError(
            f"model folder ({folder}): not a backbone trainer's model (config kind "
            f"{config.get('kind') if isinstance(config, dict) else None!r}); `rerank fit` models are "
            "loaded with LeaPRR.load."
        )
    extra = load_model_extra(folder, "extra") or {}
    return {**state, **extra}, config


def _read_legacy_folder(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The previous version's trainer folder (format version 1, no manifest)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = load_json(folder / LEGACY_CONFIG_FILE, name="trainer config")
    if not isinstance(config, dict) or config.get("format_version") != 1:
        raise CheckpointError(
            f"trainer config ({folder / LEGACY_CONFIG_FILE}): unknown format "
            f"{config.get('format_version') if isinstance(config, dict) else config!r}."
        )
    if not (folder / LEGACY_MODEL_FILE).is_file():
        raise InputFileError(f"model weights ({folder / LEGACY_MODEL_FILE}): file not found.")
    try:
        state = load_file(str(folder / LEGACY_MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"model weights ({folder / LEGACY_MODEL_FILE}): corrupt or unreadable ({exc})."
        ) from exc
    return state, config


def check_replaceable(path: str | Path) -> None:
    """Refuse to replace an existing model folder that is not a backbone trainer's.

    :func:`~pillar_rerank.checkpoint.save_model_dir` replaces any model folder of the package
    with ``overwrite``; a trainer must never replace, say, a ``rerank fit`` model that happens to
    sit where it writes.
    """
    folder = Path(path)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        return
    try:
        config = load_json(config_path, name="model config")
    except (InputFileError, CheckpointError, ValueError):
        config = None
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind != MODEL_KIND:
        raise InputFileError(
            f"model folder ({folder}): holds a model that is not a backbone trainer's (config kind "
            f"{kind!r}, e.g. a `rerank fit` model); refusing to replace it. Choose another folder."
        )
