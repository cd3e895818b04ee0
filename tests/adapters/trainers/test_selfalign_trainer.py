"""SelfAlign trainer on synthetic token features: steps, prototype freeze, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pillar_rerank import InvalidInputError, InvalidParameterError, Relevance
from pillar_rerank.adapters import FeatureSet, HeadConfig, SelfAlignTrainer, TrainingConfig, load_trainer

HEAD = HeadConfig(embed_dim=8)


def fast(**training):
    """SelfAlign's default training (lr 2e-4, no weight decay) with a small budget."""
    return SelfAlignTrainer.default_training.replace(**{"epochs": 1, "batch_size": 8, **training})


def token_data(rng, n=16, caps=2, regions=5, words=6, d=8):
    img = rng.normal(size=(n, regions, d)).astype("float32")
    txt = np.repeat(img[:, :words], caps, axis=0) if words <= regions else None
    base = np.repeat(img, caps, axis=0)[:, : min(words, regions)]
    txt = np.concatenate([base, rng.normal(size=(n * caps, words - base.shape[1], d))], axis=1)
    txt = (txt + 0.3 * rng.normal(size=txt.shape)).astype("float32")
    return FeatureSet(
        img,
        txt,
        Relevance.from_captions_per_image(n, caps),
        text_lengths=rng.integers(2, words + 1, size=n * caps),
        name="tokens",
    )


def test_trains_exports_and_reloads(rng, tmp_path):
    data = token_data(rng)
    trainer = SelfAlignTrainer(num_prototypes=6, head=HEAD, training=fast(epochs=2, lr=1e-3)).fit(data, data)
    assert len(trainer.history_) == 2 and all(np.isfinite(h["loss"]) for h in trainer.history_)
    manifest = trainer.export_scores(tmp_path / "out", data)
    sims = np.load(tmp_path / "out" / "sims.npy")
    emb = np.load(tmp_path / "out" / "image_emb.npy") @ np.load(tmp_path / "out" / "text_emb.npy").T
    assert np.allclose(emb, sims, atol=1e-5) and manifest["files"]["image_emb"] == "image_emb.npy"
    trainer.save(tmp_path / "m")
    assert np.allclose(load_trainer(tmp_path / "m").score(data), sims, atol=1e-6)


def test_prototypes_frozen_in_epoch_zero(rng):
    data = token_data(rng)
    trainer = SelfAlignTrainer(num_prototypes=6, head=HEAD, training=fast(seed=1))
    torch.manual_seed(1)
    trainer.fit(data)
    weight = trainer.model_.prototypes.weight.detach()
    assert torch.allclose(weight.norm(dim=1), torch.ones(6), atol=1e-5)  # only re-normalised
    fresh = SelfAlignTrainer(
        num_prototypes=6, head=HEAD, training=fast(seed=1), freeze_prototypes_epochs=0
    ).fit(data)
    assert not torch.allclose(fresh.model_.prototypes.weight, weight)


def test_mask_padding_switch_changes_scores(rng):
    data = token_data(rng)
    a = SelfAlignTrainer(num_prototypes=6, head=HEAD, training=fast()).fit(data).score(data)
    b = (
        SelfAlignTrainer(num_prototypes=6, head=HEAD, training=fast(), mask_padding=False)
        .fit(data)
        .score(data)
    )
    assert not np.allclose(a, b)


def test_needs_token_features(rng):
    rel = Relevance.from_captions_per_image(4, 1)
    data = FeatureSet(
        rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 3)).astype("float32"), rel
    )
    with pytest.raises(InvalidInputError, match="token-level"):
        SelfAlignTrainer().fit(data)


@pytest.mark.parametrize(
    "head,field",
    [
        (HeadConfig(embed_dim=8, hidden_dim=16), "hidden_dim"),
        (HeadConfig(embed_dim=8, dropout=0.3), "dropout"),
        (HeadConfig(embed_dim=8, n_out=1), "n_out"),
        (HeadConfig(kind="mlp", embed_dim=8), "linear"),
    ],
)
def test_inapplicable_head_fields_raise(rng, head, field):
    """The previous API silently dropped these for selfalign; now they are an error."""
    with pytest.raises(InvalidParameterError, match=field):
        SelfAlignTrainer(num_prototypes=6, head=head, training=fast()).fit(token_data(rng))


def test_default_training_is_selfalign_s():
    assert SelfAlignTrainer().training_config() == TrainingConfig(lr=2e-4, weight_decay=0.0)
