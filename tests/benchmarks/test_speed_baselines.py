import pytest

from benchmarks import BenchmarkSkipped
from benchmarks.speed_baselines import REFERENCES, run, summarize

pytest.importorskip("pillar_rerank.baselines")


@pytest.mark.parametrize("method", ["inverted_softmax", "nnn", "sinkhorn", "dsl"])
def test_method_agrees_with_its_dense_reference(method):
    fig = run(
        method=method,
        n_images=30,
        n_texts=120,
        bank_images=40,
        bank_texts=160,
        dim=16,
        params={"k": 8} if method == "nnn" else None,
    )
    assert fig["max_abs_diff_vs_reference"] < 1e-4
    assert fig["queries_per_s"] > 0 and fig["speedup_vs_reference"] > 0
    assert set(fig["stages_s"]) >= {"fit i2t", "rerank i2t", "fit t2i", "rerank t2i"}
    table = summarize([{"figures": fig}], None)["tables"][0]
    assert table["rows"][0][0].startswith(method)


def test_unknown_method_is_a_skip():
    with pytest.raises(BenchmarkSkipped, match="not registered"):
        run(method="nope", n_images=10, n_texts=20, bank_images=10, bank_texts=20, dim=4)


def test_every_reference_has_a_registered_method():
    from pillar_rerank.baselines import BASELINES

    assert set(REFERENCES) <= set(BASELINES)


@pytest.mark.parametrize("method", ["inverted_softmax", "dsl", "sinkhorn", "dbsn", "nnn"])
def test_original_formulas_agree_with_ours(method, rng):
    """The benchmark's dense "originals" compute what the methods compute (in score units)."""
    import warnings

    import numpy as np

    from benchmarks.speed_baselines import ORIGINALS, _to_score_units
    from pillar_rerank.baselines import get_baseline

    S = rng.uniform(-1, 1, (20, 50)).astype(np.float32)
    B = rng.uniform(-1, 1, (60, 50)).astype(np.float32)
    dual = rng.uniform(-1, 1, (60, 15)).astype(np.float32)
    params = {"inverted_softmax": {"beta": 5.0}, "dsl": {"temperature": 0.5},
              "sinkhorn": {"tau": 0.05, "n_iter": 10}, "dbsn": {"tau": 0.05, "n_iter": 10},
              "nnn": {"k": 8, "alpha": 0.75}}[method]
    orig = _to_score_units(method, ORIGINALS[method](S, B, dual=dual, **params), params)
    est = get_baseline(method, **params, **({"tol": 0.0} if "tau" in params else {}))
    fit = {"bank_gallery": dual} if method == "dbsn" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = est.fit(B, **fit).rerank(S) if est.fit_inputs else est.fit().rerank(S)
    np.testing.assert_allclose(ours, orig, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("method", ["inverted_softmax", "dsl", "sinkhorn", "dbsn", "nnn"])
def test_float64_formula_of_the_versus_originals_table(method, rng):
    """_exact (the float64 formula both sides are held to) agrees with ours to float32 rounding."""
    import warnings

    import numpy as np

    from benchmarks.speed_baselines import _exact, _max_err
    from pillar_rerank.baselines import get_baseline

    S = rng.uniform(-1, 1, (20, 50)).astype(np.float32)
    B = rng.uniform(-1, 1, (60, 50)).astype(np.float32)
    dual = rng.uniform(-1, 1, (60, 15)).astype(np.float32)
    params = {"inverted_softmax": {"beta": 5.0}, "dsl": {"temperature": 0.5},
              "sinkhorn": {"tau": 0.05, "n_iter": 10}, "dbsn": {"tau": 0.05, "n_iter": 10},
              "nnn": {"k": 8, "alpha": 0.75}}[method]
    exact = _exact(method, S, None if method == "dsl" else B, dual, params)
    assert exact.dtype == np.float64
    est = get_baseline(method, **params)
    fit = {"bank_gallery": dual} if method == "dbsn" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = est.fit(B, **fit).rerank(S) if est.fit_inputs else est.fit().rerank(S)
    assert _max_err(ours, exact) < 2e-6
    assert _max_err(np.array([np.inf]), np.array([0.0])) is None


def test_stored_and_streamed_kernels_agree_and_the_summary_says_which_was_kept():
    """The 100,000-query-bank benchmark at toy size: both kernel memories, same biases."""
    import numpy as np

    from benchmarks.speed_baselines import sinkhorn_large_bank, summarize_large_bank

    size = {"n_bank": 600, "n_gallery": 80, "n_extra": 120, "dim": 16, "threads": 1}
    stored = sinkhorn_large_bank(**size, kernel_bytes=2**30)
    streamed = sinkhorn_large_bank(**size, kernel_bytes=0)
    for method in ("sinkhorn", "dbsn"):
        assert stored[method]["kernel"] == "stored" and streamed[method]["kernel"] == "streamed"
        assert stored[method]["iterations"] == streamed[method]["iterations"] == 10
        np.testing.assert_allclose(streamed[method]["bias_probes"], stored[method]["bias_probes"], atol=1e-6)
    (table,) = summarize_large_bank([{"figures": stored}, {"figures": streamed}], None)["tables"]
    rows = {(r[0], r[3]): dict(zip(table["columns"], r)) for r in table["rows"]}
    assert set(rows) == {("sinkhorn", "stored"), ("dbsn", "stored"), ("sinkhorn", "streamed"),
                         ("dbsn", "streamed")}
    assert rows[("dbsn", "stored")]["fit s / first run's"] == 1.0
    assert rows[("dbsn", "streamed")]["max |bias diff| vs first run"] <= 1e-6


def test_large_bank_registered_with_the_stored_kernel_first():
    from benchmarks.suites import get_suite

    (bench,) = [b for b in get_suite("speed") if b.name == "sinkhorn_large_bank"]
    budgets = [r["kernel_bytes"] for r in bench.runs()]
    assert budgets == [11 * 2**30, 2 * 2**30]
    dbsn_kernel = 4 * 100_000 * (5000 + 20_000)
    assert budgets[1] < dbsn_kernel <= budgets[0]
