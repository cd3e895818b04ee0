"""Composition of a training-free normaliser with LeaPRR: normalise first, then re-rank.

:class:`~pillar_rerank.reranker.PillarReranker` with ``config.normalize`` set runs the named
normaliser over every side it sees (training, dev, test) before building lists. Normalisers
that need a query bank take it from embeddings: the training side's at test time, and while
training, the dev side's (each side's bank must not contain its own queries: a query's match
to itself would enter its hubness estimate, unlike at test time).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from pillar_rerank.baselines._common import TrainingFreeReranker
from pillar_rerank.baselines._stream import EmbeddingScores, column_logsumexp
from pillar_rerank.baselines.bank import Bank, apply_both, bank_from_embedding_arrays, fit_direction
from pillar_rerank.baselines.dbnorm import DBNorm
from pillar_rerank.baselines.dsl import DualSoftmax
from pillar_rerank.baselines.gallery_bias import GalleryBias
from pillar_rerank.baselines.registry import get_baseline
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.score_transform import GalleryTransform, Normalization
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES, block_rows, iter_blocks

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

    A side given as embeddings only, under a normaliser with an element-wise form (every
    gallery-bias method but QB-Norm, DBNorm without its gate, and DSL; :func:`elementwise_form`),
    is normalised
    *streamed*: the result carries a :class:`~pillar_rerank.score_transform.Normalization`
    and its normalised matrices are computed block by block wherever they are read, never held
    (a 28,000 x 112,000 side would otherwise need 37.6 GB). Its values equal the dense route's
    up to float32 rounding. Score-matrix inputs and the other normalisers take the dense route.
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
    if data.scores is None and data.has_embeddings:
        streamed = _normalize_streamed(data, name, method, t2i_method, built)
        if streamed is not None:
            return streamed
    check_normalize_memory(data, name)
    inputs = tuple(m for m in (data.scores, data.t2i_scores) if isinstance(m, np.ndarray))
    return on_cosine_scale(apply_both(method, data, built, t2i_method=t2i_method), in_place=True,
                           protected=inputs)


def elementwise_form(fitted: TrainingFreeReranker, data: RetrievalSet,
                     direction: str) -> GalleryTransform | None:
    """What ``fitted`` (fitted for ``direction`` of ``data``) does to ``data``'s embedding product,
    as a :class:`~pillar_rerank.score_transform.GalleryTransform`; None when it has no element-wise
    form (the gates of QB-Norm and dynamic DBNorm read each query's top-1; k-reciprocal and MTFN-RR
    re-rank lists).

    DSL's per-gallery log-sum-exp over the test queries is computed here, streamed.
    """
    axis = 1 if direction == "i2t" else 0
    if isinstance(fitted, GalleryBias):
        return None if fitted.gated else GalleryTransform("bias", axis, fitted.bias_)
    if isinstance(fitted, DBNorm):
        if fitted.dynamic:
            return None
        norm = float(fitted.beta1) + float(fitted.beta2)  # DBNorm.rerank's float32 sum, exactly
        bias = (fitted.lse_query_ / norm).astype(np.float32) + (fitted.lse_gallery_ / norm).astype(np.float32)
        return GalleryTransform("bias", axis, bias.astype(np.float64))
    if isinstance(fitted, DualSoftmax):
        img, txt = data.image_embeddings, data.text_embeddings
        queries, gallery = (img, txt) if direction == "i2t" else (txt, img)
        product = EmbeddingScores(queries, gallery, name=f"{data.name} {direction} scores")
        temperature = float(fitted.temperature)
        lse = column_logsumexp(product, scale=1.0 / temperature, device=fitted._device(),
                               budget_bytes=fitted._budget())
        return GalleryTransform("dual_softmax", axis, lse.cpu().numpy(), temperature=temperature,
                                n_queries=int(queries.shape[0]))
    return None


def _normalize_streamed(data: RetrievalSet, name: str, method: TrainingFreeReranker,
                        t2i_method: TrainingFreeReranker | None, bank: Bank | None) -> RetrievalSet | None:
    """:func:`normalize_side`'s streamed route; None when the method has no element-wise form."""
    methods = {"i2t": method, "t2i": t2i_method or method}
    bank = (bank or Bank()).check_against(data)
    forms = {}
    for direction in ("i2t", "t2i"):
        forms[direction] = elementwise_form(fit_direction(methods[direction], data, bank, direction),
                                            data, direction)
        if forms[direction] is None:
            return None
    largest = largest_magnitude(data, forms["i2t"], forms["t2i"])
    if largest > 1.0:  # on_cosine_scale's rule, applied as the transforms' final divisor
        logger.info("normalised scores reach |s| = %.4g; dividing both directions by it (rankings unchanged)",
                    largest)
        forms = {d: f.rescaled(float(np.float32(largest))) for d, f in forms.items()}
    norm = Normalization(name, forms["i2t"], forms["t2i"])
    return replace(data, normalization=norm, name=f"{data.name}+{type(method).__name__}")


def largest_magnitude(data: RetrievalSet, *transforms: GalleryTransform,
                      budget_bytes: int = DEFAULT_BLOCK_BYTES) -> float:
    """The largest ``|f(s)|`` over ``data``'s embedding product under any of ``transforms``,
    streamed in row blocks (one product per block, each transform on its own copy)."""
    img = data.image_embeddings
    txt = np.ascontiguousarray(data.text_embeddings, dtype=np.float32)
    largest = 0.0
    step = block_rows(data.n_texts, budget_bytes=budget_bytes // 2)
    for rows in iter_blocks(data.n_images, step):
        raw = np.asarray(img[rows], dtype=np.float32) @ txt.T
        for i, transform in enumerate(transforms):
            block = transform.apply_block(raw if i == len(transforms) - 1 else raw.copy(), rows,
                                          slice(0, data.n_texts))
            largest = max(largest, float(block.max()), -float(block.min()))
    return largest


#: Image x text float32 matrices alive at once while a side is normalised: the input scores and
#: the two direction outputs (rescaled in place by :func:`on_cosine_scale`).
NORMALIZE_MATRICES = 3


def check_normalize_memory(data: RetrievalSet, name: str) -> None:
    """Refuse, with the figures, a side whose normalisation cannot fit in this machine's memory.

    A normaliser in front of LeaPRR produces whole image x text matrices per direction (the
    lists are built from them), so its peak is :data:`NORMALIZE_MATRICES` float32 matrices; at
    Flickr30K-train scale (29,000 x 145,000) that is 50 GB. Without this check the process is
    killed by the kernel's OOM killer, with no message, after any work done before.
    """
    from pillar_rerank.utils.memory import _fmt, physical_memory_bytes

    need = NORMALIZE_MATRICES * 4 * data.n_images * data.n_texts
    have = physical_memory_bytes()
    if have is not None and need > have:
        raise InvalidInputError(
            f"PillarReranker: normalize={name!r} on {data.name} ({data.n_images} x {data.n_texts}) "
            "needs about "
            f"{_fmt(need)} ({NORMALIZE_MATRICES} float32 score matrices of that size) and this machine has "
            f"{_fmt(have)}: train on fewer items, re-rank the test side in parts, or drop the normaliser. "
            "Given as embeddings only (no score matrix), a side is normalised streamed, without these "
            "matrices, by every gallery-bias normaliser but QB-Norm, by DBNorm without its gate and by DSL.")


def on_cosine_scale(data: RetrievalSet, *, in_place: bool = False,
                    protected: tuple[np.ndarray, ...] = ()) -> RetrievalSet:
    """Divide normalised scores by their largest magnitude when it exceeds 1 (rankings kept).

    The re-scored candidates get the network's cosines, in [-1, 1], while the other entries keep
    their (normalised) scores. A normaliser that changes the scale (DSL multiplies by
    ``n_queries * softmax``: values in the thousands) would otherwise leave the untouched entries
    above every re-scored candidate. Scores already within [-1, 1] (NNN, CSLS, ... on cosines)
    are returned unchanged. Division by a positive constant is monotone: no order flips, though
    float32 rounding can tie entries that were already within one ulp. With ``in_place`` a
    float32 matrix that shares no memory with ``protected`` (the caller's inputs) is divided in
    place, so the peak holds no second copy of it.
    """
    matrices = {"scores": data.scores, "t2i_scores": data.t2i_scores}
    largest = max(max(float(m.max()), -float(m.min())) for m in matrices.values() if m is not None)
    if largest <= 1.0:
        return data
    logger.info("normalised scores reach |s| = %.4g; dividing both directions by it (rankings unchanged)",
                largest)
    scale = np.float32(largest)
    scaled = {}
    for k, m in matrices.items():
        if m is None:
            scaled[k] = None
        elif (in_place and isinstance(m, np.ndarray) and m.dtype == np.float32 and m.flags.writeable
              and not any(np.shares_memory(m, p) for p in protected)):
            scaled[k] = np.divide(m, scale, out=m)
        else:
            scaled[k] = np.asarray(m, dtype=np.float32) / scale
    return data.with_scores(scaled["scores"], t2i_scores=scaled["t2i_scores"], name=data.name)


__all__ = ["bank_source", "check_normalize_memory", "elementwise_form", "largest_magnitude", "normalize_side",
           "normalizer_pair", "on_cosine_scale", "training_banks"]
