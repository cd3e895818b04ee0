import numpy as np
import pytest

from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.inputs import Relevance, RetrievalSet, load_retrieval_set


def test_relevance_csr_with_varying_captions():
    rel = Relevance(np.array([2, 0, 0, 1, 2, 2]), 3)
    assert rel.indptr.tolist() == [0, 2, 3, 6]
    assert rel.captions_of(2).tolist() == [0, 4, 5]
    assert rel.captions_per_image.tolist() == [2, 1, 3]
    assert rel.n_texts == 6
    with pytest.raises(ValueError):
        rel.txt_to_img[0] = 1  # read-only


def test_relevance_from_arguments():
    rel = Relevance.from_arguments(n_images=3, n_texts=6, captions_per_image=2)
    assert rel.txt_to_img.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(InvalidInputError, match="exactly one of txt_to_img"):
        Relevance.from_arguments(n_images=3, n_texts=6)
    with pytest.raises(InvalidInputError, match="exactly one of txt_to_img"):
        Relevance.from_arguments(n_images=3, n_texts=6, captions_per_image=2, txt_to_img=np.zeros(6, int))
    with pytest.raises(InvalidInputError, match="n_images \\* 5 = 15; got n_texts=6"):
        Relevance.from_arguments(n_images=3, n_texts=6, captions_per_image=5)
    with pytest.raises(InvalidInputError, match="one entry per caption \\(n_texts=7\\); got 6"):
        Relevance.from_arguments(n_images=3, n_texts=7, txt_to_img=np.array([0, 0, 1, 1, 2, 2]))


def test_relevance_subset_follows_the_map():
    rel = Relevance(np.array([1, 0, 1, 2, 0, 2]), 3)
    sub, caps = rel.subset(np.array([2, 1]))
    assert caps.tolist() == [0, 2, 3, 5]
    assert sub.txt_to_img.tolist() == [1, 1, 0, 0]


def test_retrieval_set_checks(rng):
    rel = Relevance(np.array([0, 0, 1]), 2)
    with pytest.raises(InvalidInputError, match="give a similarity matrix, or both"):
        RetrievalSet(relevance=rel)
    with pytest.raises(InvalidInputError, match="give both image and text embeddings"):
        RetrievalSet(relevance=rel, scores=rng.random((2, 3)), image_embeddings=rng.random((2, 4)))
    with pytest.raises(InvalidInputError, match="scores: expected shape \\(2, 3\\); got \\(3, 2\\)"):
        RetrievalSet(relevance=rel, scores=rng.random((3, 2)))
    with pytest.raises(InvalidInputError, match="text embeddings: expected shape \\(3, 4\\); got \\(3, 5\\)"):
        RetrievalSet(relevance=rel, image_embeddings=rng.random((2, 4)), text_embeddings=rng.random((3, 5)))
    with pytest.raises(InvalidInputError, match="t2i_scores needs scores"):
        RetrievalSet(relevance=rel, image_embeddings=rng.random((2, 4)), text_embeddings=rng.random((3, 4)),
                     t2i_scores=rng.random((2, 3)))
    with pytest.raises(InvalidInputError, match="image-image: expected shape \\(2, 2\\)"):
        RetrievalSet(relevance=rel, scores=rng.random((2, 3)), image_image=rng.random((3, 3)))
    with pytest.raises(InvalidInputError, match="text-text: expected finite values"):
        RetrievalSet(relevance=rel, scores=rng.random((2, 3)), text_text=np.full((3, 3), np.inf))


def test_similarity_from_embeddings_in_blocks(set_factory):
    data = set_factory(30, with_scores=False)
    full = data.image_embeddings @ data.text_embeddings.T
    assert np.allclose(data.similarity(budget_bytes=64), full, atol=1e-5)
    assert np.allclose(data.t2i_similarity(), full, atol=1e-5)
    sub = data.subset_images(np.array([3, 1]))
    assert sub.n_images == 2 and sub.n_texts == int(np.isin(data.txt_to_img, [3, 1]).sum())
    assert np.allclose(sub.similarity(), sub.image_embeddings @ sub.text_embeddings.T, atol=1e-5)


def test_with_scores_keeps_ground_truth_and_checks_shape(set_factory, rng):
    data = set_factory(5)
    new = data.with_scores(data.scores * 2, t2i_scores=data.scores)
    assert new.relevance is data.relevance and np.array_equal(new.t2i_similarity(), data.scores)
    with pytest.raises(InvalidInputError, match="expected shape"):
        data.with_scores(rng.random((5, 2)))


def test_load_retrieval_set_from_files(tmp_path, set_factory):
    data = set_factory(6, min_caps=1, max_caps=3)
    np.save(tmp_path / "s.npy", data.scores.astype(np.float16))
    np.save(tmp_path / "img.npy", data.image_embeddings)
    np.save(tmp_path / "txt.npy", data.text_embeddings)
    np.save(tmp_path / "map.npy", data.txt_to_img.astype(np.int32))
    loaded = load_retrieval_set(sims=tmp_path / "s.npy", txt_to_img=tmp_path / "map.npy")
    assert isinstance(loaded.scores, np.memmap) and loaded.relevance.same_as(data.relevance)
    emb = load_retrieval_set(image_embeddings=tmp_path / "img.npy", text_embeddings=tmp_path / "txt.npy",
                             txt_to_img=tmp_path / "map.npy", mmap=False)
    assert emb.has_embeddings and emb.scores is None
    with pytest.raises(InvalidInputError, match="give a similarity matrix \\(sims\\)"):
        load_retrieval_set(image_embeddings=tmp_path / "img.npy", txt_to_img=tmp_path / "map.npy")
    with pytest.raises(InputFileError, match="file not found"):
        load_retrieval_set(sims=tmp_path / "nope.npy", captions_per_image=1)
    np.save(tmp_path / "bad_map.npy", np.append(data.txt_to_img, 99))
    with pytest.raises(InvalidInputError, match="one entry per caption"):
        load_retrieval_set(sims=tmp_path / "s.npy", txt_to_img=tmp_path / "bad_map.npy")
