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
    # once, when similarity() builds them; not again per direction nor in the returned set
    assert scans.count(shape) + scans.count(shape[::-1]) == 1


def test_apply_both_scans_each_bank_product_once(sides, scans):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    apply_both(InvertedSoftmax(beta=5.0), test, bank)
    assert scans.count((bank_side.n_images, test.n_texts)) == 1        # bank.i2t
    assert scans.count((bank_side.n_texts, test.n_images)) == 1        # bank.t2i


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
