"""Both directions of a cross-modal search from one product: ``a @ b.T`` gives a's and b's lists.

The i2t and t2i lists of an embedding pair are the row and the column top-k of the same matrix;
searching them separately computes it twice. :func:`joint_topk_search` computes it once, in tiles
of rows of the larger side against the whole smaller side: each tile's row top-k is final, and
the smaller side's lists are column top-k merged into a running top-k.

The merge is cheap because it is sparse: once every column holds ``k`` entries, an entry of a
later tile can only enter a column's list if it is **strictly** above that column's current
k-th value (an equal one has a higher row id, so the rule, lower id first, keeps the old one).
Those few candidates and the lists they touch are merged with one stable sort of composite
keys (column, value); a tile whose candidates would not fit the budget is merged densely instead.
The result is exactly that of two separate searches with the same ordering rule.
"""

from __future__ import annotations

import numpy as np
import torch

from pillar_rerank.neighbors._topk import TopK, _stable_topk, merge_topk, search_tiles
from pillar_rerank.utils.blocks import iter_blocks

# Bytes per candidate of the sparse merge (coordinates, keys, sort order, gathered lists).
_CANDIDATE_BYTES = 64


def _descending_keys(values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """int64 keys sorting by column ascending, then value descending (floats' bit order)."""
    bits = (values + 0.0).view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # + 0.0: -0.0 -> +0.0
    order = torch.where(bits >= 0x80000000, 0xFFFFFFFF - bits, bits + 0x80000000)
    return (columns << 32) | (0xFFFFFFFF - order)


def _merge_candidates(best_v: torch.Tensor, best_i: torch.Tensor, tile: torch.Tensor, offset: int,
                      mask: torch.Tensor) -> None:
    """Merge the tile entries flagged by ``mask`` into the running column lists, in place."""
    k = best_v.shape[1]
    rows, cols = mask.nonzero().unbind(1)  # row-major: ascending row (= id) within each column
    touched, counts = torch.unique(cols, return_counts=True)
    values = torch.cat([best_v[touched].reshape(-1), tile[rows, cols]])
    ids = torch.cat([best_i[touched].reshape(-1), rows + offset])
    columns = torch.cat([touched.repeat_interleave(k), cols])
    # stable: among equal (column, value), running entries (lower ids) first, then row order
    order = torch.sort(_descending_keys(values, columns), stable=True).indices
    starts = torch.cumsum(counts + k, 0) - (counts + k)
    take = order[starts.unsqueeze(1) + torch.arange(k)]
    best_v[touched], best_i[touched] = values[take], ids[take]


def _dense_column_topk(best: list, tile: torch.Tensor, offset: int, k: int, chunk: int) -> None:
    """Column top-k of ``tile`` by transposed column chunks, merged into ``best`` (or starting it)."""
    n_cols = tile.shape[1]
    if best[0] is None:
        best[0] = torch.empty(n_cols, k, dtype=tile.dtype)
        best[1] = torch.empty(n_cols, k, dtype=torch.int64)
        fresh = True
    else:
        fresh = False
    for cols in iter_blocks(n_cols, chunk):
        v, i = _stable_topk(tile[:, cols].T.contiguous(), min(k, tile.shape[0]))
        i += offset
        if fresh:
            best[0][cols], best[1][cols] = v, i
        else:
            best[0][cols], best[1][cols] = merge_topk(best[0][cols], best[1][cols], v, i, k)


def joint_topk_search(a: np.ndarray, b: np.ndarray, k_a: int, k_b: int, *,
                      budget_bytes: int) -> tuple[TopK, TopK] | None:
    """Top-``k_a`` of ``b`` for every row of ``a`` and top-``k_b`` of ``a`` for every row of ``b``.

    Both from one pass of ``a @ b.T`` on CPU (contiguous float32 inputs, exact inner products,
    ties by the lower id). Returns None when the smaller side does not fit whole in a tile of at
    least ``k`` rows under ``budget_bytes``; the caller then searches each direction alone.
    """
    swap = a.shape[0] < b.shape[0]
    big, small, k_big, k_small = (b, a, k_b, k_a) if swap else (a, b, k_a, k_b)
    n_big, n_small = big.shape[0], small.shape[0]
    q_step, g_step = search_tiles(n_big, n_small, k_big, budget_bytes)
    if g_step < n_small or q_step < k_small:
        return None
    gallery = torch.from_numpy(small)
    tile_buf = torch.empty(q_step * n_small, dtype=torch.float32)
    big_v = np.empty((n_big, k_big), dtype=np.float32)
    big_i = np.empty((n_big, k_big), dtype=np.int64)
    best: list = [None, None]
    # dense merges: a transposed chunk of at most 1/8 of the budget (plus its top-k temporaries)
    chunk = max(1, budget_bytes // 8 // (4 * q_step))
    max_candidates = max(1, budget_bytes // 4 // _CANDIDATE_BYTES)
    for rows in iter_blocks(n_big, q_step):
        tile = tile_buf[:(rows.stop - rows.start) * n_small].view(-1, n_small)
        torch.matmul(torch.from_numpy(big[rows]), gallery.T, out=tile)
        v, i = _stable_topk(tile, k_big)
        big_v[rows], big_i[rows] = v.numpy(), i.numpy()
        if best[0] is None:
            _dense_column_topk(best, tile, rows.start, k_small, chunk)
            continue
        mask = tile > best[0][:, k_small - 1]
        if int(torch.count_nonzero(mask)) > max_candidates:  # e.g. scores rising with the row id
            del mask
            _dense_column_topk(best, tile, rows.start, k_small, chunk)
        else:
            _merge_candidates(best[0], best[1], tile, rows.start, mask)
    small_top = TopK(best[0].numpy(), best[1].numpy())
    big_top = TopK(big_v, big_i)
    return (small_top, big_top) if swap else (big_top, small_top)


def symmetric_topk_search(x: np.ndarray, k: int, *, budget_bytes: int) -> TopK | None:
    """Top-``k`` of ``x`` for every row of ``x`` (an intra-modal search), from half of ``x @ x.T``.

    Row block ``[i0, i1)`` is scored against rows ``i0..n`` only: the tile's row top-k gives its
    rows' candidates from columns ``>= i0``, and its columns ``>= i1`` receive the block's rows as
    candidates (merged as in :func:`joint_topk_search`), so every pair is scored once. Each row's
    list is the merge of what earlier blocks gave it and its own row top-k: exact, ties by the
    lower id. ``s(i, j)`` and ``s(j, i)`` are the same float32 product of one tile (the full
    search computes both; BLAS sums a dot product's terms in one order, so they agree bit for bit
    in practice). Returns None when fewer than ``k`` rows fit in a tile (the caller searches the
    whole product).
    """
    n = x.shape[0]
    q_step = min(n, budget_bytes // 2 // 4 // n)  # whole rows: the tile takes half the budget
    if q_step < k:
        return None
    table = torch.from_numpy(x)
    tile_buf = torch.empty(q_step * n, dtype=torch.float32)
    best_v = torch.empty(n, k, dtype=torch.float32)
    best_i = torch.empty(n, k, dtype=torch.int64)
    chunk = max(1, budget_bytes // 8 // (4 * q_step))
    max_candidates = max(1, budget_bytes // 4 // _CANDIDATE_BYTES)
    for rows in iter_blocks(n, q_step):
        i0, i1 = rows.start, rows.stop
        tile = tile_buf[:(i1 - i0) * (n - i0)].view(i1 - i0, n - i0)
        torch.matmul(table[i0:i1], table[i0:].T, out=tile)
        v, i = _stable_topk(tile, min(k, n - i0))
        i += i0
        if i0 == 0:
            best_v[rows], best_i[rows] = v, i
        else:  # earlier blocks gave these rows their candidates below i0
            best_v[rows], best_i[rows] = merge_topk(best_v[rows], best_i[rows], v, i, k)
        rest = tile[:, i1 - i0:]
        if rest.shape[1] == 0:
            continue
        later = [best_v[i1:], best_i[i1:]]  # views: merged in place
        if i0 == 0:
            first: list = [None, None]
            _dense_column_topk(first, rest, 0, k, chunk)
            later[0][:], later[1][:] = first
            continue
        mask = rest > later[0][:, k - 1]
        if int(torch.count_nonzero(mask)) > max_candidates:
            del mask
            _dense_column_topk(later, rest, i0, k, chunk)
        else:
            _merge_candidates(later[0], later[1], rest, i0, mask)
    return TopK(best_v.numpy(), best_i.numpy())
