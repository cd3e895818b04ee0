"""Backbone trainers sharing one base: seed, checkpoints, dev-RSUM selection, score export."""

from pillar_rerank.adapters.trainers.base import BaseTrainer
from pillar_rerank.adapters.trainers.selfalign_trainer import SelfAlignModel, SelfAlignTrainer
from pillar_rerank.adapters.trainers.shrink import ShrinkTrainer
from pillar_rerank.adapters.trainers.two_tower import TwoTowerModel, TwoTowerTrainer

TRAINERS = {
    "TwoTowerTrainer": TwoTowerTrainer,
    "SelfAlignTrainer": SelfAlignTrainer,
    "ShrinkTrainer": ShrinkTrainer,
}


def load_trainer(path):
    """Load any saved trainer from its model folder (the class is read from ``trainer.json``)."""
    from pathlib import Path

    from pillar_rerank.exceptions import CheckpointError
    from pillar_rerank.io import load_json

    config = load_json(Path(path) / "trainer.json", name="trainer config")
    cls = TRAINERS.get(config.get("class") if isinstance(config, dict) else None)
    if cls is None:
        raise CheckpointError(
            f"model folder ({path}): unknown trainer class "
            f"{config.get('class') if isinstance(config, dict) else None!r}."
        )
    return cls.load(path)


__all__ = [
    "TRAINERS",
    "BaseTrainer",
    "SelfAlignModel",
    "SelfAlignTrainer",
    "ShrinkTrainer",
    "TwoTowerModel",
    "TwoTowerTrainer",
    "load_trainer",
]
