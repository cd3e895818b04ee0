import json

import pytest

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidParameterError


def test_defaults_are_the_papers():
    c = LeaPRRConfig().validate()
    assert (c.n_pillars, c.list_len_i2t, c.list_len_t2i) == (64, 32, 8)
    assert (c.embed_dim, c.depth, c.num_heads) == (768, 2, 24)
    assert (c.epochs, c.batch_size, c.lr, c.momentum) == (30, 512, 0.02, 0.9)
    assert (c.temperature, c.margin, c.graph_neighbors, c.graph_coef) == (2.0, 0.2, 10, 0.8)
    assert c.reference_thresholds is False


def test_json_round_trip_is_exact():
    c = LeaPRRConfig(epochs=3, normalize="nnn", normalize_params={"k": 8})
    again = LeaPRRConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"epochs": 0}, "'epochs'"),
        ({"anchor": "middle"}, "'anchor'"),
        ({"lr": -1.0}, "'lr'"),
        ({"embed_dim": 30, "num_heads": 4}, "divisible"),
        ({"list_len_t2i": 1}, "'list_len_t2i'"),
        ({"device": 3}, "'device'"),
    ],
)
def test_invalid_values_name_the_field(changes, fragment):
    with pytest.raises(InvalidParameterError, match=fragment):
        LeaPRRConfig(**changes).validate()


def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(InvalidParameterError, match="'epoch'"):
        LeaPRRConfig.from_dict({"epoch": 3})


# ------------------------------------------------------------------ groups and from_dict
def test_every_field_is_in_exactly_one_group():
    import dataclasses

    from pillar_rerank.config import GROUPS

    members = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert sorted(members) == sorted(f.name for f in dataclasses.fields(LeaPRRConfig))
    cfg = LeaPRRConfig(epochs=3, n_pillars=16, temperature=1.5, precision="fp32", depth=4)
    assert (cfg.training.epochs, cfg.lists.n_pillars, cfg.loss.temperature, cfg.runtime.precision,
            cfg.model.depth) == (3, 16, 1.5, "fp32", 4)


def test_from_dict_reads_the_flat_and_the_grouped_form():
    cfg = LeaPRRConfig(epochs=3, n_pillars=16, neighbor_index="hnsw")
    assert LeaPRRConfig.from_dict(cfg.to_dict()) == cfg
    assert LeaPRRConfig.from_dict(cfg.to_groups()) == cfg
    assert LeaPRRConfig.from_dict({"training": {"epochs": 3}, "n_pillars": 16,
                                   "lists": {"neighbor_index": "hnsw"}}) == cfg


@pytest.mark.parametrize("values, message", [
    ([1, 2], "expected a dict of fields; got list"),
    ({"embed_dim": 10**9, "num_heads": 1}, "'embed_dim' parameter of LeaPRRConfig must be an int in"),
    ({"depth": 65}, "'depth' parameter"),
    ({"num_heads": 5000}, "'num_heads' parameter"),
    ({"n_pillars": 10**6}, "'n_pillars' parameter"),
    ({"list_len_i2t": 10**7}, "'list_len_i2t' parameter"),
    ({"epochs": 1.5}, "'epochs' parameter"),
    ({"lr": float("nan")}, "'lr' parameter"),
    ({"qkv_bias": "yes"}, "'qkv_bias' parameter"),
    ({"batch_sizes": 4}, "unknown key\\(s\\) 'batch_sizes'"),
    ({"model": {"epochs": 3}}, "'epochs' not in group 'model'"),
    ({"model": 3}, "group 'model' must be a dict"),
    ({"epochs": 3, "training": {"epochs": 4}}, "'epochs' given twice"),
])
def test_from_dict_rejects_bad_values_with_a_clear_message(values, message):
    with pytest.raises(InvalidParameterError, match=message):
        LeaPRRConfig.from_dict(values)


def test_model_saved_by_the_previous_version_loads_and_scores_the_same():
    """tests/fixtures/leaprr_model_0_flat: a model dir (flat config.json) and its test scores,
    written by the version before the config groups (commit 6fb03a0)."""
    from pathlib import Path

    import numpy as np

    from pillar_rerank.inputs import Relevance, RetrievalSet
    from pillar_rerank.reranker import PillarReranker

    root = Path(__file__).parent / "fixtures" / "leaprr_model_0_flat"
    model = PillarReranker.load(root / "model")
    assert model.config_.training.epochs == 1 and model.config_.model.embed_dim == 8
    side = np.load(root / "test_side.npz")
    test = RetrievalSet(relevance=Relevance(side["txt_to_img"], side["image_embeddings"].shape[0]),
                        image_embeddings=side["image_embeddings"], text_embeddings=side["text_embeddings"])
    # same lists and network; values agree to float32 rounding (not bitwise) since exact CPU search
    # moved from FAISS to blocked torch matmuls, whose summation order differs (issue 17). The
    # expected scores are fp32: "auto" would re-rank in bf16 on a CPU with native bf16.
    model.config_ = model.config_.replace(precision="fp32")
    np.testing.assert_allclose(model.rerank(test), side["expected"], rtol=0, atol=1e-6)
