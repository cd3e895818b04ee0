"""``rerank import-reference``: turn a checkpoint of the original LeaPRR code into a model dir."""

from __future__ import annotations

import click

from .options import overwrite_option


@click.command("import-reference")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory to create (written atomically); use it with `rerank apply`.",
)
@click.option(
    "--num-heads",
    type=click.IntRange(min=1),
    default=None,
    help="Attention heads (the reference's --num_heads). The weights cannot tell it; default: the "
    "paper's 24 when it divides the embedding size read from the weights.",
)
@click.option(
    "--list-len-i2t",
    type=click.IntRange(min=2),
    default=None,
    help="Rows of an image-query list including the query (the reference's --topk_i2t; default 32).",
)
@click.option(
    "--list-len-t2i",
    type=click.IntRange(min=2),
    default=None,
    help="Rows of a text-query list including the query (the reference's --topk_t2i; default 8).",
)
@click.option(
    "--graph-neighbors",
    type=click.IntRange(min=1),
    default=None,
    help="C, neighbours per node of the overlap adjacency (the reference's fixed 10; default 10).",
)
@click.option(
    "--reference-fp16/--no-reference-fp16",
    default=False,
    show_default=True,
    help="Round list features, adjacency and score matrices through float16 as the reference does, "
    "so that `rerank apply` gives the reference's own score matrix.",
)
@overwrite_option
def import_reference(checkpoint: str, model_dir: str, overwrite: bool, **fields) -> None:
    """Import CHECKPOINT (LgQu/LeaPRR checkpoint_best.pth) into a model directory.

    The file is read with torch.load(weights_only=True): nothing is unpickled. The sizes the
    weights tell (n_pillars, embed_dim, depth, mlp_ratio, qkv_bias) are read from them; the
    reference's fixed sparsity thresholds are switched on.
    """
    from pillar_rerank.checkpoint import check_model_dir_target
    from pillar_rerank.reranker import PillarReranker

    check_model_dir_target(model_dir, overwrite=overwrite, inputs=[checkpoint])
    given = {k: v for k, v in fields.items() if v is not None}
    model = PillarReranker.from_reference_checkpoint(checkpoint, **given)
    model.save(model_dir, overwrite=overwrite, inputs=[checkpoint])
    c = model.config_
    click.echo(
        f"imported {checkpoint}: n_pillars={c.n_pillars}, embed_dim={c.embed_dim}, depth={c.depth}, "
        f"num_heads={c.num_heads}{'' if 'num_heads' in given else ' (paper default)'}, "
        f"mlp_ratio={c.mlp_ratio:g}, lists {c.list_len_i2t}/{c.list_len_t2i}, "
        f"reference_fp16={c.reference_fp16}; wrote {model_dir}"
    )
