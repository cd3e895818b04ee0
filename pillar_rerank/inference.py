"""LeaPRR inference: re-score every query's candidates with the fitted networks, in bounded blocks.

One body serves both directions; a :class:`Direction` says which lists to read, which network
scores them and whether the (query, candidate) pairs are (row, column) entries of the image x
text matrix (i2t) or (column, row) ones (t2i). The re-scored entries are returned as sparse
updates (the fields of a :class:`~pillar_rerank.sharding.ShardResult`) and combined with the base
matrices by :func:`scores_with_updates` (spec §6.4: the mean of the two re-scored matrices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.lists.contract import ListSource
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.sharding import ShardResult, apply_updates
from pillar_rerank.utils.device import autocast
from pillar_rerank.utils.progress import progress

#: Nodes per forward pass at inference (bounds activation memory, not results).
INFERENCE_NODES = 16384


@dataclass(frozen=True)
class Direction:
    """One query direction: its name, list reader, network attribute and list-length field."""

    name: str            # "i2t" or "t2i": prefix of the ShardResult fields
    lists: str           # ListSource method returning this direction's lists
    network: str         # attribute of MutualRerankNetwork scoring them
    list_len: str        # config.lists field: nodes per list (query included)
    query_is_row: bool   # image queries are rows of the image x text matrix, text queries columns


DIRECTIONS = (Direction("i2t", "image_lists", "i2t", "list_len_i2t", True),
              Direction("t2i", "text_lists", "t2i", "list_len_t2i", False))


def rescore(src: ListSource, model: MutualRerankNetwork, ids: dict[str, torch.Tensor], *, lists,
            precision: str, device: torch.device, show_progress: bool = False) -> dict[str, np.ndarray]:
    """New scores of every candidate of the queries ``ids`` (``{"i2t": image ids, "t2i": text ids}``).

    ``show_progress``: a progress bar per direction on stderr (on a terminal only).

    Returns the six ``{d}_rows``, ``{d}_cols``, ``{d}_values`` arrays of a ShardResult: int64
    image/text ids and float32 cosines of the re-scored (image, text) entries per direction.
    """
    out: dict[str, np.ndarray] = {}
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        for d in DIRECTIONS:
            read, net = getattr(src, d.lists), getattr(model, d.network)
            queries = ids[d.name]
            block = max(1, INFERENCE_NODES // getattr(lists, d.list_len))
            rows, cols, values = [], [], []
            starts = range(0, queries.shape[0], block)
            for s in progress(starts, desc=f"re-ranking ({d.name})", disable=not show_progress,
                              unit="block"):
                batch = read(queries[s:s + block]).to(device)
                new = net.score_lists(batch)[:, 1:].float().cpu()
                cand = batch.candidates.cpu()
                query = batch.query_ids.cpu()[:, None].expand_as(cand).reshape(-1)
                row, col = (query, cand.reshape(-1)) if d.query_is_row else (cand.reshape(-1), query)
                rows.append(row)
                cols.append(col)
                values.append(new.reshape(-1))
            out[f"{d.name}_rows"] = torch.cat(rows).numpy() if rows else np.zeros(0, dtype=np.int64)
            out[f"{d.name}_cols"] = torch.cat(cols).numpy() if cols else np.zeros(0, dtype=np.int64)
            out[f"{d.name}_values"] = torch.cat(values).numpy() if values else np.zeros(0, dtype=np.float32)
    return out


def base_matrices(data: RetrievalSet) -> tuple[np.ndarray, np.ndarray | None]:
    """The i2t base matrix and the t2i one (``None`` when both directions share it)."""
    i2t = data.similarity()
    separate = data.t2i_scores is not None or data.normalization is not None
    return i2t, data.t2i_similarity() if separate else None


def scores_with_updates(data: RetrievalSet, shards: list[ShardResult], *, fp16: bool = False) -> np.ndarray:
    """``data``'s image x text matrix with the shards' re-scored entries (mean of both directions);
    ``fp16`` reproduces the reference's float16 score matrices (``LeaPRRConfig.reference_fp16``)."""
    return apply_updates(*base_matrices(data), shards, fp16=fp16)


def base_scores(data: RetrievalSet) -> np.ndarray:
    """What the pipeline returns with nothing re-scored: the mean of the two base matrices."""
    empty = {f"{d.name}_{k}": np.zeros(0, dtype=np.float32 if k == "values" else np.int64)
             for d in DIRECTIONS for k in ("rows", "cols", "values")}
    return scores_with_updates(data, [ShardResult(0, 1, data.n_images, data.n_texts, "", **empty)])


def rerank_all(data: RetrievalSet, src: ListSource, model: MutualRerankNetwork, *, lists, precision: str,
               device: torch.device) -> np.ndarray:
    """Every query of ``data`` re-ranked: the full re-scored matrix (used for dev validation)."""
    ids = {"i2t": torch.arange(data.n_images), "t2i": torch.arange(data.n_texts)}
    upd = rescore(src, model, ids, lists=lists, precision=precision, device=device)
    return scores_with_updates(data, [ShardResult(0, 1, data.n_images, data.n_texts, "", **upd)])


__all__ = ["DIRECTIONS", "INFERENCE_NODES", "Direction", "base_matrices", "base_scores", "rerank_all",
           "rescore",
           "scores_with_updates"]
