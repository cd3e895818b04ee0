import copy
import json

import numpy as np
import pytest

from pillar_rerank import reranker as reranker_module
from pillar_rerank.checkpoint import load_model_dir, save_model_dir
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InvalidParameterError
from pillar_rerank.fusion import OUTPUTS, OVERWRITE, WEIGHT_GRID, check_record, fuse_lists
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


def _per_direction_rsum(out: RetrievalSet) -> float:
    return recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores)["RSUM"]


def _check_record_holds(model, dev):
    """Both outputs: the chosen rule is >= input, overwrite and network order on dev, and rerank
    / rerank_both reproduce the recorded dev RSUMs."""
    for output in OUTPUTS:
        rec = model.fusion_[output]
        assert rec["dev_rsum"] >= max(rec[f"dev_rsum_{r}"] for r in ("input", "overwrite", "network"))
    mean, per_direction = model.fusion_["mean"]["dev_rsum"], model.fusion_["per_direction"]["dev_rsum"]
    assert recall_metrics(model.rerank(dev), dev.relevance)["RSUM"] == pytest.approx(mean)
    assert _per_direction_rsum(model.rerank_both(dev)) == pytest.approx(per_direction)


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
    for output in OUTPUTS:
        rec = model.fusion_[output]
        assert rec["dev_rsum_input"] == pytest.approx(base)
        assert rec["dev_rsum_overwrite"] < base - 5 and rec["dev_rsum_network"] < base - 5  # tempting
        assert rec["dev_rsum"] >= base
    _check_record_holds(model, dev)
    overwrite = copy.copy(model)
    overwrite.fusion_ = None
    assert recall_metrics(overwrite.rerank(dev), dev.relevance)["RSUM"] < base - 5


def test_fusion_follows_a_good_network(sets, monkeypatch):
    """A network that knows the answer: the chosen rules beat the input on dev."""
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
    for output in OUTPUTS:
        rec = model.fusion_[output]
        assert rec["dev_rsum"] > rec["dev_rsum_input"]
        assert {rec["i2t"], rec["t2i"]} != {1.0}
    _check_record_holds(model, dev)
    # a fused rule keeps the input's scale: every fused entry within the input's range
    s = dev.similarity()
    if OVERWRITE not in (model.fusion_["mean"]["i2t"], model.fusion_["mean"]["t2i"]):
        out = model.rerank(dev)
        assert s.min() <= out.min() and out.max() <= s.max()


def test_the_overwrite_is_chosen_when_it_wins_on_dev(sets, monkeypatch):
    """A network whose cosines are right *and* above every input value: only the overwrite lifts
    the true match over candidates outside the list, so it must be picked over every weight."""
    train, dev = sets
    rescore = reranker_module.rescore
    s = dev.similarity()

    def confident(src, model, ids, **kw):
        out = rescore(src, model, ids, **kw)
        t2i = dev.txt_to_img if len(ids["i2t"]) == dev.n_images else train.txt_to_img
        for d in ("i2t", "t2i"):
            hit = t2i[out[f"{d}_cols"]] == out[f"{d}_rows"]
            out[f"{d}_values"] = np.where(hit, s.max() + 1.0, s.min() - 1.0).astype(np.float32)
        return out

    monkeypatch.setattr(reranker_module, "rescore", confident)
    model = PillarReranker(CFG).fit(train, dev, verbose=False)
    rec = model.fusion_["per_direction"]
    assert rec["dev_rsum_overwrite"] > rec["dev_rsum_input"]
    assert OVERWRITE in (rec["i2t"], rec["t2i"])
    _check_record_holds(model, dev)


def test_per_direction_output_keeps_a_normalisers_directions(sets):
    """After a per-direction normaliser, rerank_both keeps its two matrices and the fusion keeps
    it at least as good as the normaliser alone on dev; rerank is their mean."""
    train, dev = sets
    cfg = CFG.replace(normalize="dsl",
                      normalize_params={"i2t": {"temperature": 0.05}, "t2i": {"temperature": 0.02}})
    model = PillarReranker(cfg).fit(train, dev, verbose=False)
    normalised = model._normalized(dev, model.config_)
    assert normalised.t2i_scores is not None
    alone = recall_metrics(normalised.scores, dev.relevance, t2i_scores=normalised.t2i_scores)["RSUM"]
    rec = model.fusion_["per_direction"]
    assert rec["dev_rsum_input"] == pytest.approx(alone)
    both = model.rerank_both(dev)
    assert _per_direction_rsum(both) == pytest.approx(rec["dev_rsum"]) and rec["dev_rsum"] >= alone
    plain = copy.copy(model)
    plain.fusion_ = None  # overwrite: each matrix is its base with its own direction's cosines
    both = plain.rerank_both(dev)
    np.testing.assert_allclose(0.5 * (both.scores + both.t2i_scores), plain.rerank(dev), rtol=0, atol=1e-6)
    untouched = np.ones(both.scores.shape, bool)
    shard = plain.rerank_shard(dev, 0, 1)
    untouched[shard.i2t_rows, shard.i2t_cols] = False
    np.testing.assert_array_equal(both.scores[untouched], normalised.scores[untouched])
    np.testing.assert_array_equal(both.scores[shard.i2t_rows, shard.i2t_cols], shard.i2t_values)


def test_shards_merge_into_both_outputs(sets):
    train, dev = sets
    model = PillarReranker(CFG).fit(train, dev, verbose=False)
    shards = [model.rerank_shard(dev, i, 3) for i in range(3)]
    np.testing.assert_array_equal(model.merge(dev, shards[::-1]), model.rerank(dev))
    merged, whole = model.merge_both(dev, shards), model.rerank_both(dev)
    np.testing.assert_array_equal(merged.scores, whole.scores)
    np.testing.assert_array_equal(merged.t2i_scores, whole.t2i_scores)


def test_rules_are_saved_loaded_and_checked(sets, tmp_path):
    train, dev = sets
    model = PillarReranker(CFG).fit(train, dev, verbose=False)
    for output in OUTPUTS:
        rec = model.fusion_[output]
        assert set(rec) >= {"i2t", "t2i", "dev_rsum", "dev_rsum_input", "dev_rsum_overwrite"}
        assert all(rec[d] in (*WEIGHT_GRID, OVERWRITE) for d in ("i2t", "t2i"))
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["fitted"]["fusion"] == model.fusion_
    loaded = PillarReranker.load(tmp_path / "m")
    assert loaded.fusion_ == model.fusion_
    np.testing.assert_array_equal(loaded.rerank(dev), model.rerank(dev))
    # a record edited consistently (checksums re-written) to an impossible weight is refused
    state, doc = load_model_dir(tmp_path / "m")
    for bad in (1.5, "mean", True):
        doc["fitted"]["fusion"]["per_direction"]["t2i"] = bad
        save_model_dir(tmp_path / "bad", state_dict=state, config=doc, overwrite=True)
        with pytest.raises(CheckpointError, match="a weight in \\[0, 1\\] or 'overwrite'"):
            PillarReranker.load(tmp_path / "bad")
    assert check_record(None, source="x") is None


def test_a_first_format_record_still_loads(sets, tmp_path):
    """Models saved before the overwrite became a candidate hold one weight per direction."""
    train, dev = sets
    model = PillarReranker(CFG).fit(train, dev, verbose=False)
    model.save(tmp_path / "m")
    state, doc = load_model_dir(tmp_path / "m")
    doc["fitted"]["fusion"] = {"w_i2t": 0.3, "w_t2i": 1.0, "grid": list(WEIGHT_GRID), "dev_rsum": 1.0}
    save_model_dir(tmp_path / "old", state_dict=state, config=doc)
    old = PillarReranker.load(tmp_path / "old")
    assert old.fusion_["mean"] == {"i2t": 0.3, "t2i": 1.0} == old.fusion_["per_direction"]
    old.rerank(dev)


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


def test_without_dev_the_overwrite_is_kept(sets):
    train, dev = sets
    model = PillarReranker(CFG).fit(train, None, verbose=False)
    assert all(model.fusion_[o] == {"i2t": OVERWRITE, "t2i": OVERWRITE} for o in OUTPUTS)
    plain = copy.copy(model)
    plain.fusion_ = None
    np.testing.assert_array_equal(model.rerank(dev), plain.rerank(dev))
