"""Composition of a training-free normaliser with LeaPRR: normalise first, then re-rank.

:class:`~pillar_rerank.reranker.PillarReranker` with ``config.normalize`` set runs the named
normaliser over every side it sees (training, dev, test) before building lists. Normalisers
that need a query bank take it from embeddings: the training side's at test time, and while
training, the dev side's (each side's bank must not contain its own queries: a query's match
to itself would enter its hubness estimate, unlike at test time).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pillar_rerank.baselines.bank import apply_both, bank_from_embedding_arrays
from pillar_rerank.baselines.registry import get_baseline
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet

logger = logging.getLogger(__name__)

#: Embeddings a bank is built from: ``{"images": Tensor, "texts": Tensor}`` (float32).
BankSource = dict[str, torch.Tensor]


def bank_source(data: RetrievalSet | None) -> BankSource | None:
    """``data``'s embeddings as a bank source (stored with a model), or None without embeddings."""
    if data is None or not data.has_embeddings:
        return None
    return {"images": torch.tensor(np.asarray(data.image_embeddings, dtype=np.float32)),
            "texts": torch.tensor(np.asarray(data.text_embeddings, dtype=np.float32))}


def training_banks(train: RetrievalSet,
                   dev: RetrievalSet | None) -> tuple[BankSource | None, BankSource | None]:
    """``(kept, for_train)``: the bank source stored with the model (the training side's) and the
    one that normalises the training side itself (the dev side's when it has embeddings)."""
    kept = bank_source(train)
    dev_bank = bank_source(dev) if kept is not None else None
    return kept, dev_bank if dev_bank is not None else kept


def normalizer_pair(name: str, params: dict[str, Any]):
    """The (i2t, t2i) normaliser objects: one shared setting, or ``{"i2t": {...}, "t2i": {...}}``."""
    if params and set(params) <= {"i2t", "t2i"}:
        return get_baseline(name, **params.get("i2t", {})), get_baseline(name, **params.get("t2i", {}))
    return get_baseline(name, **params), None


def normalize_side(data: RetrievalSet, name: str | None, params: dict[str, Any],
                   bank: BankSource | None) -> RetrievalSet:
    """``data`` with normaliser ``name`` applied in both directions (``data`` itself when None).

    ``bank`` is the bank source for normalisers that need one; the result is put back on the
    cosine scale (:func:`on_cosine_scale`).
    """
    if name is None:
        return data
    method, t2i_method = normalizer_pair(name, params)
    built = None
    if method.needs_bank:
        if bank is None or not data.has_embeddings:
            raise InvalidInputError(
                f"PillarReranker: normalize={name!r} needs a query bank, built from the training "
                f"side's embeddings and {data.name}'s; give image and text embeddings "
                "(--emb-images/--emb-texts and the test side's).")
        built = bank_from_embedding_arrays(bank["images"].numpy(), bank["texts"].numpy(),
                                           data.image_embeddings, data.text_embeddings)
    return on_cosine_scale(apply_both(method, data, built, t2i_method=t2i_method))


def on_cosine_scale(data: RetrievalSet) -> RetrievalSet:
    """Divide normalised scores by their largest magnitude when it exceeds 1 (rankings kept).

    The re-scored candidates get the network's cosines, in [-1, 1], while the other entries keep
    their (normalised) scores. A normaliser that changes the scale (DSL multiplies by
    ``n_queries * softmax``: values in the thousands) would otherwise leave the untouched entries
    above every re-scored candidate. Scores already within [-1, 1] (NNN, CSLS, ... on cosines)
    are returned unchanged. Division by a positive constant is monotone: no order flips, though
    float32 rounding can tie entries that were already within one ulp.
    """
    matrices = {"scores": data.scores, "t2i_scores": data.t2i_scores}
    largest = max(max(float(m.max()), -float(m.min())) for m in matrices.values() if m is not None)
    if largest <= 1.0:
        return data
    logger.info("normalised scores reach |s| = %.4g; dividing both directions by it (rankings unchanged)",
                largest)
    scaled = {k: None if m is None else (np.asarray(m, dtype=np.float32) / np.float32(largest))
              for k, m in matrices.items()}
    return data.with_scores(scaled["scores"], t2i_scores=scaled["t2i_scores"], name=data.name)


__all__ = ["bank_source", "normalize_side", "normalizer_pair", "on_cosine_scale", "training_banks"]
