"""Backbone trainers sharing one base: seed, checkpoints, dev-RSUM selection, score export."""

from pathlib import Path

from pillar_rerank.adapters.trainers.base import BaseTrainer
from pillar_rerank.adapters.trainers.folders import read_trainer_folder
from pillar_rerank.adapters.trainers.selfalign_trainer import SelfAlignModel, SelfAlignTrainer
from pillar_rerank.adapters.trainers.shrink import ShrinkTrainer
from pillar_rerank.adapters.trainers.two_tower import TwoTowerModel, TwoTowerTrainer
from pillar_rerank.checkpoint import CONFIG_FILE
from pillar_rerank.exceptions import CheckpointError

#: the model folder's name inside a ``rerank train-backbone`` run folder
RUN_MODEL_DIR = "model"

TRAINERS = {
    "TwoTowerTrainer": TwoTowerTrainer,
    "SelfAlignTrainer": SelfAlignTrainer,
    "ShrinkTrainer": ShrinkTrainer,
}


def trainer_folder(path) -> Path:
    """The model folder inside ``path``: ``path`` itself, or a run folder's ``model/``."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / RUN_MODEL_DIR).is_dir():
        return path / RUN_MODEL_DIR
    return path


def load_trainer(path, *, device: str | None = None) -> BaseTrainer:
    """Load any saved trainer from its model folder, or from a ``train-backbone`` run folder.

    The class is read from the folder's config; folders of the previous version
    (``model.safetensors`` + ``trainer.json``) load too.
    """
    folder = trainer_folder(path)
    _, config = read_trainer_folder(folder)
    cls = TRAINERS.get(config.get("class"))
    if cls is None:
        raise CheckpointError(f"model folder ({folder}): unknown trainer class {config.get('class')!r}.")
    return cls.load(folder, device=device)


__all__ = [
    "RUN_MODEL_DIR",
    "TRAINERS",
    "BaseTrainer",
    "SelfAlignModel",
    "SelfAlignTrainer",
    "ShrinkTrainer",
    "TwoTowerModel",
    "TwoTowerTrainer",
    "load_trainer",
    "trainer_folder",
]
