"""``rerank train-backbone``: train a backbone head on feature files and export its scores."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from pillar_rerank.adapters.api import TRAINING_LOSSES
from pillar_rerank.adapters.api import train_backbone as train_backbone_api
from pillar_rerank.adapters.heads import HEADS

FILE = click.Path(dir_okay=False)


def _side_options(prefix: str, side: str) -> Callable:
    p = f"{prefix}-" if prefix else ""

    def decorator(func: Callable) -> Callable:
        opts = [
            click.option(
                f"--{p}image-features",
                type=FILE,
                required=not prefix,
                help=f"Image features .npy, (n_images, d) or token-level (n_images, N, d) [{side}].",
            ),
            click.option(
                f"--{p}text-features",
                type=FILE,
                required=not prefix,
                help=f"Text features .npy, (n_texts, d) or (n_texts, N, d) [{side}].",
            ),
            click.option(
                f"--{p}txt2img", type=FILE, default=None, help=f"Caption -> image int map .npy [{side}]."
            ),
            click.option(
                f"--{p}captions-per-image",
                type=click.IntRange(min=1),
                default=None,
                help=f"Contiguous blocks of N captions per image, instead of a map [{side}].",
            ),
            click.option(
                f"--{p}image-lengths",
                type=FILE,
                default=None,
                help=f"Valid tokens per image for token-level features [{side}].",
            ),
            click.option(
                f"--{p}text-lengths",
                type=FILE,
                default=None,
                help=f"Valid tokens per caption for token-level features [{side}].",
            ),
        ]
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorator


def _pop_side(kwargs: dict, prefix: str) -> dict | None:
    p = f"{prefix}_" if prefix else ""
    keys = (
        "image_features",
        "text_features",
        "txt2img",
        "captions_per_image",
        "image_lengths",
        "text_lengths",
    )
    side = {k: kwargs.pop(f"{p}{k}") for k in keys}
    if prefix and side["image_features"] is None and side["text_features"] is None:
        if any(v is not None for v in side.values()):
            raise click.UsageError(
                f"--{prefix}-* options need --{prefix}-image-features and --{prefix}-text-features."
            )
        return None
    if prefix and (side["image_features"] is None or side["text_features"] is None):
        raise click.UsageError(f"give both --{prefix}-image-features and --{prefix}-text-features.")
    if (side["txt2img"] is None) == (side["captions_per_image"] is None):
        flag = f"--{prefix}-" if prefix else "--"
        raise click.UsageError(f"give exactly one of {flag}txt2img or {flag}captions-per-image.")
    return {k: v for k, v in side.items() if v is not None}


def _parse_params(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE; got {item!r}.", ctx=ctx, param=param)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@click.command("train-backbone")
@click.option(
    "--loss",
    type=click.Choice(TRAINING_LOSSES),
    required=True,
    help="Training loss: a two-tower loss, 'selfalign' (token features) or 'distill' (needs --teacher).",
)
@_side_options("", "training side")
@click.option(
    "--caption-table",
    type=FILE,
    default=None,
    help="Frozen caption embeddings (n_texts, E) for the listwise RSC relevance (default: text features).",
)
@_side_options("dev", "dev side: model selection by RSUM")
@_side_options("export", "side whose scores are exported (default: dev, else train)")
@click.option(
    "--head",
    type=click.Choice(HEADS),
    default=None,
    help="Encoder head (default: linear; selfalign's token projection is always linear).",
)
@click.option("--text-head", type=click.Choice(HEADS), default=None, help="Text-side head (default: --head).")
@click.option(
    "--embed-dim",
    type=click.IntRange(min=1),
    default=None,
    help="Joint dimension (default: the trainer's, 256; 64 for distill).",
)
@click.option(
    "--hidden-dim", type=click.IntRange(min=1), default=None, help="MLP hidden width (--head mlp only)."
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="AdamW learning rate (default: the trainer's, 5e-4; 2e-4 for selfalign).",
)
@click.option(
    "--weight-decay",
    type=click.FloatRange(min=0),
    default=None,
    help="AdamW weight decay (default: the trainer's, 1e-4; 0 for selfalign).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available).")
@click.option(
    "--param",
    "loss_params",
    multiple=True,
    callback=_parse_params,
    metavar="KEY=VALUE",
    help="Loss parameter, repeatable (e.g. --param weight=0.3 for listwise).",
)
@click.option(
    "--teacher",
    type=click.Path(file_okay=False),
    default=None,
    help="Teacher model folder for --loss distill.",
)
@click.option(
    "-o",
    "--output",
    "model_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Model folder to write (weights, config, scores/).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model in the folder.")
@click.option(
    "--export-train-dev/--no-export-train-dev",
    default=True,
    show_default=True,
    help="Also write scores_train/ and scores_dev/ (the inputs of `rerank fit`).",
)
@click.option("--progress/--no-progress", default=False, help="Show a progress bar.")
def train_backbone(**kwargs) -> None:
    """Train a backbone head over precomputed features and export its image x text scores.

    Writes MODEL_DIR/model/ (the trained model folder: weights.safetensors, config.json,
    manifest.json; pass MODEL_DIR to --teacher) and, per side, a folder of sims.npy,
    txt2img.npy, embeddings where the model has them, and manifest.json: scores/ (the --export-*
    side, else dev, else train), scores_train/ and scores_dev/. They are read directly by
    `rerank fit/apply/eval`:

    \b
    rerank train-backbone --loss infonce ... -o runs/head
    rerank fit --sims runs/head/scores_train/sims.npy --txt2img runs/head/scores_train/txt2img.npy \\
        --dev-sims runs/head/scores_dev/sims.npy --dev-txt2img runs/head/scores_dev/txt2img.npy -o runs/leaprr
    rerank apply runs/leaprr --sims runs/head/scores/sims.npy --txt2img runs/head/scores/txt2img.npy -o rr.npy
    """
    train = _pop_side(kwargs, "")
    if kwargs.get("caption_table"):
        train["caption_table"] = kwargs["caption_table"]
    kwargs.pop("caption_table")
    dev, export = _pop_side(kwargs, "dev"), _pop_side(kwargs, "export")
    loss_params = kwargs.pop("loss_params") or None
    kwargs["verbose"] = kwargs.pop("progress")
    # only the options given on the command line; the trainer's own defaults fill in the rest
    head = {
        field: kwargs.pop(option)
        for option, field in (
            ("head", "kind"),
            ("text_head", "text_kind"),
            ("embed_dim", "embed_dim"),
            ("hidden_dim", "hidden_dim"),
        )
    }
    head = {k: v for k, v in head.items() if v is not None}
    training = {
        name: kwargs.pop(name)
        for name in ("epochs", "batch_size", "lr", "weight_decay", "seed", "device", "verbose")
    }
    training = {k: v for k, v in training.items() if v is not None}
    summary = train_backbone_api(
        train=train,
        dev=dev,
        export=export,
        loss_params=loss_params,
        head=head or None,
        training=training or None,
        **kwargs,
    )
    click.echo(f"model: {summary['model_dir']}  ({summary['trainer']})")
    if summary["best_dev_rsum"] is not None:
        click.echo(f"best epoch {summary['best_epoch']}: dev RSUM {summary['best_dev_rsum']:.2f}")
    m = summary["metrics"]
    click.echo(
        f"scores: {summary['scores_dir']}  [{summary['export_side']}] "
        + " ".join(
            f"{k}={m[k]:.2f}"
            for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM")
        )
    )
