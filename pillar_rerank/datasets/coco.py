"""Loaders for the COCO caption proxy in ``shared/data/caption_xenc`` and its extended labels.

* :func:`load_coco_proxy`: the README's retrieval set (gallery vectors, selected query-caption
  embeddings, caption -> gallery map) as a :class:`~pillar_rerank.inputs.RetrievalSet`.
* :func:`load_eccv_positives`: ECCV Caption / CxC / original positive sets as CSR
  :class:`~pillar_rerank.metrics.Qrels`, joined on COCO image and caption ids.
* :func:`load_cxc_graded`: Crisscrossed Captions caption-image ratings (0-5) as graded gains.

The data folder is ``root``, else the ``PILLAR_RERANK_SHARED_DATA`` environment variable, else
``../shared/data/caption_xenc`` beside the repository or the current directory.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from pillar_rerank.exceptions import InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.io import load_array
from pillar_rerank.metrics.qrels import Qrels
from pillar_rerank.typing import PathLikeStr

logger = logging.getLogger(__name__)

ENV_VAR = "PILLAR_RERANK_SHARED_DATA"
SPLITS = ("coco1k_dev", "coco5k_test")
LABEL_KINDS = ("original", "cxc", "eccv")
_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root(root: PathLikeStr | None = None) -> Path:
    """The caption_xenc folder: ``root``, ``$PILLAR_RERANK_SHARED_DATA``, or ``../shared/data/caption_xenc``.

    Raises :class:`InputFileError` naming every place looked at when none exists.
    """
    return find_data_folder(root, env_var=ENV_VAR, folder="caption_xenc")


def find_data_folder(root: PathLikeStr | None, *, env_var: str, folder: str) -> Path:
    """``root``, else ``$env_var``, else ``../shared/data/<folder>`` beside the repository or cwd.

    A folder counts when it holds a README.md or a ``proxy_*_img.npy``; otherwise
    :class:`InputFileError` names every place looked at and both ways to point at the data.
    """
    if root is not None:
        candidates = [Path(root)]
    elif os.environ.get(env_var):
        candidates = [Path(os.environ[env_var])]
    else:
        rel = Path("..") / "shared" / "data" / folder
        candidates = [_REPO_ROOT / rel, Path.cwd() / rel]
    for c in candidates:
        if (c / "README.md").is_file() or any(c.glob("proxy_*_img.npy")):
            return c
    raise InputFileError(
        f"shared data: {folder} folder not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + f"); pass root= or set {env_var}."
    )


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise InvalidParameterError(f"split: expected one of {SPLITS}; got {split!r}.")
    return split


def load_coco_proxy(split: str = "coco5k_test", root: PathLikeStr | None = None) -> RetrievalSet:
    """The caption-proxy retrieval set of ``split`` (float16 embeddings, scores = their product).

    Parameters
    ----------
    split : {"coco5k_test", "coco1k_dev"}, default="coco5k_test"
        ``coco5k_test``: 5000 gallery items x 20,000 query captions; ``coco1k_dev``: 1000 x 4000.
    root : path, optional
        The caption_xenc folder (see :func:`shared_data_root`).

    Returns
    -------
    RetrievalSet
        ``image_embeddings`` (n_images, 384) and ``text_embeddings`` (n_texts, 384), float16,
        and the ``proxy_{split}_cap2img`` map as relevance.
    """
    split = _check_split(split)
    return load_proxy_files(shared_data_root(root), split)


def load_proxy_files(base: Path, split: str, *, texts: str | None = None) -> RetrievalSet:
    """``proxy_{split}_{img,cap2img}.npy`` and the query captions of ``base`` as a retrieval set.

    The queries are rows ``proxy_{split}_txt_index.npy`` of ``{split}_minilm.npy`` (the README's
    layout), or the file ``texts`` (already selected, one row per entry of cap2img).
    """
    img = load_array(base / f"proxy_{split}_img.npy", name="gallery embeddings")
    cap2img = load_array(base / f"proxy_{split}_cap2img.npy", name="cap2img")
    if texts is None:
        index_path = base / f"proxy_{split}_txt_index.npy"
        rows = load_array(index_path, name="query caption index")
        all_txt = load_array(base / f"{split}_minilm.npy", name="caption embeddings", mmap=True)
        rows = _check_rows(rows, all_txt, where=f"query caption index ({index_path})")
        txt = np.ascontiguousarray(all_txt[rows])
    else:
        txt = load_array(base / texts, name="query caption embeddings")
        if txt.ndim != 2 or txt.shape[0] != np.shape(cap2img)[0]:
            raise InvalidInputError(
                f"query caption embeddings ({base / texts}): expected one row per entry of cap2img "
                f"({np.shape(cap2img)[0]}); got shape {txt.shape}. Rebuild the folder."
            )
    rel = Relevance(cap2img, img.shape[0])
    return RetrievalSet(relevance=rel, image_embeddings=img, text_embeddings=txt, name=f"proxy_{split}")


def _check_rows(rows: np.ndarray, table: np.ndarray, *, where: str) -> np.ndarray:
    """Row indices into ``table``: 1-D ints in ``[0, len(table))`` (negatives would wrap silently)."""
    if rows.dtype.kind not in "iu" or rows.ndim != 1:
        raise InvalidInputError(
            f"{where}: expected a 1-D integer array; got {rows.dtype!s} of shape {rows.shape}."
        )
    n = table.shape[0] if table.ndim else 0
    bad = np.flatnonzero((rows < 0) | (rows >= n))
    if bad.size:
        raise InvalidInputError(
            f"{where}: {bad.size} entries lie outside [0, {n}) (first: entry {bad[0]} -> {rows[bad[0]]})."
        )
    return rows.astype(np.int64)


def coco_proxy_ids(split: str = "coco5k_test", root: PathLikeStr | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """COCO image ids of the gallery items and COCO sentence ids of the query captions.

    Only ``coco5k_test`` ships ids. Returns ``(image_ids (n_images,), caption_ids (n_texts,))``.
    """
    split = _check_split(split)
    base = shared_data_root(root)
    if split != "coco5k_test":
        raise InvalidParameterError(f"split: COCO ids are only available for 'coco5k_test'; got {split!r}.")
    image_ids = load_array(base / "coco5k_test_image_ids.npy", name="image ids").astype(np.int64)
    caption_ids = load_array(base / "coco5k_test_caption_ids.npy", name="caption ids").astype(np.int64)
    index_path = base / f"proxy_{split}_txt_index.npy"
    rows = _check_rows(load_array(index_path, name="query caption index"), caption_ids,
                       where=f"query caption index ({index_path})")
    return image_ids, caption_ids[rows]


def _lookup(ids: np.ndarray, name: str) -> dict[int, int]:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or np.unique(ids).size != ids.size:
        raise InvalidInputError(f"{name}: expected unique 1-D ids; got shape {ids.shape} with duplicates.")
    return {int(v): i for i, v in enumerate(ids)}


def _pairs_to_qrels(q, g, n_q, n_g, gains, name) -> Qrels:
    return Qrels.from_pairs(np.asarray(q, dtype=np.int64), np.asarray(g, dtype=np.int64), n_q, n_g,
                            gains=None if gains is None else np.asarray(gains, dtype=np.float64), name=name)


def load_eccv_positives(image_ids: np.ndarray, caption_ids: np.ndarray, *, kind: str = "eccv",
                        root: PathLikeStr | None = None) -> dict[str, Qrels]:
    """Extended positive sets for the rows (images) and columns (captions) of a score matrix.

    Parameters
    ----------
    image_ids : int array of shape (n_images,)
        COCO image id of each gallery row.
    caption_ids : int array of shape (n_texts,)
        COCO sentence id of each query caption (column).
    kind : {"eccv", "cxc", "original"}, default="eccv"
        Which label set of ``eccv_caption_labels/``.

    Returns
    -------
    dict
        ``{"i2t": Qrels (n_images x n_texts), "t2i": Qrels (n_texts x n_images)}``. Queries the
        label set does not annotate have empty rows (left out of mAP@R / R-P); labelled items
        outside the given ids (e.g. captions that are not queries) are dropped.
    """
    if kind not in LABEL_KINDS:
        raise InvalidParameterError(f"kind: expected one of {LABEL_KINDS}; got {kind!r}.")
    base = shared_data_root(root) / "eccv_caption_labels"
    img_at, cap_at = _lookup(image_ids, "image_ids"), _lookup(caption_ids, "caption_ids")
    out = {}
    for direction, fname, q_at, g_at in (("i2t", f"{kind}_image_to_caption.json", img_at, cap_at),
                                         ("t2i", f"{kind}_caption_to_image.json", cap_at, img_at)):
        path = base / fname
        if not path.is_file():
            raise InputFileError(f"{kind} labels ({path}): file not found.")
        try:
            labels = json.loads(path.read_text())
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(f"{kind} labels ({path}): not valid JSON ({exc}).") from exc
        if not isinstance(labels, dict):
            raise InvalidInputError(
                f"{kind} labels ({path}): expected an object {{query id: [item ids]}}; "
                f"got {type(labels).__name__}."
            )
        qs, gs, dropped = [], [], 0
        try:
            for qid, items in labels.items():
                q = q_at.get(int(qid))
                if q is None:
                    continue
                for item in items:
                    g = g_at.get(int(item))
                    if g is None:
                        dropped += 1
                        continue
                    qs.append(q)
                    gs.append(g)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(
                f"{kind} labels ({path}): expected integer ids and lists of integer ids ({exc})."
            ) from exc
        if dropped:
            logger.info("%s %s: %d labelled items outside the given ids were dropped",
                        kind, direction, dropped)
        n_q, n_g = len(q_at), len(g_at)
        pairs = np.unique(np.stack([np.asarray(qs, np.int64), np.asarray(gs, np.int64)]), axis=1)
        out[direction] = _pairs_to_qrels(pairs[0], pairs[1], n_q, n_g, None, f"{kind} {direction} positives")
    return out


_SENT_RE = re.compile(r"sentid:(\d+)$")
_IMG_RE = re.compile(r"(\d+)\.jpg$")


def load_cxc_graded(image_ids: np.ndarray, caption_ids: np.ndarray, *, split: str = "test",
                    root: PathLikeStr | None = None) -> dict[str, Qrels]:
    """CxC caption-image ratings (``cxc/sits_{split}.csv``, scores 0-5) as graded gains.

    Returns ``{"i2t": Qrels, "t2i": Qrels}`` with the rating as gain; pairs outside the given ids
    are dropped, unrated queries have empty rows (left out of NDCG). ``test`` matches
    ``coco5k_test``.
    """
    if split not in ("test", "val"):
        raise InvalidParameterError(f"split: expected 'test' or 'val'; got {split!r}.")
    path = shared_data_root(root) / "cxc" / f"sits_{split}.csv"
    if not path.is_file():
        raise InputFileError(f"CxC ratings ({path}): file not found.")
    img_at, cap_at = _lookup(image_ids, "image_ids"), _lookup(caption_ids, "caption_ids")
    try:
        caps, imgs, scores = _read_cxc_rows(path, img_at, cap_at)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"CxC ratings ({path}): not a readable CSV file ({exc}).") from exc
    n_img, n_txt = len(img_at), len(cap_at)
    return {
        "i2t": _pairs_to_qrels(imgs, caps, n_img, n_txt, scores, "CxC i2t gains"),
        "t2i": _pairs_to_qrels(caps, imgs, n_txt, n_img, scores, "CxC t2i gains"),
    }


def _read_cxc_rows(path: Path, img_at: dict[int, int], cap_at: dict[int, int]
                   ) -> tuple[list[int], list[int], list[float]]:
    caps, imgs, scores = [], [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"caption", "image", "agg_score"} - set(reader.fieldnames or ())
        if missing:
            raise InvalidInputError(f"CxC ratings ({path}): missing column(s) {sorted(missing)}.")
        for row in reader:
            caption, image = row["caption"] or "", row["image"] or ""
            sm, im = _SENT_RE.search(caption), _IMG_RE.search(image)
            if sm is None or im is None:
                raise InvalidInputError(f"CxC ratings ({path}): cannot parse ids in row {row!r}.")
            c, i = cap_at.get(int(sm.group(1))), img_at.get(int(im.group(1)))
            if c is None or i is None:
                continue
            try:
                score = float(row["agg_score"])
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"CxC ratings ({path}): agg_score is not a number in row {row!r}."
                ) from exc
            caps.append(c)
            imgs.append(i)
            scores.append(score)
    return caps, imgs, scores
