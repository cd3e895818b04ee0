"""One call for the ``rerank train-backbone`` command: load features, train, save, export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pillar_rerank.adapters.features import FeatureSet, load_feature_set
from pillar_rerank.adapters.losses import LOSSES
from pillar_rerank.adapters.trainers import (
    BaseTrainer,
    SelfAlignTrainer,
    ShrinkTrainer,
    TwoTowerTrainer,
    load_trainer,
)
from pillar_rerank.exceptions import InputFileError, InvalidParameterError

#: every ``--loss`` name: the two-tower losses, SelfAlign and score distillation from a teacher
TRAINING_LOSSES = (*sorted(LOSSES), "selfalign", "distill")


def make_trainer(
    loss: str, *, loss_params: dict | None = None, teacher: str | Path | None = None, **params: Any
) -> BaseTrainer:
    """The trainer for a ``--loss`` name (``params`` are its keyword arguments)."""
    if loss not in TRAINING_LOSSES:
        raise InvalidParameterError(f"Unknown loss {loss!r}; expected one of {', '.join(TRAINING_LOSSES)}.")
    if (loss == "distill") != (teacher is not None):
        raise InvalidParameterError("A teacher model folder is needed with loss 'distill', and only there.")
    if loss == "selfalign":
        for name in ("head", "text_head", "hidden_dim", "dropout", "context_layers", "num_codes", "n_out"):
            params.pop(name, None)
        return SelfAlignTrainer(**(loss_params or {}), **params)
    if loss == "distill":
        return ShrinkTrainer(load_trainer(teacher), **(loss_params or {}), **params)
    return TwoTowerTrainer(loss=loss, loss_params=loss_params, **params)


#: files a model folder's save and every score export write (the run's outputs)
MODEL_FILES = ("model.safetensors", "trainer.json")
SCORE_FILES = ("sims.npy", "txt2img.npy", "image_emb.npy", "text_emb.npy", "manifest.json")


def check_run_outputs(model_dir: Path, score_dirs: list[str], inputs: list) -> None:
    """Refuse a run whose outputs include one of its inputs, before anything is written.

    Every output path (the model files, each score folder and its files) is compared with every
    input (resolved, and by inode for hard links), so ``--overwrite`` never leaves a run folder
    half replaced when the clash is found late.
    """
    outputs = [model_dir, *(model_dir / name for name in MODEL_FILES)]
    for folder in score_dirs:
        outputs += [model_dir / folder, *(model_dir / folder / name for name in SCORE_FILES)]
    for inp in inputs:
        ip = Path(inp)
        for out in outputs:
            same = out.resolve() == ip.resolve()
            if not same and out.exists() and ip.exists():
                same = os.path.samefile(out, ip)
            if same:
                raise InputFileError(
                    f"output ({out}): is the input {ip}; refusing to write the run there "
                    "(nothing was written). Choose another -o folder or move the input."
                )


def train_backbone(
    *,
    loss: str,
    train: dict[str, Any],
    model_dir: str | Path,
    dev: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    loss_params: dict | None = None,
    teacher: str | Path | None = None,
    overwrite: bool = False,
    export_train_dev: bool = True,
    **trainer_params: Any,
) -> dict[str, Any]:
    """Train a backbone head on feature files, save it and export its scores.

    Parameters
    ----------
    loss : str
        One of :data:`TRAINING_LOSSES`.
    train, dev, export : dict
        Keyword arguments of :func:`load_feature_set` for each side (paths). The export side
        defaults to dev, then to train.
    model_dir : path
        Receives ``model.safetensors``, ``trainer.json`` and ``scores/`` (``sims.npy``,
        ``txt2img.npy``, embeddings where the model has them, ``manifest.json``) for the export
        side, plus ``scores_train/`` and ``scores_dev/`` (see ``export_train_dev``).
    loss_params : dict, optional
        Loss (or SelfAlign/distillation) parameters.
    teacher : path, optional
        Model folder of the teacher for ``loss="distill"``.
    overwrite : bool
        Replace an existing model folder's files.
    export_train_dev : bool, default=True
        Also export the training and dev sides' scores to ``scores_train/`` and ``scores_dev/``,
        the inputs of ``rerank fit`` (LeaPRR trains on the backbone's own training scores).
    **trainer_params
        Trainer parameters (``head``, ``embed_dim``, ``epochs``, ``seed``, ...).

    Returns
    -------
    dict with ``model_dir``, ``scores_dir``, ``best_epoch``, ``best_dev_rsum``, ``history`` and the
    export side's ``metrics``.
    """
    model_dir = Path(model_dir)
    inputs = [
        p for side in (train, dev or {}, export or {}) for p in side.values() if isinstance(p, (str, Path))
    ]
    if teacher is not None and Path(teacher).is_dir():
        inputs += [p for p in Path(teacher).iterdir() if p.is_file()]
    score_dirs = ["scores"]
    if export_train_dev:
        score_dirs += ["scores_train"] + (["scores_dev"] if dev else [])
    check_run_outputs(model_dir, score_dirs, inputs)
    trainer = make_trainer(loss, loss_params=loss_params, teacher=teacher, **trainer_params)
    train_set = load_feature_set(**train, name="train")
    dev_set = load_feature_set(**dev, name="dev") if dev else None
    export_set = load_feature_set(**export, name="export") if export else (dev_set or train_set)
    if (model_dir / "model.safetensors").exists() and not overwrite:
        raise InputFileError(
            f"model folder ({model_dir}): already holds a model; pass --overwrite to replace it."
        )
    trainer.fit(train_set, dev_set)
    trainer.save(model_dir, overwrite=overwrite)
    scores_dir = model_dir / "scores"
    manifest = trainer.export_scores(scores_dir, export_set, overwrite=overwrite, inputs=inputs)
    extra_dirs = {}
    if export_train_dev:
        for side, data in (("train", train_set), ("dev", dev_set)):
            if data is not None:
                extra_dirs[side] = str(model_dir / f"scores_{side}")
                trainer.export_scores(extra_dirs[side], data, overwrite=overwrite, inputs=inputs)
    return {
        "model_dir": str(model_dir),
        "scores_dir": str(scores_dir),
        "trainer": repr(trainer),
        "best_epoch": trainer.best_epoch_,
        "best_dev_rsum": trainer.best_dev_rsum_,
        "history": trainer.history_,
        "export_side": export_set.name,
        "metrics": manifest["metrics"],
        "files": manifest["files"],
    }


__all__ = ["TRAINING_LOSSES", "FeatureSet", "make_trainer", "train_backbone"]
