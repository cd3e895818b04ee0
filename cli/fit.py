"""``rerank fit``: train LeaPRR on a training side (optionally selecting on a dev side)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pillar_rerank import distributed
from pillar_rerank._validation import Interval, Options
from pillar_rerank.baselines.tuning import choice_params, load_choice
from pillar_rerank.checkpoint import check_model_dir_target
from pillar_rerank.config import PRESETS, LeaPRRConfig, preset
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.io import check_writable_folder, load_json

from .options import (
    data_options,
    echo_warnings,
    input_building_options,
    load_side,
    overwrite_option,
    parse_params,
    prepare_cache_dir,
)

#: LeaPRRConfig fields exposed as options, with their help. Type, range, choices and default come
#: from LeaPRRConfig itself (:func:`config_option`); the flag is the field name with dashes,
#: except where FLAG_NAMES says otherwise.
CONFIG_HELP = {
    "epochs": "Training epochs over the captions.",
    "batch_size": "Captions per SGD step (the global batch under torchrun).",
    "lr": "Peak learning rate of SGD (cosine decay to 0).",
    "embed_dim": "Width of the transformer (must be divisible by --num-heads).",
    "depth": "Transformer blocks per direction network.",
    "num_heads": "Attention heads.",
    "n_pillars": "L, pillars per modality.",
    "list_len_i2t": "Rows of an image-query list, the query included (31 texts re-ranked at 32).",
    "list_len_t2i": "Rows of a text-query list, the query included (7 images re-ranked at 8).",
    "eval_every": "Validate on the dev side every N steps (and after every epoch).",
    "intra_source": "Where image-image / text-text similarities come from (auto: given matrices, "
                    "else embeddings, else the second-order estimate).",
    "attention": "dense: the paper's attention; sparse: graph edges only (torch-geometric).",
    "seed": "Seed of the initialisation, data order and caption sampling.",
    "device": "cpu, cuda or cuda:N (unset: CUDA when available).",
    "precision": "auto: re-rank under bf16 autocast on a CUDA GPU with bf16 and on CPUs with native bf16, "
                 "fp32 elsewhere; always train in fp32.",
    "normalize": "Training-free normaliser applied before LeaPRR (e.g. nnn, dsl).",
    "score_fusion": "overwrite: the network's cosines replace the re-ranked entries (the paper's); zscore: "
                    "each direction's rule chosen on the dev side among the input, per-list mixes of "
                    "input and network scores, and the overwrite (never below either on dev).",
    "neighbor_index": "FAISS index of the neighbour searches from embeddings: exact flat or "
                      "approximate IVF/HNSW for very large galleries; saved with the model.",
}
FLAG_NAMES = {"neighbor_index": "index"}
#: Fields that set the model's size and cost (the ones that say a run is not the paper's).
SIZE_FIELDS = ("embed_dim", "depth", "num_heads", "epochs", "batch_size", "n_pillars", "list_len_i2t",
               "list_len_t2i")


def _click_type(rule: Any) -> Any:
    """The click type of one LeaPRRConfig constraint (``None`` alternatives are dropped)."""
    rules = [r for r in (rule if isinstance(rule, list) else [rule]) if r is not None]
    (rule,) = rules
    if isinstance(rule, Interval):
        kind = click.IntRange if rule.kind is int else click.FloatRange
        return kind(min=rule.low, max=rule.high, min_open=rule.closed in ("right", "neither"),
                    max_open=rule.closed in ("left", "neither"))
    if isinstance(rule, Options):
        return click.Choice(sorted(rule.values))
    return rule


def _default_text(field: str) -> str:
    values = {name: preset(name).to_dict()[field] for name in PRESETS}
    if len(set(map(repr, values.values()))) == 1:
        return "none" if values["paper"] is None else f"{values['paper']}"
    return ", ".join(f"{v} ({name})" for name, v in values.items())


def config_options(func: Callable) -> Callable:
    """One option per CONFIG_HELP field, typed and ranged from LeaPRRConfig, defaults shown."""
    for field in reversed(CONFIG_HELP):
        flag = FLAG_NAMES.get(field, field).replace("_", "-")
        func = click.option(f"--{flag}", field, type=_click_type(LeaPRRConfig._constraints[field]),
                            default=None, show_default=False,
                            help=f"{CONFIG_HELP[field]}  [default: {_default_text(field)}]")(func)
    return func


def build_config(config_file: str | None, preset_name: str | None, overrides: dict, normalize_params: dict,
                 index_params: dict | None = None) -> LeaPRRConfig:
    """Preset, then the config file (unknown keys are an error), then the flags, which win."""
    values = dict(PRESETS[preset_name or "paper"])
    if config_file is not None:
        doc = load_json(config_file, name="config")
        if not isinstance(doc, dict):
            raise InvalidParameterError(
                f"config ({config_file}): expected a JSON object of LeaPRRConfig fields."
            )
        values.update(doc.get("config", doc) if "estimator" in doc else doc)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if normalize_params:
        values["normalize_params"] = normalize_params
    if index_params:
        values["neighbor_index_params"] = index_params
    return LeaPRRConfig.from_dict(values)


def describe_start(config: LeaPRRConfig, preset_name: str | None, sized: bool) -> str:
    """One line saying which configuration a fit starts, and on which device."""
    from pillar_rerank.utils.device import resolve_device

    device = resolve_device(config.device)
    m, t = config.model, config.training
    what = (f"embed_dim {m.embed_dim}, depth {m.depth}, {m.num_heads} heads, {t.epochs} epochs, "
            f"batch {t.batch_size}, lr {t.lr}, L {config.n_pillars}, "
            f"lists {config.list_len_i2t}/{config.list_len_t2i}")
    name = preset_name or ("paper" if not sized else None)
    label = f"the {name} preset" if name else "a custom configuration"
    line = f"starting {label} ({what}) on {device}"
    if name == "paper" and preset_name is None and device.type == "cpu":
        line += ("; the paper's configuration takes hours per epoch on a CPU at Flickr30K size: "
                 "--preset cpu is the measured reduced one")
    return line + "."


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
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default=None,
              help="Named starting configuration: paper (the paper's; the default) or cpu (embed_dim 64, "
              "depth 2, 4 heads, 8 epochs, batch 128, lr 0.6, text lists of 16: the README's CPU "
              "runs). --config and the options below override it.")
@config_options
@click.option("--normalize-param", "normalize_param", multiple=True,
              help="Normaliser parameter KEY=VALUE (repeatable).  [default: the normaliser's own]")
@click.option(
    "--normalize-params-from", type=click.Path(readable=False), default=None, metavar="CHOICE.json",
    help="Normaliser and parameters chosen by `rerank tune NAME -o CHOICE.json` (sets --normalize NAME; "
    "--normalize-param overrides single values).",
)
@click.option(
    "--per-direction", is_flag=True,
    help="With --normalize-params-from: each direction takes its own best (best_params_i2t / "
    "best_params_t2i, saved as normalize_params {\"i2t\": {...}, \"t2i\": {...}}).",
)
@click.option(
    "--index-param", "index_param", multiple=True,
    help="Approximate index parameter KEY=VALUE (ivf: nlist, nprobe, train_size, seed; hnsw: M, "
    "ef_construction, ef_search).  [default: the index's own]",
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
    preset_name: str | None,
    normalize_param: tuple[str, ...],
    normalize_params_from: str | None,
    per_direction: bool,
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
    inputs = [v for v in (config_file, normalize_params_from, *kwargs.values()) if isinstance(v, str)]
    check_model_dir_target(out, overwrite=overwrite, inputs=inputs)  # before hours of training
    ckpt = Path(checkpoint_dir) if checkpoint_dir else out.with_name(out.name + ".ckpt")
    if ckpt.resolve() == out.resolve() or out.resolve() in ckpt.resolve().parents:
        raise InvalidParameterError(
            f"--checkpoint-dir ({ckpt}): must not be inside the model dir {out}; choose another folder."
        )
    # every output location, before hours of training
    check_writable_folder(out, name="model dir (-o)")
    check_writable_folder(ckpt, name="--checkpoint-dir")
    cache_dir = prepare_cache_dir(cache_dir)
    params = parse_params(normalize_param, option="--normalize-param")
    if per_direction and normalize_params_from is None:
        raise click.UsageError("--per-direction needs --normalize-params-from CHOICE.json.")
    if normalize_params_from is not None:
        choice = load_choice(normalize_params_from, name=kwargs.get("normalize"))
        kwargs["normalize"] = choice["name"]
        chosen = choice_params(choice, per_direction=per_direction)
        params = ({d: {**chosen[d], **params} for d in ("i2t", "t2i")} if per_direction
                  else {**chosen, **params})
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_HELP}
    config = build_config(config_file, preset_name, overrides, params,
                          parse_params(index_param, option="--index-param"))
    train = load_side(kwargs, name="train")
    dev = load_side(kwargs, "dev", name="dev", required=False)
    sized = config_file is not None or any(overrides.get(k) is not None for k in SIZE_FIELDS)
    if distributed.is_main():
        click.echo(describe_start(config, preset_name, sized))
    start = time.perf_counter()
    with echo_warnings():
        model = PillarReranker(config).fit(
            train, dev, checkpoint_dir=ckpt, resume=resume, checkpoint_every=checkpoint_every,
            verbose=not quiet, max_memory=max_memory, cache_dir=cache_dir,
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
        click.echo(f"kept the best dev RSUM: {hist['best_rsum']:.2f} (dev RSUM without re-ranking: "
                   f"{hist['dev_base']['RSUM']:.2f})")
    else:
        click.echo("no dev side given: kept the last weights")
    if model.fusion_ is not None:
        from pillar_rerank.fusion import describe_record

        click.echo(describe_record(model.fusion_))
    click.echo(f"wrote {out} (training checkpoint in {ckpt})")
