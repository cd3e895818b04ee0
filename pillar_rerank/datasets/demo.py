"""The small real data set shipped with the package (see ``README.md`` in this folder)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.inputs import Relevance, RetrievalSet

DEMO_FILES = {"train": "demo_train.npz", "test": "demo_test.npz"}


def _load_split(split: str) -> RetrievalSet:
    ref = resources.files("pillar_rerank.datasets") / DEMO_FILES[split]
    if not ref.is_file():
        raise InputFileError(
            f"demo data ({DEMO_FILES[split]}): not found in the installed package; "
            "rebuild it with `python -m pillar_rerank.datasets.build_demo`."
        )
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        try:
            img, txt, t2i = npz["image_embeddings"], npz["text_embeddings"], npz["txt_to_img"]
        except KeyError as exc:
            raise InvalidInputError(f"demo data ({path}): missing array {exc}.") from exc
    return RetrievalSet(relevance=Relevance(t2i, img.shape[0]), image_embeddings=img,
                        text_embeddings=txt, name=f"demo_{split}")


def load_demo() -> dict[str, RetrievalSet]:
    """The bundled demo retrieval sets, float16 embeddings (CC BY 4.0, see ``ATTRIBUTION.md``).

    Returns
    -------
    dict
        ``"train"``: the ``coco1k_dev`` caption proxy, 1000 gallery items x 4000 captions (the
        side to fit or tune on); ``"test"``: fold 0 of ``coco5k_test``, items 0-999 and their
        4000 captions. Scores are ``image_embeddings @ text_embeddings.T``; intra-modal
        similarities can be computed from the same embeddings.

    Examples
    --------
    >>> from pillar_rerank.datasets import load_demo
    >>> demo = load_demo()
    >>> demo["test"].n_images, demo["test"].n_texts
    (1000, 4000)
    """
    return {split: _load_split(split) for split in DEMO_FILES}


def load_demo_ids() -> tuple[np.ndarray, np.ndarray]:
    """COCO image ids and caption ids of the demo ``test`` side (to join ECCV / CxC labels)."""
    ref = resources.files("pillar_rerank.datasets") / DEMO_FILES["test"]
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        return npz["image_ids"].astype(np.int64), npz["caption_ids"].astype(np.int64)
