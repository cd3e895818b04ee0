"""Score fusion: combine LeaPRR's scores with the input scores inside each query's list.

Why: the reference (and ``score_fusion="overwrite"``) writes the network's cosines over the
re-scored candidates. Those cosines live on another scale than the input scores, and a network
that ranks worse than the input (too little training data, another domain) then makes the result
worse than the ranking it was given. Here, per list of ``K`` candidates of one query:

1. both score vectors are standardised within the list: ``z(x) = (x - mean(x)) / std(x)``
   (a constant list gives ``z = 0``);
2. they are mixed, ``f = w * z(input) + (1 - w) * z(network)``, with one weight ``w`` per
   direction chosen on the dev side after training (:func:`choose_weights`; the grid contains
   ``w = 1``, the input ranking itself, so the dev RSUM is never below the input's);
3. the list's own input values are handed out again in the order of ``f`` (rank calibration):
   the candidate ranked first by ``f`` gets the list's largest input value, and so on.

Step 3 keeps every entry on the input's scale, so candidates outside the list keep their order
below the list, and ``w = 1`` returns the input values unchanged (bit for bit). The two
directions are then combined as before (mean of the i2t and t2i matrices, spec §6.4).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from pillar_rerank.exceptions import CheckpointError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.sharding import ShardResult, apply_updates

logger = logging.getLogger(__name__)

#: Fusion weights tried per direction (``1.0``: the input ranking; ``0.0``: the network's order).
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DIRECTIONS = ("i2t", "t2i")


def _zscore(x: np.ndarray) -> np.ndarray:
    """Row-wise standardisation in float64; rows with zero spread become zeros."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=1, keepdims=True)
    std = centred.std(axis=1, keepdims=True)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def fuse_lists(base: np.ndarray, network: np.ndarray, weight: float) -> np.ndarray:
    """Fused values of ``n`` lists: the lists' own input values, re-assigned in fused order.

    Parameters
    ----------
    base, network : array of shape (n_lists, K)
        Input scores and the network's scores of each list's candidates.
    weight : float in [0, 1]
        Weight of the input ranking (``1.0`` returns ``base`` unchanged).

    Returns
    -------
    ndarray of shape (n_lists, K), float32
        Per row, a permutation of ``base``'s values following ``w z(base) + (1 - w) z(network)``
        (ties keep the list order).
    """
    base = np.asarray(base, dtype=np.float32)
    if base.shape != np.shape(network) or base.ndim != 2:
        raise ValueError(f"fuse_lists: base {base.shape} and network {np.shape(network)} must be (n, K).")
    if weight >= 1.0 or base.size == 0:
        return base.copy()
    fused = weight * _zscore(base) + (1.0 - weight) * _zscore(network)
    order = np.argsort(-fused, axis=1, kind="stable")
    ranked = -np.sort(-base, axis=1)
    out = np.empty_like(base)
    np.put_along_axis(out, order, ranked, axis=1)
    return out


def _direction_lists(shard: ShardResult, direction: str, base: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(input, network) values of one direction's lists in ``shard``, shaped (n_lists, k)."""
    rows = getattr(shard, f"{direction}_rows").astype(np.int64)
    cols = getattr(shard, f"{direction}_cols").astype(np.int64)
    values = getattr(shard, f"{direction}_values")
    if values.size % k:
        raise ValueError(f"fusion: {values.size} {direction} values are not whole lists of {k} candidates.")
    return np.asarray(base[rows, cols], dtype=np.float32).reshape(-1, k), values.reshape(-1, k)


def fuse_shard(shard: ShardResult, base_i2t: np.ndarray, base_t2i: np.ndarray | None,
               weights: dict[str, float], list_lens: dict[str, int]) -> ShardResult:
    """A copy of ``shard`` whose re-scored values are fused with the input (see module doc).

    ``list_lens`` gives the candidates per list of each direction (``list_len - 1``).
    """
    bases = {"i2t": base_i2t, "t2i": base_i2t if base_t2i is None else base_t2i}
    new = {}
    for d in DIRECTIONS:
        base, net = _direction_lists(shard, d, bases[d], list_lens[d])
        new[f"{d}_values"] = fuse_lists(base, net, float(weights[d])).reshape(-1)
    return dataclasses.replace(shard, **new)


def list_lengths(config: Any) -> dict[str, int]:
    """Candidates per list of each direction from a LeaPRR config (the query node excluded)."""
    return {"i2t": config.list_len_i2t - 1, "t2i": config.list_len_t2i - 1}


def choose_weights(shard: ShardResult | None, dev: RetrievalSet | None, config: Any,
                   grid: tuple[float, ...] = WEIGHT_GRID) -> dict[str, Any]:
    """Pick ``(w_i2t, w_t2i)`` on the dev side by the RSUM of the combined matrix (joint grid).

    ``shard`` holds the network's scores of every dev query (one :class:`ShardResult`). Ties go
    to the larger weights (closer to the input). Without a dev side nothing can be chosen: the
    network's order is used (``w = 0``) on the input's values, and the record says so.

    Returns the record stored with the model: ``{"w_i2t", "w_t2i", "grid", "selected",
    "dev_rsum", "dev_rsum_input", "dev_rsum_network", "dev_rsum_overwrite"}``.
    """
    if shard is None or dev is None:
        logger.warning("score fusion: no dev side, so no weight can be chosen; using the network's order "
                       "(w = 0) on the input's values")
        return {"w_i2t": 0.0, "w_t2i": 0.0, "grid": list(grid), "selected": "no dev side (w = 0)"}
    if 1.0 not in grid:
        raise ValueError("choose_weights: the grid must contain 1.0 (the input ranking).")
    from pillar_rerank.inference import base_matrices

    bases = base_matrices(dev)
    lens = list_lengths(config)
    fused = {w: fuse_shard(shard, *bases, {"i2t": w, "t2i": w}, lens) for w in grid}
    trials = []
    for w_i in grid:
        for w_t in grid:
            mixed = dataclasses.replace(shard, i2t_values=fused[w_i].i2t_values,
                                        t2i_values=fused[w_t].t2i_values)
            rsum = recall_metrics(apply_updates(*bases, [mixed]), dev.relevance)["RSUM"]
            trials.append((rsum, w_i + w_t, w_i, w_t))
    best = max(trials)
    at = {(w_i, w_t): r for r, _, w_i, w_t in trials}
    overwrite = recall_metrics(apply_updates(*bases, [shard]), dev.relevance)["RSUM"]
    record = {
        "w_i2t": float(best[2]), "w_t2i": float(best[3]), "grid": list(grid),
        "selected": f"dev RSUM on {dev.name} ({dev.n_images} x {dev.n_texts})",
        "dev_rsum": round(float(best[0]), 4), "dev_rsum_input": round(float(at[(1.0, 1.0)]), 4),
        "dev_rsum_network": round(float(at[(0.0, 0.0)]), 4), "dev_rsum_overwrite": round(float(overwrite), 4),
    }
    logger.info("score fusion: w_i2t=%.1f w_t2i=%.1f, dev RSUM %.2f (input %.2f, network order %.2f, "
                "overwrite %.2f)", record["w_i2t"], record["w_t2i"], record["dev_rsum"],
                record["dev_rsum_input"], record["dev_rsum_network"], record["dev_rsum_overwrite"])
    return record


def check_record(record: Any, *, source: str) -> dict[str, Any] | None:
    """Validate a fusion record read from a model directory (``None``: overwrite, as saved)."""
    if record is None:
        return None
    ok = isinstance(record, dict) and all(
        isinstance(record.get(f"w_{d}"), (int, float)) and 0.0 <= float(record[f"w_{d}"]) <= 1.0
        for d in DIRECTIONS
    )
    if not ok:
        raise CheckpointError(
            f"{source}: the score-fusion record must hold weights w_i2t and w_t2i in [0, 1]; got {record!r}."
        )
    return record
