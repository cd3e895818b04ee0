"""Per-method retrieval diagnostics in a compact, JSON-ready form.

For every method and direction the report needs three things, none of which fits in a recall
table: the recall@K curve, how far the true match moved compared with the base scores, and how
concentrated the top-k lists are on a few gallery items (hubness). :func:`diagnose` computes
them from a score matrix in row blocks; :func:`diagnostics_payload` turns a list of results into
the dict stored in a benchmark JSON and read back by the report.

Directions follow the toolkit's convention: ``scores`` is image x text, i2t ranks its rows
(queries are images, the gallery is the texts) and t2i its columns (``t2i_scores`` when a method
produced one matrix per direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pillar_rerank._validation import check_float_matrix, check_int
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance
from pillar_rerank.metrics.ranks import i2t_ranks, t2i_ranks
from pillar_rerank.utils.blocks import block_rows, iter_blocks

DIRECTIONS = ("i2t", "t2i")
#: Default cut-offs of the recall curve (those above the gallery size are dropped).
CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)
#: Bin edges of the rank change ``rank_before - rank_after`` (positive: the match moved up).
#: These are the inner edges of 11 bins ``[lo, hi)`` (the outer two are open-ended); the middle
#: bin ``[0, 1)`` holds the unchanged queries.
CHANGE_EDGES = (-100, -30, -10, -3, 0, 1, 4, 11, 31, 101)
CHANGE_LABELS = (
    "down >100",
    "down 31-100",
    "down 11-30",
    "down 4-10",
    "down 1-3",
    "unchanged",
    "up 1-3",
    "up 4-10",
    "up 11-30",
    "up 31-100",
    "up >100",
)


@dataclass
class ScoreDiagnostics:
    """Ranks and hub counts of one method's scores, kept in memory until summarised.

    Attributes
    ----------
    name : str
        Method label.
    group : str
        Table group (e.g. ``"base"``, ``"training-free"``, ``"transductive"``, ``"learned"``).
    ranks : dict of str to ndarray
        0-based rank of the true match per query, keyed by direction.
    k_occurrence : dict of str to ndarray
        How often each gallery item appears in the queries' top ``hub_k``, keyed by direction.
    hub_k : int
        The ``k`` of the k-occurrence.
    n_gallery : dict of str to int
        Gallery size per direction.
    """

    name: str
    group: str
    ranks: dict[str, np.ndarray]
    k_occurrence: dict[str, np.ndarray]
    hub_k: int
    n_gallery: dict[str, int] = field(default_factory=dict)


def k_occurrence(
    scores: np.ndarray, k: int, *, by_columns: bool = False, budget_bytes: int = 128 * 2**20
) -> np.ndarray:
    """Count, for every gallery item, the queries that have it in their top ``k``.

    Parameters
    ----------
    scores : array-like of shape (n_images, n_texts)
        Higher is better.
    k : int
        Length of each query's top list.
    by_columns : bool, default=False
        False: queries are rows (gallery = columns). True: queries are columns (gallery = rows).

    Returns
    -------
    counts : ndarray of shape (n_gallery,), int64
        ``N_k`` of each gallery item; the counts sum to ``n_queries * k``.
    """
    n_q = scores.shape[1] if by_columns else scores.shape[0]
    n_g = scores.shape[0] if by_columns else scores.shape[1]
    k = check_int(k, name="hub_k", low=1)
    if k > n_g:
        raise InvalidInputError(f"hub_k: expected at most n_gallery={n_g}; got {k}.")
    counts = np.zeros(n_g, dtype=np.int64)
    for rows in iter_blocks(n_q, block_rows(n_g, bytes_per_item=12, budget_bytes=budget_bytes)):
        block = np.asarray(scores[:, rows]).T if by_columns else np.asarray(scores[rows])
        top = np.argpartition(-block.astype(np.float32, copy=False), k - 1, axis=1)[:, :k]
        counts += np.bincount(top.ravel(), minlength=n_g)
    return counts


def diagnose(
    scores: np.ndarray,
    relevance: Relevance,
    *,
    name: str,
    group: str = "method",
    t2i_scores: np.ndarray | None = None,
    hub_k: int = 10,
) -> ScoreDiagnostics:
    """Ranks of the true match and k-occurrence counts of one method, both directions.

    Parameters
    ----------
    scores : array-like of shape (n_images, n_texts)
        The method's scores (i2t, and t2i unless ``t2i_scores`` is given).
    relevance : Relevance
        Caption -> image ground truth.
    name, group : str
        Labels used in plots and tables.
    t2i_scores : array-like of shape (n_images, n_texts), optional
        Separate matrix for the text -> image direction (ranked per column).
    hub_k : int, default=10
        ``k`` of the k-occurrence used for hubness.

    Returns
    -------
    ScoreDiagnostics
    """
    shape = (relevance.n_images, relevance.n_texts)
    check_float_matrix(scores, name=f"{name} scores", shape=shape)
    t2i = (
        scores
        if t2i_scores is None
        else check_float_matrix(t2i_scores, name=f"{name} t2i scores", shape=shape)
    )
    return ScoreDiagnostics(
        name=name,
        group=group,
        hub_k=int(hub_k),
        ranks={"i2t": i2t_ranks(scores, relevance), "t2i": t2i_ranks(t2i, relevance)},
        k_occurrence={"i2t": k_occurrence(scores, hub_k), "t2i": k_occurrence(t2i, hub_k, by_columns=True)},
        n_gallery={"i2t": relevance.n_texts, "t2i": relevance.n_images},
    )


def skewness(values: np.ndarray) -> float:
    """Sample skewness ``E[(x - mean)^3] / std^3`` (0 for a constant vector)."""
    x = np.asarray(values, dtype=np.float64)
    std = x.std()
    if std == 0:
        return 0.0
    return float(np.mean((x - x.mean()) ** 3) / std**3)


def recall_curve(ranks: np.ndarray, ks: tuple[int, ...]) -> list[float]:
    """Recall@K in percent for each K (0-based ranks)."""
    return [float(100.0 * np.mean(ranks < k)) for k in ks]


def rank_change(before: np.ndarray, after: np.ndarray) -> dict:
    """Histogram of ``before - after`` over :data:`CHANGE_EDGES` plus headline counts."""
    delta = before.astype(np.int64) - after.astype(np.int64)
    bins = np.searchsorted(np.asarray(CHANGE_EDGES), delta, side="right")
    counts = np.bincount(bins, minlength=len(CHANGE_EDGES) + 1)
    return {
        "counts": counts.astype(int).tolist(),
        "improved": int((delta > 0).sum()),
        "unchanged": int((delta == 0).sum()),
        "worsened": int((delta < 0).sum()),
        "into_top1": int(((before > 0) & (after == 0)).sum()),
        "out_of_top1": int(((before == 0) & (after > 0)).sum()),
        "n_queries": int(delta.shape[0]),
    }


def hubness(counts: np.ndarray, k: int) -> dict:
    """Skewness, anti-hub share and hub concentration of a k-occurrence vector."""
    n = counts.shape[0]
    top = max(1, n // 100)
    share_top1pct = float(np.sort(counts)[::-1][:top].sum() / max(1, counts.sum()))
    return {
        "k": int(k),
        "skewness": skewness(counts),
        "max": int(counts.max()),
        "antihub_fraction": float(np.mean(counts == 0)),
        "top1pct_share": share_top1pct,
        "histogram": np.bincount(counts).astype(int).tolist(),
    }


def diagnostics_payload(
    results: list[ScoreDiagnostics],
    *,
    dataset: str,
    base: str | None = "base",
    ks: tuple[int, ...] = CURVE_KS,
) -> dict:
    """The compact dict a benchmark stores and the report plots.

    Parameters
    ----------
    results : list of ScoreDiagnostics
        One per method, all on the same retrieval set.
    dataset : str
        Name shown in titles.
    base : str or None, default="base"
        Name of the method the rank changes are measured against (``None``: no rank changes).
    """
    if not results:
        raise InvalidInputError("diagnostics: expected at least one method; got none.")
    by_name = {r.name: r for r in results}
    if len(by_name) != len(results):
        raise InvalidInputError("diagnostics: method names must be unique.")
    if base is not None and base not in by_name:
        raise InvalidInputError(
            f"diagnostics: base method {base!r} is not among the methods ({', '.join(by_name)})."
        )
    methods = []
    for res in results:
        entry = {"name": res.name, "group": res.group, "directions": {}}
        for d in DIRECTIONS:
            n_g = res.n_gallery.get(d) or int(res.k_occurrence[d].shape[0])
            kk = [k for k in ks if k <= n_g]
            info = {
                "n_gallery": n_g,
                "n_queries": int(res.ranks[d].shape[0]),
                "recall_curve": {"k": kk, "recall": recall_curve(res.ranks[d], tuple(kk))},
                "hubness": hubness(res.k_occurrence[d], res.hub_k),
            }
            if base is not None and res.name != base:
                info["rank_change"] = rank_change(by_name[base].ranks[d], res.ranks[d])
            entry["directions"][d] = info
        methods.append(entry)
    return {"dataset": dataset, "base": base, "change_labels": list(CHANGE_LABELS), "methods": methods}
