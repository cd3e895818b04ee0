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
