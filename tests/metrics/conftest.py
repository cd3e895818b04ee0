"""Metric-test fixtures: brute-force reference implementations (plain loops) as `oracle`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def ranking(row: np.ndarray) -> np.ndarray:
    """Gallery ids in ranked order: score descending, lower index first among ties."""
    return np.lexsort((np.arange(row.shape[0]), -np.asarray(row, dtype=np.float64)))


def best_rank(row, positives) -> int:
    order = list(ranking(row))
    return min(order.index(p) for p in positives)


def ap_at_r(row, positives) -> float:
    r = len(positives)
    top = ranking(row)[:r]
    hits, total = 0, 0.0
    for i, g in enumerate(top):
        if g in positives:
            hits += 1
            total += hits / (i + 1)
    return total / r


def r_prec(row, positives) -> float:
    r = len(positives)
    return len(set(ranking(row)[:r].tolist()) & set(positives)) / r


def ndcg(row, gains: dict, k: int) -> float:
    order = ranking(row)[:k]
    dcg = sum(gains.get(int(g), 0.0) / np.log2(i + 2) for i, g in enumerate(order))
    ideal = sorted((v for v in gains.values() if v > 0), reverse=True)[:k]
    idcg = sum(v / np.log2(i + 2) for i, v in enumerate(ideal))
    return dcg / idcg


@pytest.fixture
def oracle():
    return SimpleNamespace(ranking=ranking, best_rank=best_rank, ap_at_r=ap_at_r, r_prec=r_prec, ndcg=ndcg)
