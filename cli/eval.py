"""``rerank eval``: recall, ranks, RSUM and the extended metrics of a score matrix."""

from __future__ import annotations

import math
import time
from pathlib import Path

import click

from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet, load_retrieval_set
from pillar_rerank.io import check_output_path, load_array, save_json
from pillar_rerank.metrics.evaluate import DIRECTIONS, evaluate, parse_metric
from pillar_rerank.metrics.qrels import Qrels, load_graded_pairs

from .options import EXISTING_FILE, load_scores_file, overwrite_option

TIE_RULE = "stable: among equal scores the lower gallery index ranks first"


def format_table(results: dict[str, float]) -> str:
    """Directions as rows, measures as columns, RSUM on its own line."""
    columns: list[str] = []
    for key in results:
        spec = parse_metric(key)
        if spec.direction is not None:
            label = key.split("_", 1)[1]
            if label not in columns:
                columns.append(label)
    width = max([7, *(len(c) + 1 for c in columns)])
    lines = [" " * 5 + "".join(f"{c:>{width}}" for c in columns)]
    for d in DIRECTIONS:
        cells = []
        for c in columns:
            value = results.get(f"{d}_{c}")
            cells.append(f"{'-':>{width}}" if value is None else f"{_fmt(value):>{width}}")
        if any(f"{d}_{c}" in results for c in columns):
            lines.append(f"{d:<5}" + "".join(cells))
    if "RSUM" in results:
        lines.append(f"RSUM {_fmt(results['RSUM']):>{width}}")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}"


@click.command("eval")
@click.argument("sims", required=False, type=EXISTING_FILE)
@click.option("--image-emb", type=EXISTING_FILE, default=None,
              help="Image embeddings .npy, shape (n_images, d) (instead of SIMS).")
@click.option("--text-emb", type=EXISTING_FILE, default=None,
              help="Text embeddings .npy, shape (n_texts, d) (with --image-emb).")
@click.option("--txt2img", type=EXISTING_FILE, default=None,
              help="Caption -> image int map .npy, shape (n_texts,).")
@click.option("--captions-per-image", type=click.IntRange(min=1), default=None,
              help="Contiguous blocks of N captions per image (instead of --txt2img).")
@click.option("--t2i-sims", type=EXISTING_FILE, default=None,
              help="Separate image x text matrix ranked for text -> image (direction-specific methods).")
@click.option("--demo", type=click.Choice(["train", "test"]), default=None,
              help="Evaluate the bundled demo data instead of files.")
@click.option("--folds", type=click.IntRange(min=1), default=None,
              help="Average over N disjoint contiguous image blocks (5 on COCO 5K = the COCO 1K protocol).")
@click.option("--fold-size", type=click.IntRange(min=1), default=None,
              help="Images per fold (alternative to --folds).")
@click.option("-m", "--metric", "metrics", multiple=True,
              help="Metric name, repeatable (e.g. i2t_R@5, t2i_mAP@R, i2t_NDCG@10, RSUM). "
                   "Default: R@1/5/10, medr, meanr, RSUM (+ mAP@R, R-P / NDCG@10 with the files below).")
@click.option("--positives-i2t", type=EXISTING_FILE, default=None,
              help="Image -> caption positive sets .npz (CSR: indptr, indices, n_gallery).")
@click.option("--positives-t2i", type=EXISTING_FILE, default=None,
              help="Caption -> image positive sets .npz (CSR: indptr, indices, n_gallery).")
@click.option("--graded", type=EXISTING_FILE, default=None,
              help="Graded relevance .npz of (image, text, gain) triples, for NDCG.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures to this JSON file (atomically).")
@overwrite_option
def eval_command(sims, image_emb, text_emb, txt2img, captions_per_image, t2i_sims, demo, folds,
                 fold_size, metrics, positives_i2t, positives_t2i, graded, json_out, overwrite):
    """Evaluate an image x text score matrix SIMS.npy (or two embedding files).

    \b
    rerank eval sims.npy --captions-per-image 5
    rerank eval sims.npy --txt2img cap2img.npy --folds 5 --json out.json
    rerank eval --image-emb img.npy --text-emb txt.npy --txt2img cap2img.npy
    rerank eval --demo test
    rerank eval nnn.npz --txt2img cap2img.npy    # i2t + t2i from `rerank baseline`

    Recall is the % of queries with a positive in the top K; ties are broken by gallery index
    (lower first). Values are percentages except medr/meanr (1-based ranks).
    """
    inputs = [p for p in (sims, image_emb, text_emb, txt2img, t2i_sims, positives_i2t, positives_t2i,
                          graded) if p is not None]
    if json_out is not None:
        check_output_path(json_out, inputs=inputs, overwrite=overwrite, name="--json")
    data = _load(sims, image_emb, text_emb, txt2img, captions_per_image, t2i_sims, demo)
    positives = {}
    if positives_i2t is not None:
        positives["i2t"] = Qrels.load(positives_i2t, name="--positives-i2t")
    if positives_t2i is not None:
        positives["t2i"] = Qrels.load(positives_t2i, name="--positives-t2i")
    graded_qrels = None if graded is None else load_graded_pairs(graded, data.n_images, data.n_texts,
                                                                 name="--graded")
    start = time.perf_counter()
    results = evaluate(data, metrics=list(metrics) or None, positives=positives or None,
                       graded=graded_qrels, folds=folds, fold_size=fold_size)
    seconds = time.perf_counter() - start

    counts = data.relevance.captions_per_image
    cpi = str(int(counts[0])) if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    protocol = "" if folds is None and fold_size is None else (
        f", mean over {folds or data.n_images // fold_size} folds")
    click.echo(f"{data.name}: {data.n_images} images x {data.n_texts} captions "
               f"({cpi} per image){protocol}")
    click.echo(format_table(results))
    click.echo(f"ties: {TIE_RULE}; evaluated in {seconds:.2f} s")
    if json_out is not None:
        payload = {
            "metrics": {k: (None if math.isnan(v) else v) for k, v in results.items()},
            "n_images": data.n_images,
            "n_texts": data.n_texts,
            "folds": folds, "fold_size": fold_size,
            "tie_rule": TIE_RULE,
            "inputs": {"sims": sims, "image_emb": image_emb, "text_emb": text_emb, "txt2img": txt2img,
                       "captions_per_image": captions_per_image, "t2i_sims": t2i_sims, "demo": demo,
                       "positives_i2t": positives_i2t, "positives_t2i": positives_t2i, "graded": graded},
        }
        save_json(json_out, payload, inputs=inputs, overwrite=overwrite, name="--json")
        click.echo(f"wrote {json_out}")


def _load(sims, image_emb, text_emb, txt2img, captions_per_image, t2i_sims, demo) -> RetrievalSet:
    if demo is not None:
        if any(x is not None for x in (sims, image_emb, text_emb, txt2img, captions_per_image, t2i_sims)):
            raise click.UsageError("--demo takes no data files or ground-truth options.")
        from pillar_rerank.datasets import load_demo

        return load_demo()[demo]
    if sims is not None and (image_emb is not None or text_emb is not None):
        raise click.UsageError("give SIMS or --image-emb/--text-emb, not both.")
    if sims is None and (image_emb is None or text_emb is None):
        raise click.UsageError("give a SIMS.npy matrix, or both --image-emb and --text-emb (or --demo).")
    if (txt2img is None) == (captions_per_image is None):
        raise click.UsageError("give exactly one of --txt2img MAP.npy or --captions-per-image N.")
    name = Path(sims).name if sims is not None else f"{Path(image_emb).name} @ {Path(text_emb).name}"
    if sims is not None and Path(sims).suffix == ".npz":
        if t2i_sims is not None:
            raise click.UsageError("an .npz SIMS already holds both directions; drop --t2i-sims.")
        return load_scores_file(sims, txt2img=txt2img, captions_per_image=captions_per_image, name=name)
    data = load_retrieval_set(sims=sims, image_embeddings=image_emb, text_embeddings=text_emb,
                              txt_to_img=txt2img, captions_per_image=captions_per_image, name=name)
    if t2i_sims is not None:
        if sims is None:
            raise click.UsageError("--t2i-sims needs SIMS for the image -> text direction.")
        t2i = load_array(t2i_sims, name="--t2i-sims", mmap=True)
        try:
            data = data.with_scores(data.scores, t2i_scores=t2i)
        except InvalidInputError as exc:
            raise InvalidInputError(f"--t2i-sims ({t2i_sims}): {exc}") from exc
    return data
