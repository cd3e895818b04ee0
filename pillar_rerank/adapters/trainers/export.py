"""The score export ``rerank fit/apply/eval`` read: ``sims.npy``, ``txt2img.npy``, embeddings and a
manifest, each file written atomically and never over an input."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pillar_rerank.adapters.features import FeatureSet
from pillar_rerank.exceptions import InputFileError
from pillar_rerank.io import save_array, save_json
from pillar_rerank.metrics import recall_metrics

if TYPE_CHECKING:
    from pillar_rerank.adapters.trainers.base import BaseTrainer

MANIFEST_FILE = "manifest.json"
#: format version of the score-export manifest
SCORES_FORMAT_VERSION = 1


def write_scores(
    trainer: BaseTrainer,
    out_dir: str | Path,
    data: FeatureSet,
    *,
    overwrite: bool = False,
    evaluate: bool = True,
    inputs: tuple = (),
) -> dict[str, Any]:
    """See :meth:`BaseTrainer.export_scores`."""
    trainer._check_is_fitted()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputFileError(f"export folder ({out}): exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    img, txt = trainer.encode(data)
    scores = trainer._score_encoded(img, txt)
    files = {"sims": "sims.npy", "txt2img": "txt2img.npy"}
    save_array(out / files["sims"], scores, inputs=inputs, overwrite=overwrite, name="sims")
    save_array(
        out / files["txt2img"],
        data.relevance.txt_to_img.astype(np.int64),
        inputs=inputs,
        overwrite=overwrite,
        name="txt2img",
    )
    embeddings = trainer.model_.item_embeddings(img, txt)
    if embeddings is not None:
        files["image_emb"], files["text_emb"] = "image_emb.npy", "text_emb.npy"
        save_array(
            out / files["image_emb"],
            embeddings[0].float().cpu().numpy(),
            inputs=inputs,
            overwrite=overwrite,
            name="image_emb",
        )
        save_array(
            out / files["text_emb"],
            embeddings[1].float().cpu().numpy(),
            inputs=inputs,
            overwrite=overwrite,
            name="text_emb",
        )
    manifest = {
        "format_version": SCORES_FORMAT_VERSION,
        "producer": f"pillar_rerank.adapters.{type(trainer).__name__}",
        "files": files,
        "n_images": data.n_images,
        "n_texts": data.n_texts,
        "data": data.name,
        "orientation": "sims[i, j] = score of image i against caption j",
        "trainer": {
            "class": type(trainer).__name__,
            "params": trainer._json_params(),
            "best_epoch": trainer.best_epoch_,
            "best_dev_rsum": trainer.best_dev_rsum_,
        },
        "metrics": recall_metrics(scores, data.relevance) if evaluate else None,
        "usage": f"rerank eval {out / files['sims']} --txt2img {out / files['txt2img']}",
    }
    save_json(out / MANIFEST_FILE, manifest, inputs=inputs, overwrite=overwrite, name="manifest")
    return manifest
