"""One entry point for every retrieval metric, with metric names parsed in one place.

Names are ``"{direction}_{measure}"`` with direction ``i2t`` (image queries ranking captions) or
``t2i`` (caption queries ranking images), e.g. ``"i2t_R@5"``, ``"t2i_mAP@R"``, ``"i2t_NDCG@10"``,
plus the direction-free ``"RSUM"``. Each measure is declared once in :data:`MEASURES` (its
parameters, the ground truth it needs, a description and a citation), in the manner of
ir_measures; an unknown name raises an error listing the supported ones.

Values are percentages (0-100) except the median and mean rank (1-based ranks).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pillar_rerank._validation import check_float_matrix
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.metrics.folds import fold_image_blocks
from pillar_rerank.metrics.map_at_r import map_at_r_and_r_precision
from pillar_rerank.metrics.ndcg import ndcg_at_k
from pillar_rerank.metrics.qrels import Qrels
from pillar_rerank.metrics.ranks import _Transposed, best_positive_ranks

logger = logging.getLogger(__name__)

DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class Measure:
    """Declaration of one measure: its name pattern, parameter, ground truth and citation."""

    name: str
    pattern: str
    needs: str  # "relevance", "positives" or "graded"
    description: str
    citation: str
    param: str | None = None
    directional: bool = True


MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("R@K", r"R@(\d+)", "relevance", "Recall@K: % of queries with a positive in the top K "
            "(any of an image's captions for i2t).", "Karpathy & Fei-Fei, CVPR 2015", param="K"),
    Measure("medr", r"medr", "relevance", "Median 1-based rank of the best positive.",
            "Karpathy & Fei-Fei, CVPR 2015"),
    Measure("meanr", r"meanr", "relevance", "Mean 1-based rank of the best positive.",
            "Karpathy & Fei-Fei, CVPR 2015"),
    Measure("mAP@R", r"mAP@R", "positives", "Mean average precision cut at R = number of positives, "
            "over the positive sets (default: the caption -> image map).",
            "Musgrave et al., ECCV 2020; Chun et al., ECCV Caption, ECCV 2022"),
    Measure("R-P", r"R-?P", "positives", "R-Precision: precision at R = number of positives.",
            "Chun et al., ECCV Caption, ECCV 2022"),
    Measure("NDCG@K", r"NDCG@(\d+)", "graded", "NDCG@K with linear graded gains "
            "(default: binary gains from the caption -> image map).",
            "Järvelin & Kekäläinen, TOIS 2002", param="K"),
    Measure("RSUM", r"RSUM", "relevance", "Sum of i2t and t2i R@1, R@5, R@10.",
            "Faghri et al., VSE++, BMVC 2018", directional=False),
)}

DEFAULT_METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "i2t_medr", "i2t_meanr",
                   "t2i_R@1", "t2i_R@5", "t2i_R@10", "t2i_medr", "t2i_meanr", "RSUM")


@dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name."""

    direction: str | None
    measure: str
    k: int | None = None

    @property
    def key(self) -> str:
        m = self.measure.replace("@K", f"@{self.k}") if self.k is not None else self.measure
        return m if self.direction is None else f"{self.direction}_{m}"


def supported_metrics() -> list[str]:
    """Name templates of every supported metric (K a positive int)."""
    out = [f"{d}_{m.name}" for m in MEASURES.values() if m.directional for d in DIRECTIONS]
    return out + [m.name for m in MEASURES.values() if not m.directional]


def parse_metric(name: str) -> MetricSpec:
    """Parse ``"i2t_R@5"``-style names (measure part case-insensitive)."""
    text = name.strip() if isinstance(name, str) else ""
    direction = None
    m = re.fullmatch(r"(i2t|t2i)_(.+)", text, flags=re.IGNORECASE)
    if m:
        direction, text = m.group(1).lower(), m.group(2)
    for measure in MEASURES.values() if text else ():
        hit = re.fullmatch(measure.pattern, text, flags=re.IGNORECASE)
        if hit is None or measure.directional != (direction is not None):
            continue
        k = int(hit.group(1)) if measure.param else None
        if k is not None and k < 1:
            break
        return MetricSpec(direction, measure.name, k)
    raise InvalidParameterError(
        f"metric {name!r} is not supported; supported: {', '.join(supported_metrics())} "
        "(K a positive int, e.g. 'i2t_R@5', 't2i_NDCG@10')."
    )


def _as_direction_map(value, *, what: str) -> dict[str, Qrels]:
    if value is None:
        return {}
    if isinstance(value, Qrels):
        raise InvalidParameterError(f"{what}: give a mapping {{'i2t': Qrels, 't2i': Qrels}}; got one Qrels.")
    if not isinstance(value, Mapping):
        raise InvalidParameterError(
            f"{what}: expected a mapping {{'i2t': Qrels, 't2i': Qrels}}; got {value!r}."
        )
    unknown = set(value) - set(DIRECTIONS)
    if unknown:
        raise InvalidParameterError(f"{what}: unknown direction(s) {sorted(unknown)}; expected 'i2t'/'t2i'.")
    out = {}
    for direction, q in value.items():
        if q is None:
            continue
        if not isinstance(q, Qrels):
            raise InvalidParameterError(f"{what}[{direction!r}]: expected a Qrels; got {type(q).__name__}.")
        out[direction] = q
    return out


def _resolve(data_or_scores, relevance) -> tuple[np.ndarray, np.ndarray, Relevance, RetrievalSet | None]:
    if isinstance(data_or_scores, RetrievalSet):
        data = data_or_scores
        if relevance is not None and not data.relevance.same_as(_as_relevance(relevance, data.n_images)):
            raise InvalidInputError(f"relevance: differs from the ground truth of {data.name}.")
        # A given (possibly memory-mapped) matrix is read in blocks; embeddings are multiplied once.
        i2t = data.scores if data.scores is not None else data.similarity()
        t2i = (data.t2i_scores if data.t2i_scores is not None
               else data.t2i_similarity() if data.normalization is not None else i2t)
        return i2t, t2i, data.relevance, data
    if relevance is None:
        raise InvalidInputError(
            "relevance: a score matrix needs its ground truth (a Relevance or txt_to_img)."
        )
    scores = check_float_matrix(data_or_scores, name="scores")
    rel = _as_relevance(relevance, scores.shape[0])
    check_float_matrix(scores, name="scores", shape=(rel.n_images, rel.n_texts))
    return scores, scores, rel, None


def _as_relevance(relevance, n_images: int) -> Relevance:
    if isinstance(relevance, Relevance):
        return relevance
    return Relevance(np.asarray(relevance), n_images)


def evaluate(
    data_or_scores: RetrievalSet | np.ndarray,
    relevance: Relevance | np.ndarray | None = None,
    metrics: Iterable[str] | None = None,
    *,
    per_query: bool = False,
    positives: Mapping[str, Qrels] | None = None,
    graded: Mapping[str, Qrels] | None = None,
    folds: int | None = None,
    fold_size: int | None = None,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Evaluate image-text retrieval scores.

    Parameters
    ----------
    data_or_scores : RetrievalSet or array-like of shape (n_images, n_texts)
        A retrieval set (its ``scores`` or embedding product, and ``t2i_scores`` for the t2i
        direction when set), or an image x text score matrix (memory maps are read in blocks).
    relevance : Relevance or int array of shape (n_texts,), optional
        Caption -> image ground truth; required with a bare matrix.
    metrics : iterable of str, optional
        Names such as ``"i2t_R@5"``, ``"t2i_mAP@R"``, ``"i2t_NDCG@10"``, ``"RSUM"``. Default:
        R@1/5/10, medr, meanr of both directions and RSUM, plus mAP@R and R-P when ``positives``
        are given and NDCG@10 when ``graded`` is given.
    per_query : bool, default=False
        Return per-query arrays instead of means (R@K as 0/100, ranks 1-based, NaN where a
        query has no judgement); RSUM has no per-query value and is not allowed here.
    positives : mapping {"i2t": Qrels, "t2i": Qrels}, optional
        Extended positive sets (e.g. ECCV Caption) for mAP@R / R-P; a missing direction falls
        back to the caption -> image map.
    graded : mapping {"i2t": Qrels, "t2i": Qrels}, optional
        Graded gains (e.g. CxC ratings) for NDCG@K; a missing direction uses binary gains from
        the map.
    folds, fold_size : int, optional
        Evaluate contiguous, disjoint image blocks (their captions chosen through the map) and
        average every metric over them; e.g. ``folds=5`` on COCO 5K is the COCO 1K protocol.

    Returns
    -------
    dict
        ``{name: float}`` or, with ``per_query``, ``{name: ndarray}`` (concatenated over folds).

    Notes
    -----
    Ties are broken by gallery index (lower first), see :mod:`pillar_rerank.metrics.ranks`.
    Queries without any judged positive are left out of the mAP@R, R-P and NDCG averages.
    """
    i2t_scores, t2i_scores, rel, _ = _resolve(data_or_scores, relevance)
    positives = _as_direction_map(positives, what="positives")
    graded = _as_direction_map(graded, what="graded")
    if metrics is None:
        names = list(DEFAULT_METRICS)
        names += [f"{d}_{m}" for m in ("mAP@R", "R-P") for d in DIRECTIONS if positives]
        names += [f"{d}_NDCG@10" for d in DIRECTIONS if graded]
        if per_query:
            names.remove("RSUM")
    elif isinstance(metrics, str):
        names = [metrics]
    elif isinstance(metrics, Iterable):
        names = list(metrics)
    else:
        raise InvalidParameterError(
            f"metrics: expected a metric name or a list of names (e.g. ['i2t_R@5', 'RSUM']); got {metrics!r}."
        )
    if not names:
        raise InvalidParameterError("metrics: expected at least one metric name.")
    specs = [parse_metric(n) for n in names]
    if per_query and any(s.measure == "RSUM" for s in specs):
        raise InvalidParameterError("metrics: RSUM has no per-query value; drop it or use per_query=False.")
    n_img, n_txt = rel.n_images, rel.n_texts
    for d, q in positives.items():
        q.check_against(*((n_img, n_txt) if d == "i2t" else (n_txt, n_img)), what=f"{d} scores")
    for d, q in graded.items():
        q.check_against(*((n_img, n_txt) if d == "i2t" else (n_txt, n_img)), what=f"{d} scores")

    if folds is None and fold_size is None:
        return _evaluate_once(i2t_scores, t2i_scores, rel, specs, positives, graded, per_query)

    blocks = fold_image_blocks(n_img, n_folds=folds, fold_size=fold_size)
    results = []
    for f, images in enumerate(blocks):
        sub_rel, caps = rel.subset(images)
        sub_i2t = np.asarray(i2t_scores[images.min():images.max() + 1][:, caps])
        sub_t2i = sub_i2t if t2i_scores is i2t_scores else np.asarray(
            t2i_scores[images.min():images.max() + 1][:, caps])
        sub_pos = {d: q.subset(images, caps) if d == "i2t" else q.subset(caps, images)
                   for d, q in positives.items()}
        sub_graded = {d: q.subset(images, caps) if d == "i2t" else q.subset(caps, images)
                      for d, q in graded.items()}
        logger.info("fold %d/%d: %d images x %d captions", f + 1, len(blocks), len(images), len(caps))
        results.append(_evaluate_once(sub_i2t, sub_t2i, sub_rel, specs, sub_pos, sub_graded, per_query,
                                      folded=True))
    if per_query:
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


def _evaluate_once(i2t_scores, t2i_scores, rel: Relevance, specs: list[MetricSpec],
                   positives: dict[str, Qrels], graded: dict[str, Qrels], per_query: bool,
                   folded: bool = False) -> dict:
    for s in specs:
        n_gallery = rel.n_texts if s.direction == "i2t" else rel.n_images
        if s.k is not None and s.k > n_gallery:
            raise InvalidParameterError(
                f"metric {s.key!r}: K must be in [1, n_gallery={n_gallery}] (the {s.direction} gallery"
                f"{' of one fold' if folded else ''}); got {s.k}."
            )
    views = {"i2t": i2t_scores, "t2i": _Transposed(t2i_scores)}
    needed = {(s.direction or d, s.measure) for s in specs
              for d in (DIRECTIONS if s.direction is None else (s.direction,))}
    ranks: dict[str, np.ndarray] = {}
    precision: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for d in DIRECTIONS:
        if needed & {(d, "R@K"), (d, "medr"), (d, "meanr"), (d, "RSUM")}:
            q = Qrels.from_relevance(rel, d) if d == "t2i" else None
            indptr, indices = (rel.indptr, rel.indices) if d == "i2t" else (q.indptr, q.indices)
            ranks[d] = best_positive_ranks(views[d], indptr, indices)
        if needed & {(d, "mAP@R"), (d, "R-P")}:
            qrels = positives.get(d) or Qrels.from_relevance(rel, d)
            precision[d] = map_at_r_and_r_precision(views[d], qrels)

    out: dict = {}
    for s in specs:
        d = s.direction
        if s.measure == "R@K":
            hits = 100.0 * (ranks[d] < s.k)
            out[s.key] = hits if per_query else float(hits.mean())
        elif s.measure == "medr":
            out[s.key] = ranks[d] + 1.0 if per_query else float(np.floor(np.median(ranks[d])) + 1)
        elif s.measure == "meanr":
            out[s.key] = ranks[d] + 1.0 if per_query else float(np.mean(ranks[d]) + 1)
        elif s.measure in ("mAP@R", "R-P"):
            values = 100.0 * precision[d][0 if s.measure == "mAP@R" else 1]
            out[s.key] = values if per_query else _nanmean(values)
        elif s.measure == "NDCG@K":
            qrels = graded.get(d) or Qrels.from_relevance(rel, d)
            values = 100.0 * ndcg_at_k(views[d], qrels, s.k)
            out[s.key] = values if per_query else _nanmean(values)
        elif s.measure == "RSUM":
            out[s.key] = float(sum(100.0 * np.mean(ranks[d] < k) for d in DIRECTIONS for k in (1, 5, 10)))
    return out


def _nanmean(values: np.ndarray) -> float:
    judged = values[~np.isnan(values)]
    return float(judged.mean()) if judged.size else float("nan")
