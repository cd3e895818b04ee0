"""Trainers' model folders: the package's format, and folders of the previous version still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pillar_rerank import CheckpointError, InputFileError, Relevance
from pillar_rerank.adapters import FeatureSet, HeadConfig, TrainingConfig, TwoTowerTrainer, load_trainer
from pillar_rerank.checkpoint import verify_model_dir

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_v1"


@pytest.fixture(scope="module")
def legacy():
    arrays = np.load(LEGACY / "inputs_and_scores.npz", allow_pickle=False)
    rel = Relevance.from_captions_per_image(6, 2)
    vector = FeatureSet(arrays["img"], arrays["txt"], rel)
    tokens = FeatureSet(arrays["timg"], arrays["ttxt"], rel, text_lengths=np.array([3, 2] * 6))
    return arrays, {"two_tower": vector, "shrink": vector, "selfalign": tokens}


@pytest.mark.parametrize("name", ["two_tower", "shrink", "selfalign"])
def test_previous_version_folders_load_and_score_the_same(legacy, name):
    """Folders written by the previous version (model.safetensors + trainer.json, flat params)."""
    arrays, data = legacy
    trainer = load_trainer(LEGACY / name)
    # the same weights and inputs; fp32 rounding differs between CPU kernels (AVX2 / AVX-512)
    np.testing.assert_allclose(trainer.score(data[name]), arrays[name], rtol=0, atol=1e-6)
    assert isinstance(trainer.head_config(), HeadConfig)
    assert isinstance(trainer.training_config(), TrainingConfig)


def test_previous_version_params_become_configs(legacy):
    trainer = load_trainer(LEGACY / "two_tower")
    assert trainer.head_config() == HeadConfig(kind="mlp", embed_dim=4, hidden_dim=6)
    assert trainer.training_config() == TrainingConfig(epochs=1, batch_size=4)
    assert load_trainer(LEGACY / "shrink").head_config() == HeadConfig(embed_dim=3)
    assert load_trainer(LEGACY / "selfalign").head_config() == HeadConfig(embed_dim=4)


def test_resave_in_the_package_format(legacy, tmp_path):
    arrays, data = legacy
    trainer = load_trainer(LEGACY / "two_tower")
    trainer.save(tmp_path / "m")
    manifest = verify_model_dir(tmp_path / "m")
    assert set(manifest["files"]) == {"weights.safetensors", "config.json"}
    again = load_trainer(tmp_path / "m")
    assert again.get_params() == trainer.get_params()
    assert np.array_equal(again.score(data["two_tower"]), trainer.score(data["two_tower"]))
    np.testing.assert_allclose(again.score(data["two_tower"]), arrays["two_tower"], rtol=0, atol=1e-6)


def test_tampered_weights_and_foreign_folders_are_refused(legacy, tmp_path):
    trainer = load_trainer(LEGACY / "two_tower")
    trainer.save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_trainer(tmp_path / "m")
    bad = tmp_path / "legacy_bad"
    shutil.copytree(LEGACY / "two_tower", bad)
    config = json.loads((bad / "trainer.json").read_text())
    config["params"]["oops"] = 1
    (bad / "trainer.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="oops"):
        load_trainer(bad)
    del config["model_spec"]
    (bad / "trainer.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_spec"):
        load_trainer(bad)


def test_model_folder_config_kind_is_checked(tmp_path):
    from pillar_rerank.checkpoint import save_model_dir

    save_model_dir(tmp_path / "leaprr", state_dict={}, config={"config": {}})
    with pytest.raises(CheckpointError, match="not a backbone trainer"):
        TwoTowerTrainer.load(tmp_path / "leaprr")
    before = (tmp_path / "leaprr" / "config.json").read_bytes()
    with pytest.raises(InputFileError, match="not a backbone trainer"):
        load_trainer(LEGACY / "two_tower").save(tmp_path / "leaprr", overwrite=True)
    assert (tmp_path / "leaprr" / "config.json").read_bytes() == before
