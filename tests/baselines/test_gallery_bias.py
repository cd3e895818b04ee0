"""Gallery-bias family against dense brute-force formulas, blockwise = dense, numerics, contract."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from pillar_rerank.baselines import (
    CSLS,
    DN,
    NNN,
    DBNorm,
    DualBankSinkhorn,
    InvertedSoftmax,
    QBNorm,
    SinkhornNorm,
)
from pillar_rerank.baselines._stream import EmbeddingScores
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError, NotFittedError

SMALL = 2**16  # forces many bank blocks on the matrices below


@pytest.fixture
def case(rng):
    bank = rng.uniform(-1, 1, size=(300, 90)).astype(np.float32)
    scores = rng.uniform(-1, 1, size=(40, 90)).astype(np.float32)
    extra = rng.uniform(-1, 1, size=(300, 25)).astype(np.float32)
    return bank, scores, extra


def _dense_sinkhorn_bias(bank, tau, n_iter, extra=None):
    full = bank if extra is None else np.concatenate([bank, extra], axis=1)
    kernel = np.exp((full.T.astype(np.float64) - 1.0) / tau)     # (n_gallery_all, n_bank)
    a = np.full(kernel.shape[0], 1.0 / kernel.shape[0])
    b = np.full(kernel.shape[1], 1.0 / kernel.shape[1])
    u, v = a.copy(), b.copy()
    for _ in range(n_iter):
        v = b / (kernel.T @ u)
        u = a / (kernel @ v)
    return -tau * np.log(u[: bank.shape[1]])


def test_inverted_softmax_matches_dense(case):
    bank, scores, _ = case
    out = InvertedSoftmax(beta=7.0, block_bytes=SMALL).fit(bank).rerank(scores)
    expected = scores - logsumexp(7.0 * bank.astype(np.float64), axis=0) / 7.0
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    assert out.dtype == np.float32


def test_qb_norm_gates_rows_by_activation_set(case):
    bank, scores, _ = case
    out = QBNorm(beta=5.0, k=1, block_bytes=SMALL).fit(bank).rerank(scores)
    active = np.zeros(bank.shape[1], bool)
    active[bank.argmax(1)] = True
    h = logsumexp(5.0 * bank.astype(np.float64), axis=0) / 5.0
    gated = active[scores.argmax(1)]
    expected = np.where(gated[:, None], scores - h, scores)
    assert 0 < gated.sum() < len(gated)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_nnn_csls_dn_match_dense(case):
    bank, scores, _ = case
    top = -np.sort(-bank, axis=0)
    np.testing.assert_allclose(NNN(k=7, alpha=0.6, block_bytes=SMALL).fit(bank).rerank(scores),
                               scores - 0.6 * top[:7].mean(0), atol=1e-5)
    np.testing.assert_allclose(CSLS(k=3, block_bytes=SMALL).fit(bank).rerank(scores),
                               scores - 0.5 * top[:3].mean(0), atol=1e-5)
    np.testing.assert_allclose(DN(lam=0.5, block_bytes=SMALL).fit(bank).rerank(scores),
                               scores - 0.5 * bank.mean(0), atol=1e-5)


def test_hand_computed_nnn():
    bank = np.array([[1.0, 0.0], [0.5, 0.2], [0.0, 0.1]], dtype=np.float32)
    scores = np.array([[0.9, 0.8]], dtype=np.float32)
    # top-2 means: gallery 0 -> (1 + .5)/2 = .75, gallery 1 -> (.2 + .1)/2 = .15; alpha 1
    out = NNN(k=2, alpha=1.0).fit(bank).rerank(scores)
    np.testing.assert_allclose(out, [[0.15, 0.65]], atol=1e-6)


@pytest.mark.parametrize("n_iter", [1, 3, 10])
def test_sinkhorn_matches_dense_pot_iterations(case, n_iter):
    bank, scores, _ = case
    out = SinkhornNorm(tau=0.2, n_iter=n_iter, block_bytes=SMALL).fit(bank).rerank(scores)
    np.testing.assert_allclose(out, scores - _dense_sinkhorn_bias(bank, 0.2, n_iter), atol=1e-4)


def test_dual_bank_sinkhorn_matches_dense(case):
    bank, scores, extra = case
    out = DualBankSinkhorn(tau=0.2, n_iter=5, block_bytes=SMALL).fit(bank, bank_gallery=extra).rerank(scores)
    np.testing.assert_allclose(out, scores - _dense_sinkhorn_bias(bank, 0.2, 5, extra), atol=1e-4)
    with pytest.raises(InvalidInputError, match="bank-gallery"):
        DualBankSinkhorn().fit(bank)


def test_dbnorm_matches_dense(case, rng):
    bank, scores, _ = case
    gbank = rng.uniform(-1, 1, size=(120, 90)).astype(np.float32)
    out = DBNorm(beta1=2.0, beta2=3.0, block_bytes=SMALL).fit(bank, gallery_bank=gbank).rerank(scores)
    lse = logsumexp(2.0 * bank.astype(np.float64), 0) + logsumexp(3.0 * gbank.astype(np.float64), 0)
    np.testing.assert_allclose(out, scores - lse / 5.0, atol=1e-5)
    dyn = DBNorm(dynamic=True).fit(bank, gallery_bank=gbank).rerank(scores)
    assert dyn.shape == scores.shape and np.isfinite(dyn).all()


def test_no_overflow_on_logit_scale(case):
    bank, scores, extra = case
    bank100, scores100, extra100 = bank * 100, scores * 100, extra * 100
    for method, fit_kw in ((InvertedSoftmax(beta=20.0), {}), (QBNorm(beta=20.0), {}),
                           (SinkhornNorm(tau=0.01), {}),
                           (DualBankSinkhorn(tau=0.01), {"bank_gallery": extra100}),
                           (DBNorm(beta1=20.0, beta2=20.0), {"gallery_bank": bank100})):
        out = method.fit(bank100, **fit_kw).rerank(scores100)
        assert np.isfinite(out).all(), type(method).__name__
    out = InvertedSoftmax(beta=20.0).fit(bank100).rerank(scores100)
    expected = scores100 - logsumexp(20.0 * bank100.astype(np.float64), 0) / 20.0
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("cls", [InvertedSoftmax, QBNorm, NNN, CSLS, DN, SinkhornNorm])
def test_contract_input_unchanged_float32_fitted(case, cls):
    bank, scores, _ = case
    bank16 = bank.astype(np.float16)
    scores.setflags(write=False)
    bank16.setflags(write=False)
    before = scores.copy()
    method = cls(block_bytes=SMALL)
    with pytest.raises(NotFittedError, match=cls.__name__):
        method.rerank(scores)
    assert method.fit(bank16) is method
    out = method.rerank(scores)
    assert out.dtype == np.float32 and out.shape == scores.shape
    assert not np.shares_memory(out, scores)
    np.testing.assert_array_equal(scores, before)
    assert repr(method.clone()) == repr(method)


def test_lazy_embedding_bank_equals_dense(rng):
    q = rng.standard_normal((200, 16)).astype(np.float32)
    g = rng.standard_normal((50, 16)).astype(np.float32)
    scores = rng.standard_normal((10, 50)).astype(np.float32)
    lazy = EmbeddingScores(q, g)
    dense = q @ g.T
    for cls in (InvertedSoftmax, NNN, SinkhornNorm):
        a = cls(block_bytes=SMALL).fit(lazy).rerank(scores)
        b = cls().fit(dense).rerank(scores)
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_permuting_gallery_permutes_output(case, rng):
    bank, scores, _ = case
    perm = rng.permutation(bank.shape[1])
    for cls in (InvertedSoftmax, NNN, SinkhornNorm):
        a = cls().fit(bank).rerank(scores)[:, perm]
        b = cls().fit(bank[:, perm]).rerank(scores[:, perm])
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_errors(case):
    bank, scores, _ = case
    with pytest.raises(InvalidParameterError, match="'beta' parameter of InvertedSoftmax"):
        InvertedSoftmax(beta=-1.0).fit(bank)
    with pytest.raises(InvalidParameterError, match="n_bank_queries=300"):
        NNN(k=301).fit(bank)
    with pytest.raises(InvalidInputError, match="needs bank scores"):
        NNN().fit(None)
    with pytest.raises(InvalidInputError, match="axis 1 differs"):
        NNN().fit(bank).rerank(scores[:, :10])
    bad = bank.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        NNN().fit(bad)
