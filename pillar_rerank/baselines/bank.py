"""Banks (training-side scores against the test gallery) and running a method in both directions."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from pillar_rerank._validation import check_finite, check_float_matrix, mark_finite
from pillar_rerank.baselines._common import TrainingFreeReranker
from pillar_rerank.baselines._stream import EmbeddingScores, check_scores_like
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.utils.progress import progress

_DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class Bank:
    """Bank scores for both directions; every field is optional and scores-like.

    A scores-like field is an ndarray, a read-only memory map or an
    :class:`~pillar_rerank.baselines.EmbeddingScores` (computed block by block when read).

    Parameters
    ----------
    i2t : (n_bank_images, n_texts)
        Bank images x test texts: the query bank of image -> text.
    t2i : (n_bank_texts, n_images)
        Bank texts x test images: the query bank of text -> image.
    i2t_dual : (n_bank_images, n_bank_texts)
        Bank images x bank texts, the extra gallery columns of dual-bank Sinkhorn (i2t).
    t2i_dual : (n_bank_texts, n_bank_images)
        Bank texts x bank images (dual-bank Sinkhorn, t2i).
    i2t_intra : (n_bank_texts, n_texts)
        Bank texts x test texts, DBNorm's intra-modal gallery bank for i2t.
    t2i_intra : (n_bank_images, n_images)
        Bank images x test images, DBNorm's gallery bank for t2i.
    """

    i2t: Any = None
    t2i: Any = None
    i2t_dual: Any = None
    t2i_dual: Any = None
    i2t_intra: Any = None
    t2i_intra: Any = None

    def fit_kwargs(self, method: TrainingFreeReranker, direction: str) -> dict[str, Any]:
        """The keyword arguments ``method.fit`` takes for ``direction`` ("i2t" or "t2i")."""
        if direction not in _DIRECTIONS:
            raise InvalidInputError(f"direction: expected 'i2t' or 't2i'; got {direction!r}.")
        source = {"bank": direction, "bank_gallery": f"{direction}_dual",
                  "gallery_bank": f"{direction}_intra"}
        return {name: getattr(self, source[name]) for name in method.fit_inputs if name in source}

    def check_against(self, data: RetrievalSet) -> Bank:
        """Check every present field's shape against the test set ``data``; returns self."""
        n_img, n_txt = data.n_images, data.n_texts
        want_gallery = {"i2t": n_txt, "t2i": n_img, "i2t_intra": n_txt, "t2i_intra": n_img}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            check_scores_like(value, name=f"bank.{f.name}", n_gallery=want_gallery.get(f.name))
        for d in _DIRECTIONS:
            q, dual = getattr(self, d), getattr(self, f"{d}_dual")
            if q is not None and dual is not None and q.shape[0] != dual.shape[0]:
                raise InvalidInputError(
                    f"bank.{d}_dual: expected one row per bank query of bank.{d} ({q.shape[0]}); "
                    f"got shape {dual.shape}."
                )
        return self


def bank_from_embeddings(bank: RetrievalSet, target: RetrievalSet, *, materialize: bool = True,
                         dtype: type = np.float32) -> Bank:
    """All banks of ``bank``'s items against ``target``'s gallery, from embeddings.

    Parameters
    ----------
    bank : RetrievalSet
        Training-side set with image and text embeddings (never the test queries).
    target : RetrievalSet
        The set to re-rank, with embeddings.
    materialize : bool, default=True
        Store each matrix once computed: a field is computed (block by block, memory
        ``O(block)`` beyond the result) on its first read and kept, so the fields a method does
        not read are never computed (inverted softmax reads ``i2t`` and ``t2i`` only, DSL none).
        With False every field is recomputed at each read (memory ``O(block)``).
    dtype : numpy dtype, default=float32
        Storage type of materialised banks (float16 halves their memory).

    Returns
    -------
    Bank
        ``i2t`` = bank images x target texts, ``t2i`` = bank texts x target images, the dual
        fields from ``bank``'s own cross-modal scores and the intra fields from embeddings.
    """
    for side in (bank, target):
        if not side.has_embeddings:
            raise InvalidInputError(
                f"bank_from_embeddings: {side.name} has no embeddings; give image and text embeddings "
                "(or pass bank score matrices directly)."
            )
    # both sets checked their embeddings when they were built: not scanned again
    arrays = [_known_finite_view(a) for a in (bank.image_embeddings, bank.text_embeddings,
                                              target.image_embeddings, target.text_embeddings)]
    return _bank_fields(*arrays, materialize=materialize, dtype=dtype)


def bank_from_embedding_arrays(bank_images: Any, bank_texts: Any, target_images: Any, target_texts: Any,
                               *, materialize: bool = True, dtype: type = np.float32) -> Bank:
    """:func:`bank_from_embeddings` from the four embedding matrices (bank side, then target).

    Each matrix is checked once (type, shape, finite values), however many fields use it.
    """
    arrays = []
    for value, name in ((bank_images, "bank image embeddings"), (bank_texts, "bank text embeddings"),
                        (target_images, "target image embeddings"),
                        (target_texts, "target text embeddings")):
        arrays.append(_known_finite_view(check_float_matrix(value, name=name)))
    return _bank_fields(*arrays, materialize=materialize, dtype=dtype)


def _known_finite_view(array: np.ndarray) -> np.ndarray:
    """A read-only view of an array whose values were checked finite, recorded as such."""
    view = array.view() if isinstance(array, np.ndarray) else np.asarray(array)
    view.flags.writeable = False
    mark_finite(view)
    return view


def _bank_fields(bi: np.ndarray, bt: np.ndarray, ti: np.ndarray, tt: np.ndarray, *, materialize: bool,
                 dtype: type) -> Bank:
    specs = {
        "i2t": (bi, tt, "bank i2t"),
        "t2i": (bt, ti, "bank t2i"),
        "i2t_dual": (bi, bt, "bank i2t dual"),
        "t2i_dual": (bt, bi, "bank t2i dual"),
        "i2t_intra": (bt, tt, "bank i2t intra"),
        "t2i_intra": (bi, ti, "bank t2i intra"),
    }
    return Bank(**{field: EmbeddingScores(q, g, name=name, cache=materialize, dtype=dtype)
                   for field, (q, g, name) in specs.items()})


def assemble_bank(target: RetrievalSet, *, image_embeddings: Any = None, text_embeddings: Any = None,
                  i2t: Any = None, t2i: Any = None, dual: Any = None, i2t_intra: Any = None,
                  t2i_intra: Any = None, flags: dict[str, str] | None = None) -> Bank | None:
    """The bank for ``target`` from what a user supplied: bank-side embeddings, or score matrices.

    Parameters
    ----------
    target : RetrievalSet
        The set to re-rank; with bank embeddings it needs its own embeddings too.
    image_embeddings, text_embeddings : array, optional
        Bank-side embeddings (both or neither); every field is computed from them
        (:func:`bank_from_embedding_arrays`).
    i2t, t2i, dual, i2t_intra, t2i_intra : array, optional
        Bank score matrices (see :class:`Bank`); ``dual`` is bank images x bank texts and fills
        both dual fields (its transpose for t2i).
    flags : dict, optional
        How each argument is spelled for the user (e.g. ``{"image_embeddings": "--bank-image-emb"}``),
        used in messages; defaults to the argument names.

    Returns
    -------
    Bank or None
        ``None`` when nothing was supplied; else a bank checked against ``target``.
    """
    names = {k: k for k in ("image_embeddings", "text_embeddings", "i2t", "t2i", "dual", "i2t_intra",
                            "t2i_intra")} | dict(flags or {})
    scores = {"i2t": i2t, "t2i": t2i, "dual": dual, "i2t_intra": i2t_intra, "t2i_intra": t2i_intra}
    if image_embeddings is not None or text_embeddings is not None:
        emb = f"{names['image_embeddings']} and {names['text_embeddings']}"
        if image_embeddings is None or text_embeddings is None:
            raise InvalidInputError(f"bank: give both {emb}.")
        if any(v is not None for v in scores.values()):
            raise InvalidInputError(f"bank: give bank embeddings ({emb}) or bank score matrices, not both.")
        if not target.has_embeddings:
            raise InvalidInputError(f"bank: {emb} need the embeddings of {target.name} too (its image and "
                                    "text embeddings), to score the bank against its gallery.")
        bank = bank_from_embedding_arrays(image_embeddings, text_embeddings,
                                          target.image_embeddings, target.text_embeddings)
        return bank.check_against(target)
    if all(v is None for v in scores.values()):
        return None
    return Bank(i2t=i2t, t2i=t2i, i2t_dual=dual, t2i_dual=None if dual is None else dual.T,
                i2t_intra=i2t_intra, t2i_intra=t2i_intra).check_against(target)


def bank_from_scores(bank: RetrievalSet) -> Bank:
    """The dual-bank fields from a training-side score matrix alone (for dual-bank Sinkhorn)."""
    s = bank.similarity()
    return Bank(i2t_dual=s, t2i_dual=np.ascontiguousarray(s.T))


def _intra_inputs(method: TrainingFreeReranker, data: RetrievalSet, direction: str) -> dict[str, Any]:
    """Intra-modal fit inputs (test-side PairScores) of one direction, built only if used."""
    wanted = [name for name in method.fit_inputs if name in ("query_intra", "gallery_intra")]
    if not wanted or getattr(method, "intra_k", 2) <= 1:
        return {}
    from pillar_rerank.neighbors import IntraModalScores

    intra = IntraModalScores.from_data(data, getattr(method, "intra_source", "auto"))
    image, text = intra.image, intra.text
    side = {"query_intra": image, "gallery_intra": text} if direction == "i2t" else \
        {"query_intra": text, "gallery_intra": image}
    return {k: v for k, v in side.items() if k in wanted}


def fit_direction(method: TrainingFreeReranker, data: RetrievalSet, bank: Bank,
                  direction: str) -> TrainingFreeReranker:
    """A fresh clone of ``method`` fitted for ``direction`` ("i2t" or "t2i") of ``data``: on
    ``bank``'s fields for that direction and, where the method takes them, ``data``'s
    intra-modal scores."""
    kwargs = {**bank.fit_kwargs(method, direction), **_intra_inputs(method, data, direction)}
    return method.clone().fit(**kwargs)


def apply_both(method: TrainingFreeReranker, data: RetrievalSet, bank: Bank | None = None, *,
               t2i_method: TrainingFreeReranker | None = None, show_progress: bool = False) -> RetrievalSet:
    """Run ``method`` image -> text and text -> image, each from a fresh clone.

    ``t2i_method`` (same class, other parameters) replaces ``method`` for text -> image, for
    hyper-parameters chosen per direction (:func:`~pillar_rerank.baselines.tuning.tune`).
    ``show_progress`` shows a bar over the two directions on stderr (only on a terminal).

    i2t fits on ``bank.i2t`` (and the other i2t fields the method takes) and re-ranks
    ``data.similarity()``; t2i fits on ``bank.t2i`` and re-ranks its transpose. The test queries
    are never used for fitting: only transductive methods read them, in ``rerank``.

    Returns
    -------
    RetrievalSet
        ``data`` with ``scores`` = the i2t result and ``t2i_scores`` = the t2i result, both in
        image x text orientation (``recall_metrics(out.scores, out.relevance,
        t2i_scores=out.t2i_scores)`` evaluates it). Given scores are never written to; where the
        matrix is apply_both's own (a product of the embeddings, or given scores converted to
        float32), the gallery-bias methods re-rank i2t in place, in that matrix's memory.
    """
    if t2i_method is not None and type(t2i_method) is not type(method):
        raise InvalidInputError(
            f"apply_both: t2i_method must be a {type(method).__name__} too; got {type(t2i_method).__name__}."
        )
    bank = (bank or Bank()).check_against(data)
    scores, scores_t, owned = _checked_scores(data)
    methods = {"i2t": method, "t2i": t2i_method or method}
    results = {}
    # t2i first: i2t, the last to read the matrix, may then re-rank our own product in place
    steps = (("t2i", scores_t), ("i2t", scores))
    for direction, matrix in progress(steps, desc=type(method).__name__, disable=not show_progress,
                                      unit="direction"):
        fitted = fit_direction(methods[direction], data, bank, direction)
        results[direction] = fitted.rerank(matrix) if direction == "t2i" or owned is None \
            else fitted._rerank_into(matrix, out=owned)
    return data.with_results(results["i2t"], t2i_scores=np.ascontiguousarray(results["t2i"].T),
                             name=f"{data.name}+{type(method).__name__}")


def _checked_scores(data: RetrievalSet) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``data``'s float32 score matrix and its transpose, as read-only views known to be finite,
    and the matrix itself where it is a new array of ours (a product of the embeddings or a
    conversion of the given scores; else None): one the last reader may overwrite.

    The values were scanned once already: given scores when ``data`` was built, a product of
    embeddings by :meth:`RetrievalSet.similarity`; only a conversion to float32 (float64 scores
    beyond float32's range) makes new values, and those are scanned here. Each direction's
    ``rerank`` then checks its matrix's type and shape but does not scan its values again.
    """
    with np.errstate(over="ignore"):                    # an overflow is reported just below
        scores = data.similarity()
    if data.scores is not None and np.asarray(data.scores).dtype != scores.dtype:
        check_finite(scores, name=f"{data.name} scores as float32")
    view = scores.view()
    view.flags.writeable = False
    view_t = view.T
    mark_finite(view)
    mark_finite(view_t)
    owned = data.scores is None or not np.may_share_memory(scores, np.asarray(data.scores))
    return view, view_t, scores if owned else None
