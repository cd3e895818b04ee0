"""What a fitted PillarReranker records about its inputs, and the checks made against it later.

The training fingerprint (a resumed run must match it), the input record saved in the model
directory, the dev RSUM without re-ranking (a model below it is reported), and the intra-modal
source the training side used (a test side that resolves to another is reported).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from pillar_rerank._version import __version__
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.lists.fingerprint import data_digest
from pillar_rerank.neighbors import intra_modal_source

logger = logging.getLogger("pillar_rerank.reranker")


def training_fingerprint(train: RetrievalSet, cfg: LeaPRRConfig) -> dict[str, Any]:
    """What a resumed run must match: problem size, ground truth, (sampled) data and the config."""
    digest = data_digest(train)
    return {
        "n_images": train.n_images,
        "n_texts": train.n_texts,
        "data_sha256_sampled": digest,
        "config": {k: v for k, v in cfg.to_dict().items() if k != "device"},
    }


_INTRA_WORDS = {"given": "given image-image/text-text matrices", "embeddings": "embeddings",
                "second_order": "the second-order estimate from the score matrix (scores only)"}


def trained_intra_source(record: dict[str, Any], cfg: LeaPRRConfig) -> str | None:
    """The intra-modal source the training side resolved to (None for imported models)."""
    if record.get("intra_source_resolved"):
        return record["intra_source_resolved"]
    train = record.get("train")
    if not train:
        return None
    if cfg.intra_source != "auto":  # models saved before the resolved source was recorded
        return cfg.intra_source
    given = train.get("image_image") and train.get("text_text")
    return "given" if given else ("embeddings" if train.get("embeddings") else "second_order")


def compare_with_base(history: dict[str, Any], base: dict[str, float]) -> None:
    """Record the dev RSUM without re-ranking; warn when the kept model is below it."""
    history["dev_base"] = {k: float(v) for k, v in base.items()}
    best = history.get("best_rsum")
    if best is not None and best < base["RSUM"]:
        message = (f"PillarReranker.fit: the best dev RSUM ({best:.2f}) is below the dev RSUM without "
                   f"re-ranking ({base['RSUM']:.2f}): this model makes the dev side worse. Train longer, "
                   "on more data, or with another lr/preset, or do not re-rank.")
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def input_record(train: RetrievalSet, dev: RetrievalSet | None, cfg: LeaPRRConfig) -> dict[str, Any]:
    def side(d: RetrievalSet) -> dict[str, Any]:
        return {
            "name": d.name,
            "n_images": d.n_images,
            "n_texts": d.n_texts,
            "scores": d.scores is not None,
            "embeddings": d.has_embeddings,
            "image_image": d.image_image is not None,
            "text_text": d.text_text is not None,
            "t2i_scores": d.t2i_scores is not None,
        }

    return {
        "package_version": __version__,
        "train": side(train),
        "dev": side(dev) if dev is not None else None,
        "intra_source": cfg.intra_source,
        "intra_source_resolved": intra_modal_source(train, cfg.intra_source),
        "normalize": cfg.normalize,
        "normalize_params": dict(cfg.normalize_params),
    }


def check_intra_source(record: dict[str, Any], cfg: LeaPRRConfig, test: RetrievalSet) -> None:
    """Warn when ``test`` resolves to another intra-modal source than the training side did."""
    trained = trained_intra_source(record, cfg)
    used = intra_modal_source(test, cfg.intra_source)
    if trained is not None and used != trained:
        message = (f"PillarReranker: the model was trained with intra-modal similarities from "
                   f"{_INTRA_WORDS[trained]}, but {test.name} gives them from {_INTRA_WORDS[used]}; "
                   "the pillar vectors differ and so will the results. Give the test side the same "
                   "kind of input as the training side.")
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=4)



__all__ = ["check_intra_source", "compare_with_base", "input_record", "trained_intra_source",
           "training_fingerprint"]
