import copy
import json

import numpy as np
import pytest

from pillar_rerank import reranker as reranker_module
from pillar_rerank.checkpoint import load_model_dir, save_model_dir
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InvalidParameterError
from pillar_rerank.fusion import WEIGHT_GRID, check_record, fuse_lists
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.reranker import PillarReranker

CFG = LeaPRRConfig(n_pillars=8, list_len_i2t=6, list_len_t2i=4, graph_neighbors=4, embed_dim=32,
                   depth=1, num_heads=4, epochs=1, batch_size=64, eval_every=50, seed=0,
                   score_fusion="zscore")


def _set(rng, n_images, name):
    t2i = np.repeat(np.arange(n_images), 3)
    img = rng.standard_normal((n_images, 8)).astype(np.float32)
    txt = (img[t2i] + 1.5 * rng.standard_normal((t2i.size, 8))).astype(np.float32)
    return RetrievalSet(Relevance(t2i, n_images), scores=img @ txt.T, image_embeddings=img,
                        text_embeddings=txt, name=name)


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(3)
    return _set(rng, 50, "train"), _set(rng, 40, "dev")


def test_fuse_lists_keeps_the_lists_values_and_w1_is_the_input():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 7)).astype(np.float32)
    net = rng.normal(size=(5, 7)).astype(np.float32)
    np.testing.assert_array_equal(fuse_lists(base, net, 1.0), base)
    for w in (0.0, 0.4):
        out = fuse_lists(base, net, w)
        np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(base, axis=1))  # a permutation
    # w = 0: the network's order, with the input's values
    out = fuse_lists(base, net, 0.0)
    np.testing.assert_array_equal(np.argsort(-out, axis=1), np.argsort(-net, axis=1))
    # a constant list has no spread to standardise: the network's order decides
    flat = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(fuse_lists(flat, np.array([[0.0, 3.0, 1.0, 2.0]]), 0.5), flat)
    with pytest.raises(ValueError, match="must be"):
        fuse_lists(base, net[:, :3], 0.5)


def test_fusion_never_lowers_dev_rsum_with_an_adversarial_network(sets, monkeypatch):
    """A network that reverses its lists tempts the overwrite; the fusion falls back to the input."""
    train, dev = sets
    rescore = reranker_module.rescore

    def reversed_network(*args, **kw):
        out = rescore(*args, **kw)
        return {k: (-v if k.endswith("values") else v) for k, v in out.items()}

    monkeypatch.setattr(reranker_module, "rescore", reversed_network)
    model = PillarReranker(CFG).fit(train, dev, verbose=False)
    base = recall_metrics(dev.similarity(), dev.relevance)["RSUM"]
    rec = model.fusion_
    assert rec["dev_rsum_input"] == pytest.approx(base)
    assert rec["dev_rsum_overwrite"] < base - 5 and rec["dev_rsum_network"] < base - 5  # tempting
    assert rec["dev_rsum"] >= base
    assert recall_metrics(model.rerank(dev), dev.relevance)["RSUM"] == pytest.approx(rec["dev_rsum"])
    overwrite = copy.copy(model)
    overwrite.fusion_ = None
    assert recall_metrics(overwrite.rerank(dev), dev.relevance)["RSUM"] < base - 5


def test_fusion_follows_a_good_network(sets, monkeypatch):
    """A network that knows the answer: the chosen mix beats the input on dev."""
    train, dev = sets
    rescore = reranker_module.rescore

    def oracle(src, model, ids, **kw):
        out = rescore(src, model, ids, **kw)
        t2i = dev.txt_to_img if len(ids["i2t"]) == dev.n_images else train.txt_to_img
        for d in ("i2t", "t2i"):
            hit = t2i[out[f"{d}_cols"]] == out[f"{d}_rows"]
            out[f"{d}_values"] = hit.astype(np.float32) + 0.01 * out[f"{d}_values"]
        return out

    monkeypatch.setattr(reranker_module, "rescore", oracle)
    model = PillarReranker(CFG).fit(train, dev, verbose=False)
    rec = model.fusion_
    assert rec["dev_rsum"] > rec["dev_rsum_input"]
    assert min(rec["w_i2t"], rec["w_t2i"]) < 1.0
    out = model.rerank(dev)
    assert recall_metrics(out, dev.relevance)["RSUM"] == pytest.approx(rec["dev_rsum"])
    # the result stays on the input's scale: every entry within the input's range
    s = dev.similarity()
    assert s.min() <= out.min() and out.max() <= s.max()


def test_weights_are_saved_loaded_and_checked(sets, tmp_path):
    train, dev = sets
    model = PillarReranker(CFG).fit(train, dev, verbose=False)
    assert set(model.fusion_) >= {"w_i2t", "w_t2i", "dev_rsum", "dev_rsum_input", "dev_rsum_overwrite"}
    assert model.fusion_["w_i2t"] in WEIGHT_GRID
    assert model.fusion_["dev_rsum"] >= model.fusion_["dev_rsum_input"]
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["fitted"]["fusion"] == model.fusion_
    loaded = PillarReranker.load(tmp_path / "m")
    assert loaded.fusion_ == model.fusion_
    np.testing.assert_array_equal(loaded.rerank(dev), model.rerank(dev))
    # a record edited consistently (checksums re-written) to an impossible weight is refused
    state, doc = load_model_dir(tmp_path / "m")
    doc["fitted"]["fusion"]["w_t2i"] = 1.5
    save_model_dir(tmp_path / "bad", state_dict=state, config=doc)
    with pytest.raises(CheckpointError, match="w_i2t and w_t2i in \\[0, 1\\]"):
        PillarReranker.load(tmp_path / "bad")
    assert check_record(None, source="x") is None


def test_overwrite_switch_restores_the_reference_combination(sets):
    train, dev = sets
    old = PillarReranker(CFG.replace(score_fusion="overwrite")).fit(train, dev, verbose=False)
    new = PillarReranker(CFG).fit(train, dev, verbose=False)
    assert old.fusion_ is None
    unfused = copy.copy(new)
    unfused.fusion_ = None
    np.testing.assert_array_equal(old.rerank(dev), unfused.rerank(dev))  # same weights, same seed
    with pytest.raises(InvalidParameterError, match="score_fusion"):
        CFG.replace(score_fusion="mean")


def test_without_dev_the_network_order_is_used_on_the_input_scale(sets):
    train, dev = sets
    model = PillarReranker(CFG).fit(train, None, verbose=False)
    assert (model.fusion_["w_i2t"], model.fusion_["w_t2i"]) == (0.0, 0.0)
    out, s = model.rerank(dev), dev.similarity()
    assert s.min() <= out.min() and out.max() <= s.max()
