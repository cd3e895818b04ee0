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


def _log_domain_sinkhorn_bias(bank, tau, n_iter, extra=None):
    """Dense float64 log-domain Sinkhorn (POT's order, v then u): exact at any tau."""
    full = (bank if extra is None else np.concatenate([bank, extra], axis=1)).astype(np.float64)
    k = full.T / tau                                                  # (gallery_all, bank)
    log_a, log_b = -np.log(k.shape[0]), -np.log(k.shape[1])
    log_u = np.full(k.shape[0], log_a)
    for _ in range(n_iter):
        log_v = log_b - logsumexp(k + log_u[:, None], axis=0)
        log_u = log_a - logsumexp(k + log_v[None, :], axis=1)
    return -tau * log_u[: bank.shape[1]]


def _float32_pot_sinkhorn_bias(bank, tau, n_iter):
    """What POT's sinkhorn_knopp does on float32 costs: on inf/NaN it keeps the previous scaling."""
    kernel = np.exp(-(1.0 - bank.T.astype(np.float32)) / np.float32(tau))
    a = np.full(kernel.shape[0], 1 / kernel.shape[0], np.float32)
    b = np.full(kernel.shape[1], 1 / kernel.shape[1], np.float32)
    u = a.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(n_iter):
            v_new = b / (kernel.T @ u)
            u_new = a / (kernel @ v_new)
            if not (np.isfinite(u_new).all() and np.isfinite(v_new).all()):
                break
            u = u_new
    return -tau * np.log(u)


@pytest.fixture
def cosine_case(rng):
    """Unit-norm embeddings with a hub direction: cosine bank and scores, anti-hubs far away."""
    d = 16
    hub = rng.standard_normal(d)

    def unit(n, shift=0.0):
        x = rng.standard_normal((n, d)) + shift * hub
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    gallery, bank_q, test_q = unit(60, 1.0), unit(400, 1.0), unit(30, 1.0)
    gallery[:5] = unit(5, -4.0)                     # anti-hubs: far below every bank row's best
    return bank_q @ gallery.T, test_q @ gallery.T


def test_sinkhorn_correct_where_float32_reference_underflows(cosine_case):
    """tau = 0.01 on cosine scores: the float32 reference silently returns the input ranking."""
    bank, scores = cosine_case
    ref_h = _float32_pot_sinkhorn_bias(bank, 0.01, 10)
    assert np.ptp(ref_h) < 1e-6                     # uniform u kept: the input ranking, unchanged
    exact = scores - _log_domain_sinkhorn_bias(bank, 0.01, 10)
    for kernel_bytes in (0, 2**30):
        out = SinkhornNorm(tau=0.01, n_iter=10, tol=0.0, kernel_bytes=kernel_bytes,
                           block_bytes=SMALL).fit(bank).rerank(scores)
        np.testing.assert_allclose(out, exact, rtol=0, atol=1e-6)
    assert not np.array_equal(np.argsort(-out, 1), np.argsort(-scores, 1))


@pytest.mark.parametrize("numpy_on_cpu", [True, False], ids=["numpy", "torch"])
@pytest.mark.parametrize("kernel_bytes", [0, 2**30], ids=["streamed", "stored"])
@pytest.mark.parametrize("tau", [0.005, 0.05, 0.3])
def test_stabilised_sinkhorn_equals_log_domain(cosine_case, tau, kernel_bytes, numpy_on_cpu, monkeypatch):
    """Scaling domain with absorption = dense log-domain Sinkhorn within 1e-6, single and dual bank;
    the CPU's numpy kernels and the torch kernels accelerators run (here on the CPU) alike."""
    from pillar_rerank.baselines import _stream
    from pillar_rerank.baselines._stream import sinkhorn_potential

    monkeypatch.setattr(_stream, "NUMPY_ON_CPU", numpy_on_cpu)

    bank, scores = cosine_case
    extra = bank[:, ::-1][:, :17].copy()
    kw = {"tol": 0.0, "block_bytes": SMALL, "kernel_bytes": kernel_bytes}
    for n_iter in (1, 10, 40):
        out = SinkhornNorm(tau=tau, n_iter=n_iter, **kw).fit(bank).rerank(scores)
        np.testing.assert_allclose(out, scores - _log_domain_sinkhorn_bias(bank, tau, n_iter), atol=1e-6)
        dual = DualBankSinkhorn(tau=tau, n_iter=n_iter, **kw)
        out = dual.fit(bank, bank_gallery=extra).rerank(scores)
        np.testing.assert_allclose(out, scores - _log_domain_sinkhorn_bias(bank, tau, n_iter, extra),
                                   atol=1e-6)
        assert dual.kernel_stored_ is (kernel_bytes > 0)   # the path taken is reported
    if tau == 0.005:  # the anti-hubs' mass is below float32's range: the exact path was taken
        import torch

        res = sinkhorn_potential(bank, tau=tau, n_iter=3, tol=0.0, device=torch.device("cpu"),
                                 kernel_bytes=kernel_bytes)
        assert res.n_fallback_columns >= 5 and res.n_iter == 3


def test_sinkhorn_warns_when_not_converged_and_stops_early_when_it_is(cosine_case):
    import warnings

    from pillar_rerank.exceptions import ConvergenceWarning

    bank, scores = cosine_case
    with pytest.warns(ConvergenceWarning, match=r"n_iter=2 .* above tol=1e-06"):
        m = SinkhornNorm(tau=0.05, n_iter=2, tol=1e-6).fit(bank)
    assert m.n_iter_ == 2 and not m.converged_ and m.last_change_ > 1e-7
    with pytest.warns(ConvergenceWarning, match="DualBankSinkhorn"):
        DualBankSinkhorn(tau=0.05, n_iter=2, tol=1e-6).fit(bank, bank_gallery=bank[:, :7])
    with warnings.catch_warnings():  # the default (tol None) is the paper's truncated iteration
        warnings.simplefilter("error")
        m = SinkhornNorm(tau=0.05, n_iter=2).fit(bank)
    assert m.n_iter_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = SinkhornNorm(tau=0.3, n_iter=500, tol=1e-6).fit(bank)
    assert m.converged_ and m.n_iter_ < 500 and m.last_change_ <= 1e-6
    full = SinkhornNorm(tau=0.3, n_iter=m.n_iter_ + 200, tol=0.0).fit(bank)
    np.testing.assert_allclose(m.bias_, full.bias_, atol=1e-5)


@pytest.mark.parametrize("numpy_on_cpu", [True, False], ids=["numpy", "torch"])
@pytest.mark.parametrize("block_bytes", [2**16, 2**28])
def test_column_logsumexp_cpu_path_equals_float64(rng, block_bytes, numpy_on_cpu, monkeypatch):
    """The numpy CPU kernel (cache-sized row blocks, float64 running sums) and the torch kernel
    against scipy in float64: many blocks or one, logit-scale scores, row weights, a lazy product."""
    import torch

    from pillar_rerank.baselines import _stream
    from pillar_rerank.baselines._stream import column_logsumexp

    monkeypatch.setattr(_stream, "NUMPY_ON_CPU", numpy_on_cpu)

    m = (rng.standard_normal((700, 90)) * 30).astype(np.float32)
    m.flags.writeable = False
    w = torch.from_numpy(rng.standard_normal(700) * 5)
    cpu = torch.device("cpu")
    got = column_logsumexp(m, scale=3.0, device=cpu, budget_bytes=block_bytes).numpy()
    np.testing.assert_allclose(got, logsumexp(3.0 * m.astype(np.float64), axis=0), rtol=1e-6, atol=1e-5)
    got = column_logsumexp(m, scale=0.5, device=cpu, budget_bytes=block_bytes, row_log_weights=w).numpy()
    want = logsumexp(0.5 * m.astype(np.float64) + w.numpy()[:, None].astype(np.float32), axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    q, g = rng.standard_normal((300, 8)).astype(np.float32), rng.standard_normal((40, 8)).astype(np.float32)
    lazy = column_logsumexp(EmbeddingScores(q, g), scale=2.0, device=cpu, budget_bytes=block_bytes)
    np.testing.assert_allclose(lazy.numpy(), logsumexp(2.0 * (q @ g.T).astype(np.float64), axis=0),
                               rtol=1e-6, atol=1e-5)


def test_streamed_sinkhorn_pass_numpy_equals_torch(rng):
    """The CPU (numpy) pass of streamed Sinkhorn and the torch pass give the same log v and sums."""
    import torch

    from pillar_rerank.baselines._stream import _streamed_pass_numpy, _streamed_pass_torch

    parts = [rng.uniform(-0.2, 0.9, (300, 70)).astype(np.float32),
             rng.uniform(-0.2, 0.9, (300, 40)).astype(np.float32)]
    offsets = np.cumsum([0, 70, 40])
    log_u = torch.from_numpy(rng.normal(-4.7, 3.0, 110))
    kw = {"inv_tau": 1 / 0.02, "log_b": -np.log(300), "step": 64}
    v_np, acc_np = np.empty(300), np.zeros(110)
    _streamed_pass_numpy(parts, offsets, log_u.float().numpy(), log_v=v_np, acc=acc_np, **kw)
    v_t, acc_t = torch.empty(300, dtype=torch.float64), torch.zeros(110, dtype=torch.float64)
    _streamed_pass_torch(parts, offsets, log_u.float(), log_v=v_t, acc=acc_t, device=torch.device("cpu"),
                         **kw)
    np.testing.assert_allclose(v_np, v_t.numpy(), rtol=1e-6, atol=1e-4 * 0.02)
    np.testing.assert_allclose(acc_np, acc_t.numpy(), rtol=2e-5)


def test_fallback_blocks_are_sized_by_the_rows_they_read(rng):
    """Exact log-sum-exp over a few columns of a wide bank: each block reads whole rows, so blocks
    are sized by the bank's width (a lazy product computes them all), not by the few columns."""
    import torch

    from pillar_rerank.baselines._stream import _ColumnSubset, column_logsumexp

    wide = rng.standard_normal((2000, 3000)).astype(np.float32)
    seen = []

    class Spy:
        shape = wide.shape
        name = "bank"

        def __getitem__(self, rows):
            seen.append(rows.stop - rows.start)
            return wide[rows]

    sub = _ColumnSubset([Spy()], np.array([5, 17]))
    got = column_logsumexp(sub, scale=2.0, device=torch.device("cpu"), budget_bytes=2**20)
    np.testing.assert_allclose(got.numpy(), logsumexp(2.0 * wide[:, [5, 17]].astype(np.float64), axis=0),
                               rtol=1e-6)
    assert max(seen) * 3000 * 4 <= 2**20


def test_nnn_top_k_leaves_any_layout_of_the_bank_unchanged(rng):
    """The CPU top-k partitions its own copy in place, never the caller's bank (C or F order)."""
    from pillar_rerank.baselines import NNN

    bank = rng.standard_normal((300, 40)).astype(np.float32)
    want = np.sort(bank, axis=0)[-7:].astype(np.float64).mean(0)
    for b in (bank.copy(), np.asfortranarray(bank)):
        before = b.copy()
        got = NNN(k=7, alpha=1.0, block_bytes=2**16).fit(b).bias_
        np.testing.assert_allclose(got, want, rtol=1e-12)
        np.testing.assert_array_equal(b, before)


def test_nnn_on_an_uncomputed_embedding_bank_never_stores_it(rng):
    """NNN / CSLS on a bank not computed yet: the top-k comes from gallery-major blocks of the
    product (no bank-major matrix stored, transposed, copied); same values to float32 rounding."""
    from pillar_rerank.baselines import CSLS, NNN
    from pillar_rerank.baselines._stream import EmbeddingScores

    q = rng.standard_normal((500, 12)).astype(np.float32)
    g = rng.standard_normal((90, 12)).astype(np.float32)
    dense = q @ g.T
    for cls, kw in ((NNN, {"k": 9, "alpha": 0.75}), (CSLS, {"k": 4})):
        lazy = EmbeddingScores(q, g, cache=True)
        got = cls(block_bytes=2**16, **kw).fit(lazy).bias_
        assert not lazy.is_checked                     # never computed bank-major, never stored
        np.testing.assert_allclose(got, cls(**kw).fit(dense).bias_, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_bias_subtraction_keeps_the_layout_and_equals_numpy(rng, dtype):
    """rerank of a read-only transposed view (apply_both's t2i matrix): the exact float32
    difference, laid out like the input (no transposed copy), writable, the input untouched."""
    from pillar_rerank.baselines import get_baseline

    bank = rng.standard_normal((60, 40)).astype(np.float32)
    scores = rng.standard_normal((40, 25)).astype(dtype)
    view = scores.T  # (25 queries, 40 gallery items), Fortran-ordered
    view.flags.writeable = False
    before = scores.copy()
    est = get_baseline("nnn", k=5).fit(bank)
    got = est.rerank(view)
    want = np.subtract(view, est.bias_.astype(np.float32)[None, :], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32 and got.flags.writeable and got.flags.f_contiguous
    np.testing.assert_array_equal(scores, before)
    np.testing.assert_array_equal(est.rerank(view[::-1]), want[::-1])  # torch cannot wrap it: numpy's path
