"""Intra-modal similarities: given matrices, embedding cosines or the second-order estimate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pillar_rerank._validation import check_int
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.neighbors._pairs import PairScores, _l2_normalise
from pillar_rerank.neighbors._topk import TopK, force_self_first
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES, block_rows, iter_blocks

logger = logging.getLogger(__name__)

INTRA_SOURCES = ("auto", "given", "embeddings", "second_order")
DEFAULT_SECOND_ORDER_RANK = 128


def second_order_embeddings(scores: Any, *, rank: int | None = DEFAULT_SECOND_ORDER_RANK,
                            power_iterations: int = 1, seed: int = 0,
                            budget_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Image and text "profile" embeddings whose inner products estimate intra-modal similarity.

    Parameters
    ----------
    scores : array-like of shape (n_images, n_texts)
        Cross-modal scores S (dense or memory-mapped); read in row blocks, never copied whole.
    rank : int or None, default=128
        Embedding size r. None (or any r >= min(n_images, n_texts)) gives the exact estimate.
    power_iterations : int, default=1
        Subspace iterations of the randomized range finder (each costs two passes over S).
    seed : int, default=0
        Seed of the Gaussian test matrices (the result is deterministic on CPU).
    budget_bytes : int, default=256 MiB
        Memory per block of rows of S.

    Returns
    -------
    image_embeddings : ndarray of shape (n_images, r_i), float32
    text_embeddings : ndarray of shape (n_texts, r_t), float32
        ``image_embeddings @ image_embeddings.T`` estimates π_ii, ``text_embeddings @
        text_embeddings.T`` estimates π_tt.

    Notes
    -----
    With only cross-modal scores, two images are similar when they score the texts alike, and
    two texts when the images score them alike (baselines.md §1.3, leaprr.md §2.1):

    .. math::
        \\pi_{ii} = \\mathrm{norm}_r(S)\\,\\mathrm{norm}_r(S)^\\top, \\qquad
        \\pi_{tt} = \\mathrm{norm}_c(S)^\\top\\,\\mathrm{norm}_c(S),

    where :math:`\\mathrm{norm}_r` L2-normalises every row (an image's profile over the texts)
    and :math:`\\mathrm{norm}_c` every column (a text's profile over the images); no centring.
    Both are cosines of score profiles, so π(x, x) = 1 in the exact case.

    The exact products cost O(n_images * n_texts * min(...)) per modality (about 3 TFLOP for the
    text side of COCO 5K) and π_tt alone would not fit in memory. So each normalised profile is
    projected onto an r-dimensional orthonormal basis Q of the profiles' span, found by a
    randomized range finder (Halko, Martinsson & Tropp 2011) with ``power_iterations`` subspace
    iterations: ``text_embeddings = norm_c(S).T @ Q_t`` and ``image_embeddings = norm_r(S) @
    Q_i``. Then π ≈ profile_a · Q Qᵀ · profile_b, the product restricted to the dominant
    r-dimensional subspace (exact when r >= rank(S)). Cost: 2 + 2 * power_iterations passes
    over S with two (block x r) matmuls each; memory O((n_images + n_texts) * r).
    """
    arr = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores
    n_img, n_txt = arr.shape
    full = min(n_img, n_txt)
    r = full if rank is None else min(check_int(rank, name="rank", owner="second_order_embeddings"), full)
    power_iterations = check_int(power_iterations, name="power_iterations",
                                 owner="second_order_embeddings", low=0)
    step = block_rows(n_txt, bytes_per_item=8, budget_bytes=budget_bytes)
    gen = torch.Generator().manual_seed(int(seed))
    omega_txt = torch.randn(n_txt, r, generator=gen)  # samples the image-space span (text side)
    omega_img = torch.randn(n_img, r, generator=gen)  # samples the text-space span (image side)

    def blocks():
        for rows in iter_blocks(n_img, step):
            # a copy: rows of a read-only memory map would give a non-writable tensor
            yield rows, torch.from_numpy(np.array(arr[rows], dtype=np.float32))

    # Pass 1: norms, and a first sample of both spans (range(S diag(1/c)) = range(S)).
    row_norm = torch.empty(n_img)
    col_sq = torch.zeros(n_txt)
    y_txt_side = torch.empty(n_img, r)
    y_img_side = torch.zeros(n_txt, r)
    for rows, blk in blocks():
        sq = blk.square()
        row_norm[rows] = sq.sum(1).sqrt()
        col_sq += sq.sum(0)
        del sq
        y_txt_side[rows] = blk @ omega_txt
        y_img_side += blk.T @ omega_img[rows]
    inv_r = 1.0 / row_norm.clamp_min(1e-12)
    inv_c = 1.0 / col_sq.sqrt().clamp_min(1e-12)
    q_txt_side = torch.linalg.qr(y_txt_side).Q
    q_img_side = torch.linalg.qr(y_img_side).Q
    for _ in range(power_iterations):
        # Y_t <- Xc Xcᵀ Q_t with Xc = S diag(1/c); Y_i <- Xrᵀ Xr Q_i with Xr = diag(1/r) S.
        z_txt = torch.zeros(n_txt, q_txt_side.shape[1])
        z_img = torch.empty(n_img, q_img_side.shape[1])
        for rows, blk in blocks():
            z_txt += blk.T @ q_txt_side[rows]
            z_img[rows] = blk @ q_img_side
        z_txt *= inv_c.square().unsqueeze(1)
        z_img *= inv_r.square().unsqueeze(1)
        y_txt_side = torch.empty(n_img, z_txt.shape[1])
        y_img_side = torch.zeros(n_txt, z_img.shape[1])
        for rows, blk in blocks():
            y_txt_side[rows] = blk @ z_txt
            y_img_side += blk.T @ z_img[rows]
        q_txt_side = torch.linalg.qr(y_txt_side).Q
        q_img_side = torch.linalg.qr(y_img_side).Q
    text_emb = torch.zeros(n_txt, q_txt_side.shape[1])
    image_emb = torch.empty(n_img, q_img_side.shape[1])
    for rows, blk in blocks():
        text_emb += blk.T @ q_txt_side[rows]
        image_emb[rows] = blk @ q_img_side
    text_emb *= inv_c.unsqueeze(1)
    image_emb *= inv_r.unsqueeze(1)
    return image_emb.numpy(), text_emb.numpy()


def intra_modal_source(data: RetrievalSet, requested: str = "auto") -> str:
    """Resolve where intra-modal similarities come from.

    "auto" picks "given" when both ``data.image_image`` and ``data.text_text`` are present, else
    "embeddings" when ``data`` has embeddings, else "second_order". An explicit choice whose
    inputs are missing is an error.
    """
    if requested not in INTRA_SOURCES:
        raise InvalidParameterError(
            f"The 'intra_source' parameter must be one of {', '.join(map(repr, INTRA_SOURCES))}; "
            f"got {requested!r} instead.")
    has_given = data.image_image is not None and data.text_text is not None
    if requested == "auto":
        return "given" if has_given else ("embeddings" if data.has_embeddings else "second_order")
    if requested == "given" and not has_given:
        raise InvalidInputError(f"{data.name}: intra_source='given' needs both image_image and text_text "
                                "matrices; got "
                                f"image_image={'yes' if data.image_image is not None else 'no'}, "
                                f"text_text={'yes' if data.text_text is not None else 'no'}.")
    if requested == "embeddings" and not data.has_embeddings:
        raise InvalidInputError(f"{data.name}: intra_source='embeddings' needs image and text embeddings; "
                                "got a score matrix only (use 'second_order' or 'auto').")
    return requested


@dataclass(frozen=True)
class IntraModalScores:
    """Image-image and text-text similarities π with random access and top-k search.

    Attributes
    ----------
    image : PairScores of shape (n_images, n_images)
    text : PairScores of shape (n_texts, n_texts)
    source : {"given", "embeddings", "second_order"}
        "given": the user's matrices; "embeddings": cosine of the L2-normalised embeddings;
        "second_order": :func:`second_order_embeddings` of the cross-modal scores.
    """

    image: PairScores
    text: PairScores
    source: str

    @classmethod
    def from_data(cls, data: RetrievalSet, source: str = "auto", *,
                  rank: int | None = DEFAULT_SECOND_ORDER_RANK, power_iterations: int = 1,
                  seed: int = 0, budget_bytes: int = DEFAULT_BLOCK_BYTES) -> IntraModalScores:
        """Build π for ``data`` from the resolved ``source`` (see :func:`intra_modal_source`).

        ``rank``, ``power_iterations`` and ``seed`` only matter for "second_order".
        """
        resolved = intra_modal_source(data, source)
        if resolved == "given":
            return cls(PairScores(matrix=data.image_image), PairScores(matrix=data.text_text), resolved)
        if resolved == "embeddings":
            img = _l2_normalise(data.image_embeddings)
            txt = _l2_normalise(data.text_embeddings)
            return cls(PairScores(left=img, right=img), PairScores(left=txt, right=txt), resolved)
        if data.scores is None:
            logger.warning("%s: second-order intra-modal scores from embeddings: building the "
                           "image x text matrix in memory.", data.name)
        scores = data.scores if data.scores is not None else data.similarity(budget_bytes=budget_bytes)
        img, txt = second_order_embeddings(scores, rank=rank, power_iterations=power_iterations,
                                           seed=seed, budget_bytes=budget_bytes)
        return cls(PairScores(left=img, right=img), PairScores(left=txt, right=txt), resolved)

    def scores(self, modality: str) -> PairScores:
        """π of ``modality`` ("image" or "text")."""
        if modality not in ("image", "text"):
            raise InvalidParameterError(f"modality: expected 'image' or 'text'; got {modality!r}.")
        return self.image if modality == "image" else self.text

    def topk(self, modality: str, k: int, *, device: str | torch.device | None = None,
             budget_bytes: int = DEFAULT_BLOCK_BYTES, index: str = "flat",
             index_params: dict | None = None) -> TopK:
        """Top-``k`` same-modality neighbours of every item, the item itself forced at rank 0.

        ``index`` / ``index_params``: approximate search of embedding sources (see ``topk_search``).
        """
        pair = self.scores(modality)
        top = pair.topk(k, device=device, budget_bytes=budget_bytes, index=index, index_params=index_params)
        me = torch.arange(pair.shape[0])
        return force_self_first(top, pair.pairs(me, me).numpy())
