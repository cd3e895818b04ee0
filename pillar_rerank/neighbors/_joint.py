"""Both directions of a cross-modal search from one product: ``a @ b.T`` gives a's and b's lists.

The i2t and t2i lists of an embedding pair are the row and the column top-k of the same matrix;
searching them separately computes it twice. :func:`joint_topk_search` computes it once, in tiles
of rows of the larger side against the whole smaller side: each tile's row top-k is final, and
the smaller side's lists are column top-k merged into a running top-k.

The merge is cheap because it is sparse: once every column holds ``k`` entries, an entry of a
later tile can only enter a column's list if it is **strictly** above that column's current
k-th value (an equal one has a higher row id, so the rule, lower id first, keeps the old one).
Those few candidates wait in a per-column buffer of ``k`` slots, merged into the lists (one
batched stable sort) only when a buffer would overflow: nearly every column gets a few
candidates from every tile, and re-sorting all touched lists per tile cost as much as the
products' top-k. A column with more than ``k`` candidates in one tile is merged at once with one
stable sort of composite keys (column, value); a tile whose candidates would not fit the budget
is merged densely. The row top-k and the candidates' comparison read each tile in one pass of
cache-sized row chunks (:func:`_scan_rows`). The buffers take as much memory as the lists. The
result is exactly that of two separate searches with the same ordering rule.
"""

from __future__ import annotations

import numpy as np
import torch

from pillar_rerank.neighbors._topk import TopK, _stable_topk, merge_topk, search_tiles
from pillar_rerank.utils.blocks import iter_blocks

# Bytes per candidate of the sparse merge (coordinates, keys, sort order, gathered lists).
_CANDIDATE_BYTES = 64
# Rows per pass of the fused row top-k and candidate comparison: 64 rows of a 116,000-column
# tile are 30 MB, within the 32 MB L3 cache of the machine this was measured on.
_SCAN_ROWS = 64


def _descending_keys(values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """int64 keys sorting by column ascending, then value descending (floats' bit order)."""
    bits = (values + 0.0).view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # + 0.0: -0.0 -> +0.0
    order = torch.where(bits >= 0x80000000, 0xFFFFFFFF - bits, bits + 0x80000000)
    return (columns << 32) | (0xFFFFFFFF - order)


def _merge_candidates(best_v: torch.Tensor, best_i: torch.Tensor, tile: torch.Tensor, offset: int,
                      rows: torch.Tensor, cols: torch.Tensor) -> None:
    """Merge entries ``(rows, cols)`` of ``tile`` (row-major order) into the column lists, in place."""
    k = best_v.shape[1]
    touched, counts = torch.unique(cols, return_counts=True)
    values = torch.cat([best_v[touched].reshape(-1), tile[rows, cols]])
    ids = torch.cat([best_i[touched].reshape(-1), rows + offset])
    columns = torch.cat([touched.repeat_interleave(k), cols])
    # stable: among equal (column, value), running entries (lower ids) first, then row order
    order = torch.sort(_descending_keys(values, columns), stable=True).indices
    starts = torch.cumsum(counts + k, 0) - (counts + k)
    take = order[starts.unsqueeze(1) + torch.arange(k)]
    best_v[touched], best_i[touched] = values[take], ids[take]


class _ColumnCandidates:
    """Running top-k lists of many columns, fed tile by tile in ascending row (id) order.

    A tile's entries strictly above a column's current k-th value are appended to that column's
    buffer of ``capacity`` slots, and the buffers are merged into the lists (one stable sort per
    column of ``k`` + filled slots) only when one would overflow or when the lists are read. Every
    buffered entry has a higher id than the list's entries and the buffer is in id order, so a
    stable sort by value keeps the rule. Between merges the threshold is the k-th value at the
    last merge, a lower bound of the true one: more candidates, never a missed one.
    """

    def __init__(self, values: torch.Tensor, ids: torch.Tensor, capacity: int) -> None:
        self.values, self.ids = values, ids  # (n, k), merged into in place
        n = values.shape[0]
        self.capacity = capacity
        self.buffer_values = torch.empty(n, capacity, dtype=values.dtype)
        self.buffer_ids = torch.empty(n, capacity, dtype=torch.int64)
        self.fill = torch.zeros(n, dtype=torch.int64)

    def add(self, tile: torch.Tensor, row_offset: int, col_offset: int, rows: torch.Tensor,
            cols: torch.Tensor) -> None:
        """Buffer entries ``(rows, cols)`` of ``tile`` (row-major; column c is list ``col_offset + c``).

        A column with more of them than ``capacity`` (a block of many rows against few seen so
        far) has its buffer merged and these merged straight into its list.
        """
        by_column, order = torch.sort(cols, stable=True)  # ascending row (= id) within each column
        touched, counts = torch.unique_consecutive(by_column, return_counts=True)
        if counts.numel() == 0:
            return
        if int(counts.max()) > self.capacity:
            self.merge(col_offset, col_offset + tile.shape[1])
            lists = slice(col_offset, col_offset + tile.shape[1])
            _merge_candidates(self.values[lists], self.ids[lists], tile, row_offset, rows, cols)
            return
        rows, cols = rows[order], by_column
        lists = touched + col_offset
        if int((self.fill[lists] + counts).max()) > self.capacity:
            self.merge(col_offset, col_offset + tile.shape[1])
        first_slot = self.fill[lists] - (torch.cumsum(counts, 0) - counts)
        slots = torch.arange(cols.numel()) + first_slot.repeat_interleave(counts)
        targets = cols + col_offset
        self.buffer_values[targets, slots] = tile[rows, cols]
        self.buffer_ids[targets, slots] = rows + row_offset
        self.fill[lists] += counts

    def merge(self, start: int, stop: int, chunk: int = 16_384) -> None:
        """Merge the buffers of lists ``start..stop`` into them (in column chunks)."""
        k = self.values.shape[1]
        for lists in iter_blocks(stop - start, chunk):
            lists = slice(start + lists.start, start + lists.stop)
            fill = self.fill[lists]
            filled = int(fill.max()) if fill.numel() else 0
            if filled == 0:
                continue
            values = torch.cat([self.values[lists], self.buffer_values[lists, :filled]], dim=1)
            ids = torch.cat([self.ids[lists], self.buffer_ids[lists, :filled]], dim=1)
            values[:, k:].masked_fill_(torch.arange(filled) >= fill.unsqueeze(1), float("-inf"))
            values, order = values.sort(dim=1, descending=True, stable=True)
            self.values[lists], self.ids[lists] = values[:, :k], ids.gather(1, order[:, :k])
            fill.zero_()


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


def _scan_rows(tile: torch.Tensor, k: int, thresholds: torch.Tensor | None = None, col_start: int = 0,
               max_candidates: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Row top-k of ``tile``, and its entries in columns ``col_start..`` strictly above ``thresholds``.

    Both in one pass over chunks of ``_SCAN_ROWS`` rows: the top-k brings a chunk into cache and
    the comparison reads it there, where a second pass over a tile far larger than the cache
    would cost about as much as the top-k. Returns the top-k values and column ids, and the
    candidates as ``(row, column - col_start)`` pairs in row-major order (ascending row within
    each column); None when there are no thresholds or more than ``max_candidates`` candidates.
    """
    n_rows, width = tile.shape
    values = torch.empty(n_rows, k, dtype=tile.dtype)
    ids = torch.empty(n_rows, k, dtype=torch.int64)
    compare = thresholds is not None and width > col_start
    found: list[torch.Tensor] = []
    count = 0
    if compare:
        flag_buf = torch.empty(min(n_rows, _SCAN_ROWS) * (width - col_start), dtype=torch.bool)
    for rows in iter_blocks(n_rows, _SCAN_ROWS):
        part = tile[rows]
        values[rows], ids[rows] = _stable_topk(part, k)
        if not compare:
            continue
        flags = flag_buf[:(rows.stop - rows.start) * (width - col_start)].view(rows.stop - rows.start, -1)
        torch.gt(part[:, col_start:], thresholds, out=flags)
        hits = flags.nonzero()
        count += hits.shape[0]
        if count > max_candidates:  # e.g. scores rising with the row id: the caller merges densely
            compare, found = False, []
            continue
        hits[:, 0] += rows.start
        found.append(hits)
    candidates = torch.cat(found) if compare else None
    return values, ids, candidates


def _feed_columns(columns: _ColumnCandidates, tile: torch.Tensor, candidates: torch.Tensor | None,
                  row_offset: int, col_offset: int, chunk: int) -> None:
    """Give lists ``col_offset..`` the candidates of ``tile`` (rows from ``row_offset``), or all of it."""
    if candidates is None:
        lists = slice(col_offset, col_offset + tile.shape[1])
        columns.merge(lists.start, lists.stop)
        _dense_column_topk([columns.values[lists], columns.ids[lists]], tile, row_offset,
                           columns.values.shape[1], chunk)
    else:
        columns.add(tile, row_offset, col_offset, *candidates.unbind(1))


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
    # dense merges: a transposed chunk of at most 1/8 of the budget (plus its top-k temporaries)
    chunk = max(1, budget_bytes // 8 // (4 * q_step))
    max_candidates = max(1, budget_bytes // 4 // _CANDIDATE_BYTES)
    columns = None
    for rows in iter_blocks(n_big, q_step):
        tile = tile_buf[:(rows.stop - rows.start) * n_small].view(-1, n_small)
        torch.matmul(torch.from_numpy(big[rows]), gallery.T, out=tile)
        if columns is None:
            v, i, _ = _scan_rows(tile, k_big)
            first: list = [None, None]
            _dense_column_topk(first, tile, rows.start, k_small, chunk)
            columns = _ColumnCandidates(*first, capacity=k_small)
        else:
            v, i, candidates = _scan_rows(tile, k_big, columns.values[:, k_small - 1], 0, max_candidates)
            _feed_columns(columns, tile, candidates, rows.start, 0, chunk)
        big_v[rows], big_i[rows] = v.numpy(), i.numpy()
    columns.merge(0, n_small)
    small_top = TopK(columns.values.numpy(), columns.ids.numpy())
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
    columns = None
    for rows in iter_blocks(n, q_step):
        i0, i1 = rows.start, rows.stop
        tile = tile_buf[:(i1 - i0) * (n - i0)].view(i1 - i0, n - i0)
        torch.matmul(table[i0:i1], table[i0:].T, out=tile)
        thresholds = None if columns is None else columns.values[i1:, k - 1]
        v, i, candidates = _scan_rows(tile, min(k, n - i0), thresholds, i1 - i0, max_candidates)
        i += i0
        if columns is None:
            best_v[rows], best_i[rows] = v, i
        else:  # earlier blocks gave these rows their candidates below i0
            columns.merge(i0, i1)
            best_v[rows], best_i[rows] = merge_topk(best_v[rows], best_i[rows], v, i, k)
        rest = tile[:, i1 - i0:]
        if rest.shape[1] == 0:
            continue
        if columns is None:
            first: list = [None, None]
            _dense_column_topk(first, rest, 0, k, chunk)
            best_v[i1:], best_i[i1:] = first
            columns = _ColumnCandidates(best_v, best_i, capacity=k)
        else:
            _feed_columns(columns, rest, candidates, i0, i1, chunk)
    return TopK(best_v.numpy(), best_i.numpy())
