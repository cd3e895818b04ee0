"""Each input's values are scanned for NaN/inf once per call, and every bad input still fails.

The finite scan counter wraps ``check_finite`` wherever it is imported and records the shape of
each array it actually scans (arrays already known finite are skipped by ``check_finite`` itself).
"""

from __future__ import annotations

import numpy as np
import pytest

from pillar_rerank import _validation, inputs
from pillar_rerank.baselines import (
    NNN,
    DualSoftmax,
    InvertedSoftmax,
    SinkhornNorm,
    _stream,
    apply_both,
    bank_from_embeddings,
)
from pillar_rerank.baselines import bank as bank_module
from pillar_rerank.baselines.bank import bank_from_embedding_arrays
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet


@pytest.fixture
def scans(monkeypatch):
    """List of the shapes ``check_finite`` really scanned (known-finite arrays excluded)."""
    seen: list[tuple[int, ...]] = []
    real = _validation.check_finite

    def counting(arr, *, name, source=None):
        if not _validation._known_finite(arr):
            seen.append(tuple(arr.shape))
        return real(arr, name=name, source=source)

    for module in (_validation, inputs, _stream, bank_module):
        if hasattr(module, "check_finite"):
            monkeypatch.setattr(module, "check_finite", counting)
    return seen


@pytest.fixture
def sides(set_factory):
    bank_side = set_factory(30, min_caps=1, max_caps=4, d=8)
    full = set_factory(20, min_caps=2, max_caps=5, d=8)
    # the test set from embeddings only, as the benchmark's case: similarity() builds the scores
    test = RetrievalSet(relevance=full.relevance, image_embeddings=full.image_embeddings,
                        text_embeddings=full.text_embeddings, name="test")
    return bank_side, test


@pytest.mark.parametrize("method", [InvertedSoftmax(beta=5.0), NNN(k=3), SinkhornNorm(tau=0.1),
                                    DualSoftmax(temperature=0.1)])
def test_apply_both_scans_the_test_scores_once(sides, scans, method):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    apply_both(method, test, bank)
    shape = (test.n_images, test.n_texts)
    # at most once, when similarity() builds them (not even then: the embeddings' norms rule an
    # overflow out); never again per direction nor in the returned set
    assert scans.count(shape) + scans.count(shape[::-1]) == 0


def _huge(data: RetrievalSet, scale: float) -> RetrievalSet:
    return RetrievalSet(relevance=data.relevance, image_embeddings=data.image_embeddings * scale,
                        text_embeddings=data.text_embeddings * scale, name=data.name)


def test_apply_both_scans_once_where_norms_allow_an_overflow(sides, scans):
    """Norms whose product nears float32's limit: the scores could overflow (they do not), so
    they are scanned, once."""
    bank_side, test = sides
    arrays = (bank_side.image_embeddings, bank_side.text_embeddings, test.image_embeddings,
              test.text_embeddings)
    norm = max(float(np.linalg.norm(a, axis=1).max()) for a in arrays)
    scale = float(np.sqrt(3e38) / norm)
    bank_side, test = _huge(bank_side, scale), _huge(test, scale)
    for q, g in ((test.image_embeddings, test.text_embeddings),
                 (bank_side.image_embeddings, test.text_embeddings),
                 (bank_side.text_embeddings, test.image_embeddings)):
        bound = np.linalg.norm(q.astype(np.float64), axis=1).max() * \
            np.linalg.norm(g.astype(np.float64), axis=1).max()
        assert np.finfo(np.float32).max / 4 < bound < np.finfo(np.float32).max
    apply_both(NNN(k=2), test, bank_from_embeddings(bank_side, test))
    shape = (test.n_images, test.n_texts)
    assert scans.count(shape) + scans.count(shape[::-1]) == 1
    # each bank product's entries once (NNN computes them gallery-major, in blocks of columns)
    others = [s for s in scans if s not in (shape, shape[::-1])]
    assert sum(a * b for a, b in others if b == bank_side.n_images) == bank_side.n_images * test.n_texts
    assert sum(a * b for a, b in others if b == bank_side.n_texts) == bank_side.n_texts * test.n_images


def test_apply_both_scans_no_bank_product_with_bounded_norms(sides, scans):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    apply_both(InvertedSoftmax(beta=5.0), test, bank)
    assert scans.count((bank_side.n_images, test.n_texts)) == 0
    assert scans.count((bank_side.n_texts, test.n_images)) == 0


@pytest.mark.parametrize("materialize", [True, False])
def test_products_that_overflow_are_still_rejected(sides, materialize):
    """Finite embeddings whose products overflow float32: similarity() and the banks raise."""
    bank_side, test = sides
    bank_side, test = _huge(bank_side, 1e20), _huge(test, 1e20)
    with pytest.raises(InvalidInputError, match="finite"):
        test.similarity()
    bank = bank_from_embeddings(bank_side, test, materialize=materialize)
    with pytest.raises(InvalidInputError, match="finite"):
        InvertedSoftmax(beta=5.0).fit(bank.i2t)
    with pytest.raises(InvalidInputError, match="finite"):
        NNN(k=2).fit(bank.t2i)
    with pytest.raises(InvalidInputError, match="finite"):
        SinkhornNorm(tau=0.1).fit(bank.t2i)


def test_float16_bank_checks_against_float16_range(sides):
    """Stored as float16, a product is finite only below 65504: a norm bound for float32 is not enough."""
    from pillar_rerank.baselines import EmbeddingScores

    bank_side, test = sides
    q, g = bank_side.image_embeddings * 200, test.text_embeddings * 200
    assert np.abs(q @ g.T).max() > 65504
    with pytest.raises(InvalidInputError, match="finite"):
        EmbeddingScores(q, g, cache=True, dtype=np.float16).dense()
    assert np.isfinite(EmbeddingScores(q, g, cache=True).dense()).all()


def test_bank_from_embeddings_does_not_rescan_checked_sets(sides, scans):
    bank_side, test = sides
    bank_from_embeddings(bank_side, test)
    assert scans == []  # both sets checked their embeddings when they were built


def test_bank_from_embedding_arrays_scans_each_matrix_once(sides, scans):
    bank_side, test = sides
    bank_from_embedding_arrays(bank_side.image_embeddings.copy(), bank_side.text_embeddings.copy(),
                               test.image_embeddings.copy(), test.text_embeddings.copy())
    assert sorted(scans) == sorted([bank_side.image_embeddings.shape, bank_side.text_embeddings.shape,
                                    test.image_embeddings.shape, test.text_embeddings.shape])


@pytest.mark.parametrize("which", range(4))
def test_bank_from_embedding_arrays_still_rejects_nan(sides, which):
    bank_side, test = sides
    arrays = [a.copy() for a in (bank_side.image_embeddings, bank_side.text_embeddings,
                                 test.image_embeddings, test.text_embeddings)]
    arrays[which][1, 2] = np.nan
    with pytest.raises(InvalidInputError, match="finite"):
        bank_from_embedding_arrays(*arrays)


def test_float64_scores_beyond_float32_still_rejected(sides):
    """Finite float64 scores that overflow float32 are caught once, before any direction runs."""
    bank_side, test = sides
    s = test.similarity().astype(np.float64)
    s[0, 0] = 1e39
    data = RetrievalSet(relevance=test.relevance, scores=s, image_embeddings=test.image_embeddings,
                        text_embeddings=test.text_embeddings)
    with pytest.raises(InvalidInputError, match="float32"):
        apply_both(InvertedSoftmax(beta=5.0), data, bank_from_embeddings(bank_side, test))


def test_rerank_of_user_scores_still_scanned(sides):
    """Outside apply_both a user's writeable matrix is checked by rerank every time."""
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    fitted = InvertedSoftmax(beta=5.0).fit(bank.i2t)
    s = test.similarity()
    fitted.rerank(s)
    s[0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="finite"):
        fitted.rerank(s)


def test_apply_both_results_are_the_method_outputs(sides):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    out = apply_both(InvertedSoftmax(beta=5.0), test, bank)
    s = test.similarity()
    np.testing.assert_array_equal(out.scores, InvertedSoftmax(beta=5.0).fit(bank.i2t).rerank(s))
    np.testing.assert_array_equal(out.t2i_scores, InvertedSoftmax(beta=5.0).fit(bank.t2i).rerank(s.T).T)
    assert out.scores.flags.writeable and out.t2i_scores.flags.writeable
    assert out.image_embeddings is test.image_embeddings and out.name.startswith("test+")
