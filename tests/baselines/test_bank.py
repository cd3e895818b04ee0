"""Bank, apply_both (both directions, multiple captions per image), registry and tuning."""

from __future__ import annotations

import numpy as np
import pytest

from pillar_rerank.baselines import (
    BASELINES,
    NNN,
    Bank,
    apply_both,
    bank_from_embeddings,
    baseline_config,
    describe,
    from_config,
    get_baseline,
)
from pillar_rerank.baselines.tuning import parameter_grid, split_dev, tune
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.metrics import recall_metrics


@pytest.fixture
def sides(set_factory):
    return set_factory(30, min_caps=1, max_caps=4, d=8), set_factory(20, min_caps=2, max_caps=5, d=8)


def test_bank_from_embeddings_shapes_and_values(sides):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    np.testing.assert_allclose(bank.i2t, bank_side.image_embeddings @ test.text_embeddings.T, atol=1e-5)
    np.testing.assert_allclose(bank.t2i, bank_side.text_embeddings @ test.image_embeddings.T, atol=1e-5)
    assert bank.i2t_dual.shape == (bank_side.n_images, bank_side.n_texts)
    assert bank.t2i_intra.shape == (bank_side.n_images, test.n_images)
    assert bank.i2t_intra.shape == (bank_side.n_texts, test.n_texts)
    lazy = bank_from_embeddings(bank_side, test, materialize=False)
    np.testing.assert_allclose(np.asarray(lazy.t2i), bank.t2i, atol=1e-6)


def test_apply_both_directions_and_multi_captions(sides):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    before = test.scores.copy()
    out = apply_both(NNN(k=3, alpha=1.0), test, bank)
    s = test.scores
    np.testing.assert_allclose(out.scores, NNN(k=3, alpha=1.0).fit(bank.i2t).rerank(s), atol=1e-6)
    np.testing.assert_allclose(out.t2i_scores, NNN(k=3, alpha=1.0).fit(bank.t2i).rerank(s.T).T, atol=1e-6)
    assert out.scores.shape == out.t2i_scores.shape == s.shape
    np.testing.assert_array_equal(test.scores, before)
    m = recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores)
    assert 0 <= m["RSUM"] <= 600


@pytest.mark.parametrize("name", ["inverted_softmax", "nnn", "csls", "dn", "sinkhorn", "qb_norm", "dsl"])
def test_apply_both_reranks_only_its_own_product_in_place(sides, monkeypatch, name):
    """From embeddings the i2t direction may overwrite the product apply_both made (the same
    values as from given scores); given scores are never written to or returned."""
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    params = {"k": 2} if name in ("nnn", "csls") else {}
    products, copies = [], []
    product = RetrievalSet._product

    def spy(self, *args, **kwargs):
        products.append(product(self, *args, **kwargs))
        copies.append(products[-1].copy())
        return products[-1]

    monkeypatch.setattr(RetrievalSet, "_product", spy)
    from_embeddings = RetrievalSet(relevance=test.relevance, image_embeddings=test.image_embeddings,
                                   text_embeddings=test.text_embeddings, name="emb")
    out = apply_both(get_baseline(name, **params), from_embeddings, bank)
    given = copies[0]
    with_scores = RetrievalSet(relevance=test.relevance, scores=given, name="given")
    ref = apply_both(get_baseline(name, **params), with_scores, bank)
    np.testing.assert_array_equal(with_scores.scores, copies[0])  # the given scores untouched
    np.testing.assert_array_equal(out.scores, ref.scores)
    np.testing.assert_array_equal(out.t2i_scores, ref.t2i_scores)
    assert not np.shares_memory(ref.scores, given)
    # the gallery-bias family reuses the product (not qb_norm, which subtracts on some rows only,
    # nor DSL, which is not of that family)
    assert np.shares_memory(out.scores, products[0]) == (name not in ("qb_norm", "dsl"))
    # a float64 matrix converted to float32 is apply_both's own array as well
    converted = apply_both(get_baseline(name, **params),
                           RetrievalSet(relevance=test.relevance, scores=given.astype(np.float64)), bank)
    np.testing.assert_allclose(converted.scores, ref.scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_method_runs_through_apply_both(sides, name):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    params = {"k": 2} if name in ("nnn", "csls") else {"k1": 3, "k2": 2} if name == "k_reciprocal" \
        else {"k1": 3} if name == "mtfn_rr" else {}
    out = apply_both(get_baseline(name, **params), test, bank)
    assert np.isfinite(out.scores).all() and np.isfinite(out.t2i_scores).all()
    assert out.scores.dtype == np.float32


def test_bank_wrong_gallery_size_is_an_error(sides):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    wrong = Bank(i2t=bank.i2t[:, :-1], t2i=bank.t2i)
    with pytest.raises(InvalidInputError, match="bank.i2t: expected .* gallery columns"):
        apply_both(NNN(k=2), test, wrong)
    with pytest.raises(InvalidInputError, match="needs bank scores"):
        apply_both(NNN(k=2), test, None)


def test_registry_and_config_round_trip():
    m = get_baseline("nnn", k=5, alpha=0.3)
    assert from_config(baseline_config(m)).get_params() == m.get_params()
    with pytest.raises(InvalidParameterError, match="unknown method 'nope'.*dsl"):
        get_baseline("nope")
    with pytest.raises(InvalidParameterError, match="has no parameter 'beta'"):
        get_baseline("nnn", beta=3)
    with pytest.raises(InvalidParameterError, match="'alpha' parameter of NNN"):
        get_baseline("nnn", alpha="x")
    flags = {n: describe(n)["transductive"] for n in BASELINES}
    assert flags["dsl"] and flags["k_reciprocal"] and flags["mtfn_rr"] and not flags["nnn"]


def test_tune_uses_dev_only_and_picks_a_grid_point(set_factory):
    dev = set_factory(24, min_caps=2, max_caps=3, d=8)
    evaluation, bank = split_dev(dev, seed=0)
    assert evaluation.n_images == 12 and bank.i2t.shape == (12, evaluation.n_texts)
    result = tune("inverted_softmax", dev, grid={"beta": [1.0, 10.0]})
    assert result.best_params["beta"] in (1.0, 10.0)
    assert result.best_rsum == max(t["RSUM"] for t in result.trials)
    assert len(parameter_grid("nnn")) == len(NNN.tuning_grid["k"]) * len(NNN.tuning_grid["alpha"])
    scores_only = dev.with_scores(dev.similarity())
    from dataclasses import replace
    scores_only = replace(scores_only, image_embeddings=None, text_embeddings=None)
    assert tune("dsl", scores_only, grid={"temperature": [0.1, 1.0]}).best_params
    with pytest.raises(InvalidParameterError, match="no parameter 'zzz'"):
        parameter_grid("nnn", {"zzz": [1]})


def test_per_direction_parameters(sides):
    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    out = apply_both(NNN(k=2, alpha=0.2), test, bank, t2i_method=NNN(k=4, alpha=1.0))
    np.testing.assert_allclose(out.scores, NNN(k=2, alpha=0.2).fit(bank.i2t).rerank(test.scores), atol=1e-6)
    np.testing.assert_allclose(out.t2i_scores, NNN(k=4, alpha=1.0).fit(bank.t2i).rerank(test.scores.T).T,
                               atol=1e-6)
    with pytest.raises(InvalidInputError, match="t2i_method must be a NNN"):
        apply_both(NNN(k=2), test, bank, t2i_method=get_baseline("csls"))


def test_tune_reports_per_direction_choices(set_factory):
    dev = set_factory(24, min_caps=2, max_caps=3, d=8)
    result = tune("nnn", dev, grid={"k": [1, 3], "alpha": [0.0, 1.0]})
    for key, params in (("i2t_sum", result.best_params_i2t), ("t2i_sum", result.best_params_t2i)):
        best = max(t[key] for t in result.trials)
        assert any(t["params"] == {k: params[k] for k in ("k", "alpha")} and t[key] == best
                   for t in result.trials)


def test_bank_fields_a_method_does_not_read_are_never_computed(sides):
    """Inverted softmax reads i2t and t2i only; the dual and intra products must not be built."""
    from pillar_rerank.baselines import InvertedSoftmax

    bank_side, test = sides
    bank = bank_from_embeddings(bank_side, test)
    out = apply_both(InvertedSoftmax(beta=5.0), test, bank)
    computed = {f: getattr(bank, f).is_checked for f in
                ("i2t", "t2i", "i2t_dual", "t2i_dual", "i2t_intra", "t2i_intra")}
    assert computed == {"i2t": True, "t2i": True, "i2t_dual": False, "t2i_dual": False,
                        "i2t_intra": False, "t2i_intra": False}
    dense = bank_from_embeddings(bank_side, test, materialize=False)
    plain = Bank(i2t=np.asarray(dense.i2t), t2i=np.asarray(dense.t2i))
    again = apply_both(InvertedSoftmax(beta=5.0), test, plain)
    np.testing.assert_array_equal(out.scores, again.scores)
    np.testing.assert_array_equal(out.t2i_scores, again.t2i_scores)
    assert not np.asarray(bank.i2t).flags.writeable          # the stored product is shared, read-only
