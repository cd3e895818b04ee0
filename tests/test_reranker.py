import copy
import json
import warnings

import numpy as np
import pytest
import torch

from pillar_rerank.checkpoint import SimulatedCrash
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import (
    CheckpointError,
    InputFileError,
    InvalidInputError,
    InvalidParameterError,
    NotFittedError,
)
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.model.network import GraphRerankNetwork, MutualRerankNetwork
from pillar_rerank.model.reference import to_reference_state_dict
from pillar_rerank.model_state import network_from_state
from pillar_rerank.reranker import PillarReranker
from pillar_rerank.sharding import ShardResult, apply_updates, merge_shards


def make_set(n_images, *, cpi=3, seed=0, noise=0.15, name="syn", embeddings=False):
    """Captions cluster around their image; cross-modal scores are noisy, intra-modal ones clean."""
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n_images, 16))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    t2i = np.repeat(np.arange(n_images), cpi)
    txt = img[t2i] + 0.5 * rng.normal(size=(n_images * cpi, 16))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    scores = (img @ txt.T + noise * rng.normal(size=(n_images, n_images * cpi))).astype(np.float32)
    emb = (
        {"image_embeddings": img.astype(np.float32), "text_embeddings": txt.astype(np.float32)}
        if embeddings
        else {}
    )
    return RetrievalSet(
        Relevance(t2i, n_images),
        scores=scores,
        image_image=(img @ img.T).astype(np.float32),
        text_text=(txt @ txt.T).astype(np.float32),
        name=name,
        **emb,
    )


CFG = LeaPRRConfig(
    n_pillars=8,
    list_len_i2t=6,
    list_len_t2i=4,
    graph_neighbors=4,
    intra_source="given",
    embed_dim=32,
    depth=2,
    num_heads=4,
    epochs=2,
    batch_size=64,
    eval_every=3,
    seed=0,
    precision="fp32",  # bit-identical comparisons across caches and budgets (see tests/cli/test_fit_apply)
)


@pytest.fixture(scope="module")
def data():
    return make_set(60, seed=0, name="train"), make_set(40, seed=1, name="dev")


@pytest.fixture(scope="module")
def fitted(data):
    train, dev = data
    return PillarReranker(CFG).fit(train, dev, verbose=False)


def test_constructor_stores_only_and_unfitted_raises(data):
    r = PillarReranker(CFG)
    assert r.get_params() == {"config": CFG}
    with pytest.raises(NotFittedError, match="not fitted"):
        r.rerank(data[1])
    assert PillarReranker().clone().get_params() == {"config": None}


@pytest.mark.parametrize(("precision", "trained_in"), [("auto", torch.float32), ("bf16", torch.bfloat16)])
def test_auto_precision_trains_in_fp32_on_native_bf16(data, monkeypatch, precision, trained_in):
    """On a CPU with native bf16, "auto" trains in fp32 (bf16 re-ranking only); "bf16" trains in bf16."""
    from pillar_rerank import training
    from pillar_rerank.utils import device as device_mod

    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    seen = []
    original = training.autocast

    def spy(*args, **kwargs):
        context = original(*args, **kwargs)
        seen.append(getattr(context, "fast_dtype", torch.float32))
        return context

    monkeypatch.setattr(training, "autocast", spy)
    train, dev = data
    PillarReranker(CFG.replace(epochs=1, precision=precision)).fit(train, dev, verbose=False)
    assert seen and set(seen) == {trained_in}


def test_fit_sets_learned_attributes(fitted, data):
    assert fitted.n_images_in_ == 60 and fitted.n_texts_in_ == 180
    assert fitted.history_["selected"] == "best_dev_rsum"
    n_val = len(fitted.history_["validations"])
    assert n_val >= 2  # every eval_every iterations and at each epoch end
    assert len(fitted.history_["epochs"]) == 2


def test_rerank_output_contract(fitted, data):
    dev = data[1]
    base = dev.scores.copy()
    dev.scores.setflags(write=False)
    overwrite = copy.copy(fitted)
    overwrite.fusion_ = None  # the reference's combination: every re-scored entry changes
    out = overwrite.rerank(dev)
    assert out.dtype == np.float32 and out.shape == base.shape
    np.testing.assert_array_equal(dev.scores, base)
    changed = out != base
    # each image query re-scores list_len_i2t - 1 texts, each text query list_len_t2i - 1 images
    assert 0 < changed.sum() <= 40 * 5 + 120 * 3
    assert (changed.sum(axis=1) >= 5).all()


def test_cpu_determinism_with_a_seed(fitted, data):
    again = PillarReranker(CFG).fit(*data, verbose=False)
    for (k, a), b in zip(fitted.model_.state_dict().items(), again.model_.state_dict().values()):
        assert torch.equal(a, b), k
    np.testing.assert_array_equal(fitted.rerank(data[1]), again.rerank(data[1]))


def test_save_load_round_trip_gives_identical_scores(fitted, data, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = PillarReranker.load(tmp_path / "m")
    assert loaded.config_ == fitted.config_
    np.testing.assert_array_equal(loaded.rerank(data[1]), fitted.rerank(data[1]))
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["format_version"] == 1 and "package_version" in doc
    assert doc["fitted"]["input"]["intra_source"] == "given"
    with pytest.raises(InputFileError, match="already exists"):
        fitted.save(tmp_path / "m")
    fitted.save(tmp_path / "m", overwrite=True)


def test_corrupt_tampered_and_mismatched_model_dirs(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or replaced"):
        PillarReranker.load(tmp_path / "m")
    weights.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="SHA-256"):
        PillarReranker.load(tmp_path / "m")
    # a config edited consistently (checksums re-written) that no longer fits the weights
    from pillar_rerank.checkpoint import load_model_dir, save_model_dir

    weights.write_bytes(raw)
    state, doc = load_model_dir(tmp_path / "m")
    doc["config"]["embed_dim"] = 64
    save_model_dir(tmp_path / "other", state_dict=state, config=doc)
    with pytest.raises(CheckpointError, match="do not match the config"):
        PillarReranker.load(tmp_path / "other")
    (tmp_path / "m" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        PillarReranker.load(tmp_path / "m")


def test_resume_after_crash_is_bitwise_identical(data, tmp_path):
    train, dev = data
    cfg = CFG.replace(epochs=3, batch_size=48)  # 4 iterations per epoch, 12 in all
    ref = PillarReranker(cfg).fit(train, dev, verbose=False)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(SimulatedCrash):
        PillarReranker(cfg).fit(
            train, dev, checkpoint_dir=ckpt, checkpoint_every=3, crash_at_step=7, verbose=False
        )
    state = json.loads((ckpt / "state.json").read_text())
    assert state["global_step"] == 6  # last checkpoint before the crash, mid-epoch
    resumed = PillarReranker(cfg).fit(train, dev, checkpoint_dir=ckpt, resume=True, verbose=False)
    for (k, a), b in zip(ref.model_.state_dict().items(), resumed.model_.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.history_["validations"] == ref.history_["validations"]
    # a checkpoint from another problem is refused
    with pytest.raises(CheckpointError, match="another training run"):
        PillarReranker(cfg.replace(seed=1)).fit(train, dev, checkpoint_dir=ckpt, resume=True, verbose=False)


def test_resume_without_a_checkpoint_starts_from_scratch(data, tmp_path, caplog):
    """A run killed before its first checkpoint resumes with the same call: from scratch, logged."""
    train, dev = data
    cfg = CFG.replace(epochs=1, batch_size=48)
    ref = PillarReranker(cfg).fit(train, dev, verbose=False)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    stale = ckpt / ".tensors-000000001-99.safetensors.abcd_123.tmp"  # a write killed midway
    stale.write_bytes(b"partial")
    with caplog.at_level("WARNING", logger="pillar_rerank"):
        resumed = PillarReranker(cfg).fit(train, dev, checkpoint_dir=ckpt, resume=True, verbose=False)
    assert "starting from scratch" in caplog.text
    assert not stale.exists()
    for (k, a), b in zip(ref.model_.state_dict().items(), resumed.model_.state_dict().values()):
        assert torch.equal(a, b), k
    # tensors without state.json (deleted, or killed between the two writes): refused, not guessed
    (ckpt / "state.json").unlink()
    with pytest.raises(CheckpointError, match="without --resume"):
        PillarReranker(cfg).fit(train, dev, checkpoint_dir=ckpt, resume=True, verbose=False)


def test_shards_merge_to_the_full_result(fitted, data, tmp_path):
    dev = data[1]
    full = fitted.rerank(dev)
    paths = []
    for i in range(3):
        p = tmp_path / f"s{i}.npz"
        fitted.rerank_shard(dev, i, 3).save(p)
        paths.append(p)
    np.testing.assert_array_equal(fitted.merge(dev, paths[::-1]), full)
    np.testing.assert_array_equal(merge_shards(dev.scores, paths), full)
    with pytest.raises(InvalidInputError, match="1 of 3 shards missing"):
        fitted.merge(dev, paths[:2])
    with pytest.raises(InvalidInputError, match="given twice"):
        fitted.merge(dev, [paths[0], *paths])
    other = PillarReranker(CFG.replace(seed=5)).fit(data[0], None, verbose=False)
    with pytest.raises(CheckpointError, match="different model"):
        other.merge(dev, paths)
    assert other.history_["selected"] == "last"


def test_fit_improves_dev_rsum_over_the_untrained_network(data):
    train, dev = data
    cfg = CFG.replace(epochs=6, lr=0.1, batch_size=32, eval_every=1000)
    trained = PillarReranker(cfg).fit(train, dev, verbose=False)
    untrained = copy.deepcopy(trained)
    untrained.model_ = network_from_state(
        cfg,
        MutualRerankNetwork.from_config(cfg, generator=torch.Generator().manual_seed(cfg.seed)).state_dict(),
        source="test",
    )
    before = recall_metrics(untrained.rerank(dev), dev.relevance)["RSUM"]
    after = recall_metrics(trained.rerank(dev), dev.relevance)["RSUM"]
    assert after > before


def test_from_reference_checkpoint(data, tmp_path):
    cfg = CFG.replace(mlp_ratio=2.0)
    net = MutualRerankNetwork.from_config(cfg, generator=torch.Generator().manual_seed(7))
    path = tmp_path / "checkpoint_best.pth"
    torch.save(
        {"epoch": 3, "state_dict": to_reference_state_dict(net.state_dict()), "recall": {"rsum": 1.0}}, path
    )
    base = CFG.replace(mlp_ratio=2.0)  # what shapes cannot tell (heads, list lengths) comes from here
    imported = PillarReranker.from_reference_checkpoint(path, base)
    c = imported.config_
    assert (c.n_pillars, c.embed_dim, c.depth, c.mlp_ratio, c.reference_thresholds) == (8, 32, 2, 2.0, True)
    x, a = torch.randn(3, 6, 16), torch.eye(6).expand(3, 6, 6)
    want = net.half().float().i2t(x, a)
    assert torch.allclose(imported.model_.i2t(x, a), want, atol=1e-6)
    assert imported.rerank(data[1]).shape == (40, 120)
    with pytest.raises(CheckpointError, match="weights imply"):
        PillarReranker.from_reference_checkpoint(path, base.replace(n_pillars=16))
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError):
        PillarReranker.from_reference_checkpoint(tmp_path / "bad.pth")


def test_list_lengths_are_checked_against_the_gallery(data):
    with pytest.raises(InvalidInputError, match="list_len_t2i - 1"):
        PillarReranker(CFG.replace(list_len_t2i=80)).fit(data[0], verbose=False)


def test_normaliser_composition_hook(data):
    baselines = pytest.importorskip("pillar_rerank.baselines")
    if not hasattr(baselines, "get_baseline") or not hasattr(baselines, "apply_both"):
        pytest.skip("pillar_rerank.baselines has no get_baseline/apply_both yet")
    train, dev = data
    cfg = CFG.replace(epochs=1, normalize="inverted_softmax", normalize_params={})
    with pytest.raises(InvalidInputError, match="query bank"):
        PillarReranker(cfg).fit(train, dev, verbose=False)  # scores only: no bank can be built
    train, dev = make_set(60, seed=0, embeddings=True), make_set(40, seed=1, embeddings=True)
    r = PillarReranker(cfg).fit(train, dev, verbose=False)
    assert r.input_["normalize"] == "inverted_softmax"
    assert r.rerank(dev).shape == dev.scores.shape


def test_cache_dir_gives_the_same_model_and_scores_and_is_reused(fitted, data, tmp_path, monkeypatch):
    train, dev = data
    cached = PillarReranker(CFG).fit(train, dev, verbose=False, cache_dir=tmp_path, max_memory="128MB")
    for name, tensor in fitted.model_.state_dict().items():
        assert torch.equal(tensor, cached.model_.state_dict()[name]), name
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["dev", "train"]
    expected = fitted.rerank(dev)
    assert np.array_equal(cached.rerank(dev, cache_dir=tmp_path), expected)
    assert len(list(tmp_path.glob("test-*"))) == 1

    import pillar_rerank.lists.builder as pillars

    def no_search(*args, **kwargs):
        raise AssertionError("searched neighbours although the cache holds the lists")

    monkeypatch.setattr(pillars.ListBuilder, "from_data", no_search)
    assert np.array_equal(cached.rerank(dev, cache_dir=tmp_path), expected)
    shards = [cached.rerank_shard(dev, i, 2, cache_dir=tmp_path) for i in range(2)]
    assert np.array_equal(cached.merge(dev, shards), expected)


def test_sharded_rerank_refuses_to_build_a_cache(fitted, data, tmp_path):
    with pytest.raises(InvalidParameterError, match="no complete cache of this test side"):
        fitted.rerank_shard(data[1], 0, 2, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputFileError, match="not an existing folder"):
        fitted.rerank(data[1], cache_dir=tmp_path / "missing")


def test_max_memory_does_not_change_the_result(fitted, data):
    assert np.array_equal(fitted.rerank(data[1], max_memory="100MB"), fitted.rerank(data[1]))


def test_bf16_autocast_trains_and_reranks_close_to_fp32(fitted, data):
    train, dev = data
    half = PillarReranker(CFG.replace(precision="bf16")).fit(train, dev, verbose=False)
    assert all(p.dtype == torch.float32 for p in half.model_.parameters())
    scores = half.rerank(dev)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    full = recall_metrics(fitted.rerank(dev), dev.relevance)["RSUM"]
    assert abs(recall_metrics(scores, dev.relevance)["RSUM"] - full) < 25.0
    assert not np.array_equal(scores, fitted.rerank(dev))  # bf16 was really used


def test_fit_records_the_dev_rsum_without_reranking(fitted, data):
    """Issue 15 item 25: the dev base RSUM is recorded, and a kept model below it is reported."""
    from pillar_rerank.metrics.recall import recall_metrics
    from pillar_rerank.provenance import compare_with_base

    _, dev = data
    base = recall_metrics(dev.similarity(), dev.relevance)
    assert fitted.history_["dev_base"]["RSUM"] == pytest.approx(base["RSUM"])
    history = {"best_rsum": base["RSUM"] - 1.0}
    with pytest.warns(UserWarning, match=r"best dev RSUM \(.*\) is below the dev RSUM without re-ranking"):
        compare_with_base(history, base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare_with_base({"best_rsum": base["RSUM"] + 1.0}, base)


def test_apply_with_another_intra_source_than_training_warns():
    """Issue 15 item 26, on a model saved by the previous version (trained from embeddings, auto)."""
    from pathlib import Path

    root = Path(__file__).parent / "fixtures" / "leaprr_model_0_flat"
    model = PillarReranker.load(root / "model")
    side = np.load(root / "test_side.npz")
    rel = Relevance(side["txt_to_img"], side["image_embeddings"].shape[0])
    with_emb = RetrievalSet(rel, image_embeddings=side["image_embeddings"],
                            text_embeddings=side["text_embeddings"], name="test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.rerank(with_emb)
    scores_only = RetrievalSet(rel, scores=with_emb.similarity(), name="test")
    with pytest.warns(UserWarning, match="trained with intra-modal similarities from embeddings, but test "
                                         "gives them from the second-order estimate"):
        model.rerank(scores_only)


def test_two_identical_fits_save_byte_identical_model_dirs(data, tmp_path):
    """Same data, config and seed: every file of the model directory is byte-identical (issue 15,
    item 19). The second model is saved several times: the metadata order used to be random."""
    train, dev = data
    cfg = CFG.replace(epochs=1)
    a = PillarReranker(cfg).fit(train, dev, verbose=False)
    b = PillarReranker(cfg).fit(train, dev, verbose=False)
    a.save(tmp_path / "a")
    for i in range(6):
        b.save(tmp_path / f"b{i}")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["config.json", "manifest.json", "weights.safetensors"]
    for i in range(6):
        assert sorted(p.name for p in (tmp_path / f"b{i}").iterdir()) == names
        for name in names:
            assert (tmp_path / f"b{i}" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name


def test_load_compares_weight_shapes_with_the_config_before_reading_weights(fitted, tmp_path, monkeypatch):
    """A config edited to another size (checksums rewritten) is refused from the weights file's
    header alone: no tensor is read and no model of the forged size is built (issue 15, item 14)."""
    from pillar_rerank import checkpoint
    from pillar_rerank.checkpoint import load_model_dir, save_model_dir

    fitted.save(tmp_path / "m")
    state, doc = load_model_dir(tmp_path / "m")
    doc["config"]["embed_dim"] = 4096  # 0.9 G parameters if it were built
    save_model_dir(tmp_path / "forged", state_dict=state, config=doc)

    def refuse(*args, **kwargs):
        raise AssertionError("tensors read or model built before the shapes were compared")

    monkeypatch.setattr(checkpoint, "load_file", refuse)
    monkeypatch.setattr(MutualRerankNetwork, "from_config", refuse)
    with pytest.raises(CheckpointError, match=r"do not match the config \(embed_dim=4096"):
        PillarReranker.load(tmp_path / "forged")


def _half(x):
    return x.to(torch.float16).to(torch.float32) if isinstance(x, torch.Tensor) else x.astype(np.float16)


def test_reference_fp16_rounds_the_network_inputs_only_when_on():
    """Issue 15, item 6: the reference feeds ``.half()`` features and adjacency to its model."""
    net = GraphRerankNetwork(4, embed_dim=16, depth=1, num_heads=2)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0)) * 0.3 + 0.1
    a = torch.softmax(torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(1)), -1)
    default = net(x, a)
    assert torch.equal(default, net.node_embeddings(x, a)[:, :1].mul(net.node_embeddings(x, a)).sum(-1))
    net.reference_fp16 = True
    rounded = net(x, a)
    net.reference_fp16 = False
    assert torch.equal(rounded, net(_half(x), _half(a)))
    assert not torch.equal(rounded, default)  # the switch really changes the inputs
    assert torch.equal(net(x, a), default)  # and off, nothing is rounded


def test_reference_fp16_score_matrices_are_the_reference_float16_arithmetic():
    """apply_updates(fp16=True) equals the reference's evaluate: float16 copies of the base matrix,
    new cosines written into them, ``(S_i2t + S_t2i.T) / 2`` in numpy float16."""
    rng = np.random.default_rng(0)
    base = rng.uniform(-0.2, 0.9, size=(6, 10)).astype(np.float32)
    i2t = {"i2t_rows": np.repeat(np.arange(6), 3), "i2t_cols": np.tile([1, 4, 7], 6),
           "i2t_values": rng.uniform(-1, 1, 18).astype(np.float32)}
    t2i = {"t2i_rows": np.tile([0, 2], 10), "t2i_cols": np.repeat(np.arange(10), 2),
           "t2i_values": rng.uniform(-1, 1, 20).astype(np.float32)}
    shard = ShardResult(0, 1, 6, 10, "", **i2t, **t2i)
    s1, s2 = base.astype(np.float16), base.T.astype(np.float16).copy()  # the reference's copies
    s1[i2t["i2t_rows"], i2t["i2t_cols"]] = i2t["i2t_values"]
    s2[t2i["t2i_cols"], t2i["t2i_rows"]] = t2i["t2i_values"]
    expected = ((s1 + s2.T) / 2).astype(np.float32)
    assert np.array_equal(apply_updates(base, None, [shard], fp16=True), expected)
    default = apply_updates(base, None, [shard])
    assert not np.array_equal(default, expected)
    a, b = base.copy(), base.copy()
    a[i2t["i2t_rows"], i2t["i2t_cols"]] = i2t["i2t_values"]
    b[t2i["t2i_rows"], t2i["t2i_cols"]] = t2i["t2i_values"]
    assert np.array_equal(default, 0.5 * (a + b))  # default: float32, unchanged


def test_imported_reference_with_fp16_parity_gives_float16_scores(data, tmp_path):
    net = MutualRerankNetwork.from_config(CFG, generator=torch.Generator().manual_seed(5))
    torch.save({"state_dict": to_reference_state_dict(net.state_dict())}, tmp_path / "ref.pth")
    fields = {"num_heads": CFG.num_heads, "list_len_i2t": CFG.list_len_i2t, "list_len_t2i": CFG.list_len_t2i,
              "graph_neighbors": CFG.graph_neighbors, "intra_source": "given"}
    plain = PillarReranker.from_reference_checkpoint(tmp_path / "ref.pth", **fields)
    parity = PillarReranker.from_reference_checkpoint(tmp_path / "ref.pth", reference_fp16=True, **fields)
    assert parity.config_.reference_fp16 and not plain.config_.reference_fp16
    assert parity.model_.i2t.reference_fp16 and not plain.model_.i2t.reference_fp16
    s16, s32 = parity.rerank(data[1]), plain.rerank(data[1])
    assert np.array_equal(s16, s16.astype(np.float16).astype(np.float32))  # float16 values only
    assert not np.array_equal(s32, s32.astype(np.float16).astype(np.float32))
    assert np.abs(s16 - s32).max() < 5e-3
    parity.save(tmp_path / "m")
    assert PillarReranker.load(tmp_path / "m").config_.reference_fp16
    with pytest.raises(CheckpointError, match="weights imply"):
        PillarReranker.from_reference_checkpoint(tmp_path / "ref.pth", n_pillars=16, **fields)


def test_model_dir_written_before_a_config_field_existed_still_loads(fitted, tmp_path):
    """Fields added to LeaPRRConfig after format version 1 (reference_fp16) take their defaults when
    an older model directory lacks them; a format-1 field missing is an error naming it."""
    from pillar_rerank.checkpoint import load_model_dir, save_model_dir

    fitted.save(tmp_path / "m")
    state, doc = load_model_dir(tmp_path / "m")
    del doc["config"]["reference_fp16"]
    save_model_dir(tmp_path / "old", state_dict=state, config=doc)
    assert PillarReranker.load(tmp_path / "old").config_.reference_fp16 is False
    del doc["config"]["graph_coef"]
    save_model_dir(tmp_path / "broken", state_dict=state, config=doc)
    with pytest.raises(CheckpointError, match="config.json: config lacks the field 'graph_coef'"):
        PillarReranker.load(tmp_path / "broken")
