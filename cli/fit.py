"""``rerank fit``: train LeaPRR on a training side (optionally selecting on a dev side)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from pillar_rerank.cli.options import data_options, input_building_options, load_side, overwrite_option

from pillar_rerank import distributed
from pillar_rerank.checkpoint import check_model_dir_target
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.io import load_json

# CLI flag -> LeaPRRConfig field
OVERRIDES = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "embed_dim": "embed_dim",
    "depth": "depth",
    "num_heads": "num_heads",
    "n_pillars": "n_pillars",
    "seed": "seed",
    "device": "device",
    "eval_every": "eval_every",
    "list_len_i2t": "list_len_i2t",
    "list_len_t2i": "list_len_t2i",
    "intra_source": "intra_source",
    "attention": "attention",
    "normalize": "normalize",
    "index": "neighbor_index",
    "precision": "precision",
    "score_fusion": "score_fusion",
}


def parse_params(pairs: tuple[str, ...], *, option: str) -> dict:
    """``k=v`` pairs into a dict; values are parsed as JSON when possible (ints, floats, bools)."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE; got {pair!r}.", param_hint=option)
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def build_config(config_file: str | None, overrides: dict, normalize_params: dict,
                 index_params: dict | None = None) -> LeaPRRConfig:
    """Config file (unknown keys are an error) + command-line flags, which win."""
    values = {}
    if config_file is not None:
        doc = load_json(config_file, name="config")
        if not isinstance(doc, dict):
            raise InvalidParameterError(
                f"config ({config_file}): expected a JSON object of LeaPRRConfig fields."
            )
        values.update(doc.get("config", doc) if "estimator" in doc else doc)
    values.update({OVERRIDES[k]: v for k, v in overrides.items() if v is not None})
    if normalize_params:
        values["normalize_params"] = normalize_params
    if index_params:
        values["neighbor_index_params"] = index_params
    return LeaPRRConfig.from_dict(values)


@click.command("fit")
@data_options(help_side="training side")
@data_options("dev", help_side="dev side, for model selection")
@click.option(
    "-o",
    "--output",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory to create. With --overwrite it may replace a previous model directory, "
    "never a folder holding other files (e.g. the inputs).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON file of LeaPRRConfig fields (unknown keys are an error); flags override it.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--embed-dim", type=click.IntRange(min=1), default=None)
@click.option("--depth", type=click.IntRange(min=1), default=None)
@click.option("--num-heads", type=click.IntRange(min=1), default=None)
@click.option("--n-pillars", type=click.IntRange(min=1), default=None)
@click.option("--list-len-i2t", type=click.IntRange(min=2), default=None)
@click.option("--list-len-t2i", type=click.IntRange(min=2), default=None)
@click.option("--eval-every", type=click.IntRange(min=1), default=None)
@click.option(
    "--intra-source", type=click.Choice(["auto", "embeddings", "given", "second_order"]), default=None
)
@click.option("--attention", type=click.Choice(["dense", "sparse"]), default=None)
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option("--device", type=str, default=None, help="cpu, cuda or cuda:N (default: CUDA when available).")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default=None,
    help="Model precision: auto = bf16 autocast on a CUDA GPU with bf16 support, fp32 elsewhere.",
)
@click.option("--normalize", type=str, default=None, help="Training-free normaliser applied before LeaPRR.")
@click.option(
    "--score-fusion",
    type=click.Choice(["zscore", "overwrite"]),
    default=None,
    help="zscore (default): mix input and network scores per list with weights chosen on --dev "
    "(never below the input ranking on dev); overwrite: the reference's network cosines.",
)
@click.option("--normalize-param", "normalize_param", multiple=True, help="Normaliser parameter KEY=VALUE.")
@click.option(
    "--index",
    type=click.Choice(["flat", "ivf", "hnsw"]),
    default=None,
    help="FAISS index of the neighbour searches from embeddings: exact flat (default) or approximate "
    "IVF/HNSW for very large galleries; saved in the model's config and used again by apply.",
)
@click.option(
    "--index-param", "index_param", multiple=True,
    help="Approximate index parameter KEY=VALUE (ivf: nlist, nprobe, train_size, seed; hnsw: M, "
    "ef_construction, ef_search).",
)
@input_building_options
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Resumable training state (default: MODEL_DIR.ckpt next to the model dir).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=None,
    help="Iterations between training checkpoints (default: eval_every).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the training checkpoint (bitwise the same result on CPU). When the "
    "checkpoint dir holds no checkpoint yet (the run was killed before its first one), training "
    "starts from scratch with a logged notice, so the same command always works.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@overwrite_option
def fit(
    model_dir: str,
    config_file: str | None,
    normalize_param: tuple[str, ...],
    index_param: tuple[str, ...],
    max_memory: str | None,
    cache_dir: str | None,
    checkpoint_dir: str | None,
    checkpoint_every: int | None,
    resume: bool,
    quiet: bool,
    overwrite: bool,
    **kwargs,
) -> None:
    """Train LeaPRR on the training side and write MODEL_DIR (weights + config + checksums)."""
    from pillar_rerank.reranker import PillarReranker

    out = Path(model_dir)
    inputs = [v for v in (config_file, *kwargs.values()) if isinstance(v, str)]
    check_model_dir_target(out, overwrite=overwrite, inputs=inputs)  # before hours of training
    ckpt = Path(checkpoint_dir) if checkpoint_dir else out.with_name(out.name + ".ckpt")
    if ckpt.resolve() == out.resolve() or out.resolve() in ckpt.resolve().parents:
        raise InvalidParameterError(
            f"--checkpoint-dir ({ckpt}): must not be inside the model dir {out}; choose another folder."
        )
    params = parse_params(normalize_param, option="--normalize-param")
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in OVERRIDES}
    config = build_config(config_file, overrides, params, parse_params(index_param, option="--index-param"))
    train = load_side(kwargs, name="train")
    dev = load_side(kwargs, "dev", name="dev", required=False)
    start = time.perf_counter()
    model = PillarReranker(config).fit(
        train, dev, checkpoint_dir=ckpt, resume=resume, checkpoint_every=checkpoint_every, verbose=not quiet,
        max_memory=max_memory, cache_dir=cache_dir,
    )
    if not distributed.is_main():  # under torchrun, rank 0 writes the model dir and reports
        distributed.barrier()
        distributed.teardown()
        return
    model.save(out, overwrite=overwrite, inputs=inputs)
    distributed.barrier()
    distributed.teardown()
    hist = model.history_
    click.echo(
        f"trained LeaPRR on {train.n_images} images x {train.n_texts} captions in "
        f"{time.perf_counter() - start:.1f} s ({config.epochs} epochs, embed_dim={config.embed_dim}, "
        f"depth={config.depth}, heads={config.num_heads}, L={config.n_pillars})"
    )
    if hist.get("selected") == "best_dev_rsum":
        click.echo(f"kept the best dev RSUM: {hist['best_rsum']:.2f}")
    else:
        click.echo("no dev side given: kept the last weights")
    if model.fusion_ is not None:
        f = model.fusion_
        click.echo(f"score fusion: w_i2t={f['w_i2t']:g}, w_t2i={f['w_t2i']:g} ({f['selected']})")
    click.echo(f"wrote {out} (training checkpoint in {ckpt})")
