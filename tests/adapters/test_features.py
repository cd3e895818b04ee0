"""FeatureSet and its loader: shapes, maps, lengths, and the errors for inconsistent inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pillar_rerank import InputFileError, InvalidInputError, Relevance
from pillar_rerank.adapters import FeatureSet, load_feature_set


def write(tmp_path, name, arr):
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


def test_loads_vector_features_with_map(tmp_path, rng):
    img = write(tmp_path, "img.npy", rng.normal(size=(4, 3)).astype("float32"))
    txt = write(tmp_path, "txt.npy", rng.normal(size=(7, 5)).astype("float16"))
    t2i = write(tmp_path, "t2i.npy", np.array([0, 1, 1, 2, 3, 3, 3]))
    data = load_feature_set(image_features=img, text_features=txt, txt2img=t2i)
    assert data.n_images == 4 and data.n_texts == 7 and not data.token_level
    assert data.relevance_table().shape == (7, 5)


def test_mismatched_counts_name_the_files(tmp_path, rng):
    img = write(tmp_path, "img.npy", rng.normal(size=(4, 3)).astype("float32"))
    txt = write(tmp_path, "txt.npy", rng.normal(size=(8, 3)).astype("float32"))
    with pytest.raises(InvalidInputError, match=r"n_texts = n_images \* 3 = 12"):
        load_feature_set(image_features=img, text_features=txt, captions_per_image=3)
    short_map = write(tmp_path, "t2i.npy", np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(InvalidInputError, match=r"t2i.npy.*one entry per caption.*n_texts=8.*got 6"):
        load_feature_set(image_features=img, text_features=txt, txt2img=short_map)
    uncovered = write(tmp_path, "t2i_b.npy", np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    with pytest.raises(InvalidInputError, match="images have no caption"):
        load_feature_set(image_features=img, text_features=txt, txt2img=uncovered)
    past = write(tmp_path, "t2i_c.npy", np.array([0, 1, 2, 3, 4, 0, 1, 2]))
    with pytest.raises(InvalidInputError, match="point past n_images=4"):
        load_feature_set(image_features=img, text_features=txt, txt2img=past)
    with pytest.raises(InputFileError, match="not found"):
        load_feature_set(
            image_features=str(tmp_path / "missing.npy"), text_features=txt, captions_per_image=2
        )


def test_token_features_and_lengths(rng):
    rel = Relevance.from_captions_per_image(3, 2)
    img = rng.normal(size=(3, 4, 5)).astype("float32")
    txt = rng.normal(size=(6, 7, 5)).astype("float32")
    data = FeatureSet(img, txt, rel, text_lengths=np.array([7, 1, 3, 4, 5, 6]))
    assert data.token_level and data.image_lengths.tolist() == [4, 4, 4]
    assert data.relevance_table() is None
    with pytest.raises(InvalidInputError, match="lengths outside"):
        FeatureSet(img, txt, rel, text_lengths=np.array([0, 1, 3, 4, 5, 6]))
    with pytest.raises(InvalidInputError, match="not token-level"):
        FeatureSet(img[:, 0], txt[:, 0], rel, text_lengths=np.ones(6, dtype=int))


def test_nan_and_dtype_errors(rng):
    rel = Relevance.from_captions_per_image(2, 1)
    bad = np.ones((2, 3), dtype="float32")
    bad[1, 2] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        FeatureSet(bad, np.ones((2, 3), dtype="float32"), rel)
    with pytest.raises(InvalidInputError, match="float"):
        FeatureSet(np.ones((2, 3), dtype=int), np.ones((2, 3), dtype="float32"), rel)
