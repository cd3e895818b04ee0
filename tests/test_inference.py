"""pillar_rerank/inference.py: one body for both directions, combined as in spec §6.4."""

from __future__ import annotations

import numpy as np
import torch

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.inference import base_scores, rescore
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.model.network import MutualRerankNetwork

CFG = LeaPRRConfig(n_pillars=4, list_len_i2t=5, list_len_t2i=3, graph_neighbors=3, embed_dim=8, depth=1,
                   num_heads=2, device="cpu")


def _data(t2i_scores: bool) -> RetrievalSet:
    rng = np.random.default_rng(0)
    t2i = np.repeat(np.arange(12), 2)
    sims = rng.standard_normal((12, 24)).astype(np.float32)
    extra = {"t2i_scores": sims + 0.1} if t2i_scores else {}
    return RetrievalSet(relevance=Relevance(t2i, 12), scores=sims, **extra)


def test_base_scores_are_the_mean_of_the_two_base_matrices():
    plain, both = _data(False), _data(True)
    np.testing.assert_array_equal(base_scores(plain), plain.scores)
    np.testing.assert_allclose(base_scores(both), 0.5 * (both.scores + both.t2i_scores), rtol=1e-6)


def test_rescore_orients_each_direction_and_matches_the_networks():
    data = _data(False)
    builder = ListBuilder.from_data(data, CFG)
    model = MutualRerankNetwork.from_config(CFG, generator=torch.Generator().manual_seed(0)).eval()
    ids = {"i2t": torch.tensor([3, 7]), "t2i": torch.tensor([0, 5, 9])}
    out = rescore(builder, model, ids, lists=CFG.lists, precision="fp32", device=torch.device("cpu"))
    image = builder.image_lists(ids["i2t"])
    text = builder.text_lists(ids["t2i"])
    with torch.inference_mode():
        i2t = model.i2t.score_lists(image)[:, 1:]
        t2i = model.t2i.score_lists(text)[:, 1:]
    np.testing.assert_array_equal(out["i2t_rows"], np.repeat([3, 7], 4))       # image queries: rows
    np.testing.assert_array_equal(out["i2t_cols"], image.candidates.reshape(-1).numpy())
    np.testing.assert_array_equal(out["i2t_values"], i2t.reshape(-1).numpy())
    np.testing.assert_array_equal(out["t2i_cols"], np.repeat([0, 5, 9], 2))    # text queries: columns
    np.testing.assert_array_equal(out["t2i_rows"], text.candidates.reshape(-1).numpy())
    np.testing.assert_array_equal(out["t2i_values"], t2i.reshape(-1).numpy())
    empty = rescore(builder, model, {"i2t": torch.arange(0), "t2i": torch.arange(0)}, lists=CFG.lists,
                    precision="fp32", device=torch.device("cpu"))
    assert empty["i2t_rows"].dtype == np.int64 and empty["t2i_values"].dtype == np.float32
    assert all(v.size == 0 for v in empty.values())
