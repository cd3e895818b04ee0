"""Tests of pillar_rerank/lists/builder.py: pillar vectors, targets, graphs and mapped lists vs loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.neighbors import build_neighbor_lists

T2I = np.array([0, 0, 1, 1, 1, 2, 0])  # 3 images with 3 / 3 / 1 captions, interleaved
CFG = LeaPRRConfig(n_pillars=2, list_len_i2t=4, list_len_t2i=3, graph_neighbors=2)


def small_set(rng, *, normalise=False, **extra):
    img = rng.standard_normal((3, 6)).astype(np.float32)
    txt = (img[T2I] + 0.8 * rng.standard_normal((7, 6))).astype(np.float32)
    if normalise:
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return RetrievalSet(relevance=Relevance(T2I, 3), image_embeddings=img, text_embeddings=txt, **extra)


def ranking(row, self_id=None):
    order = list(np.argsort(-row.astype(np.float64), kind="stable"))
    if self_id is not None:
        order.remove(self_id)
        order.insert(0, self_id)
    return order


def graph_oracle(sets_a, sets_b, thr):
    n, c = len(sets_a), len(sets_a[0])
    def shared(i, j):
        return len(set(sets_a[i]) & set(sets_a[j])) + len(set(sets_b[i]) & set(sets_b[j]))

    a = np.array([[2 * c if i == j else shared(i, j) for j in range(n)] for i in range(n)], dtype=np.float64)
    a /= a.sum(1, keepdims=True)
    a *= a > thr
    return a / a.sum(1, keepdims=True)


class Oracle:
    """Per-query loops over dense φ / π, written from leaprr.md §4-§7.3."""

    def __init__(self, phi, phi_t2i, pi_ii, pi_tt, cfg):
        self.phi, self.phi_t2i, self.pi_ii, self.pi_tt, self.cfg = phi, phi_t2i, pi_ii, pi_tt, cfg
        n_img, n_txt = phi.shape
        self.i2t = [ranking(phi[i]) for i in range(n_img)]
        self.t2i = [ranking(phi_t2i[:, t]) for t in range(n_txt)]
        self.i2i = [ranking(pi_ii[i], i) for i in range(n_img)]
        self.t2t = [ranking(pi_tt[t], t) for t in range(n_txt)]

    def image_query(self, i, cands=None, pillars_of=None):
        L = self.cfg.n_pillars
        p_img, p_txt = self.i2i[i][:L], self.i2t[i][:L]
        cands = self.i2t[i][:self.cfg.list_len_i2t - 1] if cands is None else cands
        rows = [[self.pi_ii[i, p] for p in p_img] + [self.phi[i, p] for p in p_txt]]
        rows += [[self.phi[p, t] for p in p_img] + [self.pi_tt[t, p] for p in p_txt] for t in cands]
        return np.array(rows), cands

    def text_query(self, t, cands=None):
        L = self.cfg.n_pillars
        p_txt, p_img = self.t2t[t][:L], self.t2i[t][:L]
        cands = self.t2i[t][:self.cfg.list_len_t2i - 1] if cands is None else cands
        rows = [[self.pi_tt[t, p] for p in p_txt] + [self.phi_t2i[p, t] for p in p_img]]
        rows += [[self.phi_t2i[j, p] for p in p_txt] + [self.pi_ii[j, p] for p in p_img] for j in cands]
        return np.array(rows), cands

    def image_graph(self, i):
        C, cands = self.cfg.graph_neighbors, self.i2t[i][:self.cfg.list_len_i2t - 1]
        txt_sets = [self.i2t[i][:C]] + [self.t2t[t][:C] for t in cands]
        img_sets = [self.i2i[i][:C]] + [self.t2i[t][:C] for t in cands]
        return graph_oracle(txt_sets, img_sets, self.cfg.graph_coef / self.cfg.list_len_i2t)

    def text_graph(self, t):
        C, cands = self.cfg.graph_neighbors, self.t2i[t][:self.cfg.list_len_t2i - 1]
        img_sets = [self.t2i[t][:C]] + [self.i2i[j][:C] for j in cands]
        txt_sets = [self.t2t[t][:C]] + [self.i2t[j][:C] for j in cands]
        return graph_oracle(img_sets, txt_sets, self.cfg.graph_coef / self.cfg.list_len_t2i)


def embedding_oracle(data, cfg):
    img, txt = data.image_embeddings.astype(np.float64), data.text_embeddings.astype(np.float64)
    ni = img / np.linalg.norm(img, axis=1, keepdims=True)
    nt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    return Oracle(img @ txt.T, img @ txt.T, ni @ ni.T, nt @ nt.T, cfg)


def test_image_and_text_lists_match_the_loop_oracle(rng):
    data = small_set(rng)
    builder = ListBuilder.from_data(data, CFG)
    oracle = embedding_oracle(data, CFG)
    assert (builder.n_images, builder.n_texts) == (3, 7) and builder.intra_source == "embeddings"
    assert builder.txt_to_img.tolist() == T2I.tolist()

    images = builder.image_lists(torch.arange(3))
    assert images.features.shape == (3, 4, 4) and images.adjacency.shape == (3, 4, 4)
    for i in range(3):
        feats, cands = oracle.image_query(i)
        np.testing.assert_allclose(images.features[i].numpy(), feats, rtol=1e-5, atol=1e-5)
        assert images.candidates[i].tolist() == cands
        assert images.targets[i].tolist() == [True] + [T2I[t] == i for t in cands]
        np.testing.assert_allclose(images.adjacency[i].numpy(), oracle.image_graph(i), rtol=1e-5)
    assert images.query_ids.tolist() == [0, 1, 2]

    texts = builder.text_lists(torch.arange(7))
    assert texts.features.shape == (7, 3, 4)
    for t in range(7):
        feats, cands = oracle.text_query(t)
        np.testing.assert_allclose(texts.features[t].numpy(), feats, rtol=1e-5, atol=1e-5)
        assert texts.candidates[t].tolist() == cands
        assert texts.targets[t].tolist() == [True] + [j == T2I[t] for j in cands]
        np.testing.assert_allclose(texts.adjacency[t].numpy(), oracle.text_graph(t), rtol=1e-5)


def test_column_zero_invariants(rng):
    """§5.2: column 0 of a candidate row is its original score; the query row's is >= them."""
    builder = ListBuilder.from_data(small_set(rng, normalise=True), CFG)
    images, texts = builder.build_all()
    nb = builder.neighbors
    k_i, k_t = CFG.list_len_i2t - 1, CFG.list_len_t2i - 1
    tol = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(images.features[:, 1:, 0].numpy(), nb.i2t.values[:, :k_i], **tol)
    np.testing.assert_allclose(texts.features[:, 1:, 0].numpy(), nb.t2i.values[:, :k_t], **tol)
    for lists in (images, texts):
        assert bool((lists.features[:, :1, 0] >= lists.features[:, 1:, 0] - 1e-6).all())


def test_given_matrices_and_direction_specific_scores(rng):
    base = small_set(rng)
    img, txt = base.image_embeddings, base.text_embeddings
    s = img @ txt.T
    t2i_scores = (s - 0.7 * s.mean(0, keepdims=True)).astype(np.float32)
    ii, tt = (img @ img.T).astype(np.float32), (txt @ txt.T).astype(np.float32)
    data = RetrievalSet(relevance=base.relevance, scores=s, t2i_scores=t2i_scores, image_image=ii,
                        text_text=tt)
    builder = ListBuilder.from_data(data, CFG)
    assert builder.intra_source == "given"
    oracle = Oracle(s, t2i_scores, ii, tt, CFG)
    images, texts = builder.build_all(batch_size=2)
    for i in range(3):
        np.testing.assert_allclose(images.features[i].numpy(), oracle.image_query(i)[0], rtol=1e-5, atol=1e-6)
    for t in range(7):
        np.testing.assert_allclose(texts.features[t].numpy(), oracle.text_query(t)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(texts.adjacency[t].numpy(), oracle.text_graph(t), rtol=1e-5)


def test_second_order_source_from_scores_only(rng):
    base = small_set(rng)
    s = (base.image_embeddings @ base.text_embeddings.T).astype(np.float32)
    data = RetrievalSet(relevance=base.relevance, scores=s)
    builder = ListBuilder.from_data(data, CFG.replace(intra_source="auto", intra_rank=None))
    assert builder.intra_source == "second_order"
    rows = s / np.linalg.norm(s, axis=1, keepdims=True)
    cols = s / np.linalg.norm(s, axis=0, keepdims=True)
    oracle = Oracle(s, s, rows @ rows.T, cols.T @ cols, CFG)
    texts = builder.text_lists(torch.arange(7))
    for t in range(7):
        np.testing.assert_allclose(texts.features[t].numpy(), oracle.text_query(t)[0], rtol=1e-4, atol=1e-5)


def test_duplicate_queries_in_a_batch(rng):
    builder = ListBuilder.from_data(small_set(rng), CFG)
    once = builder.image_lists(torch.arange(3))
    batch = builder.image_lists(torch.tensor([2, 0, 2, 1]))
    assert batch.query_ids.tolist() == [2, 0, 2, 1]
    for field in ("features", "targets", "adjacency", "candidates"):
        assert torch.equal(getattr(batch, field), getattr(once, field)[torch.tensor([2, 0, 2, 1])])


def test_mapped_lists_with_unequal_captions(rng):
    data = small_set(rng)
    builder = ListBuilder.from_data(data, CFG)
    oracle = embedding_oracle(data, CFG)
    texts = torch.arange(7)
    gen = torch.Generator().manual_seed(3)
    t2i_map, i2t_map = builder.mapped_lists(texts, gen)
    image_lists = builder.image_lists(torch.from_numpy(T2I))
    text_lists = builder.text_lists(texts)

    assert t2i_map.features.shape == (7, CFG.list_len_i2t, 4)
    assert i2t_map.features.shape == (7, CFG.list_len_t2i, 4)
    for j in range(7):
        image = T2I[j]
        mapped = [T2I[t] for t in oracle.i2t[image][:CFG.list_len_i2t - 1]]
        assert t2i_map.candidates[j].tolist() == mapped
        want, _ = oracle.text_query(j, cands=mapped)       # caption j's pillars, images as candidates
        np.testing.assert_allclose(t2i_map.features[j].numpy(), want, rtol=1e-5, atol=1e-5)

        caps = i2t_map.candidates[j].tolist()
        assert [T2I[c] for c in caps] == oracle.t2i[j][:CFG.list_len_t2i - 1]   # a caption of each image
        want, _ = oracle.image_query(image, cands=caps)    # image's pillars, captions as candidates
        np.testing.assert_allclose(i2t_map.features[j].numpy(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(t2i_map.adjacency, image_lists.adjacency)
    assert torch.equal(t2i_map.targets, image_lists.targets)
    assert torch.equal(i2t_map.adjacency, text_lists.adjacency)
    assert torch.equal(i2t_map.targets, text_lists.targets)
    assert t2i_map.query_ids.tolist() == list(range(7)) and i2t_map.query_ids.tolist() == T2I.tolist()

    # Reusing already built lists gives the same result for the same draw.
    again = builder.mapped_lists(texts, torch.Generator().manual_seed(3), image_lists=image_lists,
                                 text_lists=text_lists)
    for a, b in zip(again, (t2i_map, i2t_map)):
        assert torch.equal(a.features, b.features) and torch.equal(a.candidates, b.candidates)


def test_random_caption_choice_is_uniform_over_the_right_captions_and_seeded(rng):
    builder = ListBuilder.from_data(small_set(rng), CFG)
    images = torch.tensor([0, 1, 2] * 400)
    draws = builder.random_captions(images, torch.Generator().manual_seed(7))
    assert (builder.txt_to_img[draws] == images).all()
    for image, caps in ((0, {0, 1, 6}), (1, {2, 3, 4}), (2, {5})):
        got = draws[images == image]
        assert set(got.tolist()) == caps
        counts = np.bincount(got.numpy(), minlength=7)[sorted(caps)]
        expected = got.numel() / len(caps)
        assert np.all(np.abs(counts - expected) < 0.25 * expected)  # 400 draws: > 3.5 sd
    same = builder.random_captions(images, torch.Generator().manual_seed(7))
    other = builder.random_captions(images, torch.Generator().manual_seed(8))
    assert torch.equal(draws, same) and not torch.equal(draws, other)


def test_reference_thresholds_switch(rng):
    data = small_set(rng)
    ref = ListBuilder.from_data(data, CFG.replace(reference_thresholds=True))
    oracle = embedding_oracle(data, CFG)
    images = ref.image_lists(torch.arange(3))
    C = CFG.graph_neighbors
    for i in range(3):
        cands = oracle.i2t[i][:CFG.list_len_i2t - 1]
        want = graph_oracle([oracle.i2t[i][:C]] + [oracle.t2t[t][:C] for t in cands],
                            [oracle.i2i[i][:C]] + [oracle.t2i[t][:C] for t in cands], 0.8 / 32)
        np.testing.assert_allclose(images.adjacency[i].numpy(), want, rtol=1e-5)


def test_errors(rng):
    data = small_set(rng)
    with pytest.raises(InvalidParameterError, match="n_pillars"):
        ListBuilder.from_data(data, CFG.replace(n_pillars=4))          # only 3 images
    with pytest.raises(InvalidParameterError, match="list_len_t2i"):
        ListBuilder.from_data(data, CFG.replace(list_len_t2i=5))       # 4 candidate images > 3
    builder = ListBuilder.from_data(data, CFG)
    with pytest.raises(InvalidInputError, match="image_ids: 1 ids outside"):
        builder.image_lists(torch.tensor([0, 3]))
    with pytest.raises(InvalidInputError, match="1-D integer"):
        builder.text_lists(torch.tensor([0.0]))
    short = build_neighbor_lists(data, 2)
    with pytest.raises(InvalidInputError, match="too short"):
        ListBuilder.from_data(data, CFG, neighbors=short)
    ok = build_neighbor_lists(data, {"i2t": 3, "t2i": 2, "i2i": 2, "t2t": 2})
    with pytest.raises(InvalidParameterError, match="intra source 'embeddings'"):
        ListBuilder.from_data(data, CFG.replace(intra_source="second_order"), neighbors=ok)
    reused = ListBuilder.from_data(data, CFG, neighbors=ok)
    everything = torch.arange(7)
    assert torch.equal(reused.text_lists(everything).features, builder.text_lists(everything).features)


def test_memory_mapped_float16_scores_equal_in_memory_float32(rng, tmp_path):
    base = small_set(rng)
    s16 = (base.image_embeddings @ base.text_embeddings.T).astype(np.float16)
    np.save(tmp_path / "sims.npy", s16)
    mm = np.load(tmp_path / "sims.npy", mmap_mode="r", allow_pickle=False)
    cfg = CFG.replace(intra_rank=None)
    from_mmap = ListBuilder.from_data(RetrievalSet(relevance=base.relevance, scores=mm), cfg)
    dense = RetrievalSet(relevance=base.relevance, scores=s16.astype(np.float32))
    in_memory = ListBuilder.from_data(dense, cfg)
    for a, b in zip(from_mmap.build_all(), in_memory.build_all()):
        assert torch.equal(a.candidates, b.candidates) and torch.equal(a.adjacency, b.adjacency)
        np.testing.assert_allclose(a.features.numpy(), b.features.numpy(), rtol=1e-6, atol=1e-6)


def test_neighbor_index_of_the_config_is_used(rng):
    img = rng.standard_normal((200, 16)).astype(np.float32)
    t2i = np.repeat(np.arange(200), 2)
    txt = img[t2i] + 0.5 * rng.standard_normal((400, 16)).astype(np.float32)
    data = RetrievalSet(relevance=Relevance(t2i, 200), image_embeddings=img, text_embeddings=txt)
    base = LeaPRRConfig(n_pillars=8, list_len_i2t=6, list_len_t2i=4, graph_neighbors=4)
    exact = ListBuilder.from_data(data, base)
    # IVF probing every list is an exhaustive search: the same lists as the exact one
    ivf = ListBuilder.from_data(data, base.replace(neighbor_index="ivf",
                                                   neighbor_index_params={"nlist": 4, "nprobe": 4}))
    ids = torch.arange(200)
    assert torch.equal(exact.image_lists(ids).candidates, ivf.image_lists(ids).candidates)
    assert torch.allclose(exact.image_lists(ids).features, ivf.image_lists(ids).features)
    # probing one list of four is approximate: some lists change, so the index was really used
    rough = ListBuilder.from_data(data, base.replace(neighbor_index="ivf",
                                                     neighbor_index_params={"nlist": 4, "nprobe": 1}))
    assert not torch.equal(exact.image_lists(ids).features, rough.image_lists(ids).features)
    with pytest.raises(InvalidParameterError, match="unknown key"):
        base.replace(neighbor_index="hnsw", neighbor_index_params={"nprobe": 4})
