"""DSL, MTFN-RR and k-reciprocal against brute-force dense references."""

from __future__ import annotations

import numpy as np
import pytest

from pillar_rerank.baselines import MTFNRR, DualSoftmax, KReciprocal
from pillar_rerank.neighbors import PairScores


def test_dsl_matches_dense_and_is_flagged(rng):
    scores = rng.uniform(-1, 1, size=(70, 30)).astype(np.float32)
    out = DualSoftmax(temperature=0.1, block_bytes=2**16).fit().rerank(scores)
    z = scores.astype(np.float64) / 0.1
    prior = np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
    np.testing.assert_allclose(out, scores * prior * 70, rtol=1e-4, atol=1e-5)
    assert DualSoftmax.transductive and not DualSoftmax.requires_fit
    big = DualSoftmax(temperature=1.0).rerank(scores * 1000)   # exp(1000) in the reference
    assert np.isfinite(big).all()


def _mtfn_loop(scores, k1):
    """Slow oracle: per query, re-order the top-k1 by the query's rank in each candidate's column."""
    out = scores.copy()
    for q in range(scores.shape[0]):
        top = np.argsort(-scores[q], kind="stable")[:k1]
        rev = [int((scores[:, g] > scores[q, g]).sum() + (scores[:q, g] == scores[q, g]).sum()) for g in top]
        new = [top[i] for i in sorted(range(k1), key=lambda i: (rev[i], i))]
        out[q, new] = scores[q, top]
    return out


def test_mtfn_rr_matches_loop(rng):
    scores = rng.standard_normal((25, 40)).astype(np.float32)
    scores.setflags(write=False)
    out = MTFNRR(k1=6, block_bytes=2**16).fit().rerank(scores)
    np.testing.assert_array_equal(out, _mtfn_loop(scores, 6))
    assert not np.shares_memory(out, scores)


def test_mtfn_rr_intra_group_uses_neighbours_not_labels(rng):
    emb = rng.standard_normal((20, 5)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = rng.standard_normal((20, 30)).astype(np.float32)
    pair = PairScores(left=emb, right=emb)
    out = MTFNRR(k1=5, intra_k=3).fit(pair).rerank(scores)
    # oracle: best reverse rank over the query's 3 nearest same-modality items (itself included)
    intra = emb @ emb.T
    expected = scores.copy()
    for q in range(20):
        group = np.argsort(-intra[q], kind="stable")[:3]
        top = np.argsort(-scores[q], kind="stable")[:5]
        rev = [min(int((scores[:, g] > scores[m, g]).sum() + (scores[:m, g] == scores[m, g]).sum())
                   for m in group) for g in top]
        new = [top[i] for i in sorted(range(5), key=lambda i: (rev[i], i))]
        expected[q, new] = scores[q, top]
    np.testing.assert_array_equal(out, expected)


def _dense_k_reciprocal(s, sqq, sgg, k1, k2, lam):
    """The reference algorithm, dense, on union distances 1 - s normalised by the row maximum."""
    nq = s.shape[0]
    union = np.block([[sqq, s], [s.T, sgg]]).astype(np.float64)
    dist = 1.0 - union
    dist = dist / dist.max(1, keepdims=True)
    n = dist.shape[0]
    rank = np.argsort(-union, axis=1, kind="stable")
    V = np.zeros((n, n))
    for i in range(n):
        fwd = rank[i, :k1 + 1]
        recip = fwd[(rank[fwd, :k1 + 1] == i).any(1)]
        exp = list(recip)
        h = int(np.around(k1 / 2.0)) + 1
        for c in recip:
            cf = rank[c, :h]
            crecip = cf[(rank[cf, :h] == c).any(1)]
            if len(np.intersect1d(crecip, recip)) > 2.0 / 3.0 * len(crecip):
                exp.extend(crecip)
        exp = np.unique(exp)
        w = np.exp(-dist[i, exp])
        V[i, exp] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.zeros((nq, n - nq))
    for q in range(nq):
        mins = np.minimum(V[q], V[nq:]).sum(1)
        jac[q] = 1 - mins / (2 - mins)
    return -((1 - lam) * jac + lam * dist[:nq, nq:])


def test_k_reciprocal_sparse_equals_dense(rng):
    d = 6
    img = rng.standard_normal((9, d))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = img[rng.integers(0, 9, 15)] + 0.6 * rng.standard_normal((15, d))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    s = (img @ txt.T).astype(np.float32)
    qi, gi = PairScores(left=img.astype(np.float32), right=img.astype(np.float32)), \
        PairScores(matrix=(txt @ txt.T).astype(np.float32))
    for k1, k2 in ((4, 2), (6, 1)):
        out = KReciprocal(k1=k1, k2=k2, lambda_value=0.3, block_bytes=2**16, device="cpu") \
            .fit(qi, gallery_intra=gi).rerank(s)
        expected = _dense_k_reciprocal(s, img @ img.T, txt @ txt.T, k1, k2, 0.3)
        np.testing.assert_allclose(out, expected, atol=2e-5)
    assert KReciprocal.transductive and KReciprocal.needs_intra_modal


def test_k_reciprocal_checks_intra_inputs():
    with pytest.raises(ValueError, match="PairScores"):
        KReciprocal().fit(np.eye(4), gallery_intra=np.eye(6))


def test_transductive_methods_leave_both_orientations_unchanged(rng):
    scores = rng.standard_normal((12, 18)).astype(np.float32)
    scores.setflags(write=False)
    before = scores.copy()
    for method in (MTFNRR(k1=4), DualSoftmax(temperature=0.5)):
        a = method.fit().rerank(scores)
        b = method.fit().rerank(scores.T)            # the t2i call: a transposed view
        assert a.shape == (12, 18) and b.shape == (18, 12)
    np.testing.assert_array_equal(scores, before)
    np.testing.assert_array_equal(MTFNRR(k1=4).fit().rerank(scores.T), _mtfn_loop(before.T.copy(), 4))


def _mtfn_loop_order(scores, k1):
    """Slow oracle of the re-ranked top-k1 order of every query (gallery ids, best first)."""
    orders = []
    for q in range(scores.shape[0]):
        top = np.argsort(-scores[q], kind="stable")[:k1]
        rev = [int((scores[:, g] > scores[q, g]).sum() + (scores[:q, g] == scores[q, g]).sum()) for g in top]
        orders.append([top[i] for i in sorted(range(k1), key=lambda i: (rev[i], i))])
    return np.array(orders)


def test_mtfn_rr_keeps_new_order_with_duplicate_captions(rng):
    """Duplicate captions tie in score; sorting the output must still give the re-ranked order."""
    base = rng.standard_normal((30, 12)).astype(np.float32)
    scores = base[:, np.repeat(np.arange(12), 3)]          # every caption three times: exact ties
    scores = np.concatenate([scores, base[:, :4] - 0.05], axis=1)   # the rest of the row ties too
    k1 = 7
    out = MTFNRR(k1=k1).fit().rerank(scores)
    expected = _mtfn_loop_order(scores, k1)
    moved = (expected != np.argsort(-scores, axis=1, kind="stable")[:, :k1]).any(1)
    assert moved.sum() >= 5                                 # the case exercises re-ordering
    np.testing.assert_array_equal(np.argsort(-out, axis=1, kind="stable")[:, :k1], expected)
    # strictly decreasing along the new order, and above everything outside the top-k1
    new_vals = np.take_along_axis(out, expected, axis=1)
    assert (np.diff(new_vals, axis=1) < 0).all()
    rest = out.copy()
    np.put_along_axis(rest, expected, -np.inf, axis=1)
    assert (new_vals[:, -1] > rest.max(1)).all()
    # values move only where they tied, and then by a few float32 steps
    top_vals = -np.sort(-scores, axis=1)[:, :k1]
    np.testing.assert_allclose(new_vals, top_vals, rtol=0, atol=1e-5)
    outside = np.ones_like(scores, dtype=bool)
    np.put_along_axis(outside, expected, False, axis=1)
    np.testing.assert_array_equal(out[outside], scores[outside])


def test_dsl_same_result_in_either_memory_layout(rng):
    """t2i re-ranks a transposed (Fortran-order) view; the column-block path must not change values."""
    s = rng.uniform(-1, 1, size=(40, 300)).astype(np.float32)
    m = DualSoftmax(temperature=0.05, block_bytes=2**16)
    z = s.T.astype(np.float64) / 0.05
    dense = s.T * s.shape[1] * np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
    out_f = m.rerank(s.T)                               # Fortran order, many column blocks
    out_c = m.rerank(np.ascontiguousarray(s.T))
    np.testing.assert_allclose(out_f, dense, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out_f, out_c, rtol=1e-6, atol=1e-7)
    assert out_f.dtype == np.float32 and out_f.shape == (300, 40)


def test_dsl_column_sums_in_float64(rng):
    """5,000 queries: a float32 running sum of the softmax denominators was off by ~3e-6 relative;
    summed in float64 the result is within float32 rounding (~2 ulp) of the float64 formula."""
    s = rng.uniform(0.0, 1.0, size=(5000, 64)).astype(np.float32)
    z = s.astype(np.float64)
    exact = z * s.shape[0] * np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
    for scores in (s, np.asfortranarray(s)):
        out = DualSoftmax(temperature=1.0).rerank(scores)
        assert np.abs(out - exact).max() < 1e-6
