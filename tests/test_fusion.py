import copy
import json

import numpy as np
import pytest

from pillar_rerank import reranker as reranker_module
from pillar_rerank.checkpoint import load_model_dir, save_model_dir
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InvalidParameterError
from pillar_rerank.fusion import (
    DIRECTIONS,
    OUTPUTS,
    OVERWRITE,
    WEIGHT_GRID,
    check_record,
    choose_rules,
    fuse_lists,
    output_of,
    sources_of,
)
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.reranker import PillarReranker
from pillar_rerank.sharding import ShardResult

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
    assert per_direction >= model.fusion_["per_direction"]["dev_rsum_own"]
    one = model.rerank(dev)
    assert recall_metrics(one, dev.relevance)["RSUM"] == pytest.approx(mean)
    both = model.rerank_both(dev)
    assert _per_direction_rsum(both) == pytest.approx(per_direction)
    # direction by direction, the per-direction output is never below the one-matrix output
    halves = _halves(recall_metrics(both.scores, dev.relevance, t2i_scores=both.t2i_scores))
    assert all(halves[d] >= _halves(recall_metrics(one, dev.relevance))[d] - 1e-9 for d in DIRECTIONS)


def _halves(m):
    return {d: sum(v for k, v in m.items() if k.startswith(f"{d}_R@")) for d in DIRECTIONS}


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


def _noise_shard(dev, lens, rng):
    """Each query's top candidates under its own direction's matrix, with random network scores."""
    i2t = np.argsort(-dev.scores, axis=1)[:, :lens["i2t"]]
    t2i = np.argsort(-dev.t2i_scores.T, axis=1)[:, :lens["t2i"]]
    return ShardResult(
        0, 1, dev.n_images, dev.n_texts, "",
        np.repeat(np.arange(dev.n_images), lens["i2t"]), i2t.reshape(-1),
        rng.normal(size=i2t.size).astype(np.float32),
        t2i.reshape(-1), np.repeat(np.arange(dev.n_texts), lens["t2i"]),
        rng.normal(size=t2i.size).astype(np.float32))


def test_a_direction_takes_the_one_matrix_output_where_it_ranks_that_direction_better():
    """The i2t matrix is noise and the t2i matrix knows the answer: their mean ranks the image
    queries better than the i2t matrix under any rule, so the per-direction output takes it for
    i2t and keeps its own matrix for t2i; on dev it then beats both outputs it chose from."""
    rng = np.random.default_rng(7)
    n = 30
    t2i_map = np.repeat(np.arange(n), 3)
    good = np.where(np.arange(n)[:, None] == t2i_map[None, :], 1.0, 0.0) + 0.8 * rng.random((n, 3 * n))
    dev = RetrievalSet(Relevance(t2i_map, n), scores=rng.random((n, 3 * n)).astype(np.float32),
                       t2i_scores=good.astype(np.float32), name="dev")
    lens = {"i2t": 5, "t2i": 3}
    cfg = CFG.replace(list_len_i2t=lens["i2t"] + 1, list_len_t2i=lens["t2i"] + 1)
    shard = _noise_shard(dev, lens, rng)
    record = choose_rules(shard, dev, cfg)
    assert sources_of(record) == {"i2t": "mean", "t2i": "per_direction"}
    rec = record["per_direction"]
    assert rec["dev_rsum"] > rec["dev_rsum_own"] and rec["dev_rsum"] > record["mean"]["dev_rsum"]
    bases = (dev.scores, dev.t2i_scores)
    i2t, t2i = output_of([shard], *bases, record, "per_direction", lens)
    np.testing.assert_array_equal(i2t, output_of([shard], *bases, record, "mean", lens))
    own = {o: {d: record[o][d] for d in DIRECTIONS} for o in OUTPUTS}
    np.testing.assert_array_equal(t2i, output_of([shard], *bases, own, "per_direction", lens)[1])
    assert recall_metrics(i2t, dev.relevance, t2i_scores=t2i)["RSUM"] == pytest.approx(rec["dev_rsum"])
    # both directions from the mean: two arrays, equal, not one object
    both = {**record, "per_direction": {**rec, "source": {"i2t": "mean", "t2i": "mean"}}}
    a, b = output_of([shard], *bases, both, "per_direction", lens)
    np.testing.assert_array_equal(a, b)
    assert a is not b


def test_records_without_a_source_keep_each_directions_own_matrix():
    assert sources_of(None) == {"i2t": "per_direction", "t2i": "per_direction"}
    rules = {o: {"i2t": 0.5, "t2i": OVERWRITE} for o in OUTPUTS}
    assert sources_of(check_record({"format": 2, **rules}, source="x")) == sources_of(None)
    bad = {"format": 3, **rules, "per_direction": {"i2t": 0.5, "t2i": 1.0, "source": {"i2t": "both"}}}
    with pytest.raises(CheckpointError, match="^model dir: .*per_direction.source"):
        check_record(bad, source="model dir")
