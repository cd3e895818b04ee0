"""Two-tower trainer: training steps with each loss, export read by `rerank eval`, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

from pillar_rerank import CheckpointError, InputFileError, InvalidParameterError, NotFittedError, Relevance
from pillar_rerank.adapters import FeatureSet, HeadConfig, TrainingConfig, TwoTowerTrainer, load_trainer
from pillar_rerank.inputs import load_retrieval_set
from pillar_rerank.metrics import recall_metrics


def synthetic(rng, n_images=24, caps=3, d=12, noise=0.6):
    img = rng.normal(size=(n_images, d)).astype("float32")
    mix = rng.normal(size=(d, d)).astype("float32")
    txt = (np.repeat(img, caps, axis=0) @ mix + noise * rng.normal(size=(n_images * caps, d))).astype(
        "float32"
    )
    return FeatureSet(img, txt, Relevance.from_captions_per_image(n_images, caps), name="synthetic")


FAST_TRAINING = TrainingConfig(epochs=3, batch_size=12, lr=5e-3)
FAST = {"head": HeadConfig(embed_dim=8), "training": FAST_TRAINING}
MLP = {"head": HeadConfig(kind="mlp", embed_dim=8), "training": FAST_TRAINING}


@pytest.mark.parametrize(
    "loss,params",
    [
        ("infonce", None),
        ("vsepp", None),
        ("vse0", None),
        ("listwise", {"weight": 0.3}),
        ("lp_hinge", {"margin": 0.2}),
        ("infonce", {"learnable": True}),
    ],
)
def test_each_loss_trains_and_improves(rng, loss, params):
    data = synthetic(rng)
    trainer = TwoTowerTrainer(loss=loss, loss_params=params, **MLP).fit(data, data)
    assert trainer.best_epoch_ >= 1 and len(trainer.history_) == 3
    losses = [h["loss"] for h in trainer.history_]
    assert losses[-1] < losses[0]
    assert trainer.best_dev_rsum_ == pytest.approx(
        recall_metrics(trainer.score(data), data.relevance)["RSUM"]
    )


def test_seed_reproducible_and_selection(rng):
    data = synthetic(rng)
    seed3, seed4 = FAST_TRAINING.replace(seed=3), FAST_TRAINING.replace(seed=4)
    a = TwoTowerTrainer(head=FAST["head"], training=seed3).fit(data, data).score(data)
    b = TwoTowerTrainer(head=FAST["head"], training=seed3).fit(data, data).score(data)
    c = TwoTowerTrainer(head=FAST["head"], training=seed4).fit(data, data).score(data)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_export_is_read_by_rerank_eval(rng, tmp_path):
    data = synthetic(rng)
    trainer = TwoTowerTrainer(**FAST).fit(data)
    manifest = trainer.export_scores(tmp_path / "scores", data)
    assert set(manifest["files"]) == {"sims", "txt2img", "image_emb", "text_emb"}
    sims = np.load(tmp_path / "scores" / "sims.npy")
    assert sims.dtype == np.float32 and sims.shape == (24, 72)
    emb_i, emb_t = (
        np.load(tmp_path / "scores" / "image_emb.npy"),
        np.load(tmp_path / "scores" / "text_emb.npy"),
    )
    assert np.allclose(emb_i @ emb_t.T, sims, atol=1e-5)
    loaded = load_retrieval_set(
        sims=tmp_path / "scores" / "sims.npy", txt_to_img=tmp_path / "scores" / "txt2img.npy"
    )
    assert loaded.relevance.same_as(data.relevance)
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            str(tmp_path / "scores" / "sims.npy"),
            "--txt2img",
            str(tmp_path / "scores" / "txt2img.npy"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{manifest['metrics']['RSUM']:.2f}" in result.output
    saved = json.loads((tmp_path / "scores" / "manifest.json").read_text())
    assert saved["trainer"]["class"] == "TwoTowerTrainer" and saved["n_texts"] == 72
    with pytest.raises(InputFileError, match="exists"):
        trainer.export_scores(tmp_path / "scores", data)


def test_save_load_roundtrip_and_corruption(rng, tmp_path):
    data = synthetic(rng)
    trainer = TwoTowerTrainer(loss="infonce", loss_params={"learnable": True}, **MLP).fit(data)
    trainer.save(tmp_path / "m")
    again = load_trainer(tmp_path / "m")
    assert isinstance(again, TwoTowerTrainer) and again.get_params() == trainer.get_params()
    assert np.array_equal(again.score(data), trainer.score(data))
    assert float(again.loss_fn_.log_scale.detach()) == pytest.approx(
        float(trainer.loss_fn_.log_scale.detach())
    )
    with pytest.raises(InputFileError, match="already exists"):
        trainer.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "weights.safetensors",
        "config.json",
        "manifest.json",
        "extra.safetensors",
    }
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        load_trainer(tmp_path / "m")


def test_checkpoint_dir_keeps_best(rng, tmp_path):
    data = synthetic(rng)
    training = FAST_TRAINING.replace(checkpoint_dir=str(tmp_path / "ckpt"))
    trainer = TwoTowerTrainer(head=FAST["head"], training=training).fit(data, data)
    best = load_trainer(tmp_path / "ckpt")
    assert best.best_epoch_ == trainer.best_epoch_
    assert np.array_equal(best.score(data), trainer.score(data))


def test_errors(rng):
    data = synthetic(rng)
    with pytest.raises(NotFittedError, match="not fitted"):
        TwoTowerTrainer().score(data)
    with pytest.raises(InvalidParameterError, match="'epochs' parameter of TwoTowerTrainer"):
        TwoTowerTrainer(training=TrainingConfig(epochs=0)).fit(data)
    with pytest.raises(InvalidParameterError, match="does not fit"):
        TwoTowerTrainer(head=HeadConfig(kind="token", embed_dim=8), training=FAST_TRAINING).fit(data)
    with pytest.raises(InvalidParameterError, match="hidden_dim do not apply"):
        TwoTowerTrainer(head=HeadConfig(hidden_dim=32), training=FAST_TRAINING).fit(data)
    with pytest.raises(TypeError):
        TwoTowerTrainer(embed_dim=8)  # sizes live in HeadConfig, never as loose keywords
    with pytest.raises(InvalidParameterError, match="bad parameters"):
        TwoTowerTrainer(loss="listwise", **FAST).fit(data)
    trainer = TwoTowerTrainer(**FAST).fit(data)
    other = FeatureSet(data.image_features[:, :5], data.text_features, data.relevance)
    with pytest.raises(Exception, match="trained on"):
        trainer.score(other)


def test_token_level_inflate_model(rng):
    rel = Relevance.from_captions_per_image(12, 2)
    img = rng.normal(size=(12, 4, 6)).astype("float32")
    txt = (np.repeat(img, 2, axis=0) + 0.3 * rng.normal(size=(24, 4, 6))).astype("float32")
    data = FeatureSet(img, txt, rel, text_lengths=rng.integers(1, 5, size=24))
    trainer = TwoTowerTrainer(
        loss="lp_hinge",
        head=HeadConfig(kind="token", embed_dim=8, context_layers=1, num_codes=2),
        training=TrainingConfig(epochs=2, batch_size=8),
    ).fit(data, data)
    scores = trainer.score(data)
    assert scores.shape == (12, 24) and np.isfinite(scores).all()
    assert trainer.model_.item_embeddings(*trainer.encode(data)) is None
