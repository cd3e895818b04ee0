"""Shrink trainer: a smaller student distilled from a frozen teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pillar_rerank import InvalidParameterError, NotFittedError, Relevance
from pillar_rerank.adapters import (
    FeatureSet,
    HeadConfig,
    ShrinkTrainer,
    TrainingConfig,
    TwoTowerTrainer,
    load_trainer,
)

TRAINING = TrainingConfig(epochs=3, batch_size=12, lr=5e-3)


def data_set(rng, n=24, caps=2, d=10):
    img = rng.normal(size=(n, d)).astype("float32")
    txt = (np.repeat(img, caps, axis=0) + 0.5 * rng.normal(size=(n * caps, d))).astype("float32")
    return FeatureSet(img, txt, Relevance.from_captions_per_image(n, caps))


def test_student_learns_from_frozen_teacher(rng, tmp_path):
    data = data_set(rng)
    teacher = TwoTowerTrainer(head=HeadConfig(kind="mlp", embed_dim=16), training=TRAINING).fit(data)
    before = {k: v.clone() for k, v in teacher.model_.state_dict().items()}
    student = ShrinkTrainer(teacher, head=HeadConfig(embed_dim=4), training=TRAINING, teacher_scale=2.0)
    student.fit(data, data)
    for k, v in teacher.model_.state_dict().items():
        assert torch.equal(v, before[k])  # the teacher is never updated
    assert student.model_.image_head.out_dim == 4
    losses = [h["loss"] for h in student.history_]
    assert losses[-1] < losses[0]
    student.export_scores(tmp_path / "s", data)
    student.save(tmp_path / "m")
    loaded = load_trainer(tmp_path / "m")
    assert loaded.teacher is None and np.array_equal(loaded.score(data), student.score(data))


def test_teacher_required_and_fitted(rng):
    data = data_set(rng)
    with pytest.raises(InvalidParameterError, match="teacher"):
        ShrinkTrainer(None, training=TrainingConfig(epochs=1)).fit(data)
    with pytest.raises(NotFittedError):
        ShrinkTrainer(TwoTowerTrainer(), training=TrainingConfig(epochs=1)).fit(data)


def test_default_student_head_is_64d():
    assert ShrinkTrainer(None).head_config() == HeadConfig(embed_dim=64)
