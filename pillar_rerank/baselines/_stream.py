"""Streaming kernels over score matrices: row blocks in, per-column statistics out.

A *scores-like* matrix is anything with a 2-D ``shape`` whose row slices give float arrays: an
ndarray, a read-only memory map, or :class:`EmbeddingScores` (the product of two embedding
matrices, computed one block at a time and never stored). Every kernel here reads it in row
blocks sized from a memory budget, so memory is O(block * n_gallery + n_gallery) whatever the
number of rows (a 100k-row bank never has to be exponentiated, or even held, in full).

Slightly over ~400 lines: the streamed reductions and both Sinkhorn paths (stored and streamed
kernel), which share the absorption and exact-fallback steps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pillar_rerank._validation import (
    check_finite,
    check_float_matrix,
    mark_finite,
    max_row_norm,
    product_is_finite,
)
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
        self._bounded: bool | None = None

    def _product(self, rows: slice, gallery32: np.ndarray | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
        if gallery32 is None:
            if self._gallery32 is None:
                self._gallery32 = np.ascontiguousarray(self.gallery, dtype=np.float32)
            gallery32 = self._gallery32
        return np.matmul(np.asarray(self.queries[rows], dtype=np.float32), gallery32.T, out=out)

    def dense(self) -> np.ndarray:
        """The whole product as one read-only array (computed once when ``cache``, else anew)."""
        if self._dense is not None:
            return self._dense
        out = np.empty(self.shape, dtype=self.dtype)
        g32 = np.ascontiguousarray(self.gallery, dtype=np.float32) if self.cache else None
        for rows in iter_blocks(self.shape[0], block_rows(self.shape[1])):
            if out.dtype == np.float32:  # straight into the result: no temporary block
                self._product(rows, g32, out=out[rows])
            else:
                out[rows] = self._product(rows, g32)
        if self.cache:
            out.flags.writeable = False
            if self.bounded:
                mark_finite(out)
            else:
                check_finite(out, name=self.name)  # read-only: remembered, never scanned again
            self._dense = out
        return out

    @property
    def bounded(self) -> bool:
        """True when the embeddings' norms prove every entry finite (no scan needed; computed once).

        Both embedding matrices are finite (checked on construction); their product can still
        overflow where their norms are huge, and then each computed block is scanned.
        """
        if self._bounded is None:
            self._bounded = product_is_finite(max_row_norm(np.asarray(self.queries)),
                                              max_row_norm(np.asarray(self.gallery)),
                                              self.queries.shape[1], self.dtype)
        return self._bounded

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
    if not isinstance(matrix, EmbeddingScores) or matrix.bounded:
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
    if _numpy_on(device):
        return torch.from_numpy(_column_logsumexp_numpy(matrix, scale=scale, budget_bytes=budget_bytes,
                                                        row_log_weights=row_log_weights))
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


# The CPU runs the streamed kernels in numpy: one thread per step, no torch thread hand-off per
# small block (on a loaded 2-core machine each hand-off cost milliseconds). Accelerators use torch.
# Tests set this to False to run the torch code on the CPU and compare.
NUMPY_ON_CPU = True


def _numpy_on(device: torch.device) -> bool:
    return NUMPY_ON_CPU and device.type == "cpu"


# a block and its exponent stay in a large L2 / L3 cache through their 4 numpy steps
_CACHE_BYTES = 4 * 2**20
# rows of a wide bank read at once for a few of its columns (a lazy bank computes them all)
_READ_BYTES = 64 * 2**20


def _rows_numpy(matrix: Any, rows: slice) -> np.ndarray:
    """Rows of a scores-like matrix as a float32 array (a view where numpy allows), checked if lazy."""
    block = np.asarray(matrix[rows], dtype=np.float32)
    if _unchecked(matrix):
        check_finite(block, name=getattr(matrix, "name", "bank"))
    return block


def _column_logsumexp_numpy(matrix: Any, *, scale: float, budget_bytes: int,
                            row_log_weights: torch.Tensor | None) -> np.ndarray:
    """:func:`column_logsumexp` on the CPU: numpy over cache-sized row blocks, one thread.

    Each block goes through its scale, max, shift, ``exp`` and column sum while in cache (the
    matrix is read once, no torch copy of a read-only block); the float32 block sums are
    accumulated in float64.
    """
    n_cols = matrix.shape[1]
    run_max = np.full(n_cols, -np.inf)
    run_sum = np.zeros(n_cols)
    weights = None if row_log_weights is None else row_log_weights.cpu().numpy().astype(np.float32)
    # a column subset of a wide (or lazy) bank reads whole rows: blocks bounded by what is read
    read_width = getattr(matrix, "read_width", n_cols)
    step = max(1, min(min(budget_bytes, _CACHE_BYTES) // (4 * n_cols),
                      min(budget_bytes, _READ_BYTES) // (4 * read_width)))
    s32 = np.float32(scale)
    for rows in iter_blocks(matrix.shape[0], step):
        z = np.multiply(_rows_numpy(matrix, rows), s32, dtype=np.float32)
        if weights is not None:
            z += weights[rows, None]
        new_max = np.maximum(run_max, z.max(axis=0))
        run_sum *= np.exp(run_max - new_max)            # the first block: exp(-inf) = 0
        z -= new_max.astype(np.float32)
        np.exp(z, out=z)
        run_sum += z.sum(axis=0)
        run_max = new_max
    return run_max + np.log(run_sum)


def column_mean(matrix: Any, *, device: torch.device,
                budget_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """Mean of every column (float64), streamed over row blocks."""
    total = torch.zeros(matrix.shape[1], dtype=torch.float64, device=device)
    for _, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes):
        total += block.double().sum(0)
    return total / matrix.shape[0]


def column_topk_mean(matrix: Any, *, k: int, device: torch.device,
                     budget_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """Mean of the ``k`` largest entries of every column, with a running top-k (float64).

    On the CPU the selection is numpy's introselect along each column's contiguous copy (about 3x
    faster than ``torch.topk`` across rows); elsewhere ``torch.topk``.
    """
    if device.type != "cpu":
        best: torch.Tensor | None = None
        for _, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes):
            pool = block if best is None else torch.cat([best, block], dim=0)
            best = torch.topk(pool, min(k, pool.shape[0]), dim=0, sorted=False).values
        return best.double().mean(0)  # type: ignore[union-attr]  # matrix has >= 1 row (validated)
    if isinstance(matrix, EmbeddingScores) and not matrix.is_checked:
        return torch.from_numpy(_topk_mean_from_embeddings(matrix, k=k, budget_bytes=budget_bytes))
    top: np.ndarray | None = None            # (n_cols, <= k): the running top-k of every column
    step = block_rows(matrix.shape[1], bytes_per_item=8, budget_bytes=budget_bytes)
    for rows in iter_blocks(matrix.shape[0], step):
        block = _rows_numpy(matrix, rows)
        # our own C-order copy, each column's values contiguous: partitioned in place (np.partition
        # of the transposed view copies it again and selects along strided rows, ~30% slower)
        pool = np.array(block.T, order="C") if top is None else np.concatenate([top, block.T], axis=1)
        kk = min(k, pool.shape[1])
        pool.partition(pool.shape[1] - kk, axis=1)
        top = pool[:, pool.shape[1] - kk:]
    return torch.from_numpy(top.mean(axis=1, dtype=np.float64))  # type: ignore[union-attr]


def _topk_mean_from_embeddings(matrix: EmbeddingScores, *, k: int, budget_bytes: int) -> np.ndarray:
    """:func:`column_topk_mean` of a product not computed yet, computed gallery-major.

    ``gallery_block @ queries.T`` gives each gallery item's scores against the whole bank as one
    contiguous row of a fresh array, which is partitioned in place: no bank-major product to
    store, transpose and copy (the product's entries are the same dot products, summed in
    another order by the BLAS: equal up to float32 rounding).
    """
    n_bank, n_gallery = matrix.shape
    queries = np.ascontiguousarray(matrix.queries, dtype=np.float32)
    step = max(1, min(budget_bytes, _READ_BYTES) // (4 * n_bank))
    out = np.empty(n_gallery)
    for cols in iter_blocks(n_gallery, step):
        block = np.asarray(matrix.gallery[cols], dtype=np.float32) @ queries.T   # (cols, n_bank)
        if not matrix.bounded:
            check_finite(block, name=matrix.name)
        block.partition(n_bank - k, axis=1)
        out[cols] = block[:, n_bank - k:].mean(axis=1, dtype=np.float64)
    return out


def row_argmax_mask(matrix: Any, *, k: int, device: torch.device,
                    budget_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """Boolean (n_cols,) mask of the columns that are in the top-``k`` of at least one row."""
    mask = torch.zeros(matrix.shape[1], dtype=torch.bool, device=device)
    for _, block in iter_torch_blocks(matrix, device=device, budget_bytes=budget_bytes):
        top = torch.topk(block, k, dim=1).indices
        mask[top.reshape(-1)] = True
    return mask


class _ColumnSubset:
    """Scores-like view of some columns of ``[matrix, extra]`` (row blocks gathered on read)."""

    def __init__(self, parts: list[Any], cols: np.ndarray) -> None:
        self.parts = parts
        widths = np.cumsum([0] + [p.shape[1] for p in parts])
        self.picks = [(k, cols[(cols >= widths[k]) & (cols < widths[k + 1])] - widths[k])
                      for k in range(len(parts))]
        self.shape = (parts[0].shape[0], int(cols.size))
        self.read_width = int(widths[-1])   # a row block reads (or computes) whole rows of the parts
        self.name = getattr(parts[0], "name", "bank")

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.concatenate([np.asarray(self.parts[k][rows], dtype=np.float32)[:, c]
                               for k, c in self.picks if c.size], axis=1)


@dataclass
class SinkhornResult:
    """Gallery-side log-scaling of a streamed Sinkhorn run, and how the run ended."""

    log_u: torch.Tensor
    n_iter: int
    last_change: float
    converged: bool
    n_fallback_columns: int
    kernel_stored: bool = False   # the kernel was kept between iterations (within kernel_bytes)


def _torch_rows(matrix: Any, rows: slice, device: torch.device) -> torch.Tensor:
    """Rows of a scores-like matrix as a float32 tensor, without a copy where numpy allows it.

    The tensor is only read, so a read-only float32 array is wrapped as it is (torch's
    not-writable warning does not apply).
    """
    block = np.asarray(matrix[rows], dtype=np.float32)
    if _unchecked(matrix):
        check_finite(block, name=getattr(matrix, "name", "bank"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return torch.from_numpy(block).to(device)


def sinkhorn_potential(matrix: Any, *, tau: float, n_iter: int, tol: float, device: torch.device,
                       extra: Any = None, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                       kernel_bytes: int = 2**30) -> SinkhornResult:
    """Sinkhorn on the kernel ``exp(M.T / tau)`` with uniform marginals; returns log u and status.

    ``M`` is (n_bank, n_gallery): bank queries are the columns of the transport problem and the
    gallery items its rows, as in ``ot.sinkhorn(a, b, 1 - M.T, reg=tau)`` (the constant in the
    cost only rescales u and v). ``extra`` (n_bank, n_extra) adds further gallery rows, the
    dual-bank variant; their potentials are computed and dropped. POT's order (``v`` then
    ``u``), starting from uniform ``u``, so ``n_iter`` matches ``numItermax``.

    **Stabilised scaling domain with absorption.** The potentials are kept as logarithms and
    absorbed into the exponent, so each iteration is one streamed pass over the bank with one
    ``exp`` per entry: for a block of bank rows, ``E = exp(M / tau + log u - m_b)`` with ``m_b``
    the row maximum (so ``E <= 1`` and every row sum is >= 1), ``log v_b = log b - m_b - log
    sum_g E``, and the next ``u`` needs only ``E.T @ (b / rowsum)``, a matrix-vector product of
    the block already in cache (``u_new = a * u / acc``). Nothing can overflow at any ``tau``.
    A gallery item whose accumulated mass is so small that float32 could have flushed part of it
    to zero (far below every bank row's maximum: anti-hubs in the first iterations at small
    ``tau``) is recomputed exactly in log-sum-exp form (one more pass over those columns only),
    so the result equals log-domain Sinkhorn up to float32 rounding (~1e-7 on ``tau log u``).

    **Stored kernel.** When the float32 kernel (n_bank x n_all x 4 bytes) fits ``kernel_bytes``
    it is kept between iterations (:func:`_sinkhorn_stored`): each iteration is then two
    matrix-vector products, and ``exp`` runs only when the scalings are absorbed.

    **Early stopping.** Stops when no gallery potential ``tau log u`` (score units) moved by
    more than ``tol`` in the last iteration; ``tol = 0`` runs exactly ``n_iter`` iterations.
    """
    parts = [matrix] if extra is None else [matrix, extra]
    if matrix.shape[0] * sum(p.shape[1] for p in parts) * 4 <= kernel_bytes:
        return _sinkhorn_stored(parts, tau=tau, n_iter=n_iter, tol=tol, device=device,
                                budget_bytes=budget_bytes)
    n_bank = matrix.shape[0]
    widths = [p.shape[1] for p in parts]
    n_all = sum(widths)
    log_a, log_b = -math.log(n_all), -math.log(n_bank)
    inv_tau = 1.0 / tau
    # blocks small enough that the passes after the first read hit the cache, large enough
    # that the per-block float64 accumulation stays a small fraction of the work
    step = max(64, min(block_rows(n_all, budget_bytes=budget_bytes), 8 * 2**20 // (4 * n_all)))
    # rows read (lazy parts: computed) at once on the CPU: a matrix product over ~600 rows runs at
    # ~2x the rate of one over a cache-sized block (measured: 81 vs 35 GFLOP/s at d=256)
    chunk = max(step, min(block_rows(n_all, budget_bytes=budget_bytes), 8 * step))
    # every term of acc is E * b / rowsum with sum_b b / rowsum <= 1, so the mass float32 can
    # flush (terms below its normal range, 1.2e-38) is < 1.2e-38 per column: a column whose acc
    # is below 1e-29 could be off by 1e-9 relative, and is recomputed exactly
    threshold = 1e-29
    log_u = torch.full((n_all,), log_a, dtype=torch.float64, device=device)
    log_v = torch.empty(n_bank, dtype=torch.float64, device=device)
    change, done, n_fallback = math.inf, 0, 0
    for _ in range(n_iter):
        log_u32 = log_u.float()
        offsets = np.cumsum([0] + widths)
        acc = torch.zeros(n_all, dtype=torch.float64, device=device)
        if _numpy_on(device):
            _streamed_pass_numpy(parts, offsets, log_u32.numpy(), inv_tau=inv_tau, log_b=log_b, step=step,
                                 log_v=log_v.numpy(), acc=acc.numpy(), chunk=chunk)
        else:
            _streamed_pass_torch(parts, offsets, log_u32, inv_tau=inv_tau, log_b=log_b, step=step,
                                 log_v=log_v, acc=acc, device=device)
        new = log_a + log_u - torch.log(acc)
        low = (acc < threshold).nonzero().flatten()
        if low.numel():  # exact log-sum-exp for the columns float32 may have lost mass in
            n_fallback += int(low.numel())
            sub = _ColumnSubset(parts, low.cpu().numpy())
            new[low] = log_a - column_logsumexp(sub, scale=inv_tau, device=device,
                                                budget_bytes=budget_bytes, row_log_weights=log_v)
        change = float(tau * (new - log_u).abs().max())
        log_u, done = new, done + 1
        if change <= tol:
            break
    return SinkhornResult(log_u=log_u[:widths[0]], n_iter=done, last_change=change,
                          converged=change <= tol, n_fallback_columns=n_fallback)


def _streamed_pass_torch(parts: list[Any], offsets: np.ndarray, log_u32: torch.Tensor, *, inv_tau: float,
                         log_b: float, step: int, log_v: torch.Tensor, acc: torch.Tensor,
                         device: torch.device) -> None:
    """:func:`_streamed_pass_numpy` in torch, for accelerators."""
    for rows in iter_blocks(parts[0].shape[0], step):
        exps = []
        for k, part in enumerate(parts):
            x = _torch_rows(part, rows, device)
            exps.append(torch.add(log_u32[offsets[k]:offsets[k + 1]], x, alpha=inv_tau))
        row_max = exps[0].amax(1) if len(exps) == 1 else torch.maximum(*(e.amax(1) for e in exps))
        row_sum = torch.zeros_like(row_max)
        for e in exps:
            e.sub_(row_max[:, None]).exp_()
            row_sum += e.sum(1)
        log_v[rows] = log_b - row_max.double() - torch.log(row_sum.double())
        weight = (math.exp(log_b) / row_sum)
        for k, e in enumerate(exps):
            acc[offsets[k]:offsets[k + 1]] += torch.mv(e.T, weight).double()


def _streamed_pass_numpy(parts: list[Any], offsets: np.ndarray, log_u32: np.ndarray, *, inv_tau: float,
                         log_b: float, step: int, log_v: np.ndarray, acc: np.ndarray,
                         chunk: int | None = None) -> None:
    """One pass of the streamed Sinkhorn iteration on the CPU, in numpy (one thread per step).

    Fills ``log_v`` (float64, per bank row) and adds ``E.T @ (b / rowsum)`` into ``acc`` (float64,
    per gallery column), block by block: the arithmetic of the torch loop in
    :func:`sinkhorn_potential`, without torch's thread hand-off on every small cached block
    (which on a loaded machine made each step ~5x slower than numpy's single thread).
    """
    inv32 = np.float32(inv_tau)
    b32 = np.float32(math.exp(log_b))
    n_bank = parts[0].shape[0]
    for outer in iter_blocks(n_bank, max(step, chunk or step)):
        # rows read (a lazy part: computed) a chunk at a time, for an efficient matrix product
        # (~2x the throughput of a cache-sized block), then worked through in cached blocks
        sources = [_rows_numpy(part, outer) for part in parts]
        for inner in iter_blocks(outer.stop - outer.start, step):
            rows = slice(outer.start + inner.start, outer.start + inner.stop)
            _streamed_block_numpy(sources, inner, rows, offsets, log_u32, inv32=inv32, b32=b32,
                                  log_b=log_b, log_v=log_v, acc=acc)


def _streamed_block_numpy(sources: list[np.ndarray], inner: slice, rows: slice, offsets: np.ndarray,
                          log_u32: np.ndarray, *, inv32: np.float32, b32: np.float32, log_b: float,
                          log_v: np.ndarray, acc: np.ndarray) -> None:
    """One cache-sized block of :func:`_streamed_pass_numpy` (``inner``: its rows in ``sources``)."""
    exps = []
    for k, src in enumerate(sources):
        e = np.multiply(src[inner], inv32, dtype=np.float32)
        e += log_u32[offsets[k]:offsets[k + 1]]
        exps.append(e)
    row_max = exps[0].max(axis=1)
    for e in exps[1:]:
        np.maximum(row_max, e.max(axis=1), out=row_max)
    row_sum = np.zeros(row_max.shape, dtype=np.float32)
    for e in exps:
        e -= row_max[:, None]
        np.exp(e, out=e)
        row_sum += e.sum(axis=1)
    log_v[rows] = log_b - row_max.astype(np.float64) - np.log(row_sum.astype(np.float64))
    weight = b32 / row_sum
    for k, e in enumerate(exps):
        acc[offsets[k]:offsets[k + 1]] += weight @ e


# scalings are absorbed into the log-potentials once one exceeds exp(+-_ABSORB) (float32 keeps
# e^+-87, and sums of up to e^12 terms must stay in range)
_ABSORB = 30.0


def _sinkhorn_stored(parts: list[Any], *, tau: float, n_iter: int, tol: float, device: torch.device,
                     budget_bytes: int) -> SinkhornResult:
    """:func:`sinkhorn_potential` with the absorbed kernel kept in memory (Schmitzer's scheme).

    ``Kt[b, g] = exp(M[b, g] / tau + f_g - r_b)`` (float32, bank-major like ``M``) with ``f`` the
    absorbed gallery log-potential and ``r_b`` the row maximum, so every row of ``Kt`` has a 1.
    The scalings ``u~ = exp(lu)`` (``|lu| <= _ABSORB``) and ``v~`` iterate as plain Sinkhorn on
    ``Kt``: ``v~ = b / (Kt u~)`` (>= e^-30 per row: no overflow), ``u~ = a / (Kt.T v~)``; the true
    ``log u = f + lu``. When ``|lu|`` grows past ``_ABSORB`` it is absorbed (``f += lu``, ``Kt``
    recomputed: one ``exp`` pass). Columns whose ``Kt.T v~`` float32 may have flushed are
    recomputed exactly in log-sum-exp form, as in the streamed version.
    """
    n_bank = parts[0].shape[0]
    widths = [p.shape[1] for p in parts]
    offsets = np.cumsum([0] + widths)
    n_all = int(offsets[-1])
    log_a, log_b = -math.log(n_all), -math.log(n_bank)
    inv_tau = 1.0 / tau
    step = max(1, block_rows(n_all, budget_bytes=budget_bytes))
    kernels = [torch.empty((n_bank, w), dtype=torch.float32, device=device) for w in widths]
    row_max = torch.empty(n_bank, dtype=torch.float64, device=device)

    def absorb(f: torch.Tensor) -> torch.Tensor:
        """Recompute the kernels from ``f`` (returned as the float32 value actually used)."""
        f32 = f.float()
        for rows in iter_blocks(n_bank, step):
            if device.type == "cpu":  # numpy in place: no thread hand-off per step
                blocks = [kern[rows].numpy() for kern in kernels]
                for k, (part, kb) in enumerate(zip(parts, blocks)):
                    x = np.asarray(part[rows], dtype=np.float32)
                    if _unchecked(part):
                        check_finite(x, name=getattr(part, "name", "bank"))
                    np.multiply(x, np.float32(inv_tau), out=kb)
                    kb += f32[offsets[k]:offsets[k + 1]].numpy()
                m_np = np.max([kb.max(axis=1) for kb in blocks], axis=0)
                for kb in blocks:
                    kb -= m_np[:, None]
                    np.exp(kb, out=kb)
                row_max[rows] = torch.from_numpy(m_np.astype(np.float64))
                continue
            for k, part in enumerate(parts):
                torch.add(f32[offsets[k]:offsets[k + 1]], _torch_rows(part, rows, device), alpha=inv_tau,
                          out=kernels[k][rows])
            m = kernels[0][rows].amax(1)
            for kern in kernels[1:]:
                m = torch.maximum(m, kern[rows].amax(1))
            for kern in kernels:
                kern[rows].sub_(m[:, None]).exp_()
            row_max[rows] = m.double()
        return f32.double()

    f = absorb(torch.full((n_all,), log_a, dtype=torch.float64, device=device))
    if _numpy_on(device):
        return _stored_iterations_cpu(parts, kernels, row_max.numpy(), f.numpy(),
                                      lambda lu: absorb(torch.from_numpy(lu)).numpy(), tau=tau,
                                      n_iter=n_iter, tol=tol, budget_bytes=budget_bytes)
    lu = torch.zeros(n_all, dtype=torch.float64, device=device)
    log_u = f + lu
    change, done, n_fallback = math.inf, 0, 0
    for _ in range(n_iter):
        u32 = torch.exp(lu).float()
        ku = kernels[0] @ u32[:widths[0]]
        for k in range(1, len(parts)):
            ku += kernels[k] @ u32[offsets[k]:offsets[k + 1]]
        v32 = math.exp(log_b) / ku
        acc = torch.cat([kern.T @ v32 for kern in kernels]).double()
        new_lu = log_a - torch.log(acc)
        # flushed float32 terms are < 1.2e-38 * v~_b each: a column below this may be off by 1e-9
        low = (acc < float(v32.double().sum()) * 1.2e-29).nonzero().flatten()
        if low.numel():
            n_fallback += int(low.numel())
            log_v = row_max.neg() + torch.log(v32.double())      # true log v = -r_b + log v~_b
            sub = _ColumnSubset(parts, low.cpu().numpy())
            exact = log_a - column_logsumexp(sub, scale=inv_tau, device=device,
                                             budget_bytes=budget_bytes, row_log_weights=log_v)
            new_lu[low] = exact - f[low]
        new_log_u = f + new_lu
        change = float(tau * (new_log_u - log_u).abs().max())
        log_u, lu, done = new_log_u, new_lu, done + 1
        if change <= tol:
            break
        if float(lu.abs().max()) > _ABSORB:
            f = absorb(log_u)
            lu = log_u - f
    return SinkhornResult(log_u=log_u[:widths[0]], n_iter=done, last_change=change,
                          converged=change <= tol, n_fallback_columns=n_fallback,
                          kernel_stored=True)


def _stored_iterations_cpu(parts: list[Any], kernels: list[torch.Tensor], row_max: np.ndarray, f: np.ndarray,
                           absorb: Any, *, tau: float, n_iter: int, tol: float,
                           budget_bytes: int) -> SinkhornResult:
    """The iterations of :func:`_sinkhorn_stored` on the CPU: mat-vecs in torch, vectors in numpy.

    Same steps and precision as the torch loop (float32 mat-vecs on the stored kernels, float64
    potentials). The per-iteration vector steps (exp, log, casts, max over n_gallery or n_bank
    entries) run in numpy: in torch each one waited ~4-8 ms for its thread pool on the loaded
    2-core machine (about 1 s of a 3 s COCO 5K dual-bank run). ``kernels`` and ``row_max`` are
    the stored arrays, which ``absorb`` refills.
    """
    widths = [k.shape[1] for k in kernels]
    offsets = np.cumsum([0] + widths)
    n_all, n_bank = int(offsets[-1]), kernels[0].shape[0]
    log_a, log_b = -math.log(n_all), -math.log(n_bank)
    b32 = np.float32(math.exp(log_b))
    lu = np.zeros(n_all)
    log_u = f + lu
    change, done, n_fallback = math.inf, 0, 0
    for _ in range(n_iter):
        u32 = torch.from_numpy(np.exp(lu).astype(np.float32))
        ku = kernels[0] @ u32[:widths[0]]
        for k in range(1, len(kernels)):
            ku += kernels[k] @ u32[offsets[k]:offsets[k + 1]]
        v32 = b32 / ku.numpy()
        v32_t = torch.from_numpy(v32)
        acc = np.concatenate([(kern.T @ v32_t).numpy() for kern in kernels]).astype(np.float64)
        with np.errstate(divide="ignore"):       # acc == 0: among the low columns, replaced below
            new_lu = log_a - np.log(acc)
        # flushed float32 terms are < 1.2e-38 * v~_b each: a column below this may be off by 1e-9
        low = np.flatnonzero(acc < float(v32.sum(dtype=np.float64)) * 1.2e-29)
        if low.size:
            n_fallback += int(low.size)
            log_v = -row_max + np.log(v32.astype(np.float64))   # true log v = -r_b + log v~_b
            exact = log_a - column_logsumexp(_ColumnSubset(parts, low), scale=1.0 / tau,
                                             device=torch.device("cpu"), budget_bytes=budget_bytes,
                                             row_log_weights=torch.from_numpy(log_v)).numpy()
            new_lu[low] = exact - f[low]
        new_log_u = f + new_lu
        change = float(tau * np.abs(new_log_u - log_u).max())
        log_u, lu, done = new_log_u, new_lu, done + 1
        if change <= tol:
            break
        if float(np.abs(lu).max()) > _ABSORB:
            f = absorb(log_u)
            lu = log_u - f
    return SinkhornResult(log_u=torch.from_numpy(log_u[:widths[0]]), n_iter=done, last_change=change,
                          converged=change <= tol, n_fallback_columns=n_fallback,
                          kernel_stored=True)
