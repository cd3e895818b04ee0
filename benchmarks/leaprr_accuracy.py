"""LeaPRR accuracy on the COCO caption proxy (``../shared/data/caption_xenc``), base vs re-ranked.

Protocols (hyper-parameters and model selection never look at the evaluation items):

* ``a``: train on ``coco1k_dev`` (images 0-799 train, 800-999 dev for model selection),
  evaluate on ``coco5k_test`` (5000 x 20,000).
* ``b``: train on ``coco5k_test`` items 1000-4999 and their captions (items 1000-4199 train,
  4200-4999 dev), evaluate on fold 0 (items 0-999 and their captions).

A reduced CPU configuration is used (stated in the result). Run through the runner:
``python -m benchmarks run --suite accuracy --only leaprr`` (``benchmarks/results/accuracy/leaprr.json``).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.reranker import PillarReranker

KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM")

#: Reduced CPU configuration (the paper's is embed_dim 768, 24 heads, batch 512, 30 epochs).
REDUCED = {
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 4,
    "epochs": 8,
    "batch_size": 128,
    "lr": 0.6,
    "eval_every": 100,
}


def _split(data, train_images: np.ndarray, dev_images: np.ndarray):
    return (
        data.subset_images(train_images, name=f"{data.name}-train"),
        data.subset_images(dev_images, name=f"{data.name}-dev"),
    )


def protocol_sets(name: str, root: str | None = None):
    """(train, dev, test) of protocol ``name``."""
    from pillar_rerank.datasets.coco import load_coco_proxy

    if name == "a":
        dev_side = load_coco_proxy("coco1k_dev", root)
        train, dev = _split(dev_side, np.arange(800), np.arange(800, 1000))
        test = load_coco_proxy("coco5k_test", root)
        return train, dev, test
    if name == "b":
        full = load_coco_proxy("coco5k_test", root)
        train, dev = _split(full, np.arange(1000, 4200), np.arange(4200, 5000))
        test = full.subset_images(np.arange(1000), name="coco5k_test-fold0")
        return train, dev, test
    raise ValueError(f"protocol: expected 'a' or 'b'; got {name!r}.")


#: ECCV Caption / CxC metrics added for the protocol whose test side is the whole COCO 5K.
EXTENDED_METRICS = ("i2t_mAP@R", "t2i_mAP@R", "i2t_R-P", "t2i_R-P", "i2t_NDCG@10", "t2i_NDCG@10")


def extended_metrics(scores: np.ndarray, test, root: str | None = None) -> dict[str, float] | None:
    """ECCV Caption mAP@R / R-Precision and CxC NDCG@10 of COCO 5K scores (None without the files)."""
    from benchmarks.coco_extended import extended_ground_truth
    from pillar_rerank.exceptions import InputFileError
    from pillar_rerank.metrics.evaluate import evaluate

    try:
        eccv, cxc = extended_ground_truth(root)
    except (InputFileError, FileNotFoundError):
        return None
    out = evaluate(test.with_scores(np.asarray(scores, dtype=np.float32)), metrics=list(EXTENDED_METRICS),
                   positives=eccv, graded=cxc)
    return {k: round(float(out[k]), 2) for k in EXTENDED_METRICS}


def run(protocols=("a", "b"), config: LeaPRRConfig | None = None, root: str | None = None) -> dict:
    """Fit and evaluate each protocol; returns the JSON document."""
    cfg = config or LeaPRRConfig(**REDUCED)
    out = {
        "config": cfg.to_dict(),
        "reduced_config_note": "reduced CPU configuration, not the paper's "
        "(paper: embed_dim 768, 24 heads, batch 512, 30 epochs)",
        "protocols": {},
    }
    for name in protocols:
        train, dev, test = protocol_sets(name, root)
        t0 = time.perf_counter()
        model = PillarReranker(cfg).fit(train, dev, verbose=False)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = model.rerank(test)
        rerank_s = time.perf_counter() - t0
        base = recall_metrics(test.similarity(), test.relevance)
        new = recall_metrics(scores, test.relevance)
        normalised = None
        if cfg.normalize is not None:
            norm_set = model._normalized(test, cfg)
            normalised = recall_metrics(norm_set.similarity(), test.relevance,
                                        t2i_scores=norm_set.t2i_scores)
        extended = None
        if name == "a":
            extended = {"base": extended_metrics(test.similarity(), test, root),
                        "leaprr": extended_metrics(scores, test, root)}
            if extended["base"] is None:
                extended = None
        out["protocols"][name] = {
            "train": [train.n_images, train.n_texts],
            "dev": [dev.n_images, dev.n_texts],
            "test": [test.n_images, test.n_texts],
            "test_name": test.name,
            "base": {k: round(base[k], 2) for k in KEYS},
            "leaprr": {k: round(new[k], 2) for k in KEYS},
            "rsum_gain": round(new["RSUM"] - base["RSUM"], 2),
            "normaliser_alone": None if normalised is None else {k: round(normalised[k], 2) for k in KEYS},
            "extended": extended,
            "best_dev_rsum": model.history_.get("best_rsum"),
            "dev_curve": [(v["step"], round(v["RSUM"], 2)) for v in model.history_["validations"]],
            "fit_seconds": round(fit_s, 1),
            "rerank_seconds": round(rerank_s, 1),
        }
        print(name, json.dumps(out["protocols"][name]), flush=True)
    out["torch_threads"] = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None
    out["load_average_at_end"] = list(os.getloadavg())
    return out
