"""Score fusion: combine LeaPRR's scores with the input scores inside each query's list.

Why: the reference (and ``score_fusion="overwrite"``) writes the network's cosines over the
re-scored candidates. Those cosines live on another scale than the input scores, and a network
that ranks worse than the input (too little training data, another domain) then makes the result
worse than the ranking it was given. Here, per list of ``K`` candidates of one query:

1. both score vectors are standardised within the list: ``z(x) = (x - mean(x)) / std(x)``
   (a constant list gives ``z = 0``);
2. they are mixed, ``f = w * z(input) + (1 - w) * z(network)``;
3. the list's own input values are handed out again in the order of ``f`` (rank calibration):
   the candidate ranked first by ``f`` gets the list's largest input value, and so on.

Step 3 keeps every entry on the input's scale, so candidates outside the list keep their order
below the list, and ``w = 1`` returns the input values unchanged (bit for bit).

The rule of each direction is chosen on the dev side after training (:func:`choose_rules`)
among the weights ``0, 0.1, ..., 1`` and ``"overwrite"`` (the network's cosines written over the
entries, the paper's combination). ``w = 1`` (the input) and the overwrite are both candidates,
so on dev the chosen result is never below either. The rules are chosen separately for the two
outputs of the re-ranker: the mean of the two direction matrices (``"mean"``, spec §6.4, what
``rerank`` returns) and one matrix per direction (``"per_direction"``, ``rerank_both``).

The one-matrix output is itself a candidate for each direction of the per-direction output: the
mean carries the other direction's evidence too (after a normaliser with per-direction
parameters it can rank one direction better than that direction's own matrix). So for each
direction, ``rerank_both`` returns whichever of the two scored higher on that direction's dev
recalls (the record's ``per_direction.source``); on dev the per-direction result is therefore never
below the one-matrix result, direction by direction.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from pillar_rerank.exceptions import CheckpointError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.sharding import ShardResult, apply_updates, direction_matrices

logger = logging.getLogger(__name__)

#: Fusion weights tried per direction (``1.0``: the input ranking; ``0.0``: the network's order).
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
#: The rule that writes the network's cosines over the re-scored entries (the reference's).
OVERWRITE = "overwrite"
DIRECTIONS = ("i2t", "t2i")
#: The re-ranker's two outputs: the mean of the direction matrices, or one matrix per direction.
OUTPUTS = ("mean", "per_direction")
RECORD_FORMAT = 3
#: Where a direction's matrix of the per-direction output comes from.
SOURCES = ("per_direction", "mean")

Rule = float | str


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
               rules: dict[str, Rule], list_lens: dict[str, int]) -> ShardResult:
    """A copy of ``shard`` whose re-scored values follow each direction's rule (see module doc).

    ``rules`` maps each direction to a weight in [0, 1] or :data:`OVERWRITE` (values kept as
    they are); ``list_lens`` gives the candidates per list of each direction (``list_len - 1``).
    """
    bases = {"i2t": base_i2t, "t2i": base_i2t if base_t2i is None else base_t2i}
    new = {}
    for d in DIRECTIONS:
        if rules[d] == OVERWRITE:
            continue
        base, net = _direction_lists(shard, d, bases[d], list_lens[d])
        new[f"{d}_values"] = fuse_lists(base, net, float(rules[d])).reshape(-1)
    return dataclasses.replace(shard, **new)


def list_lengths(config: Any) -> dict[str, int]:
    """Candidates per list of each direction from a LeaPRR config (the query node excluded)."""
    return {"i2t": config.list_len_i2t - 1, "t2i": config.list_len_t2i - 1}


def combine(shards: list[ShardResult], base_i2t: np.ndarray, base_t2i: np.ndarray | None, output: str,
            *, fp16: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The re-ranker's ``output`` from the bases and the shards' (already fused) values:
    ``"mean"`` one matrix (spec §6.4), ``"per_direction"`` ``(i2t, t2i)``."""
    if output == "mean":
        return apply_updates(base_i2t, base_t2i, shards, fp16=fp16)
    return direction_matrices(base_i2t, base_t2i, shards, fp16=fp16)


def output_of(shards: list[ShardResult], base_i2t: np.ndarray, base_t2i: np.ndarray | None,
              record: dict[str, Any] | None, output: str, list_lens: dict[str, int], *, fp16: bool = False
              ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The re-ranker's ``output`` from the shards' raw network scores under a fusion record.

    ``record`` ``None`` is the overwrite. For ``"per_direction"``, a direction whose recorded
    ``source`` is ``"mean"`` gets the one-matrix output (under the record's ``mean`` rules).
    """
    sources = sources_of(record) if output == "per_direction" else {}
    from_mean = [d for d in DIRECTIONS if sources.get(d) == "mean"]
    mean = (output_of(shards, base_i2t, base_t2i, record, "mean", list_lens, fp16=fp16)
            if from_mean else None)
    if len(from_mean) == len(DIRECTIONS):
        return mean, mean.copy()
    rules = rules_of(record, output)
    fused = shards if rules is None else [fuse_shard(s, base_i2t, base_t2i, rules, list_lens) for s in shards]
    result = combine(fused, base_i2t, base_t2i, output, fp16=fp16)
    if mean is not None:
        result = tuple(mean if d in from_mean else m for d, m in zip(DIRECTIONS, result))
    return result


def sources_of(record: dict[str, Any] | None) -> dict[str, str]:
    """Per direction, where the per-direction output's matrix comes from (records before
    format 3 and the overwrite: its own direction matrix)."""
    chosen = (record or {}).get("per_direction", {}).get("source") or {}
    return {d: chosen.get(d, "per_direction") for d in DIRECTIONS}


def _preference(rule: Rule) -> float:
    """Tie-break among rules of equal dev RSUM: the input first, then closer to it, overwrite last."""
    return -1.0 if rule == OVERWRITE else float(rule)


def choose_rules(shard: ShardResult | None, dev: RetrievalSet | None, config: Any,
                 grid: tuple[float, ...] = WEIGHT_GRID) -> dict[str, Any]:
    """Pick each direction's rule on the dev side, for both outputs, by dev RSUM.

    ``shard`` holds the network's scores of every dev query (one :class:`ShardResult`), ``dev``
    the (normalised) dev side. For the ``"mean"`` output the two directions' rules are chosen
    jointly (each direction's matrix enters both directions' rankings); for ``"per_direction"``
    each direction by its own three recalls. Ties go to the rule closer to the input. Without a
    dev side nothing can be chosen: the overwrite (the paper's) is kept, and the record says so.

    Returns the record stored with the model: ``{"format", "grid", "selected", "mean": {...},
    "per_direction": {...}}``; each output holds ``i2t`` and ``t2i`` (a weight or
    ``"overwrite"``), ``dev_rsum`` of the choice and ``dev_rsum_input``, ``dev_rsum_overwrite``,
    ``dev_rsum_network`` (w = 0) for comparison. ``per_direction`` also holds ``source``: per
    direction, ``"mean"`` where the one-matrix output (under its chosen rules) has the higher
    recall sum of that direction on dev, else ``"per_direction"`` (ties: its own matrix), and
    ``dev_rsum_own``, the per-direction RSUM without that choice.
    """
    record: dict[str, Any] = {"format": RECORD_FORMAT, "grid": list(grid)}
    if shard is None or dev is None:
        logger.warning("score fusion: no dev side, so no rule can be chosen; keeping the overwrite")
        record["selected"] = "no dev side (overwrite)"
        for output in OUTPUTS:
            record[output] = {d: OVERWRITE for d in DIRECTIONS}
        return record
    if 1.0 not in grid:
        raise ValueError("choose_rules: the grid must contain 1.0 (the input ranking).")
    from pillar_rerank.inference import base_matrices

    bases = base_matrices(dev)
    lens = list_lengths(config)
    rules: list[Rule] = [*grid, OVERWRITE]
    fused = {r: fuse_shard(shard, *bases, {"i2t": r, "t2i": r}, lens) for r in rules}

    def mixed(r_i2t: Rule, r_t2i: Rule) -> ShardResult:
        return dataclasses.replace(shard, i2t_values=fused[r_i2t].i2t_values,
                                   t2i_values=fused[r_t2i].t2i_values)

    # per direction: each direction's recalls on its own matrix, independent of the other's rule
    halves = {}
    for r in rules:
        i2t, t2i = combine([fused[r]], *bases, "per_direction")
        m = recall_metrics(i2t, dev.relevance, t2i_scores=t2i)
        halves[r] = _halves(m)
    best = {d: max(rules, key=lambda r, d=d: (halves[r][d], _preference(r))) for d in DIRECTIONS}
    record["per_direction"] = {
        **best, "dev_rsum": _round(halves[best["i2t"]]["i2t"] + halves[best["t2i"]]["t2i"]),
        **{f"dev_rsum_{name}": _round(sum(halves[r].values()))
           for name, r in (("input", 1.0), ("overwrite", OVERWRITE), ("network", 0.0))},
    }
    # mean: the joint grid over both directions' rules
    joint = {(a, b): recall_metrics(combine([mixed(a, b)], *bases, "mean"), dev.relevance)["RSUM"]
             for a in rules for b in rules}
    a, b = max(joint, key=lambda ab: (joint[ab], _preference(ab[0]) + _preference(ab[1])))
    record["mean"] = {
        "i2t": a, "t2i": b, "dev_rsum": _round(joint[(a, b)]),
        **{f"dev_rsum_{name}": _round(joint[(r, r)])
           for name, r in (("input", 1.0), ("overwrite", OVERWRITE), ("network", 0.0))},
    }
    # the per-direction output: per direction, its own matrix or the one-matrix output's
    mean_halves = _halves(recall_metrics(combine([mixed(a, b)], *bases, "mean"), dev.relevance))
    own = {d: halves[best[d]][d] for d in DIRECTIONS}
    source = {d: "mean" if mean_halves[d] > own[d] else "per_direction" for d in DIRECTIONS}
    record["per_direction"].update(
        source=source, dev_rsum_own=record["per_direction"]["dev_rsum"],
        dev_rsum=_round(sum(mean_halves[d] if source[d] == "mean" else own[d] for d in DIRECTIONS)))
    record["selected"] = f"dev RSUM on {dev.name} ({dev.n_images} x {dev.n_texts})"
    logger.info("score fusion (per-direction output): i2t matrix from the %s output, t2i from the %s",
                *(source[d].replace("_", "-") for d in DIRECTIONS))
    for output in OUTPUTS:
        o = record[output]
        logger.info("score fusion (%s output): i2t %s, t2i %s; dev RSUM %.2f (input %.2f, overwrite %.2f, "
                    "network order %.2f)", output, o["i2t"], o["t2i"], o["dev_rsum"], o["dev_rsum_input"],
                    o["dev_rsum_overwrite"], o["dev_rsum_network"])
    return record


def _halves(metrics: dict[str, float]) -> dict[str, float]:
    """Each direction's recall sum (its share of the RSUM)."""
    return {d: sum(v for k, v in metrics.items() if k.startswith(f"{d}_R@")) for d in DIRECTIONS}


def _round(x: float) -> float:
    return round(float(x), 4)


def _valid_rule(rule: Any) -> bool:
    return rule == OVERWRITE or (isinstance(rule, (int, float)) and not isinstance(rule, bool)
                                 and 0.0 <= float(rule) <= 1.0)


def check_record(record: Any, *, source: str) -> dict[str, Any] | None:
    """Validate a fusion record read from a model directory (``None``: overwrite, as saved).

    A record of the first format (``w_i2t``/``w_t2i``, one weight per direction for the mean
    output, no overwrite candidate) is read as the same weights for both outputs.
    """
    if record is None:
        return None
    if isinstance(record, dict) and "format" not in record and "w_i2t" in record:
        rules = {d: record.get(f"w_{d}") for d in DIRECTIONS}
        record = {**record, "format": 1, **{o: dict(rules) for o in OUTPUTS}}
    ok = isinstance(record, dict) and all(
        isinstance(record.get(o), dict) and all(_valid_rule(record[o].get(d)) for d in DIRECTIONS)
        for o in OUTPUTS
    )
    taken = record["per_direction"].get("source") if ok else None
    ok = ok and (taken is None or (isinstance(taken, dict)
                                   and all(taken.get(d) in SOURCES for d in DIRECTIONS)))
    if not ok:
        raise CheckpointError(
            f"{source}: the score-fusion record must hold, for the outputs 'mean' and 'per_direction', "
            f"a rule per direction (i2t, t2i): a weight in [0, 1] or 'overwrite' (and optionally "
            f"per_direction.source: 'per_direction' or 'mean' per direction); got {record!r}."
        )
    return record


def describe_record(record: dict[str, Any]) -> str:
    """One line per output: the chosen rules and the dev RSUMs behind them (for the CLI)."""
    lines = []
    from_mean = [d for d, src in sources_of(record).items() if src == "mean"]
    for output, what in (("mean", "one matrix (rerank, .npy)"), ("per_direction", "per direction (.npz)")):
        o = record[output]
        dev = (f"; dev RSUM {o['dev_rsum']:.2f} (input {o['dev_rsum_input']:.2f}, overwrite "
               f"{o['dev_rsum_overwrite']:.2f})" if "dev_rsum" in o else "")
        taken = ("; " + ", ".join(f"{d} from the one-matrix output" for d in from_mean)
                 if output == "per_direction" and from_mean else "")
        lines.append(f"score fusion, {what}: i2t {o['i2t']}, t2i {o['t2i']}{taken}{dev}")
    return "\n".join(lines) + f"\n  ({record.get('selected', 'chosen on dev')})"


def rules_of(record: dict[str, Any] | None, output: str) -> dict[str, Rule] | None:
    """The per-direction rules of ``output`` in a (checked) record; ``None``: overwrite both."""
    if record is None:
        return None
    return {d: record[output][d] for d in DIRECTIONS}
