"""``rerank merge``: join the shards of `rerank apply --shard` into one score matrix."""

from __future__ import annotations

import click

from .apply import write_scores
from .options import data_options, load_side, overwrite_option


@click.command("merge")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@data_options(help_side="the test side the shards were computed on")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Merged scores: .npy one matrix (mean of both directions), .npz one matrix per direction.")
@overwrite_option
def merge(model_dir: str, shards: tuple[str, ...], output: str, overwrite: bool, **kwargs) -> None:
    """Check that SHARDS are every share of one run of MODEL_DIR, exactly once, and merge them."""
    from pillar_rerank.checkpoint import check_output_outside_model_dir, model_dir_files
    from pillar_rerank.io import check_output_path
    from pillar_rerank.reranker import PillarReranker

    inputs = [*shards, *(v for v in kwargs.values() if isinstance(v, str)), *model_dir_files(model_dir)]
    check_output_outside_model_dir(output, model_dir)
    check_output_path(output, inputs=inputs, overwrite=overwrite)
    test = load_side(kwargs, name="test")
    model = PillarReranker.load(model_dir)
    write_scores(model, test, output, inputs=inputs, overwrite=overwrite, shards=list(shards))
    click.echo(f"merged {len(shards)} shards ({test.n_images} x {test.n_texts}); wrote {output}")
