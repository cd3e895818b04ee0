"""Live re-ranking: a searcher built once over a gallery, then queried many times.

:class:`RerankingSearcher` serves ``search(query_embeddings, k) -> (scores, ids)`` for queries
that arrive one or a few at a time, re-ranked by a fitted LeaPRR model (optionally behind the
model's own training-free normaliser), by a training-free gallery-bias normaliser alone (NNN,
CSLS, DN, inverted softmax), or by nothing (the base FAISS search). Everything that does not
depend on the query is computed in :meth:`RerankingSearcher.fit`: the FAISS indexes, the
gallery's intra-modal neighbours, the gallery's neighbours among the reference set, the
normaliser's gallery bias and, on request, the gallery items' own re-ranked lists.

Semantics (spec ``leaprr.md`` §5-§6.4, applied to one new query ``q`` of modality A over a
gallery of modality B, with a reference set R of modality A):

* ``q``'s intra-modal list is ``q`` itself at rank 0, then its nearest reference items;
  ``q``'s candidates are its top gallery items; the candidates' lists (their top-C reference
  items and top-C gallery items) are those of the gallery over R, built once.
* A new query is in no gallery item's list (the gallery side is frozen at build time), so the
  other direction's half of LeaPRR's final mean (§6.4) keeps its base score for ``q``.
* ``reference_ids`` says that a query *is* reference row ``j``: ``j`` is then excluded from its
  neighbours (as a test query is not its own neighbour in the batch path) and, when the
  searcher was built with ``reference_lists=True``, the gallery items whose lists contain ``j``
  give it their re-scored values. With R and the gallery equal to a test set's texts and
  images (or images and texts), the result equals ``PillarReranker.rerank(test)``'s ranking.

Longer than the ~400 lines aimed at: one estimator whose build, search, save and load share the same
private tables (indexes, frozen gallery lists, overwrite lists); split, each part would reach into
the others' state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pillar_rerank._validation import check_float_matrix, check_k
from pillar_rerank.exceptions import CheckpointError, InvalidInputError, InvalidParameterError
from pillar_rerank.neighbors import PairScores, merge_topk, topk_search
from pillar_rerank.neighbors._ann import build_index, check_index, search_index, to_gpu
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES, block_rows, iter_blocks
from pillar_rerank.utils.device import autocast, resolve_device

logger = logging.getLogger(__name__)

SEARCHER_FORMAT_VERSION = 1
#: direction -> (query modality, gallery modality)
DIRECTIONS = {"t2i": ("text", "image"), "i2t": ("image", "text")}
#: Normalisers whose correction h(g) depends on gallery item g's own bank column only, so that
#: a new query's correction is computed without the other queries (transductive ones are not).
SEPARABLE_NORMALIZERS = ("nnn", "csls", "dn", "inverted_softmax")
#: Nodes per forward pass (bounds activation memory, not results); as in PillarReranker.
INFERENCE_NODES = 16384


# --------------------------------------------------------------------------- building blocks
def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def _augment(x: np.ndarray, last: np.ndarray | float) -> np.ndarray:
    """``[x, last]``: an inner product ``[q, 1] . [g, -h]`` is ``q . g - h`` (exact MIPS of s - h)."""
    col = np.broadcast_to(np.asarray(last, dtype=np.float32), (x.shape[0],))[:, None]
    return np.ascontiguousarray(np.concatenate([x, col], axis=1), dtype=np.float32)


class _Index:
    """A persistent FAISS inner-product index (exact, IVF or HNSW; CPU, or GPU when available).

    Results are ordered as everywhere in ``pillar_rerank.neighbors``: descending score, ties by
    the lower id; rows an approximate index cannot fill are searched exactly.
    """

    def __init__(self, table: np.ndarray, index: str, params: dict, device: torch.device,
                 budget_bytes: int) -> None:
        import faiss

        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.kind, self.params, self.budget = index, params, budget_bytes
        self.on_gpu = device.type == "cuda" and faiss.get_num_gpus() > 0
        if index == "flat" and not self.on_gpu:
            self.faiss = None  # exact CPU search runs through topk_search, as in the batch path
            return
        if index == "flat":
            cpu = faiss.IndexFlatIP(self.table.shape[1])
            cpu.add(self.table)
        else:
            cpu = build_index(self.table, index, params)
        self.faiss = cpu
        if self.on_gpu:
            self._res = faiss.StandardGpuResources()
            if index == "flat":
                self.faiss = faiss.index_cpu_to_gpu(self._res, device.index or 0, cpu)
            else:
                self.faiss = to_gpu(cpu, index, params, self._res, device.index or 0)

    def search(self, x: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.faiss is None:
            # exact search on the CPU: the batch path's own routine, so near-ties resolve alike
            top = topk_search(x, self.table, k, budget_bytes=self.budget, device="cpu")
            return torch.as_tensor(top.values), torch.as_tensor(top.ids)
        values, ids = search_index(self.faiss, np.ascontiguousarray(x, dtype=np.float32), k, self.kind,
                                   self.params, budget_bytes=self.budget)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:
            top = topk_search(x[short], self.table, k, budget_bytes=self.budget, device="cpu")
            values[short], ids[short] = top.values, top.ids
        v, i = torch.from_numpy(values), torch.from_numpy(ids)
        return merge_topk(v, i, v[:, :0], i[:, :0], k)


class _CrossScores:
    """φ of (candidate, pillar) pairs from embeddings: ``(c . p - bias[c]) / scale``.

    Plays the role of the ``phi_ba`` :class:`~pillar_rerank.neighbors.PairScores` of a list
    builder side. Pillar ids index a *population*: ids below ``n_table`` are rows of ``table``,
    the others rows of ``extra`` (the queries of one search call).
    """

    def __init__(self, candidates: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None,
                 scale: float, extra: torch.Tensor | None = None) -> None:
        self.candidates, self.table, self.bias, self.scale, self.extra = candidates, table, bias, scale, extra

    def _pillars(self, cols: torch.Tensor) -> torch.Tensor:
        n = self.table.shape[0]
        out = self.table[cols.clamp(max=n - 1)]
        if self.extra is not None:
            own = cols >= n
            if bool(own.any()):
                out[own] = self.extra[cols[own] - n]
        return out

    def block(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        out = torch.bmm(self.candidates[rows], self._pillars(cols).transpose(1, 2))
        if self.bias is not None:
            out -= self.bias[rows].unsqueeze(2)
        if self.scale != 1.0:
            out /= self.scale
        return out


def _self_first(self_ids: torch.Tensor, self_values: torch.Tensor, exclude: torch.Tensor,
                ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[self, first depth-1 others]`` of each row, ``exclude[i]`` (a reference id or -1) removed.

    The batch path's rule (``force_self_first``) for a query that is, or is not, in the set.
    """
    depth = ids.shape[1]
    drop = ids == exclude.unsqueeze(1)
    order = drop.to(torch.int8).argsort(dim=1, stable=True)
    rest_ids, rest_vals = ids.gather(1, order)[:, :depth - 1], values.gather(1, order)[:, :depth - 1]
    return (torch.cat([self_ids.unsqueeze(1), rest_ids], 1),
            torch.cat([self_values.unsqueeze(1), rest_vals], 1))


def _largest_abs(a: np.ndarray, b: np.ndarray, bias_b: np.ndarray | None, bias_a: np.ndarray | None,
                 budget_bytes: int) -> float:
    """``max |a . b - bias|`` over both normalised directions (the batch path's rescaling constant)."""
    largest = 0.0
    bt = torch.from_numpy(b)
    hb = None if bias_b is None else torch.from_numpy(bias_b)
    ha = None if bias_a is None else torch.from_numpy(bias_a)
    for rows in iter_blocks(a.shape[0], block_rows(b.shape[0], budget_bytes=budget_bytes)):
        s = torch.from_numpy(a[rows]) @ bt.T
        for m in (s if hb is None else s - hb, s if ha is None else s - ha[rows].unsqueeze(1)):
            largest = max(largest, float(m.max()), -float(m.min()))
    return largest


def _bias(method: Any, bank: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """A fresh clone of ``method`` fitted on ``bank x gallery``: its correction, float32."""
    from pillar_rerank.baselines import EmbeddingScores

    fitted = method.clone().fit(bank=EmbeddingScores(bank, gallery, name="searcher bank"))
    return np.asarray(fitted.bias_, dtype=np.float32)


def _check_normalizer(method: Any, owner: str) -> Any:
    from pillar_rerank.baselines import baseline_name, get_baseline

    if isinstance(method, str):
        method = get_baseline(method)
    name = baseline_name(method)
    if name not in SEPARABLE_NORMALIZERS:
        raise InvalidParameterError(
            f"{owner}: normaliser {name!r} cannot serve live queries (its correction of a gallery item "
            f"depends on other queries or on the whole gallery jointly); use one of "
            f"{', '.join(SEPARABLE_NORMALIZERS)}.")
    return method


# --------------------------------------------------------------------------- the searcher
class RerankingSearcher:
    """Re-ranked top-k search over a fixed gallery, built once, queried many times.

    Parameters
    ----------
    reranker : PillarReranker, optional
        A fitted LeaPRR model. With ``config.normalize`` set (a separable normaliser), its
        normaliser runs in front, with the model's stored bank, exactly as in its ``rerank``.
    normalizer : str or GalleryBias, optional
        A training-free normaliser used alone (no ``reranker``): its bank is the reference set.
    direction : {"t2i", "i2t"}, default="t2i"
        "t2i": text queries over an image gallery (reference = texts); "i2t": the reverse.
    index : {"flat", "ivf", "hnsw"}, default="flat"
        FAISS index of every search, at build and query time ("flat" is exact).
    index_params : dict, optional
        Parameters of the approximate index (see :func:`~pillar_rerank.neighbors.topk_search`).
    device : str, optional
        Device of the FAISS indexes (None: CPU). The model stays where it was loaded.
    reference_lists : bool, default=False
        Also re-rank every gallery item's own list over the reference set at build time, so that
        queries given with ``reference_ids`` get the other direction's half of LeaPRR's mean
        (needed for equality with the batch path; a new query never uses it).
    block_bytes : int, default=256 MiB
        Working memory per block of the build-time searches.

    Attributes
    ----------
    n_gallery_, n_reference_, dim_ : int
    scale_ : float
        Divisor of normalised scores (1 unless the normaliser's scores exceed 1 in magnitude on
        reference x gallery; the batch path's ``_on_cosine_scale``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> gallery, reference = rng.normal(size=(50, 8)), rng.normal(size=(80, 8))
    >>> s = RerankingSearcher(normalizer="csls").fit(gallery, reference)
    >>> scores, ids = s.search(rng.normal(size=(3, 8)), k=5)
    >>> ids.shape
    (3, 5)
    """

    def __init__(self, reranker: Any = None, *, normalizer: Any = None, direction: str = "t2i",
                 index: str = "flat", index_params: dict | None = None, device: str | None = None,
                 reference_lists: bool = False, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        self.reranker = reranker
        self.normalizer = normalizer
        self.direction = direction
        self.index = index
        self.index_params = index_params
        self.device = device
        self.reference_lists = reference_lists
        self.block_bytes = block_bytes

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        if self.direction not in DIRECTIONS:
            raise InvalidParameterError(
                f"RerankingSearcher: direction must be 't2i' or 'i2t'; got {self.direction!r}.")
        if self.reranker is not None:
            if not hasattr(self.reranker, "model_"):
                raise InvalidParameterError("RerankingSearcher: the reranker is not fitted; call fit or "
                                            "PillarReranker.load first.")
            if self.normalizer is not None:
                raise InvalidParameterError(
                    "RerankingSearcher: give the normaliser in front of LeaPRR in the model's config "
                    "(LeaPRRConfig.normalize, fitted with it), not as normalizer=.")
        self._params = check_index(self.index, self.index_params, owner="RerankingSearcher")

    def _embeddings(self, x: Any, name: str, dim: int | None = None) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        arr = check_float_matrix(x, name=name)
        if dim is not None and arr.shape[1] != dim:
            raise InvalidInputError(
                f"{name}: dimension {arr.shape[1]}, but the gallery has dimension {dim}; give embeddings "
                "of the same backbone as the gallery.")
        if arr.shape[0] == 0:
            raise InvalidInputError(f"{name}: empty (0 rows); give at least one embedding.")
        return np.ascontiguousarray(arr, dtype=np.float32)

    # ------------------------------------------------------------------ fit
    def fit(self, gallery: Any, reference: Any) -> RerankingSearcher:
        """Build everything that does not depend on the queries; returns self.

        Parameters
        ----------
        gallery : array-like of shape (n_gallery, d)
            Embeddings of the gallery modality (images for "t2i").
        reference : array-like of shape (n_reference, d)
            Embeddings of the query modality: new queries' intra-modal neighbours (pillars) and
            the normaliser's bank when it is used alone.
        """
        self._check_params()
        g = self._embeddings(gallery, "gallery embeddings")
        r = self._embeddings(reference, "reference embeddings", g.shape[1])
        self.gallery_, self.reference_ = g, r
        self.n_gallery_, self.n_reference_, self.dim_ = g.shape[0], r.shape[0], g.shape[1]
        self.scale_ = 1.0
        self.gallery_bias_ = self.reference_bias_ = None
        self.bank_ = None
        self.methods_ = None
        if self.reranker is not None:
            self._fit_model_side()
        elif self.normalizer is not None:
            method = _check_normalizer(self.normalizer, "RerankingSearcher")
            self.methods_ = {"query": method}
            self.gallery_bias_ = _bias(method, r, g)
        self._build_indexes()
        if self.reranker is not None:
            self._build_gallery_lists()
        return self

    def _fit_model_side(self) -> None:
        from pillar_rerank.baselines.compose import normalizer_pair

        cfg = self.reranker.config_
        if getattr(self.reranker, "fusion_", None) is not None:
            raise InvalidParameterError(
                "RerankingSearcher: the model fuses its scores with the input's (score_fusion='zscore'); "
                "live search serves score_fusion='overwrite' models (the default).")
        self.config_ = cfg
        self.network_ = self.reranker.model_
        q_mod, g_mod = DIRECTIONS[self.direction]
        k_query = (cfg.list_len_t2i if self.direction == "t2i" else cfg.list_len_i2t) - 1
        k_gallery = (cfg.list_len_i2t if self.direction == "t2i" else cfg.list_len_t2i) - 1
        owner = f"RerankingSearcher ({self.n_gallery_} gallery x {self.n_reference_} reference items)"
        check_k(k_query, n_gallery=self.n_gallery_, name=f"list length - 1 of {q_mod} queries", owner=owner)
        smaller = min(self.n_gallery_, self.n_reference_)
        check_k(cfg.n_pillars, n_gallery=smaller, name="n_pillars", owner=owner)
        check_k(cfg.graph_neighbors, n_gallery=smaller, name="graph_neighbors", owner=owner)
        if self.reference_lists:
            check_k(k_gallery, n_gallery=self.n_reference_, name=f"list length - 1 of {g_mod} queries",
                    owner=owner)
        if cfg.intra_source not in ("auto", "embeddings"):
            raise InvalidParameterError(
                f"RerankingSearcher: the model uses intra_source={cfg.intra_source!r}; live queries have "
                "embeddings only, so the model must use 'embeddings' (or 'auto').")
        if cfg.normalize is None:
            return
        method_i2t, method_t2i = (
            _check_normalizer(m, "RerankingSearcher") if m is not None else None
            for m in normalizer_pair(cfg.normalize, cfg.normalize_params))
        method_t2i = method_t2i or method_i2t
        bank = getattr(self.reranker, "bank_", None)
        if bank is None:
            raise InvalidInputError(
                f"RerankingSearcher: the model normalises with {cfg.normalize!r} but holds no query bank "
                "(it was fitted without embeddings); refit it on embeddings.")
        bank = {m: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for m, v in bank.items()}
        if bank["images"].shape[1] != self.dim_:
            raise InvalidInputError(
                f"gallery embeddings: dimension {self.dim_} does not match the model, whose normaliser "
                f"bank has dimension {bank['images'].shape[1]} (embeddings of another backbone?).")
        by_dir = {"i2t": method_i2t, "t2i": method_t2i}
        other = "i2t" if self.direction == "t2i" else "t2i"
        self.methods_ = {"query": by_dir[self.direction], "gallery": by_dir[other]}
        self.bank_ = bank[f"{g_mod}s"]  # the bank of the other direction, for new queries' corrections
        self.gallery_bias_ = _bias(self.methods_["query"], bank[f"{q_mod}s"], self.gallery_)
        self.reference_bias_ = _bias(self.methods_["gallery"], self.bank_, self.reference_)
        largest = _largest_abs(self.reference_, self.gallery_, self.gallery_bias_, self.reference_bias_,
                               self.block_bytes)
        self.scale_ = largest if largest > 1.0 else 1.0

    # ------------------------------------------------------------------ build-time structures
    def _build_indexes(self) -> None:
        dev = resolve_device(self.device) if self.device is not None else torch.device("cpu")
        self._device = dev
        kw = {"index": self.index, "params": self._params, "device": dev, "budget_bytes": self.block_bytes}
        g = self.gallery_ if self.gallery_bias_ is None else _augment(self.gallery_, -self.gallery_bias_)
        self._gallery_index = _Index(g, **kw)
        self._pool_index = None
        self._reference_index = None
        if self.reranker is None:
            return
        self._unit_gallery = torch.from_numpy(_unit(self.gallery_))
        self._unit_reference = _unit(self.reference_)
        self._reference_index = _Index(self._unit_reference, **kw)
        if self.gallery_bias_ is not None:
            # Entries no network re-scores rank by the mean of both directions' normalised scores,
            # s - h_gallery / 2 up to a per-query constant: a second index finds them exactly.
            self._pool_index = _Index(_augment(self.gallery_, -0.5 * self.gallery_bias_), **kw)

    def _search_kw(self) -> dict[str, Any]:
        return {"budget_bytes": self.block_bytes, "index": self.index, "index_params": self._params,
                "device": "cpu" if self._device.type == "cpu" else self._device}

    def _build_gallery_lists(self) -> None:
        """Gallery-gallery neighbours, the gallery's neighbours among the reference set and, with
        ``reference_lists``, every gallery item's re-scored list over the reference set."""
        from pillar_rerank.neighbors import force_self_first

        cfg = self.config_
        L, C = cfg.n_pillars, cfg.graph_neighbors
        k_gallery = (cfg.list_len_i2t if self.direction == "t2i" else cfg.list_len_t2i) - 1
        kw = self._search_kw()
        ug = self._unit_gallery.numpy()
        top = topk_search(ug, ug, max(L, C), **kw)
        gg = force_self_first(top, (ug * ug).sum(1))
        depth = max(L, C, k_gallery) if self.reference_lists else C
        h_ref = self.reference_bias_
        ref_table = self.reference_ if h_ref is None else _augment(self.reference_, -h_ref)
        gal_q = self.gallery_ if h_ref is None else _augment(self.gallery_, 1.0)
        back = topk_search(gal_q, ref_table, depth, **kw)
        self.gallery_own_ = (torch.from_numpy(gg.ids), torch.from_numpy(gg.values))
        self.gallery_back_ = (torch.from_numpy(back.ids), torch.from_numpy(back.values) / self.scale_)
        self.overwrites_ = None
        if self.reference_lists:
            self.overwrites_ = self._gallery_overwrites(max(L, C))

    def _gallery_overwrites(self, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every gallery item's list over the reference set, re-scored by the gallery direction's
        network: CSR by reference item ``(indptr, gallery ids, values)``."""
        from pillar_rerank.neighbors import force_self_first

        cfg = self.config_
        kw = self._search_kw()
        ur = self._unit_reference
        rr = force_self_first(topk_search(ur, ur, depth, **kw), (ur * ur).sum(1))
        h_g = self.gallery_bias_
        ref_q = self.reference_ if h_g is None else _augment(self.reference_, 1.0)
        gal_t = self.gallery_ if h_g is None else _augment(self.gallery_, -h_g)
        rg = topk_search(ref_q, gal_t, cfg.graph_neighbors, **kw)
        q_mod, g_mod = DIRECTIONS[self.direction]
        n_nodes = cfg.list_len_i2t if g_mod == "image" else cfg.list_len_t2i
        side = _make_side(
            g_mod, cfg,
            own=self.gallery_own_, cross=self.gallery_back_,
            back_ids=torch.from_numpy(rg.ids), gallery_own_ids=torch.from_numpy(rr.ids),
            phi_ba=_CrossScores(torch.from_numpy(self.reference_), torch.from_numpy(self.gallery_),
                                _tensor_or_none(self.reference_bias_), self.scale_),
            pi_b=PairScores(left=ur, right=ur), n_queries=self.n_gallery_, n_gallery=self.n_reference_,
            n_nodes=n_nodes)
        net = self.network_.i2t if g_mod == "image" else self.network_.t2i
        rows, cols, vals = [], [], []
        for ids in torch.arange(self.n_gallery_).split(max(1, INFERENCE_NODES // n_nodes)):
            cand, new = self._score(side, net, ids)
            rows.append(ids[:, None].expand_as(cand).reshape(-1))
            cols.append(cand.reshape(-1))
            vals.append(new.reshape(-1))
        g_ids, r_ids, values = torch.cat(rows), torch.cat(cols), torch.cat(vals)
        order = torch.argsort(r_ids * self.n_gallery_ + g_ids)
        indptr = torch.zeros(self.n_reference_ + 1, dtype=torch.int64)
        indptr[1:] = torch.bincount(r_ids, minlength=self.n_reference_).cumsum(0)
        return indptr, g_ids[order], values[order]

    def _score(self, side: Any, net: torch.nn.Module, queries: torch.Tensor):
        """Candidates and network scores of ``queries``' lists (the batch path's inference step)."""
        builder = _list_builder(self.config_)
        lists = builder._lists(side, queries)
        dev = next(self.network_.parameters()).device
        with torch.inference_mode(), autocast(dev, self.config_.precision):
            new = net.score_lists(lists.to(dev))[:, 1:].float().cpu()
        return lists.candidates, new

    # ------------------------------------------------------------------ search
    def search(self, queries: Any, k: int, *, reference_ids: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Re-ranked top-``k`` gallery items of every query.

        Parameters
        ----------
        queries : array-like of shape (n_queries, d)
            Embeddings of the query modality (any batch size >= 1).
        k : int
            Results per query, in ``[1, n_gallery]``.
        reference_ids : array-like of shape (n_queries,), optional
            Reference row that each query *is* (-1: a new query). See the module docstring.

        Returns
        -------
        scores : ndarray of shape (n_queries, k), float32, descending
        ids : ndarray of shape (n_queries, k), int64 gallery rows
        """
        self._check_is_fitted()
        q = self._embeddings(queries, "query embeddings", self.dim_)
        k = check_k(k, n_gallery=self.n_gallery_, owner="RerankingSearcher.search")
        ref_ids = self._reference_ids(reference_ids, q)
        if self.reranker is None:
            xq = q if self.gallery_bias_ is None else _augment(q, 1.0)
            v, i = self._gallery_index.search(xq, k)
            return v.numpy(), i.numpy()
        return self._rerank_search(q, k, ref_ids)

    def _reference_ids(self, reference_ids: Any, q: np.ndarray) -> torch.Tensor:
        if reference_ids is None:
            return torch.full((q.shape[0],), -1, dtype=torch.int64)
        ids = np.asarray(reference_ids)
        if ids.shape != (q.shape[0],) or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"reference_ids: expected {q.shape[0]} integers (one per query, -1 for "
                                    f"a new query); got {ids.dtype} of shape {ids.shape}.")
        if ((ids < -1) | (ids >= self.n_reference_)).any():
            raise InvalidInputError(f"reference_ids: values must be -1 or in [0, {self.n_reference_}).")
        known = ids >= 0
        if known.any():
            if self.reranker is not None and not self.reference_lists:
                raise InvalidParameterError(
                    "reference_ids: this searcher was built without reference_lists=True, so queries "
                    "from the reference set cannot be served with the batch path's semantics; rebuild it.")
            if not np.allclose(q[known], self.reference_[ids[known]], rtol=1e-5, atol=1e-6):
                raise InvalidInputError("reference_ids: a query's embedding differs from the reference row "
                                        "it names; pass -1 for a new query.")
        return torch.from_numpy(ids.astype(np.int64))

    def _rerank_search(self, q: np.ndarray, k: int, ref_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config_
        n_q, n_r, n_g = q.shape[0], self.n_reference_, self.n_gallery_
        q_mod, _ = DIRECTIONS[self.direction]
        L, C = cfg.n_pillars, cfg.graph_neighbors
        n_nodes = cfg.list_len_t2i if q_mod == "text" else cfg.list_len_i2t
        qt = torch.from_numpy(q)
        in_ref = ref_ids >= 0
        # the query's own intra-modal list: itself, then its nearest reference items
        uq = _unit(q)
        v, i = self._reference_index.search(uq, check_k(max(L, C), n_gallery=n_r, owner="RerankingSearcher"))
        self_ids = torch.where(in_ref, ref_ids, torch.arange(n_q) + n_r)
        own = _self_first(self_ids, torch.from_numpy((uq * uq).sum(1)), ref_ids, i, v)
        # overwrites of the other direction (gallery items whose list holds a reference query)
        if self.overwrites_ is not None and bool(in_ref.any()):
            indptr, ow_g, ow_v = self.overwrites_
            j = ref_ids.clamp(min=0)
            counts = torch.where(in_ref, indptr[j + 1] - indptr[j], 0)
        else:
            counts = torch.zeros(n_q, dtype=torch.int64)
        m = int(counts.max()) if n_q else 0
        # candidates (and the pool of entries no network touches, ranked like the final score)
        biased = self.gallery_bias_ is not None
        xq = _augment(q, 1.0) if biased else q
        depth = max(L, C, n_nodes - 1)
        pool_n = min(n_g, n_nodes - 1 + k + m)
        cv, ci = self._gallery_index.search(xq, max(depth, pool_n) if not biased else depth)
        pool = ci[:, :pool_n] if not biased else self._pool_index.search(xq, pool_n)[1]
        cross = (ci, cv / self.scale_)
        side = _make_side(
            q_mod, cfg, own=own, cross=cross,
            back_ids=self.gallery_back_[0], gallery_own_ids=self.gallery_own_[0],
            phi_ba=_CrossScores(torch.from_numpy(self.gallery_), torch.from_numpy(self.reference_),
                                _tensor_or_none(self.gallery_bias_), self.scale_, extra=qt),
            pi_b=PairScores(left=self._unit_gallery, right=self._unit_gallery), n_queries=n_q,
            n_gallery=n_g, n_nodes=n_nodes)
        net = self.network_.t2i if q_mod == "text" else self.network_.i2t
        cand, new = zip(*(self._score(side, net, b) for b in
                          torch.arange(n_q).split(max(1, INFERENCE_NODES // n_nodes))), strict=True)
        cand, new = torch.cat(cand), torch.cat(new)
        # the other direction's values: base, or re-scored by a gallery item's list holding the query
        ow_ids = torch.full((n_q, m), -1, dtype=torch.int64)
        ow_vals = torch.zeros(n_q, m)
        if m:
            slot = torch.arange(m).unsqueeze(0)
            valid = slot < counts.unsqueeze(1)
            src = (indptr[ref_ids.clamp(min=0)].unsqueeze(1) + slot)[valid]
            ow_ids[valid], ow_vals[valid] = ow_g[src], ow_v[src]
        items = torch.cat([pool, cand, ow_ids], 1)
        safe = items.clamp(min=0)
        dot = torch.bmm(torch.from_numpy(self.gallery_)[safe], qt.unsqueeze(2)).squeeze(2)
        h_q = self._query_bias(q, ref_ids)
        phi_q = dot if not biased else dot - torch.from_numpy(self.gallery_bias_)[safe]
        phi_g = dot if h_q is None else dot - h_q.unsqueeze(1)
        if self.scale_ != 1.0:
            phi_q, phi_g = phi_q / self.scale_, phi_g / self.scale_
        is_cand = items.unsqueeze(2) == cand.unsqueeze(1)
        mine = torch.where(is_cand.any(2), (new.unsqueeze(1) * is_cand).sum(2), phi_q)
        is_ow = items.unsqueeze(2) == ow_ids.unsqueeze(1)
        other = torch.where(is_ow.any(2) & (items >= 0), (ow_vals.unsqueeze(1) * is_ow).sum(2), phi_g)
        final = 0.5 * (mine + other)  # LeaPRR's mean of both directions (spec §6.4)
        # drop padding and repeats (an overwritten item also in the pool), then rank
        srt, order = items.sort(dim=1)
        dup = torch.zeros_like(srt, dtype=torch.bool)
        dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
        bad = torch.empty_like(dup).scatter_(1, order, dup) | (items < 0)
        final = final.masked_fill(bad, float("-inf"))
        vals, ids = merge_topk(final, items, final[:, :0], items[:, :0], k)
        return vals.numpy(), ids.numpy()

    def _query_bias(self, q: np.ndarray, ref_ids: torch.Tensor) -> torch.Tensor | None:
        """The other direction's normaliser correction of each query (its column of that matrix)."""
        if self.reference_bias_ is None:
            return None
        h = torch.from_numpy(_bias(self.methods_["gallery"], self.bank_, q))
        known = ref_ids >= 0
        h[known] = torch.from_numpy(self.reference_bias_)[ref_ids[known]]
        return h

    # ------------------------------------------------------------------ helpers
    def _check_is_fitted(self) -> None:
        if not hasattr(self, "gallery_"):
            raise InvalidParameterError("RerankingSearcher: not built yet; call fit(gallery, reference) "
                                        "or RerankingSearcher.load first.")

    def __repr__(self) -> str:
        what = ("LeaPRR" if self.reranker is not None else
                (self.normalizer if isinstance(self.normalizer, str) else type(self.normalizer).__name__)
                if self.normalizer is not None else "base search")
        size = f", n_gallery={self.n_gallery_}" if hasattr(self, "gallery_") else ""
        return f"RerankingSearcher({what}, direction={self.direction!r}, index={self.index!r}{size})"

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLikeStr, *, overwrite: bool = False, inputs=()) -> Path:
        """Write the searcher as a model directory (safetensors + JSON + checksums), atomically.

        The FAISS indexes are rebuilt on load (an HNSW graph's construction is not bit-for-bit
        deterministic; exact and IVF indexes are).
        """
        from pillar_rerank.baselines import baseline_config
        from pillar_rerank.checkpoint import save_model_dir

        self._check_is_fitted()
        t = {"gallery": torch.from_numpy(self.gallery_), "reference": torch.from_numpy(self.reference_)}
        for name in ("gallery_bias_", "reference_bias_", "bank_"):
            if getattr(self, name) is not None:
                t[name.rstrip("_")] = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
        doc: dict[str, Any] = {
            "estimator": "RerankingSearcher",
            "searcher_format_version": SEARCHER_FORMAT_VERSION,
            "params": {"direction": self.direction, "index": self.index, "index_params": self._params,
                       "reference_lists": bool(self.reference_lists), "block_bytes": int(self.block_bytes)},
            "scale": self.scale_,
            "normalizer": baseline_config(self.methods_["query"]) if self.reranker is None and self.methods_
            else None,
            "model": None,
        }
        state: dict[str, torch.Tensor] = {}
        if self.reranker is not None:
            doc["model"] = {"config": self.config_.to_dict()}
            state = dict(self.network_.state_dict())
            t["gallery_own_ids"], t["gallery_own_values"] = self.gallery_own_
            t["gallery_back_ids"], t["gallery_back_values"] = self.gallery_back_
            if self.overwrites_ is not None:
                t["overwrite_indptr"], t["overwrite_gallery"], t["overwrite_values"] = self.overwrites_
        return save_model_dir(path, state_dict=state, config=doc, overwrite=overwrite,
                              extra={"searcher": t}, inputs=inputs)

    @classmethod
    def load(cls, path: PathLikeStr, *, device: str | None = None) -> RerankingSearcher:
        """Load a searcher written by :meth:`save` (checksums verified), rebuilding its indexes."""
        from pillar_rerank.baselines import from_config
        from pillar_rerank.checkpoint import load_model_dir, load_model_extra
        from pillar_rerank.config import LeaPRRConfig
        from pillar_rerank.model_state import network_from_state
        from pillar_rerank.reranker import PillarReranker

        state, doc = load_model_dir(path)
        t = load_model_extra(path, "searcher")
        if not isinstance(doc, dict) or doc.get("estimator") != "RerankingSearcher" or t is None:
            raise CheckpointError(f"searcher dir ({path}): not a RerankingSearcher directory "
                                  f"(estimator={doc.get('estimator') if isinstance(doc, dict) else None!r}).")
        try:
            p = doc["params"]
            reranker = None
            if doc["model"] is not None:
                cfg = LeaPRRConfig.from_dict(doc["model"]["config"])
                reranker = PillarReranker(cfg)
                reranker.model_ = network_from_state(cfg, state, source=f"searcher dir ({path})")
                reranker.config_ = cfg
            normalizer = from_config(doc["normalizer"]) if doc["normalizer"] is not None else None
            self = cls(reranker, normalizer=normalizer, direction=p["direction"], index=p["index"],
                       index_params=p["index_params"], device=device,
                       reference_lists=p["reference_lists"], block_bytes=p["block_bytes"])
            self._check_params()
            self.gallery_, self.reference_ = t["gallery"].numpy(), t["reference"].numpy()
            self.n_gallery_, self.dim_ = self.gallery_.shape
            self.n_reference_ = self.reference_.shape[0]
            self.scale_ = float(doc["scale"])
            self.gallery_bias_ = t["gallery_bias"].numpy() if "gallery_bias" in t else None
            self.reference_bias_ = t["reference_bias"].numpy() if "reference_bias" in t else None
            self.bank_ = t["bank"].numpy() if "bank" in t else None
            self.methods_ = {"query": normalizer} if normalizer is not None else None
            if reranker is not None:
                self.config_, self.network_ = reranker.config_, reranker.model_
                if cfg.normalize is not None:
                    from pillar_rerank.baselines.compose import normalizer_pair

                    i2t, t2i = normalizer_pair(cfg.normalize, cfg.normalize_params)
                    by_dir = {"i2t": i2t, "t2i": t2i or i2t}
                    other = "i2t" if self.direction == "t2i" else "t2i"
                    self.methods_ = {"query": by_dir[self.direction], "gallery": by_dir[other]}
                self.gallery_own_ = (t["gallery_own_ids"], t["gallery_own_values"])
                self.gallery_back_ = (t["gallery_back_ids"], t["gallery_back_values"])
                self.overwrites_ = ((t["overwrite_indptr"], t["overwrite_gallery"], t["overwrite_values"])
                                    if "overwrite_indptr" in t else None)
        except (KeyError, TypeError, ValueError, InvalidParameterError) as exc:
            raise CheckpointError(f"searcher dir ({path}): config.json or searcher.safetensors is not a "
                                  f"valid searcher ({exc}).") from exc
        self._build_indexes()
        return self


def _tensor_or_none(x: np.ndarray | None) -> torch.Tensor | None:
    return None if x is None else torch.from_numpy(x)


def _list_builder(config: Any) -> Any:
    """A list builder that only assembles lists from the tables of a given side."""
    from pillar_rerank.lists.builder import ListBuilder

    builder = ListBuilder.__new__(ListBuilder)
    builder.config = config
    return builder


def _make_side(query_modality: str, cfg: Any, *, own, cross, back_ids, gallery_own_ids, phi_ba, pi_b,
               n_queries: int, n_gallery: int, n_nodes: int) -> Any:
    """A list-builder side whose query tables are the given ones (targets are unused: all False)."""
    from pillar_rerank.lists.builder import REFERENCE_LIST_LEN, _Side

    threshold = cfg.graph_coef / REFERENCE_LIST_LEN[query_modality] if cfg.reference_thresholds else None
    return _Side(own_ids=own[0], own_values=own[1], cross_ids=cross[0], cross_values=cross[1],
                 back_ids=back_ids, gallery_own_ids=gallery_own_ids, phi_ba=phi_ba, pi_b=pi_b,
                 image_of_a=torch.full((n_queries,), -1, dtype=torch.int64),
                 image_of_b=torch.zeros(n_gallery, dtype=torch.int64), n_nodes=n_nodes, threshold=threshold)


__all__ = ["DIRECTIONS", "SEPARABLE_NORMALIZERS", "RerankingSearcher"]
