"""``rerank search``: hits from a model dir or a saved searcher, atomic output, exit codes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.reranker import PillarReranker
from pillar_rerank.search import RerankingSearcher


def _side(n_images: int, cpi: int, seed: int, d: int = 12) -> RetrievalSet:
    r = np.random.default_rng(seed)
    img = r.normal(size=(n_images, d)).astype(np.float32)
    txt = (np.repeat(img, cpi, 0) + 0.8 * r.normal(size=(n_images * cpi, d))).astype(np.float32)
    return RetrievalSet(relevance=Relevance.from_captions_per_image(n_images, cpi), image_embeddings=img,
                        text_embeddings=txt)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    cfg = LeaPRRConfig(n_pillars=4, list_len_i2t=5, list_len_t2i=4, graph_neighbors=3, embed_dim=16, depth=1,
                       num_heads=2, epochs=1, batch_size=32, device="cpu", precision="fp32")
    model = PillarReranker(cfg).fit(_side(40, 3, 0), verbose=False)
    model.save(root / "model")
    test = _side(30, 3, 1)
    np.save(root / "gallery.npy", test.image_embeddings)
    np.save(root / "reference.npy", test.text_embeddings)
    np.save(root / "queries.npy", test.text_embeddings[:7])
    return root, model, test


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _base(root, *extra):
    return ["search", root / "model", "--gallery-emb", root / "gallery.npy", "--reference-emb",
            root / "reference.npy", "--queries", root / "queries.npy", *extra]


def test_search_writes_the_searchers_hits(workspace, tmp_path):
    root, model, test = workspace
    result = run(*_base(root, "-k", 5, "-o", tmp_path / "hits.npz", "--save-searcher", tmp_path / "s"))
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "hits.npz", allow_pickle=False) as z:
        scores, ids = z["scores"], z["ids"]
    want = RerankingSearcher(model).fit(test.image_embeddings, test.text_embeddings)
    w_scores, w_ids = want.search(test.text_embeddings[:7], 5)
    np.testing.assert_array_equal(ids, w_ids)
    np.testing.assert_allclose(scores, w_scores, atol=1e-6)
    # the saved searcher answers the same without the gallery options
    again = run("search", tmp_path / "s", "--queries", root / "queries.npy", "-k", 5,
                "-o", tmp_path / "again.npz")
    assert again.exit_code == 0, again.output
    with np.load(tmp_path / "again.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["ids"], ids)


def test_reference_ids_give_the_batch_semantics(workspace, tmp_path):
    root, model, test = workspace
    np.save(tmp_path / "ids.npy", np.arange(7))
    result = run(*_base(root, "--reference-lists", "--reference-ids", tmp_path / "ids.npy", "-k", 5,
                        "-o", tmp_path / "hits.npz"))
    assert result.exit_code == 0, result.output
    full = model.rerank(test).T[:7]
    with np.load(tmp_path / "hits.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["scores"], np.sort(full, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_bad_input_exits_2_and_leaves_no_output(workspace, tmp_path):
    root, _, test = workspace
    np.save(tmp_path / "q5.npy", np.zeros((2, 5), np.float32))
    dim = ["search", root / "model", "--gallery-emb", root / "gallery.npy", "--reference-emb",
           root / "reference.npy", "--queries", tmp_path / "q5.npy"]
    bad = {"k": _base(root, "-k", 999), "dim": dim}
    for name, args in bad.items():
        result = run(*args, "-o", tmp_path / f"{name}.npz")
        assert result.exit_code == 2, (name, result.output)
        assert not (tmp_path / f"{name}.npz").exists()
    assert "dimension" in result.output
    no_gallery = run("search", root / "model", "--queries", root / "queries.npy", "-o", tmp_path / "y.npz")
    assert no_gallery.exit_code == 2 and "--gallery-emb" in no_gallery.output


def test_a_gallery_other_than_the_saved_searchers_is_refused(workspace, tmp_path):
    root, model, test = workspace
    RerankingSearcher(model).fit(test.image_embeddings, test.text_embeddings).save(tmp_path / "s")
    np.save(tmp_path / "other.npy", test.image_embeddings[::-1].copy())
    result = run("search", tmp_path / "s", "--gallery-emb", tmp_path / "other.npy", "--queries",
                 root / "queries.npy", "-o", tmp_path / "h.npz")
    assert result.exit_code == 2 and "does not match" in result.output


def test_io_failures_exit_3(workspace, tmp_path):
    root, _, _ = workspace
    result = run("search", root / "model", "--gallery-emb", tmp_path / "nope.npy", "--reference-emb",
                 root / "reference.npy", "--queries", root / "queries.npy", "-o", tmp_path / "h.npz")
    assert result.exit_code == 3, result.output
    result = run("search", tmp_path / "no_model", "--queries", root / "queries.npy", "-o", tmp_path / "h.npz")
    assert result.exit_code == 3, result.output
    # never over an input
    result = run(*_base(root, "-o", root / "queries.npy", "--overwrite"))
    assert result.exit_code in (2, 3) and np.load(root / "queries.npy").shape == (7, 12)
