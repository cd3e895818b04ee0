"""One call for the ``rerank train-backbone`` command: load features, train, save, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pillar_rerank.adapters.config import HeadConfig, TrainingConfig
from pillar_rerank.adapters.features import FeatureSet, load_feature_set
from pillar_rerank.adapters.losses import LOSSES
from pillar_rerank.adapters.trainers import (
    RUN_MODEL_DIR,
    BaseTrainer,
    SelfAlignTrainer,
    ShrinkTrainer,
    TwoTowerTrainer,
    load_trainer,
)
from pillar_rerank.adapters.trainers.folders import LEGACY_CONFIG_FILE, LEGACY_MODEL_FILE, check_replaceable
from pillar_rerank.checkpoint import check_model_dir_target
from pillar_rerank.exceptions import InputFileError, InvalidParameterError
from pillar_rerank.io import _same_file, check_writable_folder

#: every ``--loss`` name: the two-tower losses, SelfAlign and score distillation from a teacher
TRAINING_LOSSES = (*sorted(LOSSES), "selfalign", "distill")


def _config(cls: type, value: Any, base: Any) -> Any:
    """A config object from ``None`` (the trainer's default), a config object or a dict of fields."""
    if value is None or isinstance(value, cls):
        return value
    return cls.from_dict(dict(value), base=base)


def make_trainer(
    loss: str,
    *,
    loss_params: dict | None = None,
    teacher: str | Path | None = None,
    head: HeadConfig | dict | None = None,
    training: TrainingConfig | dict | None = None,
) -> BaseTrainer:
    """The trainer for a ``--loss`` name, validated before any work.

    ``head`` / ``training`` are config objects or dicts of the fields to change from the
    trainer's defaults (e.g. ``{"lr": 1e-3}`` keeps SelfAlign's own ``weight_decay=0``). Unknown
    fields, loss parameters the trainer does not take and head fields its model cannot use raise
    :class:`~pillar_rerank.exceptions.InvalidParameterError`; nothing is dropped.
    """
    if loss not in TRAINING_LOSSES:
        raise InvalidParameterError(f"Unknown loss {loss!r}; expected one of {', '.join(TRAINING_LOSSES)}.")
    if (loss == "distill") != (teacher is not None):
        raise InvalidParameterError("A teacher model folder is needed with loss 'distill', and only there.")
    cls = {"selfalign": SelfAlignTrainer, "distill": ShrinkTrainer}.get(loss, TwoTowerTrainer)
    configs = {
        "head": _config(HeadConfig, head, cls.default_head),
        "training": _config(TrainingConfig, training, cls.default_training),
    }
    if cls is TwoTowerTrainer:
        trainer = TwoTowerTrainer(loss=loss, loss_params=loss_params, **configs)
    else:
        params = dict(loss_params or {})
        valid = sorted(set(cls._param_names()) - {"head", "training", "teacher"})
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise InvalidParameterError(
                f"loss {loss!r}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}."
            )
        if cls is ShrinkTrainer:
            trainer = ShrinkTrainer(load_trainer(teacher), **params, **configs)
        else:
            trainer = SelfAlignTrainer(**params, **configs)
    trainer._validate_params()
    if cls is TwoTowerTrainer:
        trainer._prepare(None)  # builds the loss: bad loss parameters raise now, not after loading
    return trainer


#: a run folder of the previous version kept its model here; an overwrite removes them
LEGACY_FILES = (LEGACY_MODEL_FILE, LEGACY_CONFIG_FILE)
#: the files every score export writes
SCORE_FILES = ("sims.npy", "txt2img.npy", "image_emb.npy", "text_emb.npy", "manifest.json")


def check_run_outputs(model_dir: Path, score_dirs: list[str], inputs: list) -> None:
    """Refuse a run whose outputs include one of its inputs, before anything is written.

    Every output path (the model files, each score folder and its files) is compared with every
    input (resolved, and by inode for hard links), so ``--overwrite`` never leaves a run folder
    half replaced when the clash is found late.
    """
    model_folder = model_dir / RUN_MODEL_DIR
    outputs = [model_dir, model_folder, *(model_dir / name for name in LEGACY_FILES)]
    for folder in score_dirs:
        outputs += [model_dir / folder, *(model_dir / folder / name for name in SCORE_FILES)]
    for inp in inputs:
        ip = Path(inp)
        if model_folder.resolve() in ip.resolve().parents:
            raise InputFileError(
                f"output ({model_folder}): holds the input {ip}; refusing to write the run there "
                "(nothing was written). Choose another -o folder or move the input."
            )
        for out in outputs:
            if out.resolve() == ip.resolve() or _same_file(out, ip):
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
    head: HeadConfig | dict | None = None,
    training: TrainingConfig | dict | None = None,
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
        The run folder. Receives ``model/`` (the trainer's model folder, loaded by
        :func:`~pillar_rerank.adapters.trainers.load_trainer` from the run folder or from
        ``model/``) and ``scores/`` (``sims.npy``, ``txt2img.npy``, embeddings where the model
        has them, ``manifest.json``) for the export side, plus ``scores_train/`` and
        ``scores_dev/`` (see ``export_train_dev``). Every output is checked against every input
        before anything is read or written.
    loss_params : dict, optional
        Loss (or SelfAlign/distillation) parameters.
    teacher : path, optional
        Model folder of the teacher for ``loss="distill"``.
    overwrite : bool
        Replace an existing run's model and score files (a run folder of the previous version,
        with ``model.safetensors`` and ``trainer.json`` at its top, is converted).
    export_train_dev : bool, default=True
        Also export the training and dev sides' scores to ``scores_train/`` and ``scores_dev/``,
        the inputs of ``rerank fit`` (LeaPRR trains on the backbone's own training scores).
    head, training : HeadConfig, TrainingConfig or dict, optional
        The trainer's configuration groups (dicts: fields changed from the trainer's defaults).

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
        inputs += [p for p in Path(teacher).rglob("*") if p.is_file()]
    score_dirs = ["scores"]
    if export_train_dev:
        score_dirs += ["scores_train"] + (["scores_dev"] if dev else [])
    check_run_outputs(model_dir, score_dirs, inputs)
    check_writable_folder(model_dir, name="run folder")  # before any input is read or any training
    model_folder = model_dir / RUN_MODEL_DIR
    legacy = [model_dir / name for name in LEGACY_FILES if (model_dir / name).is_file()]
    if (model_folder.exists() or legacy) and not overwrite:
        raise InputFileError(
            f"model folder ({model_dir}): already holds a model; pass --overwrite to replace it."
        )
    if model_dir.is_dir():
        check_replaceable(model_folder)
        check_model_dir_target(model_folder, overwrite=overwrite, inputs=inputs)
    trainer = make_trainer(loss, loss_params=loss_params, teacher=teacher, head=head, training=training)
    train_set = load_feature_set(**train, name="train")
    dev_set = load_feature_set(**dev, name="dev") if dev else None
    export_set = load_feature_set(**export, name="export") if export else (dev_set or train_set)
    trainer.fit(train_set, dev_set)
    model_dir.mkdir(parents=True, exist_ok=True)
    trainer.save(model_folder, overwrite=overwrite, inputs=inputs)
    for path in legacy:  # the previous version's model files, now replaced by model/
        path.unlink()
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
        "model_folder": str(model_folder),
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
