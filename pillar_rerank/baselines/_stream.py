"""Streaming kernels over score matrices: row blocks in, per-column statistics out.

A *scores-like* matrix is anything with a 2-D ``shape`` whose row slices give float arrays: an
ndarray, a read-only memory map, or :class:`EmbeddingScores` (the product of two embedding
matrices, computed one block at a time and never stored). Every kernel here reads it in row
blocks sized from a memory budget, so memory is O(block * n_gallery + n_gallery) whatever the
number of rows (a 100k-row bank never has to be exponentiated, or even held, in full).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pillar_rerank._validation import check_finite, check_float_matrix
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES, block_rows, iter_blocks


class EmbeddingScores:
    """Lazy ``queries @ gallery.T``: a scores-like matrix computed one row block at a time.

    Parameters
    ----------
    queries : array-like of shape (n_queries, d)
    gallery : array-like of shape (n_gallery, d)
    name : str, default="scores"
        Named in error messages.
    cache : bool, default=False
        False: every read recomputes its rows (memory O(block)). True: the whole product is
        computed once, on the first read, stored as ``dtype`` (read-only, checked finite once)
        and every later read is a view of it; a matrix that is never read is never computed.
    dtype : numpy dtype, default=float32
        Storage type of the cached product (float16 halves its memory).
    """

    def __init__(self, queries: np.ndarray, gallery: np.ndarray, *, name: str = "scores",
                 cache: bool = False, dtype: Any = np.float32) -> None:
        q = check_float_matrix(queries, name=f"{name} query embeddings")
        g = check_float_matrix(gallery, name=f"{name} gallery embeddings", shape=(None, q.shape[1]))
        self.queries = q
        self.gallery = g  # made float32-contiguous when first used (a cached one: transiently)
        self._gallery32: np.ndarray | None = None
        self.shape = (q.shape[0], g.shape[0])
        self.dtype = np.dtype(dtype if cache else np.float32)
        self.ndim = 2
        self.name = name
        self.cache = bool(cache)
        self._dense: np.ndarray | None = None

    def _product(self, rows: slice, gallery32: np.ndarray | None = None) -> np.ndarray:
        if gallery32 is None:
            if self._gallery32 is None:
                self._gallery32 = np.ascontiguousarray(self.gallery, dtype=np.float32)
            gallery32 = self._gallery32
        return np.asarray(self.queries[rows], dtype=np.float32) @ gallery32.T

    def dense(self) -> np.ndarray:
        """The whole product as one read-only array (computed once when ``cache``, else anew)."""
        if self._dense is not None:
            return self._dense
        out = np.empty(self.shape, dtype=self.dtype)
        g32 = np.ascontiguousarray(self.gallery, dtype=np.float32) if self.cache else None
        for rows in iter_blocks(self.shape[0], block_rows(self.shape[1])):
            out[rows] = self._product(rows, g32)
        if self.cache:
            out.flags.writeable = False
            check_finite(out, name=self.name)  # read-only: remembered, never scanned again
            self._dense = out
        return out

    @property
    def is_checked(self) -> bool:
        """True once the cached product exists (it was checked finite when computed)."""
        return self._dense is not None

    def __getitem__(self, rows: Any) -> np.ndarray:
        if self.cache:
            return self.dense()[rows]
        if not isinstance(rows, slice):
            raise TypeError("EmbeddingScores supports row slices only (cache=False).")
        return self._product(rows)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.dense()
        if dtype is not None and np.dtype(dtype) != out.dtype:
            return out.astype(dtype)
        return out.copy() if copy and self.cache else out

    def __repr__(self) -> str:
        state = ", cached" if self._dense is not None else ""
        return f"EmbeddingScores(shape={self.shape}{state})"


def check_scores_like(matrix: Any, *, name: str, n_gallery: int | None = None,
                      n_rows: int | None = None) -> Any:
    """Validate a scores-like matrix without materialising it; returns it (ndarray-ified if plain)."""
    if isinstance(matrix, EmbeddingScores):
        shape = matrix.shape
    else:
        if not hasattr(matrix, "shape") or not hasattr(matrix, "dtype"):
            matrix = np.asarray(matrix)
        check_float_matrix(matrix, name=name)
        shape = matrix.shape
    if n_gallery is not None and shape[1] != n_gallery:
        raise InvalidInputError(
            f"{name}: expected {n_gallery} gallery columns (the test gallery size); got shape {shape}."
        )
    if n_rows is not None and shape[0] != n_rows:
        raise InvalidInputError(f"{name}: expected {n_rows} rows; got shape {shape}.")
    return matrix


def iter_torch_blocks(matrix: Any, *, device: torch.device, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                      scale: float = 1.0, extra: Any = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, scale * block)`` float32 tensors; ``extra`` (same rows) is appended as columns.

    Lazy blocks are checked for NaN/inf here, since :func:`check_scores_like` cannot see them.
    """
    n_rows, n_cols = matrix.shape
    n_cols += 0 if extra is None else extra.shape[1]
    # a block, its exp and a working copy live at once
    step = block_rows(n_cols, bytes_per_item=12, budget_bytes=budget_bytes)
    for rows in iter_blocks(n_rows, step):
        block = np.asarray(matrix[rows], dtype=np.float32)
        if extra is not None:
            block = np.concatenate([block, np.asarray(extra[rows], dtype=np.float32)], axis=1)
        if _unchecked(matrix) or _unchecked(extra):
            check_finite(block, name=getattr(matrix, "name", "bank"))
        if not block.flags.writeable:  # a view of a read-only input: torch needs its own copy
            block = block.copy()
        t = torch.from_numpy(block).to(device)
        yield rows, (t * scale if scale != 1.0 else t)


def _unchecked(matrix: Any) -> bool:
    """True for a lazy product whose values no one has checked for NaN/inf yet."""
    if not isinstance(matrix, EmbeddingScores):
        return False
    if matrix.cache:
        matrix.dense()  # computes (and checks) it once
        return False
    return True


def column_logsumexp(matrix: Any, *, scale: float, device: torch.device,
                     budget_bytes: int = DEFAULT_BLOCK_BYTES,
                     row_log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``logsumexp_b(scale * M[b, g] + w_b)`` for every column ``g``, streamed over row blocks.

    A running maximum and a float64 running sum make it exact up to rounding for any score
    scale (no overflow with logit-scale scores). Returns float64 of shape (n_cols,).
    """
    n_cols = matrix.shape[1]
    run_max = torch.full((n_cols,), -math.inf, dtype=torch.float64, device=device)
    run_sum = torch.zeros(n_cols, dtype=torch.float64, device=device)
    for rows, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes, scale=scale):
        if row_log_weights is not None:
            block = block + row_log_weights[rows].to(block.dtype)[:, None]
        block_max = block.max(dim=0).values.double()
        new_max = torch.maximum(run_max, block_max)
        run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(block - new_max.float()).sum(0).double()
        run_max = new_max
    return run_max + torch.log(run_sum)


def column_mean(matrix: Any, *, device: torch.device,
                budget_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """Mean of every column (float64), streamed over row blocks."""
    total = torch.zeros(matrix.shape[1], dtype=torch.float64, device=device)
    for _, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes):
        total += block.double().sum(0)
    return total / matrix.shape[0]


def column_topk_mean(matrix: Any, *, k: int, device: torch.device,
                     budget_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """Mean of the ``k`` largest entries of every column, with a running top-k (float64)."""
    best: torch.Tensor | None = None
    for _, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes):
        pool = block if best is None else torch.cat([best, block], dim=0)
        best = torch.topk(pool, min(k, pool.shape[0]), dim=0, sorted=False).values
    return best.double().mean(0)  # type: ignore[union-attr]  # matrix has >= 1 row (validated)


def row_argmax_mask(matrix: Any, *, k: int, device: torch.device,
                    budget_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """Boolean (n_cols,) mask of the columns that are in the top-``k`` of at least one row."""
    mask = torch.zeros(matrix.shape[1], dtype=torch.bool, device=device)
    for _, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes):
        top = torch.topk(block, k, dim=1).indices
        mask[top.reshape(-1)] = True
    return mask


def sinkhorn_log_potential(matrix: Any, *, tau: float, n_iter: int, device: torch.device,
                           extra: Any = None, budget_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """Log-domain Sinkhorn on the kernel ``exp(M.T / tau)`` with uniform marginals; returns log u.

    ``M`` is (n_bank, n_gallery): bank queries are the columns of the transport problem and the
    gallery items its rows, as in ``ot.sinkhorn(a, b, 1 - M.T, reg=tau)`` (the constant in the
    cost only rescales u and v). ``extra`` (n_bank, n_extra) adds further gallery rows, the
    dual-bank variant; their potentials are computed and dropped.

    One pass over the bank per iteration: with the previous ``log u`` each bank row's ``log v``
    is computed from that row alone, and the row's contribution to the next ``log u`` is
    accumulated with a running log-sum-exp. POT's order (``v`` then ``u``), starting from
    uniform ``u``, so ``n_iter`` matches ``numItermax``.

    Returns
    -------
    log_u : tensor of shape (n_gallery,), float64
    """
    n_bank, n_gal = matrix.shape
    n_all = n_gal + (0 if extra is None else extra.shape[1])
    log_a = -math.log(n_all)
    log_b = -math.log(n_bank)
    log_u = torch.full((n_all,), log_a, dtype=torch.float64, device=device)
    for _ in range(n_iter):
        run_max = torch.full((n_all,), -math.inf, dtype=torch.float64, device=device)
        run_sum = torch.zeros(n_all, dtype=torch.float64, device=device)
        # Block arithmetic in float32 (every exponent is max-shifted, so only rounding is lost:
        # ~1e-7 relative on log-potentials); per-column running sums in float64.
        log_u32 = log_u.float()
        for _, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes // 2,
                                          scale=1.0 / tau, extra=extra):
            log_v = log_b - torch.logsumexp(block + log_u32[None, :], dim=1)  # (rows,)
            contrib = block + log_v[:, None]
            block_max = contrib.max(dim=0).values.double()
            new_max = torch.maximum(run_max, block_max)
            run_sum = run_sum * torch.exp(run_max - new_max) + \
                torch.exp(contrib - new_max.float()[None, :]).sum(0).double()
            run_max = new_max
        log_u = log_a - (run_max + torch.log(run_sum))
    return log_u[:n_gal]
