"""pillar_rerank/__init__.py: the top-level API is complete and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import pillar_rerank


def test_everything_in_all_resolves_to_the_real_object():
    from pillar_rerank.baselines import apply_both, bank_from_embeddings, get_baseline
    from pillar_rerank.config import LeaPRRConfig
    from pillar_rerank.metrics import evaluate
    from pillar_rerank.reranker import PillarReranker

    for name in pillar_rerank.__all__:
        assert getattr(pillar_rerank, name) is not None, name
    assert pillar_rerank.PillarReranker is PillarReranker
    assert pillar_rerank.LeaPRRConfig is LeaPRRConfig
    assert (pillar_rerank.evaluate, pillar_rerank.get_baseline, pillar_rerank.apply_both,
            pillar_rerank.bank_from_embeddings) == (evaluate, get_baseline, apply_both, bank_from_embeddings)
    assert set(dir(pillar_rerank)) >= set(pillar_rerank.__all__)


def test_import_loads_neither_torch_nor_torch_geometric():
    code = ("import sys, pillar_rerank; from pillar_rerank import LeaPRRConfig, load_retrieval_set; "
            "print(sorted(m for m in ('torch', 'torch_geometric', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'PillarRerankr'"):
        pillar_rerank.PillarRerankr  # noqa: B018
