"""Saving and loading trainers: ``model.safetensors`` + ``trainer.json``, written atomically.

Never pickles: weights go through safetensors, parameters and history through JSON. A corrupt or
mismatched folder raises :class:`~pillar_rerank.exceptions.CheckpointError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pillar_rerank.exceptions import CheckpointError, InputFileError
from pillar_rerank.io import atomic_path, load_json, save_json
from pillar_rerank.utils import resolve_device

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "trainer.json"


class CheckpointMixin:
    """``save(path)`` / ``load(path)`` for :class:`~pillar_rerank.adapters.trainers.base.BaseTrainer`."""

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` + ``trainer.json`` (params, model spec, history) atomically."""
        from safetensors.torch import save_file

        self._check_is_fitted()
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise InputFileError(f"model folder ({out}): exists and is not a folder.")
        if (out / MODEL_FILE).exists() and not overwrite:
            raise InputFileError(
                f"model folder ({out}): already holds a model; pass overwrite=True (--overwrite)."
            )
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.model_.state_dict().items()}
        state.update(
            {
                f"extra.{i}": p.detach().cpu().contiguous().clone()
                for i, p in enumerate(self._extra_parameters())
            }
        )
        with atomic_path(out / MODEL_FILE) as tmp:
            save_file(state, str(tmp))
        config = {
            "format_version": FORMAT_VERSION,
            "class": type(self).__name__,
            "params": self._json_params(),
            "model_spec": self.model_spec_,
            "history": getattr(self, "history_", []),
            "best_epoch": getattr(self, "best_epoch_", None),
            "best_dev_rsum": getattr(self, "best_dev_rsum_", None),
            "n_tensors": len(state),
        }
        save_json(out / CONFIG_FILE, config, overwrite=True, name="trainer config")
        return out

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> CheckpointMixin:
        """Rebuild a fitted trainer from :meth:`save`'s folder (safetensors, never pickle)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(path)
        config = load_json(folder / CONFIG_FILE, name="trainer config")
        if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"trainer config ({folder / CONFIG_FILE}): unknown format "
                f"{config.get('format_version') if isinstance(config, dict) else config!r}."
            )
        if config.get("class") != cls.__name__:
            raise CheckpointError(
                f"model folder ({folder}): holds a {config.get('class')!r}, not a {cls.__name__}."
            )
        if not (folder / MODEL_FILE).is_file():
            raise InputFileError(f"model weights ({folder / MODEL_FILE}): file not found.")
        try:
            state = load_file(str(folder / MODEL_FILE))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"model weights ({folder / MODEL_FILE}): corrupt or unreadable ({exc})."
            ) from exc
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        params = cls._params_from_json(params)
        trainer = cls(**params)
        trainer._validate_params()
        trainer.model_spec_ = config["model_spec"]
        trainer._prepare(None)
        model = trainer._build_model(trainer.model_spec_)
        extra = {k: v for k, v in state.items() if k.startswith("extra.")}
        model_state = {k: v for k, v in state.items() if not k.startswith("extra.")}
        try:
            model.load_state_dict(model_state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"model weights ({folder / MODEL_FILE}): do not match the saved config ({exc})."
            ) from exc
        for i, p in enumerate(trainer._extra_parameters()):
            if f"extra.{i}" in extra:
                p.data.copy_(extra[f"extra.{i}"])
        trainer.model_ = model.to(resolve_device(trainer.device)).eval()
        trainer.history_ = config.get("history", [])
        trainer.best_epoch_ = config.get("best_epoch")
        trainer.best_dev_rsum_ = config.get("best_dev_rsum")
        return trainer

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        valid = set(cls._param_names())
        unknown = sorted(set(params) - valid)
        if unknown:
            raise CheckpointError(f"{cls.__name__} config: unknown parameter(s) {unknown!r}.")
        return params
