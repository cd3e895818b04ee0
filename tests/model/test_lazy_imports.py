"""torch-geometric is imported only where the sparse attention is used (issue 15, item 21)."""

import subprocess
import sys

import pytest


def _imports_pyg(code: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch_geometric' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_dense_model_does_not_import_torch_geometric():
    # one process: the package, the model package, the estimator and the trainer together
    assert not _imports_pyg(
        "import pillar_rerank, pillar_rerank.model, pillar_rerank.reranker, pillar_rerank.training\n"
        "from pillar_rerank.model import MutualRerankNetwork\n"
        "MutualRerankNetwork(4, embed_dim=8, depth=1, num_heads=2)"
    )


def test_sparse_attention_is_still_importable_from_the_package():
    pytest.importorskip("torch_geometric")
    assert _imports_pyg(
        "from pillar_rerank.model import SparseAdjacencyAttention, dense_to_edges, GraphTransformerBlock\n"
        "GraphTransformerBlock(8, 2, attention='sparse')"
    )
